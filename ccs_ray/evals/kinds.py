"""The evaluation kinds of the ``prune`` stage as a registry: :data:`EVAL_KINDS`, one :class:`EvalKind` per
``[evals]`` dataset kind (``classification``, ``video``, ``bias``; the keys and order of
:data:`ccs_ray.evals.datasets.KINDS`).

An entry says, for a dataset of its kind:

- its *text side* (:meth:`EvalKind.text_side`), built once per model on the driver because the text tower is
  never ablated: classification the classifier weights, video the caption embeddings, bias the occupation-prompt
  embeddings with the images' attribute groups;
- the part of it a unit's result depends on (:meth:`EvalKind.unit_text`), which is sent with the unit and is the
  extra part of its configuration fingerprints: classification the classifier weights, the others nothing;
- how a worker encodes one shard (:meth:`EvalKind.encode`) under every ablation configuration at once: the
  payload arrays of its unit file (classification top-5 predictions and labels; video and bias embeddings and
  item ids) and its error rows;
- how the driver turns the results of all the dataset's shards (in shard order) into table rows
  (:meth:`EvalKind.rows`): ``evals`` and ``correctness`` rows (classification), ``evals`` rows (video) or
  ``bias`` rows, one per configuration (and metric, or attribute and occupation).

:func:`plan_datasets` plans every dataset of an ``[evals]`` section (:class:`DatasetPlan`: its kind, resolved
data, shards and text side).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..ablate import Ablation
from ..sources import Shard
from ..spec import EvalsConfig
from ..texts import TextEncoder
from . import datasets as ds
from .maxskew import occupation_max_skew
from .retrieval import pool_frames, retrieval_metrics
from .zeroshot import accuracy_metrics, classifier_weights, top_hits, top_predictions, zeroshot_logits

#: ``images [N, 3, S, S] -> [C, N, D]`` float32 embeddings under each of a worker's C configurations.
Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalRows:
    """Table rows of evaluated datasets: ``evals``, ``bias`` and ``correctness``."""

    evals: list[dict] = field(default_factory=list)
    bias: list[dict] = field(default_factory=list)
    correctness: list[dict] = field(default_factory=list)

    def __iadd__(self, other: EvalRows) -> EvalRows:
        self.evals += other.evals
        self.bias += other.bias
        self.correctness += other.correctness
        return self


def ablation_keys(a: Ablation) -> dict:
    """The columns naming a configuration in every table the prune stage writes."""
    return {"ablation_id": a.ablation_id, "strategy": a.strategy, "seed": a.seed}


class EvalKind:
    """One dataset kind's evaluation (module docstring); subclasses set ``name`` and implement the methods."""

    name: str  # the kind in [evals], unit file paths and error file names

    def text_side(self, model, encoder: TextEncoder, data, inputs: dict) -> Any:
        """What the kind's evaluation reads besides the images, computed once on the driver (under no_grad);
        ``inputs``: what :func:`ccs_ray.evals.datasets.plan_dataset` read besides the data and shards."""
        raise NotImplementedError

    def unit_text(self, text) -> torch.Tensor | None:
        """The part of the text side a unit's result depends on: sent to the worker and fingerprinted."""
        return None

    def encode(self, data, shard: Shard, unit_text: torch.Tensor | None, preprocess,
               embed: Embed) -> tuple[dict[str, np.ndarray], list[dict]]:
        """(payload arrays of the unit file, error rows) of one shard, under every configuration of ``embed``."""
        raise NotImplementedError

    def rows(self, ablations: list[Ablation], data, results: list[dict], text) -> EvalRows:
        """The dataset's table rows from its units' payloads (``results``, in shard order)."""
        raise NotImplementedError


class Classification(EvalKind):
    """Zero-shot classification: top-5 predictions per image, top-1 / top-5 / per-class accuracy, correctness."""

    name = "classification"

    def text_side(self, model, encoder, data, inputs) -> torch.Tensor:
        return classifier_weights(model, data.class_texts, data.templates, encoder)

    def unit_text(self, text: torch.Tensor) -> torch.Tensor:
        return text

    def encode(self, data, shard, unit_text, preprocess, embed):
        assert unit_text is not None  # the classifier weights
        images, labels, errors = ds.load_classification(data, shard, preprocess)
        emb = embed(images)
        top = torch.stack([top_predictions(zeroshot_logits(e, unit_text)) for e in emb]) if len(labels) else \
            torch.zeros(emb.shape[0], 0, min(5, unit_text.shape[1]), dtype=torch.long)
        return dict(top=top.numpy().astype(np.int32), labels=labels.numpy()), errors

    def rows(self, ablations, data, results, text):
        """``evals`` rows and ``correctness`` bits; the images in shard order."""
        top = np.concatenate([r["top"] for r in results], 1)
        labels = torch.from_numpy(np.concatenate([r["labels"] for r in results]))
        if labels.numel() == 0:
            raise ds.DatasetError(f"classification dataset {data.name!r}: no image could be used "
                                  f"(see the errors table)")
        out, n = EvalRows(), int(labels.numel())
        for c, a in enumerate(ablations):
            predictions = torch.from_numpy(top[c]).long()
            for metric, value in accuracy_metrics(predictions, labels, data.classnames).items():
                out.evals.append({**ablation_keys(a), "dataset": data.name, "metric": metric, "value": value, "n": n})
            for metric, hits in top_hits(predictions, labels).items():
                out.correctness.append({**ablation_keys(a), "dataset": data.name, "metric": metric, "n": n,
                                        "bits": np.packbits(hits.numpy().astype(bool), bitorder="little").tobytes()})
        return out


