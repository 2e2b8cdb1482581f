"""A real `meso controller` process for tests and benchmarks: started on a free port, stopped
with SIGTERM afterwards.

    with running_controller(inventory, tmp_path) as ctl:
        httpx.get(f"{ctl.url}/v1/hosts", headers=ctl.headers)
        subprocess.run(["meso", "hosts"], env={**os.environ, **ctl.env})
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY = re.compile(r"listening on (https?://\S+), token in (\S+)")


@dataclass
class ControllerProcess:
    process: subprocess.Popen
    url: str
    token_file: Path
    state: Path
    log: Path

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def env(self) -> dict[str, str]:
        """What makes the CLI a client of this controller."""
        return {"MESO_ADDR": self.url, "MESO_TOKEN_FILE": str(self.token_file)}

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_controller(
    inventory: Path | str, directory: Path, *extra: str, timeout: float = 60.0
) -> ControllerProcess:
    """Start `meso controller` with its state and token in `directory`; return once it serves."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "controller.log"
    state, token = directory / "state.db", directory / "token"
    argv = [
        sys.executable,
        "-m",
        "meso_agentless",
        "controller",
        "-i",
        str(inventory),
        "--listen",
        "127.0.0.1:0",
        "--state",
        str(state),
        "--token-file",
        str(token),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MESO_ADDR", "MESO_TOKEN")}
    offset = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = READY.search(log.read_bytes()[offset:].decode(errors="replace"))
        if found:
            return ControllerProcess(process, found.group(1), Path(found.group(2)), state, log)
        if process.poll() is not None:
            raise RuntimeError(f"meso controller exited {process.returncode}: {log.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"meso controller did not start within {timeout} s: {log.read_text()}")


@contextmanager
def running_controller(
    inventory: Path | str, directory: Path, *extra: str
) -> Iterator[ControllerProcess]:
    controller = start_controller(inventory, directory, *extra)
    try:
        yield controller
    finally:
        try:
            controller.stop()
        except subprocess.TimeoutExpired:
            controller.process.kill()
            controller.process.wait()
