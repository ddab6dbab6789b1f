"""Job specs: TOML -> a validated, typed :class:`Spec`.

A spec has one table per stage (``[models]``, ``[data]``, ``[scan]``, ``[spans]``, ``[explain]``, ``[judge]``,
``[prune]``, ``[evals]``, ``[results]``); ``stages`` lists which ones run. Unknown keys and bad values
are errors that name the key and say what is allowed. ``--set section.key=value`` overrides any key;
the value is read as a TOML value (``--set scan.batch_size=32``, ``--set models.keys='["ViT-B-32/none"]'``)
and as a plain string when it is not one (``--set judge.base_url=http://127.0.0.1:8000/v1``).

The shipped specs are package data (``ccs_ray/jobs/``): where a spec is not an existing file, its built-in name
(``quickstart``, ``quickstart.toml`` or ``jobs/quickstart.toml``) names the shipped one, so ``ccs-ray run quickstart``
works from any folder; :func:`write_starter` copies one, comments included, to edit (``ccs-ray init``). A spec not
found lists the built-in names.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .choices import (
    ALPHA_NAMES,
    PAPER_CONCEPTS,
    PAPER_STRATEGIES,
    STAGES,
    STRATEGIES,
    AblationMode,
    BiasCombine,
    Convention,
    DecodePlace,
    JudgeKind,
    JudgeMode,
    PaperRandomPool,
    Precision,
    RandomPool,
    SourceKind,
    SpanMethod,
    StageName,
    alpha_colour,
)
from .errors import UserError
from .files import resolve_uri
from .heads import head_name, parse_head_name
from .scores import paper_concept


def _is_head_name(name: str) -> bool:
    """``name`` is a head's one spelling, ``L<layer>.H<head>`` (0-based; no sign, padding, spaces or case change)."""
    try:
        layer, head = parse_head_name(name)
    except ValueError:
        return False
    return min(layer, head) >= 0 and head_name(layer, head) == name


class SpecError(UserError, ValueError):
    """A job spec that cannot run: the message names every bad key and what it allows."""


#: The folder of the shipped job specs (package data).
BUILTIN_DIR = Path(__file__).resolve().parent / "jobs"
#: The spec ``ccs-ray init`` writes when given no name.
STARTER = "quickstart"
#: The folder the repository's docs name the shipped specs by (``jobs/NAME.toml``).
_DOCS_FOLDER = "jobs"


