"""The dashboard's liveness on lab hosts (root): how long after a job is submitted it shows on
the jobs page, open in Debian's headless chromium (Playwright), without reloading.

- from `meso run --detach JOB` returning (the whole CLI process before it) to the job's row on
  the page. Target (issue 14): <= 2 s.
- from `POST /v1/jobs` answering (httpx, warm) to the row: the event stream and the page's
  refresh alone.
- a whole page (/ui, the cluster) rendered by the controller: GET time, p50.

Run as root: .venv/bin/python bench/dashboard_bench.py [--inventory PATH] [--rounds N]
(without --inventory it starts a 3-host lab named "bench" and takes it down afterwards)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from meso_agentless.lab import cluster
from meso_agentless.testing.controller import running_controller

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
JOB = """\
job: {name}
tasks:
  - name: t
    command: ["sleep", "600"]
    resources: {{cpus: 0.05, mem: 16MiB}}
"""


def run(inventory: str, rounds: int, out: Callable[[str], None]) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESO_")}
    with tempfile.TemporaryDirectory() as tmp, running_controller(inventory, Path(tmp)) as ctl, \
            sync_playwright() as p:  # fmt: skip
        env = {**base, **ctl.env}
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{ctl.url}/ui?token={ctl.token}")
        page.goto(f"{ctl.url}/ui/jobs")
        page.wait_for_selector("#live[data-state=live]")
        page.evaluate("window.notReloaded = true")
        cli_times, api_times = [], []
        names = []
        with httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as http:
            for i in range(rounds):
                name = f"dash-cli-{i}"
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(JOB.format(name=name))
                subprocess.run([sys.executable, "-m", "meso_agentless", "run", "--detach",
                                str(path)], env=env, check=True, capture_output=True)  # fmt: skip
                started = time.perf_counter()
                page.wait_for_selector(f"tr[data-job={name}]", timeout=30_000)
                cli_times.append(time.perf_counter() - started)
                name = f"dash-api-{i}"
                yaml = {"Content-Type": "application/yaml"}
                done = http.post("/v1/jobs", content=JOB.format(name=name), headers=yaml)
                done.raise_for_status()
                started = time.perf_counter()
                page.wait_for_selector(f"tr[data-job={name}]", timeout=30_000)
                api_times.append(time.perf_counter() - started)
                names += [f"dash-cli-{i}", name]
            assert page.evaluate("window.notReloaded") is True
            pages = []
            http.cookies.set("meso_token", ctl.token)
            for _ in range(50):
                started = time.perf_counter()
                http.get("/ui").raise_for_status()
                pages.append(time.perf_counter() - started)
            for name in names:
                http.delete(f"/v1/jobs/{name}")
        browser.close()
    for what, times, target in (("`meso run --detach` returned", cli_times, " (target <= 2000 ms)"),
                                ("POST /v1/jobs answered", api_times, "")):  # fmt: skip
        out(
            f"job on the jobs page after {what}, {rounds} jobs: median "
            f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms{target}"
        )
    out(
        f"GET /ui (the cluster page, rendered whole), 50 requests: median "
        f"{statistics.median(pages) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    def out(line: str) -> None:
        print(line, flush=True)

    if args.inventory:
        run(args.inventory, args.rounds, out)
        return
    layout = cluster.up("bench", 3, "nspawn", 2, 4096, progress=lambda _m: None)
    try:
        run(str(cluster.LabPaths.of(layout.name).inventory), args.rounds, out)
    finally:
        cluster.down("bench", progress=lambda _m: None)


if __name__ == "__main__":
    main()
