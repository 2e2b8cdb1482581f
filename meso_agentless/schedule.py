"""Schedules of cron jobs: a systemd calendar expression (OnCalendar=) or a 5-field cron line,
checked, turned into the calendar expressions a host's timer takes, and their next fire times.

A cron line is read with croniter (field by field, so an error names the field: "hour 25 out of
range") and written as systemd calendar expressions; cron's rule that a day of month and a day
of week both given mean either one becomes two expressions. A calendar expression is checked
by `systemd-analyze calendar`, the same parser the hosts' systemd uses. Both carry the job's
time zone, so the host's timer fires at the same times the controller shows.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
MAX_SCHEDULE = 256
_TZ = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+){0,2}$")
_ELAPSE = re.compile(r"^\s*(?:Next elapse|Iter\. #\d+):\s+\w+ (\S+ \S+) UTC$")
ANALYZE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Schedule:
    """A checked schedule: what the job file says, its kind, and the OnCalendar= expressions
    (with the time zone) a host's timer is given."""

    text: str
    timezone: str
    kind: str  # "cron" or "calendar"
    calendars: tuple[str, ...]

    def next_fires(self, after: float, count: int = 1) -> list[float]:
        """The next `count` fire times (Unix seconds) strictly after `after`."""
        if self.kind == "cron":
            base = datetime.fromtimestamp(after, ZoneInfo(self.timezone))
            it = _croniter()(self.text, base)
            return [it.get_next(float) for _ in range(count)]
        times: set[float] = set()
        for calendar in self.calendars:
            times.update(_analyze(calendar, after, count))
        return sorted(times)[:count]


def _croniter() -> type:
    """croniter, imported when a cron line is read (not by every command that imports this)."""
    from croniter import croniter

    return croniter


def between(schedule: Schedule, after: float, before: float, limit: int) -> list[float]:
    """The last `limit` fire times in (after, before), oldest first (at most 1,000 looked at
    for a systemd calendar, which can only be walked forwards)."""
    if limit <= 0 or before <= after:
        return []
    if schedule.kind == "cron":
        base = datetime.fromtimestamp(before, ZoneInfo(schedule.timezone))
        it = _croniter()(schedule.text, base)
        out = []
        while len(out) < limit:
            when = it.get_prev(float)
            if when <= after:
                break
            if when < before:
                out.append(when)
        return sorted(out)
    fires = schedule.next_fires(after, 1000)
    return [t for t in fires if after < t < before][-limit:]


def check_timezone(name: str) -> str:
    """An IANA time zone name this machine knows; ValueError otherwise."""
    if not isinstance(name, str) or not _TZ.match(name) or ".." in name:
        raise ValueError(f"{name!r} is not a time zone (an IANA name like Europe/Berlin or UTC)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{name!r} is not a time zone (an IANA name like Europe/Berlin or UTC)"
        ) from None
    return name


def parse(text: str, timezone: str = "UTC") -> Schedule:
    """A schedule from a job file; ValueError with the reason (quoting the schedule)."""
    check_timezone(timezone)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a systemd calendar expression or a 5-field cron line")
    if len(text) > MAX_SCHEDULE or any(not c.isprintable() for c in text):
        raise ValueError(f"must be one line of at most {MAX_SCHEDULE} printable characters")
    fields = text.split()
    if len(fields) == 5 and ":" not in text:
        return Schedule(text, timezone, "cron", cron_to_calendars(text, timezone))
    if len(fields) in (5, 6, 7) and ":" not in text and all(_cronish(f) for f in fields):
        raise ValueError(f"{_q(text)}: a cron line has 5 fields (minute hour day month weekday)")
    if _has_zone(text):
        raise ValueError(f"{_q(text)}: give the time zone as timezone:, not in the schedule")
    calendar = f"{text.strip()} {timezone}"
    problem = calendar_error(calendar)
    if problem:
        raise ValueError(f"{_q(text)}: {problem}")
    return Schedule(text, timezone, "calendar", (calendar,))


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _cronish(field: str) -> bool:
    return bool(re.fullmatch(r"[0-9*/,?LW#A-Za-z-]+", field))


