"""What every evaluation dataset kind shares: its error type and the reading of its ``[evals]`` entry.

- :class:`DatasetError`: a dataset that cannot be used; the message says what is wrong and what is allowed.
- :func:`from_entry`: an entry (a table with at least ``name``) as the kind's dataclass; keys the
  dataclass lacks are an error that lists them and the allowed ones.
- :func:`probe_of`: the parsed ``probe://TASK?..`` source of a generated video or bias set, else None.
"""

from __future__ import annotations

from dataclasses import fields

from ...errors import UserError
from ...sources import SourceError
from ...sources.probe import ProbeSpec, parse_probe_uri


class DatasetError(UserError, ValueError):
    """An evaluation dataset that cannot be used: the message says what is wrong and what is allowed."""


def from_entry(cls, entry: dict, section: str):
    """``cls(**entry)`` for an ``evals.<section>`` entry, or a DatasetError naming the bad keys."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise DatasetError(f"evals.{section}: each dataset is a table with at least 'name', got {entry!r}")
    allowed = {f.name for f in fields(cls)}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise DatasetError(f"evals.{section} {entry['name']!r}: unknown keys {extra}; allowed: {sorted(allowed)}")
    return cls(**entry)


def probe_of(source: str, what: str) -> ProbeSpec | None:
    """The parsed probe URI of a generated video or bias set (one task, not the mixed set); else None."""
    if not source.startswith("probe://"):
        return None
    try:
        spec = parse_probe_uri(source)
    except SourceError as e:
        raise DatasetError(str(e)) from None
    if not spec.task:
        raise DatasetError(f"a generated {what} set needs one probe task (probe://colors?...), got {source!r}")
    return spec
