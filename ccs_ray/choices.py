"""Every closed set of names that the spec, the CLI and the engine accept, defined once.

A set that the spec validates is a ``Literal`` type (``spec.py`` annotates its keys with it) and the tuple of
its names (``get_args`` of the type, in the same order); the CLI takes its ``choices`` from the tuples, and the
engine checks its arguments against them, so a name allowed in one place is allowed in all.
"""

from typing import Literal, get_args

StageName = Literal["scan", "spans", "explain", "judge", "prune", "report"]  # in run order (ccs_ray.stages.STAGES)
STAGES: tuple[StageName, ...] = get_args(StageName)
Precision = Literal["fp32", "fp16", "bf16"]  # model parameters' dtype (ccs_ray.models.DTYPES)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
Convention = Literal["centered", "textspan"]  # decomposition conventions (ccs_ray.decompose)
CONVENTIONS: tuple[Convention, ...] = get_args(Convention)
SpanMethod = Literal["data", "weights", "both"]  # where spans come from (ccs_ray.stages.spans, ccs_ray.circuits)
SPAN_METHODS: tuple[SpanMethod, ...] = get_args(SpanMethod)
SourceKind = Literal["folder", "tar", "parquet", "manifest", "probe"]  # data source kinds (ccs_ray.sources.READERS)
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)
# how the decoders convert an image with transparency (data.alpha; ccs_ray.sources.decode.to_rgb): "drop" it as
# open_clip's preprocessing does, or composite it over a colour, named here or written "#rrggbb"
AlphaName = Literal["drop", "white", "black"]
ALPHA_NAMES: tuple[AlphaName, ...] = get_args(AlphaName)
_ALPHA_COLOURS = {"white": "#ffffff", "black": "#000000"}


def alpha_colour(alpha: str) -> str | None:
    """The colour ``#rrggbb`` (lower case) that ``alpha`` (``data.alpha``) composites transparency over; None for
    ``"drop"``. A ValueError names the values allowed."""
    if alpha == "drop":
        return None
    colour = _ALPHA_COLOURS.get(alpha, alpha).lower()
    if len(colour) != 7 or colour[0] != "#" or any(c not in "0123456789abcdef" for c in colour[1:]):
        raise ValueError(f"alpha must be one of {', '.join(ALPHA_NAMES)} or a colour '#rrggbb', got {alpha!r}")
    return colour


DecodePlace = Literal["auto", "decoders", "actors"]  # where a pass decodes JPEGs (ccs_ray.passes.decode_on_actors)
DECODE_PLACES: tuple[DecodePlace, ...] = get_args(DecodePlace)
AblationMode = Literal["zero", "mean"]  # what an ablated head outputs (ccs_ray.decompose.HeadAblation)
ABLATION_MODES: tuple[AblationMode, ...] = get_args(AblationMode)
# pruning strategies (ccs_ray.ablate.prune_strategies)
STRATEGIES = ("high", "low", "random", "equal", "concept", "explicit", "sweep", "single")
# the paper's published head sets (ccs_ray.reference); "paper-concept" is written paper-concept:<name>
PAPER_STRATEGIES = ("paper-high", "paper-low", "paper-random", "paper-concept")


def is_paper_strategy(strategy: str) -> bool:
    """Whether ``strategy`` (as in ``prune.strategies``) prunes the paper's published heads (needs no CCS)."""
    return strategy.split(":", 1)[0] in PAPER_STRATEGIES


def ccs_strategies(strategies: list[str]) -> list[str]:
    """The strategies of ``prune.strategies`` that choose heads by a run's CCS (all but ``explicit`` and paper-*)."""
    return [s for s in strategies if s != "explicit" and not is_paper_strategy(s)]
PAPER_CONCEPTS = ("locations", "objects", "colors", "animals")  # the paper's concept sets, by its names
RandomPool = Literal["decomposed", "all"]  # heads the random strategy draws from
RANDOM_POOLS: tuple[RandomPool, ...] = get_args(RandomPool)
PaperRandomPool = Literal["analysed", "published"]  # heads paper-random draws from (ccs_ray.ablate.paper_strategies)
PAPER_RANDOM_POOLS: tuple[PaperRandomPool, ...] = get_args(PaperRandomPool)
JudgeKind = Literal["openai", "offline"]
JUDGE_KINDS: tuple[JudgeKind, ...] = get_args(JudgeKind)
JudgeMode = Literal["per_span", "batched"]  # one request per span, or one per head
JUDGE_MODES: tuple[JudgeMode, ...] = get_args(JudgeMode)
SQL_FORMATS = ("table", "csv", "json", "parquet")  # ccs-ray sql --format
BiasCombine = Literal["embedding_mean", "skew_mean"]  # how an occupation's templates combine (ccs_ray.evals.maxskew)
BIAS_COMBINES: tuple[BiasCombine, ...] = get_args(BiasCombine)
