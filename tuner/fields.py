"""Reading typed fields from a stored tuner state (decoded JSON), and the mark of a key not written yet.

The state records of :mod:`lrtune.tuner.state` read their fields with these helpers: each checks the value's type
and returns it unchanged (an int stays an int where a float is expected, so a state is written back exactly as
it was read), or raises :class:`TypeError`, which :meth:`lrtune.tuner.stages.Tuner.recover` reports as a malformed
state. Numpy scalars pass (a state dumped without a JSON round trip may hold them).
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Mapping
from typing import Any, TypeAlias, cast


class Unset(enum.Enum):
    """A key the stored state does not hold yet, told apart from one that holds null.

    A few keys are written only once their value is first decided (a stage's ``restore``, the planner's ``rival``
    and ``plan_from``); a record keeps them :data:`UNSET` until then so that it writes back the same JSON.
    """

    UNSET = "unset"


UNSET = Unset.UNSET

#: ``[step, value]`` pairs: steps counted from the job's start (as floats), value None for a non-finite one.
Points: TypeAlias = tuple[tuple[float, float | None], ...]


def _kind(value: object, what: str, key: str) -> TypeError:
    return TypeError(f"{key} must be {what}, got {type(value).__name__}")


def as_number(v: Any, key: str) -> float:
    """``v``, a number (int or float, not bool), read from ``key``."""
    if type(v) is float or type(v) is int or (isinstance(v, numbers.Real) and not isinstance(v, bool)):
        return cast(float, v)
    raise _kind(v, "a number", key)


def number(data: Mapping[str, Any], key: str) -> float:
    """``data[key]``, a number (int or float, not bool)."""
    return as_number(data[key], key)


def opt_number(data: Mapping[str, Any], key: str, default: float | None = None, required: bool = True) -> float | None:
    """``data[key]``, a number or None; with ``required=False`` a missing key reads as ``default``."""
    if not required and key not in data:
        return default
    return None if data[key] is None else number(data, key)


def integer(data: Mapping[str, Any], key: str) -> int:
    """``data[key]``, an int (not bool)."""
    v = data[key]
    if type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool)):
        return cast(int, v)
    raise _kind(v, "an integer", key)


def opt_integer(data: Mapping[str, Any], key: str, required: bool = True) -> int | None:
    """``data[key]``, an int or None; with ``required=False`` a missing key reads as None."""
    if not required and key not in data:
        return None
    return None if data[key] is None else integer(data, key)


def text(data: Mapping[str, Any], key: str) -> str:
    """``data[key]``, a string."""
    v = data[key]
    if isinstance(v, str):
        return v
    raise _kind(v, "a string", key)


def opt_text(data: Mapping[str, Any], key: str) -> str | None:
    """``data[key]``, a string or None."""
    return None if data[key] is None else text(data, key)


def flag(data: Mapping[str, Any], key: str) -> bool:
    """``data[key]``, a bool."""
    v = data[key]
    if isinstance(v, bool):
        return v
    raise _kind(v, "true or false", key)


def mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``data[key]``, an object."""
    v = data[key]
    if isinstance(v, Mapping):
        return v
    raise _kind(v, "an object", key)


def opt_mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """``data[key]``, an object or None; a missing key reads as None."""
    return None if key not in data or data[key] is None else mapping(data, key)


def items(data: Mapping[str, Any], key: str) -> list[Any]:
    """``data[key]``, a list."""
    v = data[key]
    if isinstance(v, list | tuple):
        return list(v)
    raise _kind(v, "a list", key)


def numbers_of(data: Mapping[str, Any], key: str) -> list[float]:
    """``data[key]``, a list of numbers."""
    return [as_number(v, key) for v in items(data, key)]


def points(data: Mapping[str, Any], key: str) -> Points:
    """``data[key]``, ``[step, value]`` pairs with a number or None as value."""
    out = []
    for p in items(data, key):
        if not isinstance(p, list | tuple) or len(p) != 2:
            raise TypeError(f"{key} must hold [step, value] pairs")
        step, value = p
        out.append((as_number(step, key), None if value is None else as_number(value, key)))
    return tuple(out)


def points_json(pts: Points) -> list[list[float | None]]:
    """``[step, value]`` pairs as JSON lists (fresh ones)."""
    return [[s, v] for s, v in pts]
