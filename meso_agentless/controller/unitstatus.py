"""A host's unit statuses as the fleet keeps them: compact, read-only mappings (pure).

A controller keeps every host's last sample, about ten units per host and a dozen fields per
unit. Kept as the decoded JSON dicts that costs some 460 bytes of dict per unit; `UnitStatus`
keeps the same keys and values in a tuple behind a key tuple shared by every unit of the same
shape (about 180 bytes), with its few-valued strings and its integers shared too. It reads as
the dict it was made from (`get`, `[]`, `in`, iteration, `dict(status)`, `==`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from sys import intern
from typing import Any

SHARED = frozenset({"state", "active", "sub", "kind"})  # fields that take a few values only
_SHAPES: dict[tuple, tuple] = {}  # a unit's keys (in order) -> the one tuple of them all share
_INTS: dict[int, int] = {}  # integer values (limits: a few distinct ones) -> one object each
MAX_SHAPES = 1024  # a node sending ever new keys makes units that share nothing, no more
MAX_INTS = 4096


class UnitStatus(Mapping[str, Any]):
    """One unit's status as its host reported it; equal to that dict."""

    __slots__ = ("_keys", "_values")

    def __init__(self, keys: tuple[str, ...], values: tuple[Any, ...]) -> None:
        self._keys = keys
        self._values = values

    @classmethod
    def of(cls, unit: Mapping[str, Any]) -> UnitStatus:
        """The compact form of a decoded unit status."""
        keys = tuple(unit)
        shared = _SHAPES.get(keys)
        if shared is None:
            shared = tuple(map(intern, keys)) if len(_SHAPES) < MAX_SHAPES else keys
            if len(_SHAPES) < MAX_SHAPES:
                _SHAPES[keys] = shared
        return cls(shared, tuple(_share(k, v) for k, v in unit.items()))

    def same(self, unit: Mapping[str, Any]) -> bool:
        """Whether `unit` (a decoded status) says exactly what this one does, keys in the same
        order (a node sends them so): cheaper than building it to compare."""
        return tuple(unit.values()) == self._values and tuple(unit) == self._keys

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[self._keys.index(key)]
        except ValueError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._values[self._keys.index(key)]
        except ValueError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self._keys

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
    unit in order (see `units_map`)."""
    if len(decoded) != len(kept):
        return False
    for unit, status in zip(decoded, kept.values()):  # noqa: B905 - lengths checked
        if type(unit) is not dict or not status.same(unit):
            return False
    return True


def units_map(decoded: Sequence[object], key: Any) -> dict[str, UnitStatus]:
    """Unit name (by `key`) -> compact status, in the order the host listed them; entries that
    are not objects are left out."""
    return {key(u.get("unit")): UnitStatus.of(u) for u in decoded if isinstance(u, dict)}


def _share(key: str, value: Any) -> Any:
    kind = type(value)
    if kind is str and key in SHARED:
        return intern(value)
    if kind is int:
        shared = _INTS.get(value)
        if shared is not None:
            return shared
        if len(_INTS) < MAX_INTS:
            _INTS[value] = value
    return value
