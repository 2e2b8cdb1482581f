"""The node command's kept unit listing: when a listing may be kept (pure)."""

from meso_agentless.node import nodecmd

RUNNING = {"unit": "meso-a_b_0_1.service", "active": "active", "sub": "running",
           "state": "running"}  # fmt: skip
FINISHED = {"unit": "meso-a_b_1_1.service", "active": "active", "sub": "exited",
            "state": "finished"}  # fmt: skip


def test_a_listing_that_agrees_with_the_cgroups_is_settled():
    populated = {RUNNING["unit"]: True, FINISHED["unit"]: None}
    assert nodecmd.listing_settled([RUNNING, FINISHED], populated)
    assert nodecmd.listing_settled([FINISHED], {FINISHED["unit"]: False})
    assert nodecmd.listing_settled([], {})


def test_a_unit_between_states_or_against_its_cgroup_is_not():
    # systemd has not yet seen the task end: its cgroup is empty
    assert not nodecmd.listing_settled([RUNNING], {RUNNING["unit"]: False})
    assert not nodecmd.listing_settled([RUNNING], {})
    # ended, with processes left (they may still hold what it was given)
    assert not nodecmd.listing_settled([FINISHED], {FINISHED["unit"]: True})
    for active in ("activating", "deactivating", "reloading"):
        assert not nodecmd.listing_settled([{**RUNNING, "active": active}], {RUNNING["unit"]: True})


def test_without_a_session_the_sample_asks_systemd_every_time(monkeypatch):
    asked = []
    monkeypatch.setattr(nodecmd, "_listing", lambda: asked.append(1) or ([], [], []))
    monkeypatch.setattr(nodecmd, "system_state", lambda: "running")
    assert nodecmd.watched_listing(None) == (([], [], []), "running")
    assert nodecmd.watched_listing(None) == (([], [], []), "running")
    assert len(asked) == 2


def test_meminfo_lines_that_are_not_numbers_are_left_out():
    text = "MemTotal:       16 kB\nHugePages_Total:       3\nActive(anon):  5 kB\nBad: x kB\n"
    assert nodecmd.parse_meminfo(text) == {"MemTotal": 16 * 1024, "HugePages_Total": 3}


def test_a_kept_listing_is_used_until_a_unit_file_or_cgroup_changes(monkeypatch, tmp_path):
    transient, root, units = tmp_path / "transient", tmp_path / "cgroup", tmp_path / "units"
    cgroup = root / "system.slice" / RUNNING["unit"]
    for path in (transient, cgroup, units):
        path.mkdir(parents=True)
    (root / "cgroup.procs").write_text("")
    (transient / RUNNING["unit"]).write_text("[Service]\n")
    (cgroup / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    monkeypatch.setattr(nodecmd, "TRANSIENT_DIR", str(transient))
    monkeypatch.setattr(nodecmd, "CGROUP2_ROOTS", (str(root),))
    monkeypatch.setattr(nodecmd, "WATCHED_DIRS", (str(units),))
    listing = {"now": [RUNNING]}
    asked = []

    def from_systemd():
        asked.append(1)
        return list(listing["now"]), [], []

    monkeypatch.setattr(nodecmd, "_listing", from_systemd)
    monkeypatch.setattr(nodecmd, "system_state", lambda: "running")
    kept: dict = {}
    for _ in range(3):
        assert nodecmd.watched_listing(kept)[0][0] == [RUNNING]
    assert len(asked) == 1
    # the task ends: its cgroup goes; systemd has not noticed yet, then has
    (cgroup / "cgroup.events").unlink()
    cgroup.rmdir()
    assert nodecmd.watched_listing(kept)[0][0] == [RUNNING]  # systemd's answer, not kept
    listing["now"] = [{**RUNNING, "sub": "exited", "state": "finished"}]
    assert nodecmd.watched_listing(kept)[0][0][0]["state"] == "finished"
    assert nodecmd.watched_listing(kept)[0][0][0]["state"] == "finished"
    assert len(asked) == 3
    # a unit started on the host (any unit: the invocation links change)
    (units / "invocation:other.service").write_text("x")
    nodecmd.watched_listing(kept)
    assert len(asked) == 4
    # a meso unit created behind the node's back
    (transient / "meso-a_b_2_1.service").write_text("[Service]\n")
    nodecmd.watched_listing(kept)
    nodecmd.watched_listing(kept)
    assert len(asked) == 5
