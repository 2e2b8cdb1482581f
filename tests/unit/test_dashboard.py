"""The dashboard's server side on a fake cluster: signing in (cookie flags, the printed link,
wrong tokens), the Origin check on changes made with the cookie, the pages' content, the routes
it reads (/v1/history, a task's detail), the sharing history's downsampling, and the wheel
carrying the templates and the chart library. The browser tests are tests/lab/test_dashboard.py.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from meso_agentless.controller.history import Point, ShareHistory, average, snapshot
from meso_agentless.core.model import Framework
from meso_agentless.testing.api import api_client
from meso_agentless.testing.fakes import FakeCluster
from meso_agentless.ui.session import dashboard_line
from tests.lab.common import wait_for

ROOT = Path(__file__).parents[2]
TOKEN = "t" * 32
WEB = {"job": "web", "type": "service", "framework": "web",
       "tasks": [{"name": "server", "count": 2, "command": ["sleep", "infinity"],
                  "resources": {"cpus": 0.5, "mem": "64MiB", "ports": 1}}]}  # fmt: skip
WIDE = {"job": "wide", "framework": "batch",
        "tasks": [{"name": "w", "count": 3, "command": ["sleep", "60"],
                   "resources": {"cpus": 1.5, "mem": "32MiB"}}]}  # fmt: skip


@pytest.fixture
def api(tmp_path):
    cluster = FakeCluster.of(tmp_path, {"h1": (2, "4GiB"), "h2": (2, "4GiB")},
                             (Framework("web", 2.0), Framework("batch", 1.0)))  # fmt: skip
    with api_client(cluster, TOKEN) as client:
        yield client


@pytest.fixture
def browser_like(api):
    """The same client with no bearer header: only the cookie (once signed in) speaks for it."""
    del api.headers["Authorization"]
    return api


def sign_in(client):
    done = client.get(f"/ui?token={TOKEN}", follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ui"
    return done


def test_the_printed_link_sets_an_httponly_strict_cookie_and_drops_the_token(browser_like):
    done = sign_in(browser_like)
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"meso_token={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on 127.0.0.1; HTTPS gets Secure
    page = browser_like.get("/ui")
    assert page.status_code == 200 and 'id="live-part"' in page.text
    assert TOKEN not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_over_https_the_cookie_is_secure_too(api):
    with TestClient(api.app, base_url="https://testserver") as secure:
        done = secure.get(f"/ui?token={TOKEN}", follow_redirects=False)
    assert done.status_code == 303 and "Secure" in done.headers["set-cookie"]


@pytest.mark.parametrize("path", ["/ui", "/ui/sharing", "/ui/jobs", "/ui/jobs/web",
                                  "/ui/jobs/web/tasks/server/0", "/ui?part=1"])  # fmt: skip
def test_without_the_cookie_every_page_is_the_login_page_and_nothing_else(browser_like, path):
    page = browser_like.get(path)
    assert page.status_code == 401
    assert 'name="token"' in page.text and "<nav" not in page.text and "h1" in page.text


def test_a_wrong_token_gets_the_login_page_with_why_and_no_cookie(browser_like):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for done in (browser_like.get("/ui?token=nope", follow_redirects=False),
                 browser_like.post("/ui/login", content=b"token=nope", headers=form)):  # fmt: skip
        assert done.status_code == 401 and "not this controller" in done.text
        assert "set-cookie" not in done.headers
    assert browser_like.get("/v1/jobs").status_code == 401


def test_the_login_form_signs_in(browser_like):
    done = browser_like.post("/ui/login", content=f"token={TOKEN}".encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      "Origin": "http://testserver"},
                             follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and "HttpOnly" in done.headers["set-cookie"]
    assert browser_like.get("/v1/jobs").status_code == 200  # the API takes the cookie too


def test_changes_with_the_cookie_need_the_controllers_own_origin(browser_like):
    sign_in(browser_like)
    assert browser_like.post("/v1/jobs", json=WEB).status_code == 403  # no Origin
    for origin in ("http://evil.test", "null", "http://testserver.evil.test"):
        done = browser_like.delete("/v1/jobs/web", headers={"Origin": origin})
        assert done.status_code == 403 and done.json()["error"].startswith("origin: "), origin
    assert browser_like.get("/v1/jobs").json() == {"jobs": []}  # nothing was stored
    own = {"Origin": "http://testserver"}
    assert browser_like.post("/v1/jobs", json=WEB, headers=own).status_code == 201
    assert browser_like.delete("/v1/jobs/web", headers=own).status_code == 200
    out = browser_like.post("/ui/logout", headers=own, follow_redirects=False)
    assert out.status_code == 303 and 'meso_token=""' in out.headers["set-cookie"]


def test_a_bearer_token_needs_no_origin_and_a_bad_one_is_not_saved_by_a_cookie(api):
    assert api.post("/v1/jobs", json=WEB).status_code == 201  # curl and the CLI: no Origin
    sign_in(api)
    done = api.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert done.status_code == 401  # a header that is given is the one that counts


def test_the_cluster_page_has_a_row_and_bars_per_host_by_framework(api):
    api.post("/v1/jobs", json=WEB)
    page = api.get("/ui").text
    for host in ("h1", "h2"):
        assert f'data-host="{host}"' in page
    assert 'data-framework="web"' in page
    # each bar in words too (screen readers, no colour): both instances binpacked on h1
    assert "cpus: 1 of 2 allocated (web 1); used 0; free 1" in page
    assert "cpus: 0 of 2 allocated; used 0; free 2" in page
    assert "ports: 2 of 1001 allocated (web 2); free 999" in page
    assert "mem: 128 MiB of 8.0 GiB allocated (web 128 MiB)" in page  # the totals
    assert page.count('class="meter"') == 4 * 3  # cpus, mem, disk, ports: per host and in all
    assert "2 up" in page


def test_the_jobs_and_job_pages_show_states_counts_and_unplaced_reasons(api):
    api.post("/v1/jobs", json=WEB)
    api.post("/v1/jobs", json=WIDE)
    jobs = api.get("/ui/jobs?part=1").text
    assert 'data-job="web"' in jobs and 'data-job="wide"' in jobs and "2 running" in jobs
    assert "<html" not in jobs  # only the live part
    job = api.get("/ui/jobs/wide").text
    assert "Waiting to be placed" in job
    assert "no host fits: dimension &#34;cpus&#34; exhausted on 2 hosts" in job
    assert 'id="kill"' in job and 'id="confirm"' in job
    missing = api.get("/ui/jobs/nosuch")
    assert missing.status_code == 404 and "no job" in missing.text


def test_a_cron_jobs_page_shows_its_schedule_timers_and_runs(api):
    cron = ('job: tick\ntype: cron\nschedule: "*:*:0/10"\ntasks:\n  - {name: t, command: '
            '["true"], resources: {cpus: 0.5, mem: 32MiB}}\n')  # fmt: skip
    done = api.post("/v1/jobs", content=cron, headers={"Content-Type": "application/yaml"})
    assert done.status_code == 201, done.text
    [run] = api.post("/v1/jobs/tick/trigger").json()["runs"]
    wait_for(lambda: api.get("/v1/jobs/tick").json()["runs"])
    page = api.get("/ui/jobs/tick?part=1").text
    assert "Schedule" in page and "<code>*:*:0/10</code> (UTC)" in page
    assert "timer t[0] on h" in page and "concurrency forbid" in page
    assert f"<code>{run['unit']}</code>" in page and "trigger" in page


def test_a_tasks_detail_has_its_unit_as_the_host_reported_it_and_its_history(api):
    api.post("/v1/jobs", json=WEB)
    api.cluster.fleet.refresh()
    detail = api.get("/v1/jobs/web/tasks/server/1")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["task"]["unit"] == "meso-web_server_1_1" and body["unit"] is not None
    assert body["unit"]["state"] == "running" and body["unit_seen"] is not None
    assert [a["attempt"] for a in body["attempts"]] == [1]
    kinds = [e["kind"] for e in body["events"]]
    assert "placed" in kinds and "task" in kinds
    assert all("server[1]" in e["message"] or "_1_1" in e["message"] for e in body["events"])
    page = api.get("/ui/jobs/web/tasks/server/1").text
    assert "meso-web_server_1_1" in page and 'id="log"' in page
    for path, status in (("/v1/jobs/web/tasks/server/7", 404),
                         ("/v1/jobs/nope/tasks/server/0", 404),
                         ("/v1/jobs/web/tasks/server/-1", 422)):  # fmt: skip
        assert api.get(path).status_code == status, path


def test_history_route_answers_the_points_kept_and_only_later_ones(api):
    api.post("/v1/jobs", json=WEB)
    ctx = api.app.state.ctx
    for t in (100.0, 101.0, 102.0):
        ctx.history.record(snapshot(ctx.service, t))
    body = api.get("/v1/history").json()
    assert [p["time"] for p in body["points"]] == [100.0, 101.0, 102.0]
    web = body["points"][-1]["frameworks"]["web"]
    assert web["cpus"] == 1.0 and web["weighted_share"] == 0.125 and web["fair"] == 0.5
    assert body["points"][-1]["frameworks"]["batch"]["fair"] is None  # no work: no claim
    assert body["points"][-1]["cluster"]["cpus_total"] == 4.0
    assert [p["time"] for p in api.get("/v1/history?since=100.5").json()["points"]] == [101, 102]
    assert api.get("/v1/history?since=-1").status_code == 422


def point(t: float, share: float, fair: float | None = 0.5) -> Point:
    return Point(t, {"a": {"share": share, "weighted_share": share, "fair": fair, "cpus": share,
                           "mem": 0.0, "tasks": 1.0}}, {"cpus_total": 4.0})  # fmt: skip


def test_history_keeps_the_last_minutes_whole_and_averages_older_ones_for_an_hour():
    history = ShareHistory(interval=1.0, window=3600, raw_seconds=60, bucket=15)
    for t in range(7200):  # two hours, one point a second
        history.record(point(float(t), share=(t % 2) * 1.0))
    points = history.points()
    times = [p.time for p in points]
    assert times == sorted(times) and times[-1] == 7199.0
    assert times[0] >= 7199 - 3600  # the last hour only
    whole = [t for t in times if t >= times[-1] - 60]
    assert len(whole) == 61  # the last minute at the sample interval
    assert len(points) < 61 + 3600 / 15 + 2  # the rest: one per 15 s
    older = [p for p in points if p.time < whole[0]]
    assert all(p.frameworks["a"]["share"] == pytest.approx(0.5, abs=0.04) for p in older)
    assert [p.time for p in history.points(since=7190.0)] == [float(t) for t in range(7191, 7200)]


def test_an_average_counts_a_missing_framework_as_zero_and_fair_only_where_known():
    merged = average([point(0, 1.0), point(2, 0.0, fair=None), Point(4, {}, {})])
    assert merged.time == 2
    assert merged.frameworks["a"]["share"] == pytest.approx(1 / 3)
    assert merged.frameworks["a"]["fair"] == 0.5


def test_the_dashboard_link_has_the_token_only_on_a_terminal():
    url = "http://127.0.0.1:4646"
    assert dashboard_line(url, TOKEN, "/s/token", terminal=True) == (
        f"meso controller: dashboard at {url}/ui?token={TOKEN}"
    )
    logged = dashboard_line(url, TOKEN, "/s/token", terminal=False)
    assert TOKEN not in logged and logged.endswith("(sign in with the token in /s/token)")


def test_the_wheel_carries_the_templates_the_scripts_and_the_chart_library(tmp_path):
    vendor = ROOT / "meso_agentless/ui/static/vendor/chart.umd.min.js"
    assert vendor.is_file(), "scripts/setup copies the chart library from frontend/"
    source = tmp_path / "src"  # a copy: a build in the checkout would leave build/ there
    shutil.copytree(ROOT / "meso_agentless", source / "meso_agentless",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(tmp_path / "wheels"), str(source)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("templates/base.html", "templates/parts/cluster.html", "static/app.js",
                 "static/app.css", "static/vendor/chart.umd.min.js"):  # fmt: skip
        assert f"meso_agentless/ui/{name}" in names, name