def builtin_specs() -> list[str]:
    """The names of the shipped job specs, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def _builtin_hint() -> str:
    return (f"built-in specs: {', '.join(builtin_specs())} (ccs-ray run NAME; ccs-ray init NAME writes an editable "
            f"copy to this folder)")


def resolve_spec(source: str) -> str:
    """``source`` itself when it is a URI or an existing file; else the shipped spec it names (``NAME``,
    ``NAME.toml`` or ``jobs/NAME.toml``); else ``source`` unchanged (reading it then says it is not found)."""
    if "://" in source or Path(source).exists():
        return source
    path = Path(source)
    in_docs_folder = path.parent in (Path("."), Path(_DOCS_FOLDER))
    name = path.stem if path.suffix == ".toml" else path.name
    if in_docs_folder and name in builtin_specs():
        return str(BUILTIN_DIR / f"{name}.toml")
    return source


def write_starter(name: str | None = None, folder: str | Path = ".") -> Path:
    """Copy the shipped spec ``name`` (default :data:`STARTER`), comments included, to ``folder/<name>.toml``;
    refuses to overwrite a file. Returns the path written."""
    name = name or STARTER
    if name not in builtin_specs():
        raise SpecError(f"no built-in spec {name!r}; {_builtin_hint()}")
    target = Path(folder) / f"{name}.toml"
    if target.exists():
        raise SpecError(f"{target} already exists; remove it or run ccs-ray init in another folder")
    target.write_text((BUILTIN_DIR / f"{name}.toml").read_text())
    return target


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _bare_strings_as_lists(cls, data):
        """A bare string where a list is expected is that one item (``--set models.keys=ViT-B-32/none``)."""
        if not isinstance(data, dict):
            return data
        lists = {name for name, f in cls.model_fields.items()
                 if any(getattr(a, "__origin__", a) is list
                        for a in (f.annotation, *getattr(f.annotation, "__args__", ())))}
        return {k: [v] if k in lists and isinstance(v, str) else v for k, v in data.items()}


class ModelsConfig(_Section):
    """Which models to analyse and how to run them."""

    keys: list[str] = Field(default_factory=lambda: ["ViT-B-32/openai"], min_length=1)
    precision: Precision = "fp32"
    last_layers: int = Field(default=4, ge=1, description="decompose the heads of the last N layers")
    layers: list[int] | None = Field(default=None, description="explicit 0-based layers; overrides last_layers")

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        repeated, negative = sorted({l for l in v if v.count(l) > 1}), [l for l in v if l < 0]
        problems = [f"{what}: {bad}" for what, bad in (("repeated", repeated), ("negative", negative)) if bad]
        if problems:
            raise ValueError(f"layers must be distinct 0-based indices, got {v}; {'; '.join(problems)}")
        return v


class DataConfig(_Section):
    """The image set the heads are scanned over."""

    source: str = Field(default="probe://?n=512&seed=0",
                        description="fsspec URI of images, tars, parquet, a manifest, or probe://")
    kind: Literal["auto", SourceKind] = "auto"
    image_column: str = Field(default="image", description="parquet: the column of image bytes")
    uri_column: str = Field(default="uri", description="manifest: the column of image URIs")
    label_column: str = Field(default="label", description="parquet/manifest: the label column, used when present")
    shard_size: int = Field(default=256, ge=1,
                            description="images per shard (folders, manifests, parquet, probe; a tar is one shard)")
    folds: int = Field(default=2, ge=1, description="moments are kept per fold (shard index mod folds)")
    limit: int | None = Field(default=None, ge=1, description="use at most this many images")
    alpha: str = Field(
        default="drop",
        description="how an image with transparency becomes RGB: 'drop' (PIL's plain conversion after resizing, as "
                    "open_clip's preprocess(Image.open(f)): a transparent pixel shows the colour stored under it) or "
                    f"a colour to composite it over before resizing ({', '.join(ALPHA_NAMES[1:])} or '#rrggbb'); "
                    "the conversions table records which (ccs_ray.sources.decode)")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: str) -> str:
        alpha_colour(v)  # a ValueError naming the values allowed
        return v


class _ActorsSection(_Section):
    """Where a stage's model actors run (:func:`ccs_ray.cluster.actor_layout`)."""

    actors: int | None = Field(default=None, ge=1, description="model actors per model; default one per GPU, else 1")
    gpus_per_actor: float | None = Field(default=None, ge=0, description="default 1, or an equal share of a GPU when "
                                         "models outnumber GPUs; 0 without GPUs")
    cpus_per_actor: float | None = Field(default=None, ge=0, description="CPUs each model actor holds (and its torch "
                                         "threads, rounded); default: with GPUs 1, or 0 where that would leave the "
                                         "scan's decoding no CPU; without GPUs every CPU decoding does not need "
                                         "(ccs_ray.cluster.actor_layout)")


class ScanConfig(_ActorsSection):
    """How the scan runs on Ray."""

    batch_size: int = Field(default=64, ge=1)
    decode_workers: int = Field(default=2, ge=1, description="CPU decode tasks in flight per actor "
                                                           "(at least one per CPU the actors leave free)")
    convention: Convention = "centered"
    decode: DecodePlace = Field(
        default="auto",
        description="where JPEGs are decoded and resized: 'decoders' (CPU decoders, equal to open_clip's "
                    "preprocessing bit for bit), 'actors' (on the model actors' device, batched: nvJPEG on a "
                    "GPU; within preprocess.DEVICE_TOLERANCE of the decoders) or 'auto' (actors that hold a "
                    "GPU, else decoders)")
    checkpoint_every: int | None = Field(default=None, ge=1,
                                         description="checkpoint an actor after this many new shards")
    checkpoint_s: float = Field(default=120.0, gt=0,
                                description="and at least this often (seconds) while it has new shards")


