"""Strict JSON (RFC 8259) for everything ccs-ray prints or writes as JSON, so that any parser reads it.

Python's ``json`` writes NaN and the infinities as the bare tokens ``NaN``, ``Infinity`` and ``-Infinity``,
which strict parsers (``jq``, JavaScript's ``JSON.parse``, Go, DuckDB's ``read_json``) refuse. :func:`dumps`
writes them as ``null``, at any depth and inside numpy and pyarrow values (scalars, arrays, tables as lists of
records). Any other value a JSON encoder does not know (datetimes, decimals, paths, bytes) is written as its
``str()``. The output never holds a bare NaN or infinity: the encoder refuses one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

_SCALARS = (str, int, bool, type(None))  # JSON values as they are (bool is an int)
# how numpy and pyarrow values turn into Python values (without importing either): a pyarrow scalar; a pyarrow
# array, chunked array, table (records) or record batch; a numpy scalar or array
_TO_PYTHON = ("as_py", "to_pylist", "tolist")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: NaN and infinities -> None; numpy and pyarrow values -> Python values;
    tuples and sets -> lists; mapping keys that JSON cannot hold -> their ``str()``; anything else -> ``str()``."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k if isinstance(k, _SCALARS) else str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    for method in _TO_PYTHON:
        if hasattr(value, method):
            return jsonable(getattr(value, method)())
    return str(value)


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``: strict JSON; ``kwargs`` as for ``json.dumps`` (indent ...)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)
