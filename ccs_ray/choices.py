"""Every closed set of names that the spec, the CLI and the engine accept, defined once.

``spec.py`` builds its ``Literal`` types from these tuples, the CLI its ``choices``, and the engine checks
its arguments against them, so a name allowed in one place is allowed in all.
"""

STAGES = ("scan", "spans", "explain", "judge", "prune", "report")  # in run order (ccs_ray.stages.STAGES)
PRECISIONS = ("fp32", "fp16", "bf16")  # model parameters' dtype (ccs_ray.models.DTYPES)
CONVENTIONS = ("centered", "textspan")  # decomposition conventions (ccs_ray.decompose)
SPAN_METHODS = ("data", "weights", "both")  # where spans come from (ccs_ray.stages.spans, ccs_ray.circuits)
SOURCE_KINDS = ("folder", "tar", "parquet", "manifest", "probe")  # data source kinds (ccs_ray.sources.READERS)
DECODE_PLACES = ("auto", "decoders", "actors")  # where a pass decodes JPEGs (ccs_ray.passes.decode_on_actors)
ABLATION_MODES = ("zero", "mean")  # what an ablated head outputs (ccs_ray.decompose.HeadAblation)
STRATEGIES = ("high", "low", "random", "equal", "concept", "explicit", "sweep", "single")  # ccs_ray.ablate.prune_strategies
# the paper's published head sets (ccs_ray.reference); "paper-concept" is written paper-concept:<name>
PAPER_STRATEGIES = ("paper-high", "paper-low", "paper-random", "paper-concept")
PAPER_CONCEPTS = ("locations", "objects", "colors", "animals")  # the paper's concept sets, by its names
RANDOM_POOLS = ("decomposed", "all")  # heads the random strategy draws from
PAPER_RANDOM_POOLS = ("analysed", "published")  # heads paper-random draws from (ccs_ray.ablate.paper_strategies)
JUDGE_KINDS = ("openai", "offline")
JUDGE_MODES = ("per_span", "batched")  # one request per span, or one per head
SQL_FORMATS = ("table", "csv", "json", "parquet")  # ccs-ray sql --format
BIAS_COMBINES = ("embedding_mean", "skew_mean")  # how an occupation's templates combine (ccs_ray.evals.bias)
