"""Resources as integers: millicpus, bytes, counts; ports as ranges. Never floats.

Sizes parse from "256MiB", "4GiB", "1.5G" (K, M, G, T are powers of 1000; Ki, Mi, Gi, Ti and
KiB.. are powers of 1024; a bare number is bytes). CPUs parse from 2, 0.5 or "500m".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

CPUS, MEM, DISK, PORTS = "cpus", "mem", "disk", "ports"
BYTE_RESOURCES = frozenset({MEM, DISK})
MAX_BYTES = 1 << 60  # one exbibyte: anything larger is a typo
MAX_MILLICPUS = 10**9
MAX_COUNT = 10**9

Resources = Mapping[str, int]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20,
    "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class ResourceError(ValueError):
    """A resource quantity that cannot be understood; the message says why."""


def _decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool):
        raise ResourceError(f"{what} must be a number, not {value!r}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ResourceError(f"{what} must be a number, not {value!r}") from None
    else:
        raise ResourceError(f"{what} must be a number, not {value!r}")
    if not number.is_finite():
        raise ResourceError(f"{what} must be a finite number, not {value!r}")
    if number.adjusted() > 30:  # 1e999999 would overflow the arithmetic that follows
        raise ResourceError(f"{what} {value!r} is absurdly large")
    if number < 0:
        raise ResourceError(f"{what} must not be negative, not {value!r}")
    return number


def _whole(number: Decimal, value: object, what: str, not_whole: str, limit: int) -> int:
    if number != number.to_integral_value():
        raise ResourceError(f"{what} {value!r} {not_whole}")
    if number > limit:
        raise ResourceError(f"{what} {value!r} is absurdly large")
    return int(number)


def parse_size(value: object, what: str = "size") -> int:
    """Bytes from 268435456, "256MiB", "4GiB", "1.5G"."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ResourceError(f"{what} {value!r} is not a size like 256MiB, 4GiB or 1.5G")
        number = Decimal(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        number = _decimal(value, what)
    return _whole(number, value, what, "is not a whole number of bytes", MAX_BYTES)


def parse_cpus(value: object, what: str = "cpus") -> int:
    """Millicpus from 2, 0.5, "1.5" or "500m"."""
    if isinstance(value, str) and value.strip().endswith("m"):
        number = _decimal(value.strip()[:-1], what)
    else:
        number = _decimal(value, what) * 1000
    return _whole(number, value, what, "is finer than a thousandth of a CPU", MAX_MILLICPUS)


def parse_count(value: object, what: str) -> int:
    """A whole count (ports, gpus, any named scalar)."""
    return _whole(_decimal(value, what), value, what, "must be a whole number", MAX_COUNT)


def parse_quantity(name: str, value: object, what: str | None = None) -> int:
    """One resource by its name: cpus in millicpus, mem and disk in bytes, others as counts."""
    what = what or name
    if name == CPUS:
        return parse_cpus(value, what)
    if name in BYTE_RESOURCES:
        return parse_size(value, what)
    return parse_count(value, what)


def parse_resources(
    raw: Mapping[str, object], what: str = "resources", keep_zeros: bool = False
) -> dict[str, int]:
    """A resources mapping ({cpus: 0.5, mem: 256MiB, gpus: 1}) as integers; zeros dropped
    unless `keep_zeros` (a limit of zero is a limit)."""
    if not isinstance(raw, Mapping):
        raise ResourceError(f"{what} must be a mapping of resource names to amounts")
    parsed = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ResourceError(f"{what}: {name!r} is not a resource name")
        amount = parse_quantity(name, value, f"{what}.{name}")
        if amount or keep_zeros:
            parsed[name] = amount
    return parsed


def format_quantity(name: str, amount: int) -> str:
    """Human form: 1.5 cpus, 256MiB, 3."""
    if name == CPUS:
        return f"{amount / 1000:g}"
    if name in BYTE_RESOURCES:
        for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if amount >= size:
                value = amount / size
                return f"{value:.1f}{unit}".replace(".0" + unit, unit)
        return f"{amount}B"
    return str(amount)


def format_resources(resources: Resources) -> str:
    return ", ".join(f"{n} {format_quantity(n, a)}" for n, a in resources.items()) or "nothing"


def add(a: Resources, b: Resources) -> dict[str, int]:
    out = dict(a)
    for name, amount in b.items():
        out[name] = out.get(name, 0) + amount
    return out


def subtract(a: Resources, b: Resources) -> dict[str, int]:
    """a - b, floored at zero per resource."""
    out = dict(a)
    for name, amount in b.items():
        out[name] = max(0, out.get(name, 0) - amount)
    return out


# -- ports ---------------------------------------------------------------------------------------

PortRanges = tuple[tuple[int, int], ...]  # inclusive (begin, end), sorted, disjoint


def parse_port_ranges(value: object, what: str = "ports") -> PortRanges:
    """ "31000-32000,8080" or [[31000, 32000], 8080] as sorted, merged, inclusive ranges."""
    items: Iterable[object]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ResourceError(f"{what} must be ranges like '31000-32000', not {value!r}")
    ranges = []
    for item in items:
        if isinstance(item, str) and "-" in item:
            low, _, high = item.partition("-")
            begin, end = parse_count(low, what), parse_count(high, what)
        elif isinstance(item, list | tuple) and len(item) == 2:
            begin, end = parse_count(item[0], what), parse_count(item[1], what)
        else:
            begin = end = parse_count(item, what)
        if not 1 <= begin <= end <= 65535:
            raise ResourceError(f"{what}: {item!r} is not a port range within 1-65535")
        ranges.append((begin, end))
    return merge_ranges(ranges)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> PortRanges:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(ranges):
        if merged and begin <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    return tuple(merged)


def remove_ports(ranges: PortRanges, used: Iterable[int]) -> PortRanges:
    """The ranges without the given ports."""
    out = list(ranges)
    for port in sorted(set(used)):
        for i, (begin, end) in enumerate(out):
            if begin <= port <= end:
                pieces = [(b, e) for b, e in ((begin, port - 1), (port + 1, end)) if b <= e]
                out[i : i + 1] = pieces
                break
    return tuple(out)


def count_ports(ranges: PortRanges) -> int:
    if len(ranges) == 1:  # the usual host: one range
        return ranges[0][1] - ranges[0][0] + 1
    return sum(end - begin + 1 for begin, end in ranges)


def take_ports(ranges: PortRanges, count: int) -> tuple[list[int], PortRanges]:
    """The `count` lowest free ports, and the ranges left."""
    taken: list[int] = []
    rest = list(ranges)
    while len(taken) < count:
        begin, end = rest[0]
        n = min(count - len(taken), end - begin + 1)
        taken.extend(range(begin, begin + n))
        if begin + n > end:
            rest.pop(0)
        else:
            rest[0] = (begin + n, end)
    return taken, tuple(rest)
