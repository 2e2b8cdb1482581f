"""A workload trace: CSV, one row per task group, read strictly.

Columns (a header row names them, in any order): submit_s, framework, job, task, count, cpus,
mem, duration_s; optional disk, ports, type (batch | service), constraints (a JSON list of the
job file's constraints), gang (true | false). A service has no duration_s: it runs to the end
of the trace. Anything wrong is one UsageError naming the line and the column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pydantic import TypeAdapter, ValidationError

from meso_agentless.core.model import Constraint
from meso_agentless.core.resources import (
    CPUS,
    DISK,
    MEM,
    PORTS,
    ResourceError,
    parse_count,
    parse_cpus,
    parse_size,
)
from meso_agentless.errors import UsageError

REQUIRED = ("submit_s", "framework", "job", "task", "count", "cpus", "mem", "duration_s")
OPTIONAL = ("disk", "ports", "type", "constraints", "gang")
COLUMNS = REQUIRED + OPTIONAL
MAX_COUNT = 1_000_000
MAX_SECONDS = Decimal(10**9)  # about 30 years of simulated time
MAX_TRACE_BYTES = 512 * 2**20
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One task group: `count` instances of `task` of `job`, submitted at `submit_ms`.

    Times are integer milliseconds; duration_ms None is a service (runs to the end).
    """

    line: int
    submit_ms: int
    framework: str
    job: str
    task: str
    count: int
    resources: dict[str, int]
    duration_ms: int | None
    constraints: tuple[Constraint, ...] = ()
    gang: bool = False

    @property
    def is_service(self) -> bool:
        return self.duration_ms is None

    @property
    def key(self) -> tuple[int, str, str, str]:
        """Submission order: time, then names (so row order never matters)."""
        return (self.submit_ms, self.framework, self.job, self.task)


class _Bad(Exception):
    """A cell that cannot be read: (column, reason)."""


def read_trace(path: str) -> list[TraceRow]:
    """Read and check a trace file; UsageError names the file, line and column."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read(MAX_TRACE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise UsageError(f"trace {path}: {reason}") from None
    if len(text) > MAX_TRACE_BYTES:
        raise UsageError(f"trace {path}: larger than {MAX_TRACE_BYTES >> 20} MiB")
    return parse_trace(text, path)


def parse_trace(text: str, source: str = "trace") -> list[TraceRow]:
    """The rows of a trace, in submission order (pure)."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise UsageError(f"{source} line 1: {exc}") from None
    if header is None:
        raise UsageError(f"{source}: empty, expected a header row: {','.join(REQUIRED)}")
    names = [h.strip() for h in header]
    for name in names:
        if name not in COLUMNS:
            raise UsageError(f"{source} line 1, column {name!r}: unknown column "
                             f"(known: {', '.join(COLUMNS)})")  # fmt: skip
        if names.count(name) > 1:
            raise UsageError(f"{source} line 1, column {name}: given twice")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise UsageError(f"{source} line 1: missing column {missing[0]}")
    rows: list[TraceRow] = []
    seen: dict[tuple[str, str, str], int] = {}
    owner: dict[str, tuple[str, int]] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UsageError(f"{source} line {reader.line_num}: {exc}") from None
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise UsageError(f"{source} line {line}: {len(cells)} cells, the header has "
                             f"{len(names)}")  # fmt: skip
        try:
            row = _row(line, dict(zip(names, cells, strict=True)))
        except _Bad as exc:
            column, reason = exc.args
            raise UsageError(f"{source} line {line}, column {column}: {reason}") from None
        key = (row.framework, row.job, row.task)
        if key in seen:
            raise UsageError(f"{source} line {line}, column task: task {row.task} of job "
                             f"{row.job} is already on line {seen[key]}")  # fmt: skip
        seen[key] = line
        first = owner.setdefault(row.job, (row.framework, line))
        if first[0] != row.framework:
            raise UsageError(f"{source} line {line}, column job: job {row.job} belongs to "
                             f"framework {first[0]} (line {first[1]})")  # fmt: skip
        rows.append(row)
    if not rows:
        raise UsageError(f"{source}: no rows after the header")
    return sorted(rows, key=lambda r: r.key)


