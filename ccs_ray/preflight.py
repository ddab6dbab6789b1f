"""Preflight: everything a run needs that is knowable without computing, checked at once, in seconds.

``preflight(spec) -> Plan`` runs on the driver before any stage starts (``ccs-ray run``, ``ccs-ray submit``,
:func:`ccs_ray.pipeline.run`) and raises one :class:`PreflightError` that lists **every** problem found,
one line each, naming the key, the value and the fix:

- ``models.keys``: each key resolves to an open_clip config whose image tower we decompose (an unknown
  name lists the closest ones); a pretrained tag exists for that name and its weights are in the local
  cache or the download host answers a bounded probe (:func:`ccs_ray.files.unreachable`); ``NAME@URI`` checkpoints
  exist and are readable; ``models.layers`` are layers of the tower;
- ``data.source`` and every ``[[evals.*]]`` source exist and are listable (the plan counts their images
  and shards); ``spans.pool`` loads or, for ``textspan-general``, is cached or downloadable;
- ``spans.method``: 'data' and 'both' have the scan in the run (or ``--resume``); 'weights' (no scan, no images)
  has no explain stage;
- every LLM judge has ``base_url`` and ``model`` and, unless planning only, its ``api_key_env`` is set;
- ``prune.strategies``: the paper-* ones have published head sets for each model's reference model, inside
  its tower; the CCS ones have the judge stage (and mean ablation, ``prune.mode`` or the single strategy's
  ``prune.single_modes``, the scan) in the run;
- the results root is writable (a probe file is created and removed) and, for ``--resume``, holds the run;
- the cluster has the CPUs and GPUs the scan's and the evals' actor layouts need.

Network probes run concurrently, so the whole check is bounded by one probe's timeout. The returned
:class:`Plan` is what ``--dry-run`` prints: models, layers and heads, images and shards per source, the
stages, the actor layouts and the judge estimate (calls, tokens and cost per judge, with no spans needed:
the number of heads comes from the model config).
"""

from __future__ import annotations

import difflib
import os
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import fsspec

from .errors import UserError
from .files import unreachable, use_storage
from .spec import Spec

if TYPE_CHECKING:
    from .sources.base import Shard

_P = ParamSpec("_P")
_T = TypeVar("_T")


class PreflightError(UserError, ValueError):
    """Problems found before a run started: one line each; nothing was computed or written."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        n = len(problems)
        super().__init__(f"{n} problem{'s' * (n > 1)} found before starting (nothing was computed):\n  "
                         + "\n  ".join(problems))


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

    def to_dict(self) -> dict:
        out = asdict(self)
        out["judge_total"] = {"calls": sum(j.calls for j in self.judges),
                              "cost_usd": None if any(j.cost_usd is None for j in self.judges)
                              else sum(j.cost_usd for j in self.judges)}
        return out

    def __str__(self) -> str:
        lines = [f"plan of {self.spec!r} -> {self.results}", f"  stages: {' -> '.join(self.stages)}",
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


class _Checks:
    """Problems and deferred network probes, collected while the plan is built."""

    def __init__(self):
        self.problems: list[str] = []
        self.probes: list[tuple[Callable[[], str | None], str]] = []

    def run(self, key: str, check: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
        """``check(*args, **kwargs)``, called at once; a user-facing error becomes a problem of ``key`` (returns
        None then)."""
        try:
            return check(*args, **kwargs)
        except (UserError, ValueError, OSError, KeyError) as e:
            text = str(e).replace("\n", " ").strip()
            self.problems.append(text if text.startswith(key) else f"{key}: {text}")
            return None

    def probe(self, check: Callable[[], str | None], problem: str) -> None:
        """Run ``check`` later, concurrently with the other probes; a message it returns is a problem."""
        self.probes.append((check, problem))

    def finish(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.probes))) as pool:
            for (_, problem), why in zip(self.probes, pool.map(lambda p: p[0](), self.probes), strict=True):
                if why:
                    self.problems.append(problem.format(why=why))
        if self.problems:
            raise PreflightError(list(dict.fromkeys(self.problems)))  # one line per problem, however often found


def _weights_source(name: str, tag: str) -> tuple[bool, str]:
    """(cached locally, download URL) of open_clip's pretrained weights ``name/tag``."""
    from open_clip import pretrained

    cfg = pretrained.get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if hub and pretrained.has_hf_hub():
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename or pretrained.HF_WEIGHTS_NAME, pretrained.HF_SAFE_WEIGHTS_NAME]
        cached = any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
        return cached, f"{constants.ENDPOINT}/{repo}/resolve/main/{names[0]}"
    url = cfg.get("url", "")
    return os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))), url


