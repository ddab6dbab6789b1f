"""ccs-ray: which CLIP attention heads encode a clear concept, and what pruning them does.

The public API (the math: no Ray, no I/O):

- :func:`load_model` (``models``), :func:`head_contributions` (``decompose``),
- :class:`HeadMoments` (``moments``), :func:`textspan`, :func:`textspan_from_moments` (``textspan``),
- :func:`ablated` (``ablate``), :func:`max_skew_at_k` (``evals.bias``).
"""

from .ablate import ablated
from .decompose import head_contributions, head_name, parse_head_name
from .evals.bias import max_skew_at_k
from .models import PAPER_MODELS, UnsupportedModelError, load_model
from .moments import HeadMoments
from .textspan import textspan, textspan_from_moments

__all__ = [
    "PAPER_MODELS", "HeadMoments", "UnsupportedModelError", "ablated", "head_contributions", "head_name", "load_model",
    "max_skew_at_k", "parse_head_name", "textspan", "textspan_from_moments",
]
