"""The dashboard at /ui in a real browser: Debian's chromium, headless, driven by Playwright, on
a real controller over the lab. One browser for the module, a fresh context (cookies) per test.

Screenshots of every page go to $MESO_SCREENSHOTS, or a directory under pytest's tmp dir; the
run prints where. With MESO_UPDATE_DOCS=1 the cluster and sharing pages also go to docs/ (the
README's images), taken while the fair-share examples run.
"""

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from meso_agentless.testing.controller import ControllerProcess, start_controller
from tests.lab.common import cli, wait_for

pytestmark = pytest.mark.lab
expect.set_options(timeout=15_000)  # waits, not deadlines: the machine may be busy

ROOT = Path(__file__).parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WORDS = re.compile(r"cpus: 0\.25 of 2 allocated \(web 0\.25\); used [0-9.]+; free 1\.75")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SPREAD = """\
job: spread
framework: web
type: service
tasks:
  - name: server
    count: 3
    command: ["sleep", "infinity"]
    resources: {cpus: 0.25, mem: 64MiB}
    constraints:
      - {op: max_per, attribute: hostname, value: 1}
"""
TALKER = """\
job: talker
framework: analytics
tasks:
  - name: t
    command:
      - sh
      - -c
      - echo hello from the talker $MESO_JOB; sleep 3; echo and later; exec sleep 600
    resources: {cpus: 0.1, mem: 32MiB}
"""
WIDE = """\
job: wide
framework: analytics
tasks:
  - name: w
    count: 2
    command: ["sleep", "600"]
    resources: {cpus: 2, mem: 64MiB}
"""
QUICK = """\
job: quick
tasks:
  - name: q
    command: ["sleep", "600"]
    resources: {cpus: 0.1, mem: 16MiB}
"""