def _check_model(checks: _Checks, key: str, layers: list[int] | None, last_layers: int) -> ModelPlan | None:
    import open_clip

    from .decompose import choose_layers
    from .model_keys import ModelKey
    from .models import supported_models

    where = f"models.keys: {key!r}"
    parsed = checks.run(where, lambda: ModelKey.parse(key))
    if parsed is None:
        return None
    if parsed.name.startswith(("hf-hub:", "local-dir:")):
        if parsed.name.startswith("local-dir:") and not os.path.isdir(parsed.name.split(":", 1)[1]):
            checks.problems.append(f"{where}: folder {parsed.name.split(':', 1)[1]!r} not found")
        return None
    supported = supported_models()
    if parsed.name not in supported:
        close = difflib.get_close_matches(parsed.name, supported, n=4, cutoff=0.6)
        what = ("not a ViT whose heads ccs-ray decomposes" if parsed.name in open_clip.list_models()
                else "unknown model")
        checks.problems.append(f"{where}: {what} {parsed.name!r}; closest: {', '.join(close) or 'none'} "
                               f"(all {len(supported)}: python -c 'import ccs_ray.models as m; "
                               f"print(m.supported_models())')")
        return None
    if parsed.checkpoint:
        assert parsed.weights is not None  # a checkpoint key's weights are its URI
        checks.run(where, _readable, parsed.weights, "checkpoint")
    elif parsed.weights is not None:
        tags = open_clip.list_pretrained_tags_by_model(parsed.name)
        if parsed.weights not in tags:
            close = difflib.get_close_matches(parsed.weights, tags, n=3, cutoff=0.3) or tags[:3]
            checks.problems.append(f"{where}: no pretrained weights {parsed.weights!r} for {parsed.name}; e.g. "
                                   f"{', '.join(close) or 'none'} ({len(tags)} tags: "
                                   f"open_clip.list_pretrained_tags_by_model({parsed.name!r})), or 'none' for "
                                   f"random init")
        else:
            cached, url = _weights_source(parsed.name, parsed.weights)
            if not cached:
                offline = "HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else None
                checks.probe(lambda: offline or unreachable(url),
                             f"{where}: weights are not in the local cache and cannot be downloaded ({{why}}); "
                             f"offline, use '{parsed.name}/none' (random init) or "
                             f"'{parsed.name}@/path/to/checkpoint.pt'")
    config = open_clip.get_model_config(parsed.name)
    vision = config["vision_cfg"]
    n_layers = vision["layers"]
    bad = [layer for layer in layers or [] if layer >= n_layers]
    if bad:
        checks.problems.append(f"models.layers: {bad} out of range for {parsed.name} (layers 0..{n_layers - 1})")
        return None
    chosen = choose_layers(n_layers, layers, last_layers)
    n_heads = vision["width"] // vision.get("head_width", 64)
    return ModelPlan(key, parsed.name, "none" if parsed.weights is None else parsed.weights, chosen, n_heads,
                     len(chosen) * n_heads, config["embed_dim"], n_layers)


