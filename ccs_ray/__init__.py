"""ccs-ray: which CLIP attention heads encode a clear concept, and what pruning them does.

The public API (the math: no Ray, no I/O):

- :func:`load_model` (``models``), :func:`head_contributions` (``decompose``), :func:`head_map` (``headmap``: where a
  head looks in an image, per patch),
- :class:`HeadMoments` (``moments``), :func:`textspan`, :func:`textspan_from_moments` (``textspan``),
- :func:`ablated` (``ablate``), :func:`max_skew_at_k`, :func:`max_skew_over_templates` (``evals.maxskew``);

and :func:`preflight` (``preflight``): a job spec's checks and plan before it runs; :func:`paper_reference`
(``reference``): the paper's published head sets and figures; :func:`open` (``results``): a results root as
:class:`Results`, to query with SQL, list heads, show a head's card (inline in Jupyter) and write the report.
``open`` is not exported by ``from ccs_ray import *``, which would hide the builtin ``open``.

``ccs_ray.__version__`` is the installed version. Names are imported on first use, so that
``import ccs_ray.spec`` (the CLI, judge and limiter actors) does not load torch and open_clip.
"""

import sys
import types
from importlib import import_module

_HOMES = {
    "ablated": "ablate", "head_contributions": "decompose", "head_map": "headmap", "head_name": "heads",
    "parse_head_name": "heads",
    "max_skew_at_k": "evals.maxskew", "max_skew_over_templates": "evals.maxskew",
    "PAPER_MODELS": "model_keys", "UnsupportedModelError": "model_keys", "load_model": "models",
    "HeadMoments": "moments", "textspan": "textspan", "textspan_from_moments": "textspan", "preflight": "preflight",
    "paper_reference": "reference", "open": "results", "Results": "results",
}

__all__ = sorted(set(_HOMES) - {"open"})


def __getattr__(name: str):
    if name == "__version__":  # the installed package's (pyproject.toml's), read on first use
        from importlib.metadata import version

        globals()[name] = version("ccs-ray")
        return globals()[name]
    if name not in _HOMES:
        raise AttributeError(f"module 'ccs_ray' has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


class _Package(types.ModuleType):
    """Importing the submodule ``textspan`` (``preflight``) binds the function of that name, not the module, to the
    package."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _HOMES:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