class SpansConfig(_Section):
    """TextSpan settings."""

    pool: str = Field(default="ccs-basic",
                      description="pool alias (ccs-basic, textspan-general) or a path/URI of a text file")
    m: int = Field(default=5, ge=1)
    rank: int = Field(default=80, ge=1)
    template: str = "{}"
    normalize: bool = True
    method: SpanMethod = Field(
        default="data",
        description="where each head's spans come from: 'data' (the scan's moments of its outputs over the "
                    "images), 'weights' (its output covariance under isotropic inputs, from the weights alone, "
                    "no scan: ccs_ray.circuits) or 'both' (and the span_agreement table)")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, v: str) -> str:
        if v.count("{}") != 1:
            raise ValueError("template must contain exactly one '{}' where the description goes")
        return v


class ExplainConfig(_Section):
    """The top images of each head and span (stage ``explain``; it runs on the scan's actors, ``[scan]``)."""

    k: int = Field(default=8, ge=1, le=100, description="images per head and span, at the top and at the bottom")
    thumb_px: int = Field(default=128, ge=16, le=512,
                          description="longest side of each stored thumbnail (pixels); the report shows it "
                                      "small and enlarges it on click")
    head_maps: bool = Field(default=True,
                            description="store where each head looks in its spans' top images (top_images.patch_map), "
                                        "from the same pass")


class EndpointConfig(_Section):
    """One LLM judge: an OpenAI-compatible endpoint and model, or the offline heuristic judge."""

    name: str | None = None
    kind: JudgeKind = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = Field(default=None, description="name of the environment variable holding the API key")
    rpm: float = Field(default=60, gt=0, description="requests per minute across the whole cluster")
    tpm: float | None = Field(default=None, gt=0, description="tokens per minute across the whole cluster")
    input_price: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens")
    output_price: float = Field(default=0.0, ge=0, description="USD per 1M completion tokens")
    structured: bool = Field(default=True, description="ask for JSON-schema structured output")
    burst_s: float = Field(default=1.0, gt=0,
                           description="rate-limit burst: up to this many seconds' worth of requests at once")

    @field_validator("base_url")
    @classmethod
    def _no_secrets_in_url(cls, v: str | None) -> str | None:
        """No user-info (``user:pass@``), query (``?token=``) or fragment: the client appends the API paths to
        ``base_url`` and sends the key from ``api_key_env`` (the value is not repeated in the error)."""
        if v is None:
            return v
        parts = urlsplit(v)
        found = [what for what, there in (("user:password@", "@" in parts.netloc), ("a query ('?...')", parts.query),
                                          ("a fragment ('#...')", parts.fragment)) if there]
        if found:
            raise ValueError(f"the URL carries {' and '.join(found)}; give only scheme://host[:port]/path, and put "
                             f"the API key in the environment variable named by api_key_env")
        return v


class JudgeConfig(EndpointConfig):
    """The judge stage. The keys of :class:`EndpointConfig` here describe a single judge (default: the
    offline one); ``judges`` lists several, combined by majority vote."""

    kind: JudgeKind = "offline"
    judges: list[EndpointConfig] = Field(default_factory=list)
    mode: JudgeMode = "per_span"
    heldout: bool = Field(default=True, description="also label from spans 1..m and judge spans m+1..2m")
    concurrency: int = Field(default=8, ge=1, description="requests in flight per judge, across the whole pool")
    actors: int = Field(default=2, ge=1, description="async Ray actors per judge")
    timeout_s: float = Field(default=60, gt=0, description="per-call timeout (s); keep it above the endpoint's slowest "
                             "answers: a call retried after a timeout may be charged twice by an endpoint that "
                             "ignores Idempotency-Key")
    max_retries: int = Field(default=6, ge=0,
                             description="retries of a request (429, 5xx, timeouts, drops, unparseable)")
    backoff_s: float = Field(default=1.0, gt=0, description="base of the jittered exponential backoff")
    backoff_max_s: float = Field(default=60, gt=0)
    cache: str | None = Field(default=None, description="answer cache URI; default <results root>/judge_cache")
    max_error_share: float = Field(default=0.1, ge=0, le=1,
                                   description="the share of a model's heads whose judging may end in error before "
                                               "the judge stage fails (a stage whose every head errored fails "
                                               "whatever the share)")
    vocabulary: list[str] | dict[str, list[str]] | None = Field(
        default=None, description="offline judge: candidate labels, or label -> keywords (default: built in)")
    LLM_KEYS: ClassVar[tuple[str, ...]] = ("base_url", "model", "api_key_env")  # keys only an LLM judge uses

    @staticmethod
    def public_url(url: str) -> str:
        """``url`` without user-info, query or fragment (what may be stored, logged or named)."""
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))

    @model_validator(mode="before")
    @classmethod
    def _kind_from_keys(cls, data):
        """No ``kind`` but an LLM key (base_url, model, api_key_env): the OpenAI-compatible judge.
        Contradictions (offline with an LLM key; a single judge's keys beside ``judges``) are errors."""
        if not isinstance(data, dict):
            return data
        llm = [k for k in cls.LLM_KEYS if data.get(k)]
        if data.get("judges") and llm:
            raise ValueError(f"judge.judges lists the judges; judge.{', judge.'.join(llm)} would be ignored: "
                             "set them inside each judges entry")
        for i, entry in enumerate(data.get("judges") or []):
            bad = [k for k in cls.LLM_KEYS
                   if isinstance(entry, dict) and entry.get("kind") == "offline" and entry.get(k)]
            if bad:
                raise ValueError(f"judge.judges[{i}].kind = 'offline' ignores its {', '.join(bad)}: "
                                 f"set judge.judges[{i}].kind = 'openai' or drop them")
        if llm and data.get("kind", "openai") == "offline":
            raise ValueError(f"judge.kind = 'offline' (the heuristic judge) ignores judge.{', judge.'.join(llm)}: "
                             "set judge.kind = 'openai' for the LLM judge, or drop them")
        return {**data, "kind": "openai"} if llm else data

    @model_serializer(mode="wrap")
    def _public(self, handler):
        """Dumps (``runs.spec_json``, ``run.json``) carry every ``base_url`` without user-info or query."""
        out = handler(self)
        for d in [out] + out.get("judges", []):
            if d.get("base_url"):
                d["base_url"] = self.public_url(d["base_url"])
        return out