def _readable(uri: str, what: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{what} not found: {uri}")
    with fs.open(path, "rb") as f:
        f.read(1)


def _source(key: str, uri: str, shards: Iterable[Shard]) -> SourcePlan | None:
    """What a source holds, its shards counted as they stream (None when it has none)."""
    kind: str | None = None
    images: int | None = 0
    n = 0
    for shard in shards:
        n += 1
        kind = shard.kind
        images = None if images is None or shard.size is None else images + shard.size
    if kind is None:  # no shards
        return None
    return SourcePlan(key, uri, kind, images, n)


def _check_sources(checks: _Checks, spec: Spec, plan: Plan) -> None:
    from .sources import iter_shards

    if {"scan", "explain"} & set(spec.stages):
        source = checks.run("data.source", lambda: _source("data.source", spec.data.source,
                                                           iter_shards(spec.data)))
        if source:
            plan.sources.append(source)
    if "prune" not in spec.stages:
        return
    from .evals import datasets as ds

    for kind in ds.KINDS:
        for i, entry in enumerate(getattr(spec.evals, kind)):
            key = f"evals.{kind}[{i}] {entry.name!r}"
            planned = checks.run(key, ds.plan_dataset, kind, entry)
            if planned and planned[1]:
                shards = planned[1]
                source = _source(key, entry.source or shards[0].uri, shards)
                if source:
                    plan.sources.append(source)


def _check_prune(checks: _Checks, spec: Spec, plan: Plan, resume: bool) -> None:
    """What ``prune.strategies`` read: the paper-* strategies the published sets of each model's reference
    model (heads inside its tower, enough heads for paper-random); the others the judge stage's CCS; mean
    ablation the scan's moments (a new run must compute them; ``--resume`` may have them)."""
    from .ablate import is_paper_strategy, prune_strategies
    from .heads import head_names, parse_head_name
    from .reference import paper_random_layers, paper_reference, reference_key

    prune = spec.prune
    paper = [s for s in prune.strategies if is_paper_strategy(s)]
    ccs = [s for s in prune.strategies if s != "explicit" and not is_paper_strategy(s)]
    single_mean = "single" in prune.strategies and "mean" in prune.single_modes
    for stage, needs, what, fix in (
            ("judge", ccs, f"strategies {ccs} rank heads by CCS", "or use only paper-* / explicit strategies"),
            ("scan", prune.mode == "mean", "prune.mode = 'mean' uses the scan's mean head outputs",
             "or prune.mode = 'zero'"),
            ("scan", single_mean and prune.mode != "mean",
             f"prune.single_modes = {prune.single_modes} ablates heads by the scan's mean head outputs",
             "or prune.single_modes = ['zero']")):
        if needs and stage not in spec.stages and not resume:
            checks.problems.append(f"prune: {what}, but stages {spec.stages} do not include {stage!r}: add it {fix}")
    if not paper:
        return
    published = paper_reference().heads
    for m in plan.models:
        ref = reference_key(prune.reference_model or m.key)
        if ref not in published:
            where = "prune.reference_model" if prune.reference_model else f"models.keys: {m.key!r}"
            same = [k for k in published if k.split("/")[0] == m.name]
            checks.problems.append(
                f"{where}: the paper published no head sets for {ref!r}, which {', '.join(paper)} prune; set "
                f"prune.reference_model to " + (f"{same[0]!r} (the same architecture)" if same else
                                                f"one of {', '.join(published)}"))
            continue
        # the configurations the prune stage will build (one seed shows the pool is large enough)
        pool = head_names(paper_random_layers(prune.paper_random_pool, ref, m.layers, m.tower_layers), m.n_heads)
        ablations = checks.run(f"prune.paper_random_pool for {m.key}", prune_strategies,
                               [], paper, seeds=1, reference=published[ref], paper_random_pool=pool)
        heads = {h for a in ablations or [] for h in a.heads}
        heads |= set(published[ref].high) if "paper-random" in paper else set()  # the set it sizes by and avoids
        outside = sorted(heads - set(head_names(range(m.tower_layers), m.n_heads)), key=parse_head_name)
        if outside:
            checks.problems.append(f"prune.reference_model: published heads of {ref} {outside} lie outside the image "
                                   f"tower of {m.key} ({m.tower_layers} layers x {m.n_heads} heads)")


def _check_results(checks: _Checks, spec: Spec, resume: bool, run_id: str | None, dry_run: bool) -> None:
    root = spec.results_root
    fs, path = fsspec.core.url_to_fs(root)
    existing = path if fs.exists(path) else next((p for p in _parents(path) if fs.exists(p)), None)
    local = "file" in fs.protocol or fs.protocol == "local"
    if local and (existing is None or not os.access(existing, os.W_OK)):
        checks.problems.append(f"results.root: {root!r} is not writable ({existing or '/'} refuses writes); pass "
                               f"--results with a writable folder or URI")
    elif not (dry_run and existing != path):  # a plan writes nothing, not even the root

        def write_probe():  # create, write and delete a file; folders made for it are removed again
            probe = f"{path.rstrip('/')}/.ccs-ray-probe-{uuid.uuid4().hex}"
            try:
                fs.makedirs(path, exist_ok=True)
                with fs.open(probe, "wb") as f:
                    f.write(b"ccs-ray")
            finally:
                if fs.exists(probe):
                    fs.rm(probe)
                for made in [path, *_parents(path)] if local else []:
                    if made == existing or not fs.exists(made):
                        break
                    fs.rmdir(made)

        checks.run("results.root", lambda: _not_writable(write_probe, root))
    if resume:
        from .pipeline import resumable_run

        checks.run("--resume", lambda: resumable_run(spec, root, run_id))


def _parents(path: str):
    while path not in ("", "/"):
        path = os.path.dirname(path.rstrip("/")) or "/"
        yield path


def _not_writable(write: Callable[[], None], root: str) -> None:
    try:
        write()
    except OSError as e:
        raise OSError(f"{root!r} is not writable ({e.strerror or e}); pass --results with a writable folder or URI, "
                      f"or free space there") from None


def _check_judges(checks: _Checks, spec: Spec, plan: Plan, dry_run: bool, pool_ok: bool) -> None:
    from .judges.heads import HeadSpans
    from .judges.pool import api_key_of, endpoint_of, planned_requests
    from .judges.prompts import label_request
    from .stages.judge import judges_of

    cfg = spec.judge
    endpoints = []
    for i, judge in enumerate(cfg.judges or [cfg]):
        where = f"judge.judges[{i}]" if cfg.judges else "judge"
        if judge.kind == "openai":
            endpoints.append(checks.run(where, endpoint_of, judge, cfg))
            if not dry_run:
                checks.run(where, api_key_of, judge)
    judges = checks.run("judge", lambda: judges_of(cfg)) if None not in endpoints else None
    if judges is None:
        return
    placeholder = _placeholder_span(spec, pool_ok)
    m = spec.spans.m
    spans = {"paper": [(r, placeholder) for r in range(1, m + 1)]}
    if cfg.heldout:
        spans["heldout"] = [(r, placeholder) for r in range(m + 1, 2 * m + 1)]
    head = HeadSpans(0, 0, "L0.H0", spans)
    per_head = [label_request(head.texts("paper"))] + [r for _, _, r in planned_requests(head, "concept", cfg.mode)]
    heads = sum(model.heads for model in plan.models)
    prompt = heads * sum(r.estimated_tokens()[0] for r in per_head)
    completion = heads * sum(r.estimated_tokens()[1] for r in per_head)
    calls = heads * len(per_head)
    for name, judge in judges:
        if judge.kind == "offline":
            plan.judges.append(JudgePlan(name, "offline", 0, 0, 0, 0.0))
            continue
        priced = judge.input_price or judge.output_price
        cost = endpoint_of(judge, cfg).cost(prompt, completion) if priced else None
        plan.judges.append(JudgePlan(name, judge.kind, calls, prompt, completion, cost))


def _placeholder_span(spec: Spec, pool_ok: bool) -> str:
    """A pool text of median length, standing in for spans that do not exist yet (judge estimates)."""
    from .pools import load_pool

    if not pool_ok:
        return "a photo of a concept"
    texts = sorted(load_pool(spec.spans.pool), key=len)
    return texts[len(texts) // 2]


def _resources() -> dict:
    """The cluster's resources: Ray's when connected (or ``RAY_ADDRESS`` is set), else this machine's."""
    import ray

    from .cluster import ensure_ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        ensure_ray()
        return dict(ray.cluster_resources())
    import torch
    from ray._private.utils import get_num_cpus

    return {"CPU": float(get_num_cpus()), "GPU": float(torch.cuda.device_count())}


def _check_layouts(checks: _Checks, spec: Spec, plan: Plan) -> None:
    import ray

    from .cluster import actor_layout, node_cpus

    n = len(spec.models.keys)
    nodes = node_cpus() if ray.is_initialized() else None
    uses = {"scan": {"scan", "explain"}, "prune": {"prune"}}  # explain runs on the scan's actors
    # the scan decodes in separate tasks (its share measured when it starts); prune's actors decode themselves
    for stage, section, n_models, share in (("scan", spec.scan, n, None), ("prune", spec.evals, 1, 0.0)):
        if uses[stage] & set(spec.stages):
            key = "evals" if stage == "prune" else stage
            layout = checks.run(f"{key}.actors", actor_layout, section, n_models, plan.resources, share, key, nodes)
            if layout is not None:
                plan.layouts[stage] = layout._asdict()


def preflight(spec: Spec, resume: bool = False, run_id: str | None = None, dry_run: bool = False,
              cluster: bool = True) -> Plan:
    """Check everything ``spec`` needs before computing anything; returns the run's :class:`Plan`.

    ``dry_run``: plan only (API keys need not be set; nothing is created under the results root).
    ``cluster``: also check the Ray cluster's resources (``ccs-ray submit`` leaves that to the job).
    Raises :class:`PreflightError` listing every problem found.
    """
    use_storage(spec.storage)
    checks = _Checks()
    resources = checks.run("cluster (RAY_ADDRESS)", _resources) if cluster else {}
    plan = Plan(spec.name, spec.results_root, list(spec.stages), resources or {})
    for key in spec.models.keys:
        model = _check_model(checks, key, spec.models.layers, spec.models.last_layers)
        if model is not None:
            plan.models.append(model)
    _check_sources(checks, spec, plan)
    pool_ok = False
    if "spans" in spec.stages:
        from .pools import check_pool

        def pool_loads() -> bool:
            check_pool(spec.spans.pool)
            return True

        pool_ok = checks.run("spans.pool", pool_loads) is not None
    if "explain" in spec.stages and "spans" not in spec.stages and not resume:
        checks.problems.append(f"explain: ranks images along each head's span directions, but stages {spec.stages} "
                               f"do not include 'spans': add it (or --resume a run whose spans are done)")
    method = spec.spans.method
    if "spans" in spec.stages and method != "weights" and "scan" not in spec.stages and not resume:
        checks.problems.append(f"spans.method = {method!r} finds spans from the scan's moments, but stages "
                               f"{spec.stages} do not include 'scan': add it, or set spans.method = 'weights' (no "
                               f"images needed), or --resume a run whose scan is done")
    if "explain" in spec.stages and method == "weights":
        checks.problems.append("spans.method = 'weights': explain ranks images along the data spans' directions, and "
                               "this run finds none: set spans.method = 'both' (or 'data'), or drop 'explain'")
    if "judge" in spec.stages:
        _check_judges(checks, spec, plan, dry_run, pool_ok)
    if "prune" in spec.stages:
        _check_prune(checks, spec, plan, resume)
    _check_results(checks, spec, resume, run_id, dry_run)
    if cluster and resources is not None:
        _check_layouts(checks, spec, plan)
    checks.finish()
    return plan