class Dashboard:
    """The module's controller (restartable on its port) and where screenshots go."""

    def __init__(self, inventory: Path, directory: Path, shots: Path) -> None:
        self.inventory, self.directory, self.shots = inventory, directory, shots
        self.ctl: ControllerProcess = start_controller(inventory, directory)

    @property
    def url(self) -> str:
        return self.ctl.url

    def env(self, base: dict) -> dict:
        return {**base, **self.ctl.env}

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=self.ctl.headers, timeout=30,
                             **kwargs)  # fmt: skip

    def restart_on_a_terminal(self) -> str:
        """Stop the controller and start it again on the same address, its stderr a terminal
        (a pty, read by a thread into terminal.log); what it printed about the dashboard."""
        port = self.url.rsplit(":", 1)[1]
        self.ctl.stop()
        main, side = pty.openpty()
        state, token_file = self.directory / "state.db", self.directory / "token"
        argv = [sys.executable, "-m", "meso_agentless", "controller", "-i", str(self.inventory),
                "--listen", f"127.0.0.1:{port}", "--state", str(state), "--token-file",
                str(token_file)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("MESO_ADDR", "MESO_TOKEN")}
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=side, stderr=side,
                                   env=env)  # fmt: skip
        os.close(side)
        log = self.directory / "terminal.log"
        ready = threading.Event()

        def drain() -> None:  # read everything, or the controller would block on a full pty
            with open(log, "ab") as out:
                while True:
                    try:
                        chunk = os.read(main, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out.write(chunk)
                    out.flush()
                    if b"dashboard at" in log.read_bytes():
                        ready.set()
            os.close(main)

        threading.Thread(target=drain, daemon=True).start()
        assert ready.wait(60), log.read_text()
        self.ctl = ControllerProcess(process, self.url, token_file, state, log)
        return next(line for line in log.read_text().splitlines() if "dashboard at" in line)

    def shot(self, page: Page, name: str) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def dash(meso_lab, tmp_path_factory, request):
    given = os.environ.get("MESO_SCREENSHOTS")
    shots = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # said on the terminal, not captured
        print(f"\ndashboard screenshots: {shots}", flush=True)
    board = Dashboard(meso_lab.inventory, tmp_path_factory.mktemp("dashboard"), shots)
    try:
        yield board
    finally:
        board.ctl.stop()


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(autouse=True)
def close_pages(browser):
    """Each test's browser contexts are closed after it (their streams with them)."""
    yield
    for context in browser.contexts:
        context.close()


@pytest.fixture
def env(meso_lab, dash):
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    return dash.env({**base, "MESO_INVENTORY": str(meso_lab.inventory)})


def fresh_page(browser: Browser, viewport=DESKTOP) -> Page:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def signed_in(browser: Browser, dash: Dashboard, viewport=DESKTOP) -> Page:
    page = fresh_page(browser, viewport)
    page.goto(f"{dash.url}/ui?token={dash.ctl.token}")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    return page


def run_detached(env, tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    done = cli(env, "run", "--detach", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_sign_in_with_the_token_and_a_wrong_one_gets_the_login_page_only(browser, dash):
    page = fresh_page(browser)
    page.goto(f"{dash.url}/ui/jobs")
    expect(page.locator("input#token")).to_be_visible()
    assert page.locator("nav").count() == 0  # a login page and nothing else
    dash.shot(page, "login")
    page.goto(f"{dash.url}/ui?token=not-the-token-at-all")
    expect(page.get_by_role("alert")).to_contain_text("not this controller's")
    assert page.context.cookies() == []
    page.fill("input#token", "wrong-wrong-wrong-wrong")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not this controller's")
    page.fill("input#token", dash.ctl.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Cluster")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # scripts never see the token
    # the printed link: signs in, then the address no longer holds the token
    link = fresh_page(browser)
    link.goto(f"{dash.url}/ui?token={dash.ctl.token}")
    assert link.url == f"{dash.url}/ui"
    expect(link.locator("h1")).to_have_text("Cluster")
    link.click("text=Sign out")
    expect(link.locator("input#token")).to_be_visible()
    assert page.errors == [] and link.errors == []


def test_the_token_is_printed_only_in_the_dashboard_link_and_never_logged(dash):
    log = dash.ctl.log.read_text()
    assert dash.ctl.token not in log
    assert f"dashboard at {dash.url}/ui (sign in with the token in {dash.ctl.token_file})" in log


def test_the_cluster_page_shows_each_lab_host_with_bars(browser, dash, env, meso_lab, tmp_path):
    run_detached(env, tmp_path, "spread", SPREAD)
    for viewport, name in ((DESKTOP, "cluster"), (PHONE, "cluster-phone")):
        page = signed_in(browser, dash, viewport)
        for host in meso_lab.hosts:
            row = page.locator(f"li.host[data-host='{host.name}']")
            expect(row).to_be_visible()
            expect(row.locator(".state")).to_have_text("up")
            cpus = row.locator(".meter[data-resource=cpus]")
            segment = cpus.locator(".seg[data-framework=web]")
            expect(segment).to_have_count(1)
            used = row.locator(".meter[data-resource=mem] .used span")
            for bar in (segment, used):  # looked at again: the live part is redrawn meanwhile
                wait_for(lambda bar=bar: (bar.bounding_box() or {}).get("width", 0) > 0, 15)
            expect(cpus.locator(".bar")).to_have_attribute("aria-label", WORDS)
            expect(row).to_contain_text("booted ")
        dash.shot(page, name)
        assert page.errors == []


def test_a_detached_job_appears_on_the_jobs_page_without_reloading(browser, dash, env, tmp_path):
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")
    run_detached(env, tmp_path, "quick", QUICK)
    expect(page.locator("tr[data-job=quick]")).to_contain_text("1 running")
    assert page.evaluate("window.notReloaded") is True
    dash.shot(page, "jobs")
    assert page.errors == []


def test_scale_from_the_page_asks_first(browser, dash):
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs/quick")
    page.fill("#scale-count", "2")
    page.click("text=Scale…")
    expect(page.locator("#confirm-text")).to_have_text("Scale quick/q to 2 instance(s)?")
    page.click("#confirm-ok")
    expect(page.locator("#action-result")).to_have_text("quick/q: scaled to 2")
    expect(page.locator("#live-part tr[data-task=q]")).to_have_count(2)
    assert len(dash.api("GET", "/v1/jobs/quick").json()["tasks"]) == 2
    assert page.errors == []


def test_a_job_that_does_not_fit_shows_the_allocators_reason(browser, dash, env, tmp_path):
    run_detached(env, tmp_path, "wide", WIDE)  # fits an empty host, not these
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs/wide")
    reasons = page.locator(".unplaced li")
    expect(reasons).to_have_count(2)
    expect(reasons.first).to_contain_text('no host fits: dimension "cpus" exhausted on 3 hosts')
    dash.shot(page, "job-unplaced")
    assert dash.api("DELETE", "/v1/jobs/wide").status_code == 200


def test_a_tasks_page_shows_its_unit_limits_and_follows_its_journal(browser, dash, env, tmp_path):
    run_detached(env, tmp_path, "talker", TALKER)
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs/talker")
    page.click("a[href='/ui/jobs/talker/tasks/t/0']")
    expect(page.locator("#log")).to_contain_text("hello from the talker talker")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#log")).to_contain_text("and later")  # followed, not reloaded
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("td[data-prop=memory_max]")).to_contain_text(str(32 << 20))
    expect(page.locator("td[data-prop=millicpus]")).to_contain_text("100 millicpus")
    expect(page.locator("ol.history")).to_contain_text("placed on")
    dash.shot(page, "task")
    page.set_viewport_size(PHONE)
    dash.shot(page, "task-phone")
    assert page.errors == []


def test_a_follower_that_hangs_up_leaves_no_controller_thread_behind(dash, env, tmp_path):
    """The task page follows a journal; a page closed on a quiet unit must not keep one of the
    controller's threads waiting on it (40 such would stall every route but the event stream)."""
    run_detached(env, tmp_path, "silent", QUICK.replace("quick", "silent"))
    pid = dash.ctl.process.pid

    def threads():
        return len(os.listdir(f"/proc/{pid}/task"))

    path = "/v1/jobs/silent/logs?follow=true"
    before = threads()
    for _ in range(10):
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream(
                "GET", f"{dash.url}{path}", headers=dash.ctl.headers, timeout=1.5
            ) as stream,
        ):
            for _chunk in stream.iter_bytes():
                pass
    wait_for(lambda: threads() <= before + 2, timeout=30)
    assert dash.api("DELETE", "/v1/jobs/silent").status_code == 200


def test_kill_from_the_page_asks_first_then_stops_the_job(browser, dash, env, meso_lab, tmp_path):
    if dash.api("GET", "/v1/jobs/talker").status_code == 404:
        run_detached(env, tmp_path, "talker", TALKER)
    unit = dash.api("GET", "/v1/jobs/talker").json()["tasks"][0]
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs/talker")
    page.click("#kill")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Kill job talker?")
    page.click("#confirm-cancel")
    assert dash.api("GET", "/v1/jobs/talker").json()["state"] == "active"
    page.click("#kill")
    page.click("#confirm-ok")
    expect(page.locator("#action-result")).to_contain_text("killed: 1 unit(s) stopped")
    expect(page.locator("#live-part .summary .state").first).to_have_text("killed")
    assert dash.api("GET", "/v1/jobs/talker").json()["tasks"][0]["state"] == "killed"
    active = meso_lab.run(unit["host"], ["systemctl", "is-active", unit["unit"] + ".service"])
    assert active.stdout.strip() != "active"
    dash.shot(page, "job-killed")
    assert page.errors == []


def test_a_change_from_another_site_is_refused(browser, dash):
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs")
    # the page's own origin may change things; a forged Origin with the cookie may not
    done = page.request.delete(f"{dash.url}/v1/jobs/quick", headers={"Origin": "http://evil.test"})
    assert done.status == 403 and "origin" in done.json()["error"]
    assert dash.api("GET", "/v1/jobs/quick").json()["state"] == "active"


def test_the_sharing_page_charts_the_fair_share_examples(browser, dash, env, meso_lab):
    for job in ("spread", "quick"):
        dash.api("DELETE", f"/v1/jobs/{job}")
    # both frameworks' jobs placed in one cycle, the way weighted DRF splits them: submitted
    # while every host drains, placed together once they are back
    for host in meso_lab.hosts:
        assert cli(env, "drain", host.name).returncode == 0
    for example in ("fair-analytics.yaml", "fair-web.yaml"):
        done = cli(env, "run", "--detach", str(ROOT / "examples" / example))
        assert done.returncode == 0, done.stdout + done.stderr
    started = dash.api("GET", "/v1/history").json()["points"][-1]["time"]
    page = signed_in(browser, dash)  # the cluster page, as the jobs are placed
    for host in meso_lab.hosts:  # at once (the CLI would take a process per host)
        assert dash.api("DELETE", f"/v1/hosts/{host.name}/drain").status_code == 200
    expect(page.locator("li.host[data-state=up]")).to_have_count(len(meso_lab.hosts))
    expect(page.locator("li.host .seg[data-framework=analytics]").first).to_be_visible()
    expect(page.locator("li.host .seg[data-framework=web]").first).to_be_visible()
    cluster = dash.shot(page, "cluster-fair-share")

    def since_then():
        return [p for p in dash.api("GET", "/v1/history").json()["points"] if p["time"] > started]

    wait_for(lambda: len(since_then()) >= 15, timeout=90)
    points = since_then()
    assert any(p["frameworks"]["analytics"]["cpus"] > 0 for p in points)
    assert any(p["frameworks"]["web"]["mem"] > 0 for p in points)
    assert any(p["frameworks"]["analytics"]["fair"] == 0.5 for p in points)
    page.goto(f"{dash.url}/ui/sharing")
    expect(page.locator("figure[data-framework=web] canvas")).to_be_visible()
    expect(page.locator("figure[data-framework=analytics] canvas")).to_be_visible()
    wait_for(lambda: int(page.evaluate("document.body.dataset.charts || 0")) > 15)
    sharing = dash.shot(page, "sharing")
    page.set_viewport_size(PHONE)
    expect(page.locator("figure[data-framework=web] canvas")).to_be_visible()
    dash.shot(page, "sharing-phone")
    if os.environ.get("MESO_UPDATE_DOCS") == "1":
        shutil.copy(cluster, ROOT / "docs" / "dashboard-cluster.png")
        shutil.copy(sharing, ROOT / "docs" / "dashboard-sharing.png")
    for job in ("frontends", "crunch"):
        dash.api("DELETE", f"/v1/jobs/{job}")
    assert page.errors == []


def test_a_lost_event_stream_says_so_and_reconnects(browser, dash):
    page = signed_in(browser, dash)
    page.goto(f"{dash.url}/ui/jobs")
    expect(page.locator("#live")).to_have_text("live")
    printed = dash.restart_on_a_terminal()
    # the page saw the stream go, and says it is back once the controller serves again
    expect(page.locator("#live")).to_have_text("reconnected · live", timeout=60_000)
    jobs = json.loads(page.evaluate("fetch('/v1/jobs').then(r => r.text())"))
    assert "jobs" in jobs  # the same cookie still signs in (the token did not change)
    dash.shot(page, "reconnected")
    # on a terminal, `meso controller` prints the link with the token (as Jupyter does): it
    # signs a new browser in; nothing else it printed holds the token
    assert printed.strip() == f"meso controller: dashboard at {dash.url}/ui?token={dash.ctl.token}"
    link = fresh_page(browser)
    link.goto(printed.split(" at ", 1)[1].strip())
    expect(link.locator("h1")).to_have_text("Cluster")
    others = [line for line in dash.ctl.log.read_text().splitlines() if "dashboard at" not in line]
    assert others and not any(dash.ctl.token in line for line in others)
