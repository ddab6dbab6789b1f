"""The LLM judge stage: label each head from its spans, judge each span 1/0, score CCS (DESIGN.md section 1).

Entry points: :func:`run_judge_stage` (the pipeline) and :func:`import_human_ratings` (the CLI).
Any OpenAI-compatible endpoint runs through a Ray pool with one global rate limiter and an answer
cache; the offline judge (the default) is a deterministic heuristic and says so in every row.
"""

from .human import import_human_ratings
from .offline import DEFAULT_VOCABULARY, OfflineJudge
from .stage import run_judge_stage

__all__ = ["DEFAULT_VOCABULARY", "OfflineJudge", "import_human_ratings", "run_judge_stage"]