def _row(line: int, cell: dict[str, str]) -> TraceRow:
    get = {k: v.strip() for k, v in cell.items()}
    names = {c: _name(c, get[c]) for c in ("framework", "job", "task")}
    count = _number(parse_count, "count", get["count"])
    if not 1 <= count <= MAX_COUNT:
        raise _Bad("count", f"{count} is not from 1 to {MAX_COUNT}")
    resources = {
        CPUS: _number(parse_cpus, "cpus", get["cpus"]),
        MEM: _number(parse_size, "mem", get["mem"]),
    }
    if get.get("disk"):
        resources[DISK] = _number(parse_size, "disk", get["disk"])
    if get.get("ports"):
        resources[PORTS] = _number(parse_count, "ports", get["ports"])
        if resources[PORTS] > 1000:
            raise _Bad("ports", f"{resources[PORTS]} ports for one task is absurd")
    resources = {k: v for k, v in resources.items() if v}
    if not resources.get(CPUS) and not resources.get(MEM):
        raise _Bad("cpus", "a task must ask for some cpus or mem")
    kind = get.get("type") or ("service" if not get["duration_s"] else "batch")
    if kind not in ("batch", "service"):
        raise _Bad("type", f"{kind!r} is not batch or service")
    duration = None
    if kind == "service":
        if get["duration_s"]:
            raise _Bad("duration_s", "a service has no duration (it runs to the end)")
    else:
        if not get["duration_s"]:
            raise _Bad("duration_s", "a batch task needs a duration")
        duration = _millis("duration_s", get["duration_s"])
        if duration == 0:
            raise _Bad("duration_s", "must be more than 0")
    gang = get.get("gang", "").lower()
    if gang not in ("", "true", "false"):
        raise _Bad("gang", f"{get['gang']!r} is not true or false")
    return TraceRow(
        line=line,
        submit_ms=_millis("submit_s", get["submit_s"]),
        count=count,
        resources=resources,
        duration_ms=duration,
        constraints=_constraints(get.get("constraints", "")),
        gang=gang == "true",
        **names,
    )


def _name(column: str, value: str) -> str:
    if not _NAME.match(value):
        raise _Bad(column, f"{value!r} is not a name (lowercase letters, digits and dashes)")
    return value


def _number(parse, column: str, value: str) -> int:
    if not value:
        raise _Bad(column, "empty")
    try:
        return parse(value, column)
    except ResourceError as exc:
        raise _Bad(column, str(exc)) from None


def _millis(column: str, value: str) -> int:
    try:
        seconds = Decimal(value)
    except InvalidOperation:
        raise _Bad(column, f"{value!r} is not a number of seconds") from None
    if not seconds.is_finite() or seconds < 0 or seconds > MAX_SECONDS:
        raise _Bad(column, f"{value!r} is not a number of seconds from 0 to {MAX_SECONDS}")
    millis = seconds * 1000
    if millis != millis.to_integral_value():
        raise _Bad(column, f"{value!r} is finer than a millisecond")
    return int(millis)


_CONSTRAINTS: TypeAdapter | None = None


def _constraints(value: str) -> tuple[Constraint, ...]:
    if not value:
        return ()
    global _CONSTRAINTS
    if _CONSTRAINTS is None:
        from meso_agentless.spec import Constraint as SpecConstraint

        _CONSTRAINTS = TypeAdapter(list[SpecConstraint])
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        raise _Bad("constraints", 'not JSON (a list like [{"op": "unique_host"}])') from None
    try:
        parsed = _CONSTRAINTS.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise _Bad("constraints", f"{where}: {error['msg']}" if where else error["msg"]) from None
    return tuple(c.to_core() for c in parsed)


def format_trace(rows: Iterable[TraceRow]) -> str:
    """Rows as trace CSV (the columns any row needs)."""
    rows = list(rows)
    columns = list(REQUIRED)
    for extra, needed in (
        ("disk", any(DISK in r.resources for r in rows)),
        ("ports", any(PORTS in r.resources for r in rows)),
        ("constraints", any(r.constraints for r in rows)),
        ("gang", any(r.gang for r in rows)),
    ):
        if needed:
            columns.append(extra)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        cells = {
            "submit_s": _seconds(r.submit_ms),
            "framework": r.framework,
            "job": r.job,
            "task": r.task,
            "count": r.count,
            "cpus": f"{r.resources.get(CPUS, 0)}m",
            "mem": _size(r.resources.get(MEM, 0)),
            "duration_s": "" if r.duration_ms is None else _seconds(r.duration_ms),
            "disk": _size(r.resources.get(DISK, 0)),
            "ports": r.resources.get(PORTS, ""),
            "constraints": json.dumps([_constraint(c) for c in r.constraints])
            if r.constraints
            else "",
            "gang": "true" if r.gang else "",
        }
        writer.writerow([cells[c] for c in columns])
    return out.getvalue()


def _seconds(millis: int) -> str:
    return (
        str(Decimal(millis) / 1000).rstrip("0").rstrip(".")
        if millis % 1000
        else str(millis // 1000)
    )


def _size(amount: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if amount and amount % size == 0:
            return f"{amount // size}{unit}"
    return str(amount)


def _constraint(c: Constraint) -> dict:
    out: dict = {"op": c.op}
    if c.op not in ("unique_host",):
        out["attribute"] = c.attribute
    if c.value is not None:
        out["value"] = c.value
    return out
