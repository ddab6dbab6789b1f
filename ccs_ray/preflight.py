"""Preflight: everything a run needs that is knowable without computing, checked at once, in seconds.

``preflight(spec) -> Plan`` runs on the driver before any stage starts (``ccs-ray run``, ``ccs-ray submit``,
:func:`ccs_ray.pipeline.run`) and raises one :class:`PreflightError` that lists every problem of a phase, one line
each, naming the key, the value and the fix. Two phases:

1. Without the engine (no torch, open_clip, scipy or Ray; about a second): every URI the spec names (data and
   eval sources, results root, judge cache, text pool, checkpoints) is no shipped placeholder (``YOUR-...``, one
   line each naming the key and what to set it to) and its scheme's fsspec package is installed (one line per
   scheme with the ``pip install`` that adds it); ``models.keys`` resolve to model
   configs whose image tower we decompose (:mod:`ccs_ray.towers`; an unknown name lists the closest ones),
   ``models.layers`` are layers of the tower; the ``explicit`` strategy has ``prune.heads`` lists whose heads lie in
   every model's tower (and, for ``prune.mode = "mean"``, its decomposed layers), the heads the prune stage would
   refuse; each enabled stage's needs are in the run, or done in the resumed
   run (:func:`ccs_ray.stages.contract.unmet_needs`); every LLM judge has ``base_url`` and ``model`` and, unless
   planning only, its ``api_key_env`` is set (:mod:`ccs_ray.judges.config`); ``spans.pool`` loads or, for
   ``textspan-general``, is cached or downloadable; the results root is writable (a probe file is created and
   removed) and the run resolves (:func:`ccs_ray.runs.resolve_run`: for ``--resume``, the run exists with the
   same result settings). Problems here are reported without going on (:data:`ENGINE_CHECKS` names the rest).
2. The environment the engine reads: a pretrained tag exists for each model and its weights are in the local
   cache or the download host answers a bounded probe (:func:`ccs_ray.files.unreachable`), ``NAME@URI``
   checkpoints are readable; ``data.source`` and every ``[[evals.*]]`` source exist and are listable (the plan
   counts their images and shards; a tar source's first tar opens as one); the paper-* strategies have published
   head sets for each model's reference model, inside its tower; a ``RAY_ADDRESS`` cluster accepts a connection
   within :data:`ccs_ray.cluster.CONNECT_TIMEOUT_S` (``ray.init`` would retry for minutes); on a cluster of several
   alive nodes the results root is not a local folder unless ``results.shared`` declares it mounted on every node
   (:func:`check_shared_root`); the cluster has the CPUs and GPUs the scan's and the evals' actor layouts need.

Network probes run concurrently, so each phase is bounded by one probe's timeout. With ``progress`` on a terminal,
each group of checks says what it checks, with its elapsed seconds (:class:`ccs_ray.progress.Steps`). The returned
:class:`Plan` is
what ``--dry-run`` prints: models, layers and heads, images and shards per source, the stages, the actor layouts,
the judge estimate (calls, tokens and cost per judge, with no spans needed: the number of heads comes from the
model config) and the run it starts or resumes.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import fsspec
from fsspec.registry import known_implementations

from .errors import UserError
from .files import is_local, unreachable, use_storage
from .model_keys import ModelKey
from .planning import JudgePlan, ModelPlan, Plan, SourcePlan
from .progress import Steps
from .runs import RUN_SCOPE, RunState, resolve_run
from .spec import Spec
from .stages.contract import BY_NAME, unmet_needs

if TYPE_CHECKING:
    from .sources.base import Shard

_P = ParamSpec("_P")
_T = TypeVar("_T")


class PreflightError(UserError, ValueError):
    """Problems found before a run started: one line each; nothing was computed or written."""

    def __init__(self, problems: list[str], later: str = ""):
        self.problems = problems
        n = len(problems)
        super().__init__(f"{n} problem{'s' * (n > 1)} found before starting (nothing was computed"
                         f"{'; ' + later + ' once they are fixed' if later else ''}):\n  " + "\n  ".join(problems))


#: What the second phase of :func:`preflight` checks, named when the first found problems.
ENGINE_CHECKS = "weights, sources, datasets, published head sets and the cluster are checked"


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
        except (UserError, ValueError, OSError, KeyError, ImportError) as e:
            text = str(e).replace("\n", " ").strip()
            self.problems.append(text if text.startswith(key) else f"{key}: {text}")
            return None

    def probe(self, check: Callable[[], str | None], problem: str) -> None:
        """Run ``check`` later, concurrently with the other probes; a message it returns is a problem."""
        self.probes.append((check, problem))

    def finish(self, later: str = "") -> None:
        """Run the probes; a :class:`PreflightError` of every problem found (``later``: what is still to check)."""
        with ThreadPoolExecutor(max(1, len(self.probes))) as pool:
            for (_, problem), why in zip(self.probes, pool.map(lambda p: p[0](), self.probes), strict=True):
                if why:
                    self.problems.append(problem.format(why=why))
        self.probes = []
        if self.problems:
            raise PreflightError(list(dict.fromkeys(self.problems)), later)  # one line per problem, however often


#: What marks a URI of a shipped spec that the user has to replace (``s3://YOUR-BUCKET/...``).
PLACEHOLDER = "YOUR-"
#: fsspec packages that an extra of ccs-ray installs: ``pip install "ccs-ray[EXTRA]"``.
EXTRAS = {"s3fs": "s3", "gcsfs": "gcs"}


def _spec_uris(spec: Spec) -> list[tuple[str, str, str]]:
    """(key, URI, what to set it to) of every URI the run reads or writes, for the stages it runs."""
    stages = set(spec.stages)
    uris = [("results.root", spec.results_root, "a writable folder or URI (--results URI)")]
    if {"scan", "explain"} & stages:
        uris.append(("data.source", spec.data.source,
                     "your images: a folder, tar shards, parquet or a manifest (--set data.source=URI)"))
    if "spans" in stages and "://" in spec.spans.pool:
        uris.append(("spans.pool", spec.spans.pool, "a text file of descriptions, or a pool alias"))
    if "judge" in stages and spec.judge.cache:
        uris.append(("judge.cache", spec.judge.cache, "a writable folder or URI, or drop it"))
    if "prune" in stages:
        uris.append(("evals.data_root", spec.evals.data_root or "",
                     "the folder holding the datasets as their releases unpack (--set evals.data_root=PATH)"))
        for kind in ("classification", "video", "bias"):
            for i, entry in enumerate(getattr(spec.evals, kind)):
                uris.append((f"evals.{kind}[{i}].source", entry.source, f"your copy of {entry.name}"))
                captions = getattr(entry, "captions", None)
                if captions and "://" in captions:
                    uris.append((f"evals.{kind}[{i}].captions", captions, f"the captions of {entry.name}"))
    for key in spec.models.keys:
        parsed = ModelKey.parse(key) if "@" in key else None
        if parsed is not None and parsed.checkpoint and parsed.weights:
            uris.append((f"models.keys: {key!r}", parsed.weights, "your checkpoint's path or URI"))
    return [(key, uri, what) for key, uri, what in uris if uri]


def _missing_package(uri: str) -> tuple[str, str] | None:
    """(scheme, how to install its fsspec package) when a scheme of ``uri`` (``a::b://...`` chains too) needs a
    package that is not installed, else None."""
    for part in uri.split("::"):
        scheme = part.split("://", 1)[0] if "://" in part else "file"
        impl = known_implementations.get(scheme)
        if impl is None:  # ours (probe://, torchvision://) or registered at run time
            continue
        package = impl["class"].split(".", 1)[0]
        if importlib.util.find_spec(package) is None:
            extra = EXTRAS.get(package)
            return scheme, f'pip install "ccs-ray[{extra}]"' if extra else f"{impl['err']} (pip install {package})"
    return None


def _check_uris(checks: _Checks, spec: Spec) -> set[str]:
    """Shipped placeholders (one problem each) and schemes whose package is missing (one problem per scheme);
    returns the keys whose URI cannot be used, which the later checks skip."""
    unusable: set[str] = set()
    missing: dict[str, tuple[str, list[str]]] = {}  # scheme -> (how to install, keys)
    root = spec.evals.data_root or ""
    for key, uri, what in _spec_uris(spec):
        if PLACEHOLDER in uri:
            under_root = key != "evals.data_root" and PLACEHOLDER in root and uri.startswith(root)
            if not under_root:  # a source under a placeholder evals.data_root: that key's one problem says it
                checks.problems.append(f"{key}: {uri} is a placeholder: set it to {what}")
            unusable.add(key)
        gap = _missing_package(uri)
        if gap is not None:
            missing.setdefault(gap[0], (gap[1], []))[1].append(key)
            unusable.add(key)
    for scheme, (install, keys) in missing.items():
        more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
        checks.problems.append(f"{scheme}:// needs {install} (used by {keys[0]}{more})")
    return unusable


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
    """The spec phase of a model key: it parses, names a tower we decompose (from the configs, no open_clip; a
    ``local-dir:`` folder's from its config, whose tower the environment phase checks) and ``models.layers`` are
    its layers. The weights are checked in the environment phase (:func:`_check_weights`)."""
    from .model_keys import folder_config
    from .towers import choose_layers, model_names, supported_models, tower_config, tower_of

    where = f"models.keys: {key!r}"
    parsed = checks.run(where, lambda: ModelKey.parse(key))
    if parsed is None or parsed.name.startswith("hf-hub:"):
        return None
    supported = supported_models()
    if parsed.folder is not None:
        cfg = checks.run(where, folder_config, parsed.folder)
        if cfg is None:
            return None
        vision = cfg["vision_cfg"]
        if not isinstance(vision.get("layers"), int):
            checks.problems.append(f"{where}: the image tower of {parsed.folder} is not a ViT whose heads ccs-ray "
                                   f"decomposes")
            return None
        tower = tower_of(cfg)
    elif parsed.name not in supported:
        close = difflib.get_close_matches(parsed.name, supported, n=4, cutoff=0.6)
        what = "not a ViT whose heads ccs-ray decomposes" if parsed.name in model_names() else "unknown model"
        checks.problems.append(f"{where}: {what} {parsed.name!r}; closest: {', '.join(close) or 'none'} "
                               f"(all {len(supported)}: python -c 'import ccs_ray.models as m; "
                               f"print(m.supported_models())')")
        return None
    else:
        tower = tower_config(parsed.name)
    bad = [layer for layer in layers or [] if layer >= tower.layers]
    if bad:
        checks.problems.append(f"models.layers: {bad} out of range for {parsed.name} (layers 0..{tower.layers - 1})")
        return None
    chosen = checks.run("models.layers", choose_layers, tower.layers, layers, last_layers)
    if chosen is None:
        return None
    weights = parsed.folder or ("none" if parsed.weights is None else parsed.weights)
    return ModelPlan(key, parsed.name, weights, chosen, tower.n_heads,
                     len(chosen) * tower.n_heads, tower.embed_dim, tower.layers)


def _check_weights(checks: _Checks, model: ModelPlan) -> None:
    """The environment phase of a model: a local checkpoint or ``local-dir:`` folder holds weights that fit the
    architecture (:mod:`ccs_ray.weights`, reading shapes only; a remote checkpoint is readable); a folder's tower is
    one we decompose; a pretrained tag exists for the model and its weights are in the local cache or the download
    host answers a bounded probe."""
    import open_clip

    from .models import check_supported
    from .weights import architecture, check_weights, folder_weights, local_path

    where = f"models.keys: {model.key!r}"
    parsed = ModelKey.parse(model.key)
    if parsed.checkpoint:
        assert parsed.weights is not None  # a checkpoint key's weights are its URI
        path = local_path(parsed.weights)
        if path is None:  # fetched and checked when the run loads the model
            checks.run(where, _readable, parsed.weights, "checkpoint")
        else:
            checks.run(where, check_weights, path, parsed.name)
    elif parsed.folder is not None:
        folder = parsed.folder
        if checks.run(where, lambda: check_supported(architecture(parsed.name), model.key)) is not None:
            checks.run(where, lambda: check_weights(folder_weights(folder), parsed.name))
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


def _readable(uri: str, what: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{what} not found: {uri}")
    with fs.open(path, "rb") as f:
        f.read(1)


def _source(key: str, uri: str, shards: Iterable[Shard]) -> SourcePlan | None:
    """What an eval source holds, its shards counted as they stream (None when it has none)."""
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


def _check_sources(checks: _Checks, spec: Spec, plan: Plan, steps: Steps) -> None:
    """Every source the run reads is listed (once: the scan and explain pass run the indexed plan) and counted."""
    from .shard_plan import ShardPlan

    if {"scan", "explain"} & set(spec.stages):
        steps.next(f"checking the data source {spec.data.source} ...")
        shards = checks.run("data.source", lambda: ShardPlan(spec.data).index())
        if shards:  # counted as it was indexed: the spool is not read again
            plan.shard_plans["data.source"] = shards
            plan.sources.append(SourcePlan("data.source", spec.data.source, shards.data.kind, shards.images,
                                           len(shards)))
    if "prune" not in spec.stages:
        return
    from .evals import datasets as ds

    for kind in ds.KINDS:
        for i, entry in enumerate(getattr(spec.evals, kind)):
            key = f"evals.{kind}[{i}] {entry.name!r}"
            steps.next(f"checking the {kind} dataset {entry.name} ...")
            planned = checks.run(key, ds.plan_dataset, kind, entry)
            if planned:
                plan.datasets[kind, entry.name] = planned
            if planned and planned[1]:
                shards = planned[1]
                source = _source(key, entry.source or shards[0].uri, shards)
                if source:
                    plan.sources.append(source)


def _check_prune(checks: _Checks, spec: Spec, plan: Plan) -> None:
    """What the paper-* strategies read: the published sets of each model's reference model (heads inside its
    tower, enough heads for paper-random). What the other strategies read is a stage need (:mod:`.stages.contract`)."""
    from .ablate import prune_strategies
    from .choices import is_paper_strategy
    from .heads import head_names, parse_head_name
    from .reference import paper_random_layers, paper_reference, reference_key

    prune = spec.prune
    paper = [s for s in prune.strategies if is_paper_strategy(s)]
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


def _check_explicit(checks: _Checks, spec: Spec, models: list[ModelPlan]) -> None:
    """The ``explicit`` strategy's lists (``prune.heads``, spelled right: :class:`~ccs_ray.spec.PruneConfig`): there is
    one, and each head lies in every model's image tower and, for ``prune.mode = "mean"``, in its decomposed layers
    (whose mean head outputs the scan measures): what the prune stage would refuse after the stages before it."""
    from .heads import parse_head_name

    prune = spec.prune
    if "prune" not in spec.stages or "explicit" not in prune.strategies:
        return
    if not prune.heads:
        checks.problems.append("prune.strategies: 'explicit' prunes the lists of prune.heads, which names none; add "
                               "one (prune.heads = { mine = [\"L11.H5\"] }) or drop 'explicit'")
    for m in models:
        for name, heads in prune.heads.items():
            where = f"prune.heads.{name}"
            parsed = [(h, *parse_head_name(h)) for h in heads]
            outside = [h for h, layer, head in parsed if layer >= m.tower_layers or head >= m.n_heads]
            if outside:
                checks.problems.append(f"{where}: {', '.join(outside)} outside the image tower of {m.key} (layers "
                                       f"0..{m.tower_layers - 1}, heads 0..{m.n_heads - 1})")
            elif prune.mode == "mean" and (missed := [h for h, layer, _ in parsed if layer not in m.layers]):
                checks.problems.append(f"{where}: {', '.join(missed)} outside the layers {m.key} decomposes "
                                       f"({m.layers}), whose mean head outputs prune.mode = 'mean' needs; widen "
                                       f"models.layers or use prune.mode = 'zero'")


def check_shared_root(root: str, shared: bool, nodes: int) -> None:
    """A UserError when the results ``root`` is a folder of one machine on a cluster of ``nodes`` alive nodes and
    the spec does not declare it shared (``results.shared``): each node's actors would write their part to their
    own disk, and the run would not find them."""
    if nodes > 1 and not shared and is_local(fsspec.core.url_to_fs(root)[0]):
        raise UserError(f"results.root: {root!r} is a folder of one machine, but the cluster has {nodes} nodes, each "
                        f"of which would write its part to its own disk; pass --results with a URI every node "
                        f"reaches (s3://..., gs://...), or set results.shared = true if it is a file system every "
                        f"node mounts at the same path (NFS, Lustre)")


def _check_results(checks: _Checks, spec: Spec, resume: bool, run_id: str | None, dry_run: bool) -> RunState | None:
    """The results root is writable; the run the command works in (:func:`~ccs_ray.runs.resolve_run`), or None
    when it cannot be resolved (a problem says why)."""
    root = spec.results_root
    fs, path = fsspec.core.url_to_fs(root)
    existing = path if fs.exists(path) else next((p for p in _parents(path) if fs.exists(p)), None)
    local = is_local(fs)
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
    return checks.run("--resume" if resume else "--run-id", resolve_run, spec, resume, run_id)


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


def _check_judges(checks: _Checks, spec: Spec, dry_run: bool) -> list | None:
    """The judges' names, endpoints and (unless planning only) API keys; (name, config) of each, or None."""
    from .judges.config import api_key_of, check_endpoint, judges_of

    cfg = spec.judge
    endpoints = []
    for i, judge in enumerate(cfg.judges or [cfg]):
        where = f"judge.judges[{i}]" if cfg.judges else "judge"
        if judge.kind == "openai":
            endpoints.append(checks.run(where, check_endpoint, judge))
            if not dry_run:
                checks.run(where, api_key_of, judge)
    return checks.run("judge", lambda: judges_of(cfg)) if None not in endpoints else None


def _estimate_judges(spec: Spec, plan: Plan, judges: list, pool_ok: bool) -> None:
    """Each judge's calls, tokens and cost for every analysed head (before any answer cache)."""
    from .judges.headspans import HeadSpans
    from .judges.pool import endpoint_of, planned_requests
    from .judges.prompts import label_request

    cfg = spec.judge
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


def _ray_connected() -> bool:
    import ray

    return ray.is_initialized()


def check_nodes_reach_root(spec: Spec) -> None:
    """:func:`check_shared_root` on the connected cluster's alive nodes."""
    from .cluster import alive_nodes

    if _ray_connected():
        check_shared_root(spec.results_root, spec.results.shared, len(alive_nodes()))


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


def _check_stages(checks: _Checks, spec: Spec, state: RunState | None, resume: bool) -> None:
    """Each enabled stage's needs (:func:`~ccs_ray.stages.contract.unmet_needs`): in the spec's stages or, with
    ``--resume``, done in the resumed run ``state`` (None: it could not be resolved, another problem says why)."""

    def done(stage: str) -> bool:
        if not resume:
            return False
        if state is None:
            return True
        scopes = spec.models.keys if BY_NAME[stage].per_model else [RUN_SCOPE]
        return all(state.done(stage, scope) for scope in scopes)

    checks.problems += unmet_needs(spec, done)


def preflight(spec: Spec, resume: bool = False, run_id: str | None = None, dry_run: bool = False,
              cluster: bool = True, progress: bool = False) -> Plan:
    """Check everything ``spec`` needs before computing anything; returns the run's :class:`Plan`, whose
    ``run_id`` is the run to work in (resolved once, here: :func:`~ccs_ray.runs.resolve_run`).

    Two phases. The first loads no torch, open_clip, scipy or Ray and takes about a second: model keys and
    towers (from the configs), layers, what each stage needs (:mod:`~ccs_ray.stages.contract`), the judges'
    endpoints and keys, the text pool, the results root and the run. Its problems are reported at once, without
    loading the engine. The second checks weights, sources and datasets, the published head sets and the cluster,
    and estimates the judges' calls. ``dry_run``: plan only (API keys need not be set; nothing is created under the
    results root). ``cluster``: also check the Ray cluster's resources (``ccs-ray submit`` leaves that to the job).
    ``progress``: say what each group of checks checks, on a terminal (:class:`~ccs_ray.progress.Steps`).
    Raises :class:`PreflightError` listing every problem of the phase that found any.
    """
    with Steps(progress) as steps:
        return _preflight(spec, resume, run_id, dry_run, cluster, steps)


def _preflight(spec: Spec, resume: bool, run_id: str | None, dry_run: bool, cluster: bool, steps: Steps) -> Plan:
    """:func:`preflight`, each group of checks a step of ``steps``."""
    use_storage(spec.storage)
    checks = _Checks()
    plan = Plan(spec.name, spec.results_root, list(spec.stages), {})
    steps.next(f"checking the spec {spec.name}: URIs, models, stages, text pool, judges and results root ...")
    unusable = _check_uris(checks, spec)
    for key in spec.models.keys:
        model = _check_model(checks, key, spec.models.layers, spec.models.last_layers)
        if model is not None:
            plan.models.append(model)
    pool_ok = False
    if "spans" in spec.stages and "spans.pool" not in unusable:
        from .pools import check_pool

        def pool_loads() -> bool:
            check_pool(spec.spans.pool)
            return True

        pool_ok = checks.run("spans.pool", pool_loads) is not None
    judges = _check_judges(checks, spec, dry_run) if "judge" in spec.stages else None
    state = _check_results(checks, spec, resume, run_id, dry_run) if "results.root" not in unusable else None
    plan.run_id = state.run_id if state is not None else None
    _check_stages(checks, spec, state, resume)
    _check_explicit(checks, spec, plan.models)
    checks.finish(ENGINE_CHECKS)
    steps.next(f"checking the weights of {len(plan.models)} model{'s' * (len(plan.models) > 1)} ...")
    for model in plan.models:
        _check_weights(checks, model)
    address = os.environ.get("RAY_ADDRESS", "") if cluster else ""
    if address and not _ray_connected():
        steps.next(f"checking that a Ray cluster answers at {address} ...")
        from .cluster import check_address

        known = len(checks.problems)
        checks.run("RAY_ADDRESS", check_address, address)
        cluster = len(checks.problems) == known  # else ray.init would hang
    if cluster:
        steps.next("checking the cluster's resources ...")
        plan.resources = checks.run("cluster (RAY_ADDRESS)", _resources) or {}
        if plan.resources:
            checks.run("results.root", check_nodes_reach_root, spec)
    _check_sources(checks, spec, plan, steps)
    if judges is not None:
        steps.next("estimating the judges' calls and cost ...")
        _estimate_judges(spec, plan, judges, pool_ok)
    if "prune" in spec.stages:
        steps.next("checking the published head sets ...")
        _check_prune(checks, spec, plan)
    if cluster and plan.resources:
        steps.next("checking the actor layouts ...")
        _check_layouts(checks, spec, plan)
    steps.next("checking that the weights can be downloaded ..." if checks.probes else "finishing the checks ...")
    checks.finish()
    return plan
