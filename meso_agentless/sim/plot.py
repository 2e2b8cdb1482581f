"""PNG charts of simulation runs (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meso_agentless.errors import UsageError
from meso_agentless.sim.events import Run
from meso_agentless.sim.report import share_series

STYLES = {"shared": "-", "static": "--"}


def plot(runs: Mapping[str, Run], directory: str, title: str = "") -> list[Path]:
    """utilization.png (cpus and mem over time, the runs on the same axes) and shares.png
    (each framework's dominant share over time, one panel per run). Returns the files."""
    plt = _pyplot()
    out = prepare(directory)
    files = []
    dims = [d for d in ("cpus", "mem") if all(run.capacity.get(d) for run in runs.values())]
    fig, axes = plt.subplots(len(dims), 1, figsize=(10, 3.2 * len(dims)), sharex=True,
                             squeeze=False)  # fmt: skip
    for ax, d in zip(axes[:, 0], dims, strict=True):
        for mode, run in runs.items():
            times, values = _steps(run, [u / run.capacity[d] * 100 for u in run.used[d]])
            ax.plot(times, values, STYLES.get(mode, "-"), label=mode, linewidth=1)
        ax.set_ylabel(f"{d} used (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("time (minutes)")
    fig.suptitle(f"Utilization over time{': ' + title if title else ''}")
    fig.tight_layout()
    files.append(out / "utilization.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 3.2 * len(runs)), sharex=True,
                             squeeze=False)  # fmt: skip
    for ax, (mode, run) in zip(axes[:, 0], runs.items(), strict=True):
        for name in sorted(run.held):
            times, values = _steps(run, share_series(run, name))
            ax.plot(times, values, label=name, linewidth=1)
        ax.set_ylabel(f"dominant share ({mode})")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[-1, 0].set_xlabel("time (minutes)")
    fig.suptitle(f"Dominant share per framework{': ' + title if title else ''}")
    fig.tight_layout()
    files.append(out / "shares.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    return files


def prepare(directory: str) -> Path:
    """Check that plots can be drawn and DIR made, before anything is simulated."""
    _pyplot()
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--plot {directory}: {exc.strerror}") from None
    return out


def _pyplot() -> Any:  # matplotlib.pyplot, imported only when plotting
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'meso-agentless[sim]'") from None
    return plt


def _steps(run: Run, values: list[float]) -> tuple[list[float], list[float]]:
    """A step function's corners, in minutes from the start of the run."""
    xs: list[float] = []
    ys: list[float] = []
    ends = [*run.times[1:], run.end_ms]
    for start, end, value in zip(run.times, ends, values, strict=True):
        xs += [(start - run.start_ms) / 60_000, (end - run.start_ms) / 60_000]
        ys += [value, value]
    return xs, ys