class Video(EvalKind):
    """Text-to-video retrieval: frame embeddings mean-pooled per video, ranked against caption embeddings."""

    name = "video"

    def text_side(self, model, encoder, data, inputs) -> dict[str, torch.Tensor]:
        """Video id -> its caption's embedding."""
        videos, captions = zip(*inputs["captions"], strict=True)
        return dict(zip(videos, encoder(list(captions)), strict=True))

    def encode(self, data, shard, unit_text, preprocess, embed):
        clips, ids, errors = [], [], []
        for video_id in shard.items:
            try:
                clips.append(ds.load_video(data, video_id, preprocess))
                ids.append(video_id)
            except Exception as e:  # noqa: BLE001 - a broken video is an error row, the stage goes on
                errors.append(dict(stage="prune", source=data.source, item=video_id, reason="video",
                                   detail=f"{type(e).__name__}: {e}"[:2000]))
        emb = embed(torch.cat(clips) if clips else torch.zeros(0))
        videos = torch.stack([pool_frames(e, [len(c) for c in clips]) for e in emb]) if clips else emb
        return dict(embeddings=videos.numpy(), items=np.array(ids, dtype=str)), errors

    def rows(self, ablations, data, results, text: dict[str, torch.Tensor]):
        videos = torch.from_numpy(np.concatenate([r["embeddings"] for r in results], 1))
        ids = [str(i) for r in results for i in r["items"]]
        if not ids:
            raise ds.DatasetError(f"video dataset {data.name!r}: no video could be read (see the errors table)")
        texts = torch.stack([text[i] for i in ids])
        return EvalRows(evals=[{**ablation_keys(a), "dataset": data.name, "metric": metric, "value": value,
                                "n": len(ids)}
                               for c, a in enumerate(ablations)
                               for metric, value in retrieval_metrics(texts, videos[c]).items()])


@dataclass(frozen=True)
class OccupationPrompts:
    """The text side of a bias set: prompt embeddings [occupations, templates, D] and, per image, its group of
    each attribute."""

    prompts: torch.Tensor
    attributes: dict[str, dict[str, str]]


class Bias(EvalKind):
    """Social bias: MaxSkew@k of each occupation's top-k images, per attribute."""

    name = "bias"

    def text_side(self, model, encoder, data, inputs) -> OccupationPrompts:
        prompts = encoder([t.format(o) for t in data.templates for o in data.occupations])
        return OccupationPrompts(prompts.reshape(len(data.templates), len(data.occupations), -1).transpose(0, 1),
                                 inputs["attributes"])

    def encode(self, data, shard, unit_text, preprocess, embed):
        loaded = ds.sources.load_shard(shard, preprocess)
        assert isinstance(loaded.images, torch.Tensor)  # open_clip's preprocess gives tensors
        emb = embed(loaded.images)
        return dict(embeddings=emb.numpy(), items=np.array(loaded.items, dtype=str)), loaded.errors

    def rows(self, ablations, data, results, text: OccupationPrompts):
        emb = torch.from_numpy(np.concatenate([r["embeddings"] for r in results], 1))
        items = [str(i) for r in results for i in r["items"]]
        out = EvalRows()
        for attribute in data.attributes:
            keep = [i for i, item in enumerate(items) if attribute in text.attributes.get(item, {})]
            if len(keep) < data.k:
                raise ds.DatasetError(f"bias dataset {data.name!r}: {len(keep)} images with a {attribute!r} value, "
                                      f"fewer than k = {data.k}")
            groups = [text.attributes[items[i]][attribute] for i in keep]
            for c, a in enumerate(ablations):
                for o, occupation in enumerate(data.occupations):
                    skew, group = occupation_max_skew(emb[c, keep], groups, text.prompts[o], data.k, data.combine)
                    out.bias.append({**ablation_keys(a), "dataset": data.name, "attribute": attribute,
                                     "occupation": occupation, "k": data.k, "maxskew": skew, "max_group": group,
                                     "combine": data.combine, "templates": data.templates})
        return out


#: The evaluation of each ``[evals]`` dataset kind, in the order they are evaluated.
EVAL_KINDS: dict[str, EvalKind] = {kind.name: kind for kind in (Classification(), Video(), Bias())}


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset to evaluate: its kind, resolved data, shards (the units) and text side."""

    kind: EvalKind
    data: Any
    shards: list[Shard]
    text: Any


def plan_datasets(evals: EvalsConfig, model, encoder: TextEncoder, planned: dict | None = None) -> list[DatasetPlan]:
    """Every dataset of ``evals``, kind by kind, validated, cut into shards, with its text side (``encoder``: a
    :class:`~ccs_ray.texts.TextEncoder` of ``model``). ``planned``: ``(kind, name) -> ds.plan_dataset``'s result, as
    preflight made it for the run (:attr:`ccs_ray.planning.Plan.datasets`), so that each source is listed once."""
    plans = []
    with torch.no_grad():
        for name, kind in EVAL_KINDS.items():
            for entry in getattr(evals, name):
                data, shards, inputs = (planned or {}).get((name, entry.name)) or ds.plan_dataset(name, entry)
                plans.append(DatasetPlan(kind, data, shards, kind.text_side(model, encoder, data, inputs)))
    return plans
