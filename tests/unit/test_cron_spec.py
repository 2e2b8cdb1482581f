"""Cron job files: schedules as systemd calendar expressions or 5-field cron lines, checked
with the field and the reason; the timer's calendar expressions and next fire times."""

from datetime import UTC, datetime

import pytest

from meso_agentless import schedule
from meso_agentless.errors import UsageError
from meso_agentless.spec import Job, job_from_text


def cron(extra: str, schedule_line: str = '"0 2 * * *"') -> str:
    return (f"job: nightly\ntype: cron\nschedule: {schedule_line}\n{extra}"
            "tasks:\n  - {name: report, command: [echo, hi]}\n")  # fmt: skip


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_cron_job_with_both_syntaxes():
    job = job_from_text(cron("timezone: Europe/Berlin\nconcurrency: replace\ncatch_up: 2\n"))
    assert (job.type, job.concurrency, job.catch_up) == ("cron", "replace", 2)
    assert job.cron.calendars == ("*-*-* 02:00:00 Europe/Berlin",)
    # 02:00 in Berlin is 01:00 UTC in winter
    assert job.cron.next_fires(at("2026-11-26T12:00:00"), 2) == [
        at("2026-11-27T01:00:00"), at("2026-11-28T01:00:00")]  # fmt: skip
    calendar = job_from_text(cron("", '"*:*:0/10"'))
    assert calendar.cron.kind == "calendar" and calendar.cron.calendars == ("*:*:0/10 UTC",)
    assert calendar.cron.next_fires(at("2026-11-26T12:00:03"), 3) == [
        at("2026-11-26T12:00:10"),
        at("2026-11-26T12:00:20"),
        at("2026-11-26T12:00:30"),
    ]


def test_cron_lines_become_the_same_calendar_systemd_reads():
    assert schedule.cron_to_calendars("*/15 9-17 * * mon-fri", "UTC") == (
        "Mon,Tue,Wed,Thu,Fri *-*-* 09,10,11,12,13,14,15,16,17:00,15,30,45:00 UTC",
    )
    # cron runs when either the day of month or the day of week matches: two expressions
    either = schedule.parse("0 0 1 * 1")
    assert either.calendars == ("*-*-1 00:00:00 UTC", "Mon *-*-* 00:00:00 UTC")
    fires = either.next_fires(at("2026-11-26T12:00:00"), 3)
    assert fires == [at("2026-11-30T00:00:00"), at("2026-12-01T00:00:00"),
                     at("2026-12-07T00:00:00")]  # fmt: skip
    for expression in either.calendars:  # systemd itself agrees on each
        assert schedule.calendar_error(expression) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (cron(""), None),
        (cron("", '"0 25 * * *"'), 'job.yaml:3: schedule: "0 25 * * *": hour 25 out of range'),
        (cron("", '"61 * * * *"'), 'schedule: "61 * * * *": minute 61 out of range'),
        (cron("", '"0 0 * * 9"'), "day of week 9 out of range"),
        (cron("", '"0 0 * 13 *"'), "month 13 out of range"),
        (cron("", '"x 0 * * *"'), "minute x is not valid"),
        (cron("", '"0 2 * * * *"'), "a cron line has 5 fields"),
        (cron("", '"*-*-* 25:00"'), 'schedule: "*-*-* 25:00": not a systemd calendar'),
        (cron("", '"every day"'), "not a systemd calendar expression"),
        (cron("", '"daily Europe/Berlin"'), "give the time zone as timezone:"),
        (cron("", '""'), "schedule: must be a systemd calendar expression or a 5-field"),
        (cron("timezone: Mars/Base\n"), "job.yaml:4: timezone: 'Mars/Base' is not a time zone"),
        (cron("timezone: ../../etc/passwd\n"), "timezone: '../../etc/passwd' is not a time"),
        (cron("concurrency: sometimes\n"), "job.yaml:4: concurrency: Input should be"),
        (cron("catch_up: -1\n"), "job.yaml:4: catch_up: Input should be greater than"),
        ("job: x\nschedule: daily\ntasks:\n  - {name: a, command: [ls]}\n",
         "job.yaml:2: schedule: only for type: cron"),
        ("job: x\nconcurrency: allow\ntasks:\n  - {name: a, command: [ls]}\n",
         "job.yaml:2: concurrency: only for type: cron"),
        (cron("").replace("command: [echo, hi]}", "command: [echo], health: {command: ['true']}}"),
         "health checks are for services, not cron"),
    ],
)  # fmt: skip
def test_bad_schedules_name_the_field_and_the_reason(text, message):
    if message is None:
        job_from_text(text, "job.yaml")
        return
    with pytest.raises(UsageError) as caught:
        job_from_text(text, "job.yaml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_jobs_specs_are_stored_as_before():
    """A batch or service job's spec has no cron fields: stored specs still compare equal."""
    job = Job.model_validate({"job": "a", "tasks": [{"name": "b", "command": ["x"]}]})
    assert not {"schedule", "timezone", "concurrency", "catch_up"} & set(job.model_dump())
    dumped = job_from_text(cron("")).model_dump(mode="json")
    assert dumped["schedule"] == "0 2 * * *" and dumped["timezone"] == "UTC"
    assert Job.model_validate(dumped).model_dump(mode="json") == dumped


def test_schema_covers_cron():
    properties = Job.model_json_schema()["properties"]
    assert {"schedule", "timezone", "concurrency", "catch_up"} <= set(properties)
    assert "cron" in str(properties["type"])


def test_a_cron_jobs_lease_is_five_minutes_unless_the_file_says_otherwise():
    assert job_from_text(cron("")).disconnect.replace_after == 300
    assert job_from_text(cron("disconnect: {batch: wait}\n")).disconnect.replace_after == 300
    assert job_from_text(cron("disconnect: {replace_after: 20s}\n")).disconnect.replace_after == 20
    batch = job_from_text("job: b\ntasks:\n  - {name: t, command: [echo, hi]}\n")
    assert batch.disconnect.replace_after == 30
    stored = Job.model_validate(job_from_text(cron("")).model_dump(mode="json"))
    assert stored.disconnect.replace_after == 300
