"""A pass over a data source's shards on model actors: what the stages ``scan`` and ``explain`` share.

Topology. The source's shards are streamed (:class:`~ccs_ray.shard_plan.ShardPlan`: the driver keeps each shard's
id and fingerprint, and a shard's items only while it waits to be dispatched or saved). Models that share image
preprocessing share decoding: each shard is decoded once by a CPU :class:`Decoder` into uint8 pixels
(:class:`~ccs_ray.preprocess.Pixels`) that go, through the object store, to one :class:`ModelActor` of every model
that still needs the shard (:func:`decode_on_actors`: actors holding a GPU decode the JPEGs themselves, the decoder
only reading them). An actor loads its model once (on its GPU when the cluster has GPUs, else on CPU), turns
the pixels into its model's input (:func:`~ccs_ray.preprocess.model_input`), runs the one-pass decomposition
(:func:`~ccs_ray.decompose.decomposed_forward`) and adds each batch to its *accumulator*: the
:class:`~ccs_ray.moments.HeadMoments` of the scan, the :class:`~ccs_ray.topimages.TopImages` of explain.
Accumulators stay in the actor's memory; they never travel through the object store. A :class:`PassKind` says
what a pass accumulates: how an actor starts its accumulator and adds a batch, how a saved one is read, and where
its checkpoints go. The run keeps its model actors, models loaded, between the stages that use them
(:class:`ModelActors`, one pool per run); the spans stage runs on them too (:meth:`ModelActors.stream`).

Cores. On a CPU-only cluster with the default layout, the pass first measures what decoding costs next to
each model (:func:`decode_share`: :func:`measure_costs` per model on the first shard, at one thread, in the driver,
while the pass's first decoder starts on the same node); the actors then hold every CPU decoding does not need and
run that many torch threads (:func:`~ccs_ray.cluster.actor_layout`), and decoders, one per CPU left free on each
node, share the rest (:func:`~ccs_ray.cluster.decoder_layout`).

Checkpoints and resume. Every ``scan.checkpoint_s`` seconds (or ``scan.checkpoint_every`` shards) an
actor with new shards writes the records of the shards added since its last checkpoint to its shard log, then
its accumulator (without records, so of constant size) as the next numbered checkpoint of its own folder
(:mod:`ccs_ray.checkpoints`; :func:`~ccs_ray.files.commit_write`: the data file, then a small marker that
commits it, then the older checkpoint is removed). A checkpoint is never half visible, on local
disk or on an object store: readers take each folder's newest committed checkpoint (its *partial*) and
ignore a data file whose marker is missing, torn or records another size. A shard counts as done only once a
committed checkpoint holds it. When an actor dies its unsaved shards are queued again for a fresh actor (in
a new folder; :mod:`ccs_ray.retry` bounds the replacements); when the driver dies, ``run --resume`` reads the
partials and passes only over the shards none covers (:func:`partial_shards`: a partial's shards, from its shard
log). :func:`merge_partials` adds a model's partials and checks that the covered shards are exactly the planned
ones, so every good image counts once; it then removes every superseded or uncommitted checkpoint, every log part
off a partial's chain and every temporary file of the pass, leaving one committed partial (and its log) per actor
that saved any shard.

State under the results root: ``_state/<run_id>/<model>/<kind.folder>/<12 hex>/NNNNNNNN<kind.suffix>``
with its marker ``NNNNNNNN.commit`` and its log part ``shards/NNNNNNNN.jsonl`` (one folder per actor; NNNNNNNN:
the actor's checkpoint number), and ``_state/<run_id>/<model>/costs.json`` (the measured costs).

Modules. :mod:`~ccs_ray.passes.kinds`: :class:`PassKind`, :class:`PassStats`, :class:`PassError`;
:mod:`~ccs_ray.passes.actors`: :class:`Decoder`, :class:`ModelActor`, :class:`ModelActors`;
:mod:`~ccs_ray.passes.costs`: :func:`measure_costs`, :func:`decode_share`, :func:`decode_on_actors`;
:mod:`~ccs_ray.passes.partials`: finding, reading and merging partials; :mod:`~ccs_ray.passes.dispatch`: the
driver, :func:`run_pass` (its :class:`~ccs_ray.passes.dispatch.Dispatcher`). The driver's side imports neither
torch nor open_clip: the actors import them in their methods, :func:`measure_costs` in its body.
"""

from .actors import Decoder, ModelActor, ModelActors, decode_shard, decode_task
from .costs import COST_IMAGES, decode_on_actors, decode_share, measure_costs
from .dispatch import Dispatcher, _Worker, run_pass
from .kinds import PassError, PassKind, PassStats
from .partials import covered_shards, merge_partials, partial_shards, partials, worker_folders

__all__ = [
    "COST_IMAGES", "Decoder", "Dispatcher", "ModelActor", "ModelActors", "PassError", "PassKind", "PassStats",
    "_Worker", "covered_shards", "decode_on_actors", "decode_share", "decode_shard", "decode_task",
    "measure_costs", "merge_partials", "partial_shards", "partials", "run_pass", "worker_folders",
]
