"""What every evaluation dataset kind shares: its error type and the reading of its ``[evals]`` entry.

- :class:`DatasetError`: a dataset that cannot be used; the message says what is wrong and what is allowed.
- :func:`from_entry`: an entry (a typed entry of :mod:`ccs_ray.spec`, or a dict validated as one) as the
  kind's dataclass, with the keys the entry set itself; a bad key or value is an error naming it.
- :func:`probe_of`: the parsed ``probe://TASK?..`` source of a generated video or bias set, else None.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from ...errors import UserError
from ...sources import SourceError
from ...sources.probe import ProbeSpec, parse_probe_uri
from ...spec import BiasEntry, ClassificationEntry, VideoEntry, describe_errors


class DatasetError(UserError, ValueError):
    """An evaluation dataset that cannot be used: the message says what is wrong and what is allowed."""


ENTRIES: dict[str, type[BaseModel]] = {"classification": ClassificationEntry, "video": VideoEntry, "bias": BiasEntry}


def from_entry(cls, entry, section: str) -> tuple:
    """``(cls(**entry), keys the entry set)`` for an ``evals.<section>`` entry (typed or a dict)."""
    if isinstance(entry, dict):
        try:
            entry = ENTRIES[section].model_validate(entry)
        except ValidationError as e:
            raise DatasetError(describe_errors(e, f"evals.{section} entry {entry.get('name', '?')!r}",
                                               ENTRIES[section])) from None
    return cls(**entry.model_dump()), entry.model_fields_set


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