def _has_zone(text: str) -> bool:
    last = text.split()[-1]
    return last in ("UTC", "GMT") or ("/" in last and last[0].isalpha() and ":" not in last)


def cron_to_calendars(text: str, timezone: str) -> tuple[str, ...]:
    """A 5-field cron line as systemd calendar expressions (ValueError naming the field)."""
    croniter = _croniter()
    fields = text.split()
    for i, value in enumerate(fields):
        probe = ["*"] * 5
        probe[i] = value
        try:
            croniter.expand(" ".join(probe))
        except Exception as exc:  # croniter's errors do not say which field
            why = "out of range" if "range" in str(exc) else "is not valid"
            raise ValueError(f"{_q(text)}: {CRON_FIELDS[i]} {value} {why}") from None
    try:
        expanded, _ = croniter.expand(text)
    except Exception as exc:
        raise ValueError(f"{_q(text)}: {' '.join(str(exc).split())[:100]}") from None
    minute, hour, dom, month, dow = (
        _values(f, name) for f, name in zip(expanded[:5], CRON_FIELDS, strict=True)
    )
    time = f"{hour}:{minute}:00"
    if dom != "*" and dow != "*":  # cron: either the day of month or the day of week
        return (
            f"*-{month}-{dom} {time} {timezone}",
            f"{_days(dow)} *-{month}-* {time} {timezone}",
        )
    if dow != "*":
        return (f"{_days(dow)} *-{month}-* {time} {timezone}",)
    return (f"*-{month}-{dom} {time} {timezone}",)


def _values(values: list, name: str) -> str:
    if values == ["*"]:
        return "*"
    if not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} {values!r} is not supported (numbers, ranges, steps, names)")
    return ",".join(f"{v:02d}" if name in ("minute", "hour") else str(v) for v in values)


def _days(values: str) -> str:
    return ",".join(DAYS[int(v) % 7] for v in values.split(","))


def calendar_error(calendar: str) -> str | None:
    """Why systemd would refuse this OnCalendar= expression, or None."""
    if shutil.which("systemd-analyze") is None:
        return None  # the host's systemd-run refuses it at placement, with its reason
    return _calendar_error(calendar)


@functools.lru_cache(maxsize=256)
def _calendar_error(calendar: str) -> str | None:
    try:
        done = subprocess.run(
            ["systemd-analyze", "calendar", "--", calendar],
            capture_output=True, text=True, timeout=ANALYZE_TIMEOUT, check=False,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 0 and "Failed" not in done.stderr:
        return None
    return "not a systemd calendar expression (like *-*-* 02:00:00, Mon..Fri 9:00, daily) " \
        "nor a 5-field cron line"  # fmt: skip


def _analyze(calendar: str, after: float, count: int) -> list[float]:
    if shutil.which("systemd-analyze") is None:
        return []
    try:
        done = subprocess.run(
            ["systemd-analyze", "calendar", f"--iterations={count}",
             f"--base-time=@{int(after)}", "--", calendar],
            capture_output=True, text=True, timeout=ANALYZE_TIMEOUT, check=False,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for line in done.stdout.splitlines():
        match = _ELAPSE.match(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            out.append(when.timestamp())
    return out


def show(when: float | None, timezone: str) -> str:
    """A fire time in the job's time zone and in UTC, for people."""
    if when is None:
        return "-"
    utc = datetime.fromtimestamp(when, UTC)
    local = utc.astimezone(ZoneInfo(timezone))
    if timezone == "UTC":
        return utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{local.strftime('%Y-%m-%d %H:%M:%S %Z')} ({utc.strftime('%H:%M:%S UTC')})"
