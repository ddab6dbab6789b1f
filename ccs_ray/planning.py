"""What a run will do, as preflight planned it: models and layers, sources and their shards, actor layouts, the
judges' estimate and the run id. ``str(plan)`` is what ``--dry-run`` prints, :meth:`Plan.to_dict` its JSON; the
indexed shard plans and planned eval datasets are what the stages run (a source is listed once per run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .shard_plan import ShardPlan


@dataclass
class ModelPlan:
    """A model key as the run will load it: weights, the analysed layers and their heads."""

    key: str
    name: str
    weights: str  # pretrained tag, "none" (random init) or the checkpoint URI
    layers: list[int]
    n_heads: int  # heads per layer
    heads: int  # analysed heads: len(layers) x n_heads
    embed_dim: int
    tower_layers: int  # layers of the image tower


@dataclass
class SourcePlan:
    """A source the run reads: where, what kind, how many images (None: counted while reading) and shards."""

    key: str  # the spec key, e.g. "data.source" or "evals.bias[0]"
    uri: str
    kind: str
    images: int | None
    shards: int


@dataclass
class JudgePlan:
    """What one judge would be asked for every analysed head, before any answer cache."""

    name: str
    kind: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: the judge has no prices (judge.input_price / output_price)


@dataclass
class Plan:
    """What a run will do; ``str(plan)`` is the human form, :meth:`to_dict` the JSON one."""

    spec: str
    results: str
    stages: list[str]
    resources: dict
    models: list[ModelPlan] = field(default_factory=list)
    sources: list[SourcePlan] = field(default_factory=list)
    layouts: dict[str, dict] = field(default_factory=dict)  # stage -> actors, cpus_per_actor, gpus_per_actor
    judges: list[JudgePlan] = field(default_factory=list)
    run_id: str | None = None  # the run to start or resume (None until the results root is checked)
    #: What the stages run, not printed: source key (``"data.source"``) -> its indexed shard plan (the source's one
    #: listing in the run); ``(kind, dataset name)`` -> its planned eval dataset (``evals.datasets.plan_dataset``).
    shard_plans: dict[str, ShardPlan] = field(default_factory=dict, repr=False)
    datasets: dict[tuple[str, str], tuple] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        out = asdict(replace(self, shard_plans={}, datasets={}))
        del out["shard_plans"], out["datasets"]
        out["judge_total"] = {"calls": sum(j.calls for j in self.judges),
                              "cost_usd": None if any(j.cost_usd is None for j in self.judges)
                              else sum(j.cost_usd for j in self.judges)}
        return out

    def __str__(self) -> str:
        lines = [f"plan of {self.spec!r} -> {self.results}" + (f", run {self.run_id}" if self.run_id else ""),
                 f"  stages: {' -> '.join(self.stages)}",
                 f"  cluster: {self.resources.get('CPU', 0):g} CPUs, {self.resources.get('GPU', 0):g} GPUs"]
        for m in self.models:
            lines.append(f"  model {m.key}: weights {m.weights}, layers {m.layers} x {m.n_heads} heads = "
                         f"{m.heads} heads")
        for s in self.sources:
            unit = "videos" if s.kind == "video" else "images"
            images = f"{unit} counted while reading" if s.images is None else f"{s.images} {unit}"
            lines.append(f"  {s.key}: {s.uri} ({s.kind}): {images} in {s.shards} shard{'s' * (s.shards > 1)}")
        for stage, layout in self.layouts.items():
            lines.append(f"  {stage} actors: {layout['actors']} per model, {layout['cpus_per_actor']:g} CPU and "
                         f"{layout['gpus_per_actor']:g} GPU each")
        for j in self.judges:
            cost = "free (offline heuristic)" if j.kind == "offline" else (
                "cost unknown (set judge.input_price/output_price)" if j.cost_usd is None else f"${j.cost_usd:.4f}")
            lines.append(f"  judge {j.name}: {j.calls} calls, ~{j.prompt_tokens} prompt + {j.completion_tokens} "
                         f"completion tokens, {cost}")
        if self.judges:
            total = self.to_dict()["judge_total"]
            cost = "unknown" if total["cost_usd"] is None else f"${total['cost_usd']:.4f}"
            lines.append(f"  judges in all: {total['calls']} calls, cost {cost} (before cached answers)")
        return "\n".join(lines)
