"""What a pass is made of, seen from its stage: the :class:`PassKind` a stage implements (what its actors
accumulate and how a saved accumulator is read), the :class:`PassStats` a pass returns and the :class:`PassError`
it raises. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..decompose import Decomposition
    from ..sources import LoadedShard


class PassError(UserError, RuntimeError):
    """A pass cannot produce exact results (data changed under a resumed run, partials that do not partition the
    plan...)."""


class PassKind:
    """What a pass accumulates (:mod:`ccs_ray.passes`); subclasses set ``name``, ``folder``, ``suffix``,
    ``keep_z_sum`` and ``coefficients`` and implement the four methods. Accumulators have ``shards`` (shard id ->
    record), ``mark_covered``, ``to_bytes`` and ``merge`` (in place; disjoint shards only)."""

    name: str  # the stage's name, in progress lines and errors
    folder: str  # the checkpoint folders' parent, under each model's state folder
    suffix: str  # the checkpoint files' suffix
    keep_z_sum: bool = False  # ask the decomposition for the batch sum of attention outputs
    coefficients: bool = False  # ask it for compact coefficients instead of contributions

    def start(self, model_key: str, model, layers: list[int], device: str):
        """A fresh, empty accumulator for a model's actor."""
        raise NotImplementedError

    def forward_options(self, acc) -> dict:
        """More keyword arguments of the actor's :func:`~ccs_ray.decompose.decomposed_forward` for ``acc``'s
        batches."""
        return {}

    def add(self, acc, d: Decomposition, loaded: LoadedShard, batch: slice, fold: int) -> None:
        """Add one batch (images ``batch`` of ``loaded``, decomposed into ``d``) to ``acc``."""
        raise NotImplementedError

    def read_shards(self, uri: str) -> dict[str, dict]:
        """The shard records a saved accumulator holds in its own file, without reading the rest of it: a partial of
        an earlier version (checkpoints now keep them in their shard log,
        :func:`~ccs_ray.passes.partials.partial_shards`)."""
        raise NotImplementedError

    def load(self, uri: str):
        """A saved accumulator."""
        raise NotImplementedError


@dataclass
class PassStats:
    """What a pass did: decode tasks finished (once per shard and preprocessing, not per model), shards
    passed over and shards skipped because saved partials held them (both counted per model), images added,
    seconds."""

    shards_decoded: int = 0
    shards_scanned: int = 0
    shards_skipped: int = 0
    images: int = 0
    seconds: float = 0.0
    decode_share: float | None = None  # measured share of CPU time decoding needs (CPU-only default layouts)
    cpus_per_actor: float = 0.0  # CPUs (and torch threads, rounded) each actor held
    decode_on_actors: bool = False  # JPEGs decoded on the actors' device (decode_on_actors)
