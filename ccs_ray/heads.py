"""Head names: ``L{layer}.H{head}`` (0-based), the one spelling of a head in tables, specs and reports.

No torch: the spec, SQL and reference-data code name heads without loading a model.
"""

from __future__ import annotations


def head_name(layer: int, head: int) -> str:
    """Stable head label, 0-based: ``head_name(11, 5) == "L11.H5"``."""
    return f"L{layer}.H{head}"


def head_names(layers, n_heads: int) -> list[str]:
    """``L{l}.H{h}`` of all ``n_heads`` heads of each of ``layers``, layer-major: the order of
    ``Decomposition.contributions.flatten(1, 2)`` and of ``HeadMoments.heads``."""
    return [head_name(l, h) for l in layers for h in range(n_heads)]


def parse_head_name(name: str) -> tuple[int, int]:
    """Inverse of :func:`head_name`; raises ValueError with the expected form."""
    try:
        layer, head = name.split(".")
        if layer[0] != "L" or head[0] != "H":
            raise ValueError
        return int(layer[1:]), int(head[1:])
    except (ValueError, IndexError):
        raise ValueError(f"head {name!r} is not of the form 'L<layer>.H<head>', e.g. 'L11.H5'") from None
