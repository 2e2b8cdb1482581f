"""A host's unit statuses as the fleet keeps them: compact, read-only mappings (pure).

A controller keeps every host's last sample, about ten units per host and a dozen fields per
unit. Kept as the decoded JSON dicts that costs some 460 bytes of dict per unit; `UnitStatus`
keeps the same keys and values in a tuple behind a key tuple shared by every unit of the same
shape (about 180 bytes), with its few-valued strings and its integers shared too. It reads as
the dict it was made from (`get`, `[]`, `in`, iteration, `dict(status)`, `==`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from sys import intern
from typing import Any

SHARED = frozenset({"state", "active", "sub", "kind"})  # fields that take a few values only
LIMITS = frozenset({"millicpus", "memory_max", "tasks_max"})  # integers alike across units
# a unit's keys (in order) -> the one tuple of them all share, and where its shared strings
# and limits are
_SHAPES: dict[tuple, tuple[_Shape, tuple[int, ...], tuple[int, ...]]] = {}
_INTS: dict[int, int] = {}  # limits (a few distinct ones) -> one object each
MAX_SHAPES = 1024  # a node sending ever new keys makes units that share nothing, no more
MAX_INTS = 4096
_VALUES, _KEYS = attrgetter("_values"), attrgetter("_keys")


class _Shape(tuple):
    """A unit's keys in order, shared by every unit with those keys; `at`: key -> position."""

    at: dict[str, int]

    def __new__(cls, keys: tuple[str, ...]) -> _Shape:
        shape = super().__new__(cls, keys)
        shape.at = {k: i for i, k in enumerate(shape)}
        return shape


class UnitStatus(Mapping[str, Any]):
    """One unit's status as its host reported it; equal to that dict."""

    __slots__ = ("_keys", "_values")

    def __init__(self, keys: _Shape, values: tuple[Any, ...]) -> None:
        self._keys = keys
        self._values = values

    @classmethod
    def of(cls, unit: Mapping[str, Any]) -> UnitStatus:
        """The compact form of a decoded unit status."""
        keys = tuple(unit)
        shape = _SHAPES.get(keys) or _shape(keys)
        values = list(unit.values())
        for i in shape[1]:
            if type(values[i]) is str:
                values[i] = intern(values[i])
        for i in shape[2]:
            value = values[i]
            if type(value) is int:
                shared = _INTS.get(value)
                if shared is not None:
                    values[i] = shared
                elif len(_INTS) < MAX_INTS:
                    _INTS[value] = value
        return cls(shape[0], tuple(values))

    def __getitem__(self, key: str) -> Any:
        return self._values[self._keys.at[key]]

    def get(self, key: str, default: Any = None) -> Any:
        at = self._keys.at.get(key)
        return default if at is None else self._values[at]

    def __contains__(self, key: object) -> bool:
        return key in self._keys.at

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a mapping, like the dict it stands for

    def __repr__(self) -> str:
        return f"UnitStatus({dict(self)!r})"


def same_units(decoded: Sequence[object], kept: Mapping[str, UnitStatus]) -> bool:
    """Whether a sample's unit list (decoded dicts) is the one `kept` was made from, unit by
    unit in order (see `units_map`): every unit's values, then keys, compared at C speed."""
    if len(decoded) != len(kept):
        return False
    statuses = kept.values()
    try:
        return list(map(tuple, map(dict.values, decoded))) == list(map(_VALUES, statuses)) and (
            list(map(tuple, decoded)) == list(map(_KEYS, statuses))  # type: ignore[arg-type]
        )
    except TypeError:  # an entry that is not an object: not what was kept
        return False


def units_map(decoded: Sequence[object], key: Any) -> dict[str, UnitStatus]:
    """Unit name (by `key`) -> compact status, in the order the host listed them; entries that
    are not objects are left out."""
    return {key(u.get("unit")): UnitStatus.of(u) for u in decoded if isinstance(u, dict)}


def _shape(keys: tuple) -> tuple[_Shape, tuple[int, ...], tuple[int, ...]]:
    """A new shape: its keys interned, where its shared strings and limits are; kept for the
    next unit of the same keys while there are not too many."""
    shape = (
        _Shape(tuple(intern(k) if type(k) is str else k for k in keys)),
        tuple(i for i, k in enumerate(keys) if k in SHARED),
        tuple(i for i, k in enumerate(keys) if k in LIMITS),
    )
    if len(_SHAPES) < MAX_SHAPES:
        _SHAPES[keys] = shape
    return shape
