"""The fleet's compact unit statuses read as the decoded dicts they were made from."""

from __future__ import annotations

import json
import sys

from hypothesis import given
from hypothesis import strategies as st

from meso_agentless.controller.fleet import Fleet, unit_key
from meso_agentless.controller.unitstatus import UnitStatus, same_units, units_map
from meso_agentless.testing.fakes import FakeClock, FakeHost, FakePlane

STATUS = {"unit": "meso-web_api_0_1.service", "state": "running", "exit_code": None,
          "signal": None, "reason": None, "restarts": 0, "millicpus": 500,
          "memory_max": 268435456, "description": "meso web/api[0] attempt 1 [state:ab12]",
          "active": "active", "sub": "running"}  # fmt: skip

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
)
statuses = st.dictionaries(st.text(max_size=12), values, max_size=15)


def decoded(status: dict) -> dict:
    """As a host's answer is decoded: fresh objects every time."""
    return json.loads(json.dumps(status))


@given(statuses)
def test_a_compact_status_reads_as_the_dict_it_was_made_from(status):
    status = decoded(status)
    compact = UnitStatus.of(status)
    assert compact == status and status == compact
    assert dict(compact) == status and list(compact) == list(status)
    assert len(compact) == len(status)
    for key, value in status.items():
        assert compact[key] == value and compact.get(key) == value and key in compact
    assert compact.get("no such field", "default") == "default"
    assert ("no such field" in compact) is ("no such field" in status)
    assert same_units([decoded(status)], {"u": compact})


@given(statuses, st.text(max_size=12), values)
def test_a_status_that_changed_in_any_field_is_not_the_same(status, key, value):
    status = decoded(status)
    changed = {**status, key: value}
    compact = UnitStatus.of(status)
    assert same_units([decoded(changed)], {"u": compact}) == (changed == status)
    assert (compact == changed) == (changed == status)


def test_readers_see_the_fields_they_read():
    compact = UnitStatus.of(decoded(STATUS))
    assert compact["state"] == "running" and compact.get("memory_max") == 268435456
    assert compact.get("next") is None and compact.get("kind", "service") == "service"
    try:
        compact["next"]
    except KeyError as exc:
        assert exc.args == ("next",)
    else:
        raise AssertionError("a missing field must raise KeyError")
    assert bool(compact) and not UnitStatus.of({})
    assert json.loads(json.dumps(dict(compact))) == STATUS


def test_units_alike_share_their_keys_strings_and_limits():
    one, two = UnitStatus.of(decoded(STATUS)), UnitStatus.of(decoded(STATUS))
    for key in ("state", "active", "sub", "memory_max", "millicpus"):
        assert one[key] is two[key]
    assert one._keys is two._keys
    assert sys.getsizeof(one) + sys.getsizeof(one._values) < sys.getsizeof(decoded(STATUS)) / 2


def test_a_unit_list_is_the_same_only_unit_by_unit_in_order():
    other = {**STATUS, "unit": "meso-web_api_1_1.service"}
    units = [decoded(STATUS), decoded(other)]
    kept = units_map(units, unit_key)
    assert list(kept) == ["meso-web_api_0_1", "meso-web_api_1_1"]
    assert same_units([decoded(STATUS), decoded(other)], kept)
    assert not same_units([decoded(other), decoded(STATUS)], kept)  # another order: built again
    assert not same_units([decoded(STATUS)], kept)
    assert not same_units([decoded(STATUS), {**decoded(other), "state": "failed"}], kept)
    assert not same_units([decoded(STATUS), "not an object"], kept)
    assert units_map([decoded(STATUS), "not an object", 3], unit_key) == {
        "meso-web_api_0_1": STATUS
    }


def test_the_fleet_keeps_each_hosts_units_compact_and_out_of_its_facts():
    clock = FakeClock()
    plane = FakePlane({"h1": FakeHost("h1")}, clock)
    changes = []
    fleet = Fleet(plane, clock, on_change=lambda: changes.append(1))
    plane.launch("h1", {"unit": "meso-web_api_0_1", "argv": ["sleep", "1"], "cpus": 500,
                        "description": "meso web/api[0] attempt 1"})  # fmt: skip
    fleet.refresh()
    view = fleet.view("h1")
    assert "units" not in view.facts and view.facts["boot"] == plane.by_name["h1"].boot
    status = view.units["meso-web_api_0_1"]
    assert isinstance(status, UnitStatus) and status["state"] == "running"
    assert status == plane.status("h1", "meso-web_api_0_1")
    seen = len(changes)
    fleet.refresh()  # the same units: the same map, no change
    assert fleet.view("h1").units is view.units and len(changes) == seen
    assert fleet.view("h1").marks == view.marks
    plane.stop("h1", "meso-web_api_0_1")
    fleet.refresh()
    assert fleet.view("h1").units == {} and fleet.view("h1").marks != view.marks
    assert len(changes) > seen