class PruneConfig(_Section):
    """Ablation strategies and their evaluation."""

    strategies: list[str] = Field(
        default_factory=lambda: ["high", "low", "random", "equal"],
        description=f"from our CCS: {', '.join(STRATEGIES)}; from the paper's published heads (no scan, spans or "
                    f"judge needed): {', '.join(PAPER_STRATEGIES[:-1])}, paper-concept:<{'|'.join(PAPER_CONCEPTS)}>")
    mode: AblationMode = "zero"
    seeds: int = Field(default=5, ge=1, description="random-strategy seeds (random and paper-random)")
    random_pool: RandomPool = Field(default="decomposed", description="heads random draws come from")
    reference_model: str | None = Field(default=None, description="the paper model whose published heads paper-* "
                                        "strategies prune and whose figures the run is compared with; default: the "
                                        "model's key")
    paper_random_pool: PaperRandomPool = Field(
        default="analysed",
        description="paper-random draws from the analysed layers, or as published (all layers for "
                    "ViT-B-32/openai, the last 4 for the others)")
    concepts: list[str] = Field(default_factory=lambda: ["location", "animals", "objects", "colors"])
    synonyms: dict[str, list[str]] = Field(default_factory=dict, description="extra words per concept family")
    heads: dict[str, list[str]] = Field(default_factory=dict, description="explicit head lists by name")
    sweep_k: int = Field(default=0, ge=0, description="prune the top-k heads by CCS for k = 0..sweep_k")
    single_modes: list[AblationMode] = Field(
        default_factory=lambda: list[AblationMode](["zero"]), min_length=1,
        description="the single strategy ablates each analysed head alone once per mode listed here (mean: "
                    "needs the scan's moments)")
    judge: str = Field(default="combined", description="which judge's CCS drives the strategies")

    @field_validator("heads")
    @classmethod
    def _head_names(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        """Each explicit list names at least one head, each once, as ``L<layer>.H<head>`` (the tower's range is
        checked by preflight, which knows the model)."""
        bad = [f"{name}: {h!r}" for name, heads in v.items() for h in heads if not _is_head_name(h)]
        if bad:
            raise ValueError(f"heads are named 'L<layer>.H<head>', e.g. 'L11.H5'; bad: {', '.join(bad)}")
        empty = [name for name, heads in v.items() if not heads]
        if empty:
            raise ValueError(f"list {empty[0]!r} names no head: name its heads or drop it")
        twice = [f"{name}: {h!r}" for name, heads in v.items() for h in dict.fromkeys(heads) if heads.count(h) > 1]
        if twice:
            raise ValueError(f"heads named twice in one list: {', '.join(twice)}")
        return v

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        """Each is a strategy name; ``paper-concept:<name>`` names one of the paper's concept sets (any spelling,
        stored as the paper's name)."""
        out = []
        for s in v:
            base, _, arg = s.partition(":")
            concept = paper_concept(arg) if base == "paper-concept" else None
            if concept:
                out.append(f"paper-concept:{concept}")
            elif base == "paper-concept":
                raise ValueError(f"{s!r}: name one of the paper's concept sets: "
                                 + ", ".join(f"paper-concept:{c}" for c in PAPER_CONCEPTS))
            elif s in STRATEGIES or s in PAPER_STRATEGIES:
                out.append(s)
            else:
                raise ValueError(f"unknown strategy {s!r}; allowed: {', '.join(STRATEGIES + PAPER_STRATEGIES[:-1])}, "
                                 f"paper-concept:<{'|'.join(PAPER_CONCEPTS)}>")
        return out


class _EvalEntry(_Section):
    """What every ``[[evals.*]]`` dataset entry has (:mod:`ccs_ray.evals.datasets` resolves it)."""

    name: str = Field(description="the dataset's name in the evals and bias tables; also a preset's name")
    source: str = Field(default="", description="fsspec URI of the data (see the kind's keys); default: the preset's")
    preset: str | None = Field(default=None, description="preset of class names, templates, frames or attributes; "
                                                         "default: the name, when it names one")
    shard_size: int = Field(default=256, ge=1, description="items per shard, the pruning stage's unit of work")
    limit: int | None = Field(default=None, ge=1, description="use at most this many items")


class ClassificationEntry(_EvalEntry):
    """A ``[[evals.classification]]`` zero-shot classification dataset."""

    kind: Literal["auto", SourceKind] = "auto"
    classnames: list[str] | None = None
    templates: list[str] | None = Field(default=None,
                                        description="prompt templates with one '{}'; default: the preset's")
    subset: list[str] | None = Field(default=None, description="keep these classes only, renumbered in this order")
    uri_column: str = "uri"
    label_column: str = "label"
    image_column: str = "image"
    root: str | None = Field(default=None,
                             description="torchvision://: download folder (default $CCS_RAY_CACHE/datasets)")
    options: dict = Field(default_factory=dict, description="torchvision://: extra constructor arguments")


class VideoEntry(_EvalEntry):
    """A ``[[evals.video]]`` text-to-video retrieval dataset (a folder of videos or frame folders)."""

    captions: str | None = Field(default=None,
                                 description="CSV/TSV/Parquet/JSON(L) captions, relative to source unless a URI")
    frames: int | None = Field(default=None, ge=1,
                               description="frames sampled per video (default: the preset's, else 12)")
    video_column: str = "video"
    caption_column: str = "caption"
    shard_size: int = Field(default=16, ge=1, description="videos per shard")


class BiasEntry(_EvalEntry):
    """A ``[[evals.bias]]`` social-bias dataset: a manifest of images with one column per attribute."""

    uri_column: str = "uri"
    attributes: list[str] = Field(default_factory=lambda: ["race", "gender"])
    groups: dict[str, dict[str, str]] = Field(default_factory=dict, description="attribute -> label -> group")
    occupations: list[str] | None = Field(default=None, description="default: the paper's occupations")
    templates: list[str] | None = Field(default=None, description="default: the paper's four templates")
    combine: BiasCombine = Field(default="embedding_mean",
                                            description="how an occupation's templates combine")
    k: int = Field(default=10, ge=1, description="MaxSkew@k")


class EvalsConfig(_ActorsSection):
    """Datasets the ablations are evaluated on: tables of :class:`ClassificationEntry`, :class:`VideoEntry`
    and :class:`BiasEntry` keys."""

    classification: list[ClassificationEntry] = Field(default_factory=lambda: [
        ClassificationEntry(name="probe-shapes", source="probe://shapes?n=200&seed=1")])
    video: list[VideoEntry] = Field(default_factory=list)
    bias: list[BiasEntry] = Field(default_factory=list)
    batch_size: int = Field(default=64, ge=1)
    data_root: str | None = Field(
        default=None, description="folder (any fsspec URI) that every relative dataset source is read from, e.g. "
                                  "/data/paper holding cifar-10-batches-py/, imagenet-a/, fairface/ ... as their "
                                  "releases unpack (README: Reproducing the paper); default: the working folder")

    @model_validator(mode="after")
    def _sources_under_data_root(self) -> EvalsConfig:
        """Each dataset's relative ``source`` (no scheme, no leading ``/``) joined to ``data_root``."""
        if self.data_root:
            for entry in (*self.classification, *self.video, *self.bias):
                if entry.source:
                    entry.source = resolve_uri(entry.source, self.data_root)
        return self


#: Storage option names that carry credentials: they come from the environment, never from a spec.
SECRET_OPTIONS = ("key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
                  "aws_session_token", "account_key", "sas_token", "client_secret")


class ResultsConfig(_Section):
    root: str | None = Field(default=None, description="results root URI; default ./results/<spec name>")
    shared: bool = Field(default=False, description="the results root, a local path, is a file system that every "
                         "node of the cluster mounts at the same path (NFS, Lustre); without it, preflight refuses a "
                         "local root on a cluster of several nodes, whose nodes would each write their own part")


class Spec(_Section):
    """A whole job."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    stages: list[StageName] = Field(default_factory=lambda: list(STAGES))
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    spans: SpansConfig = Field(default_factory=SpansConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    evals: EvalsConfig = Field(default_factory=EvalsConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    storage: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="fsspec options per protocol for every URI of the run, e.g. "
                                          "[storage.s3] endpoint_url = 'http://127.0.0.1:9000' (files.use_storage)")

    @field_validator("storage")
    @classmethod
    def _no_credentials(cls, v: dict) -> dict:
        secret = [f"{proto}.{k}" for proto, opts in v.items() for k in opts if k.lower() in SECRET_OPTIONS]
        if secret:
            raise ValueError(f"{', '.join(secret)}: credentials are not kept in specs (specs are stored with the "
                             "results); set them in the environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
        return v

    @model_validator(mode="after")
    def _stages_agree(self) -> Spec:
        """Rules across sections that need no I/O (what a stage needs from earlier stages is checked by preflight,
        which knows whether a run is resumed)."""
        if "explain" in self.stages and self.spans.method == "weights":
            raise ValueError("spans.method = 'weights': explain ranks images along the data spans' directions, and "
                             "this run finds none: set spans.method = 'both' (or 'data'), or drop 'explain'")
        return self

    @property
    def results_root(self) -> str:
        return self.results.root or f"./results/{self.name}"

    def to_json(self) -> str:
        """The spec as JSON, with no secret in it (keys are only ever named, never stored)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _set_dotted(data: dict, dotted: str, raw: str) -> None:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SpecError(f"--set {dotted}: {p!r} is not a table")
    node[leaf] = value


def describe_errors(errors: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """Every problem of a validation, one line each: the key (``evals.video[0].frames``), what is wrong and
    what is allowed. ``model``: the class validated (default :class:`Spec`)."""
    lines = [f"invalid {source}:"]
    for err in errors.errors():
        loc = err["loc"]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed here: {', '.join(_allowed_keys(loc[:-1], model or Spec))}"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"{err['input']!r} is not allowed; expected {err['ctx']['expected']}"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  {key}: {msg}" if key else f"  {msg}")
    return "\n".join(lines)


def _allowed_keys(loc, model: type[BaseModel]) -> list[str]:
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        inner = [a for x in getattr(ann, "__args__", (ann,)) for a in (x, *getattr(x, "__args__", ()))]
        nxt = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return []
        model = nxt
    return sorted(model.model_fields)


def load_spec(source: str | dict, overrides: Sequence[str] = ()) -> Spec:
    """Read a spec from a TOML path/URI (or a dict), apply ``section.key=value`` overrides, validate."""
    if isinstance(source, dict):
        data, label = json.loads(json.dumps(source)), "<dict>"
    else:
        label = str(source)
        try:
            with fsspec.open(resolve_spec(str(source)), "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise SpecError(f"job spec not found: {source}; {_builtin_hint()}") from None
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"job spec {source} is not valid TOML: {e}") from None
        data.setdefault("name", Path(str(source)).stem)
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), raw.strip())
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(describe_errors(e, f"job spec {label}")) from None
