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
    named = f": {title}" if title else ""
    dims = [d for d in ("cpus", "mem") if all(run.capacity.get(d) for run in runs.values())]
    fig, axes = _panels(plt, len(dims))
    for ax, d in zip(axes[:, 0], dims, strict=True):
        for mode, run in runs.items():
            times, values = _steps(run, [u / run.capacity[d] * 100 for u in run.used[d]])
            ax.plot(times, values, STYLES.get(mode, "-"), label=mode, linewidth=1)
        _label(ax, f"{d} used (%)", 105)
    utilization = _save(plt, fig, axes, f"Utilization over time{named}", out / "utilization.png")
    fig, axes = _panels(plt, len(runs))
    for ax, (mode, run) in zip(axes[:, 0], runs.items(), strict=True):
        for name in sorted(run.held):
            times, values = _steps(run, share_series(run, name))
            ax.plot(times, values, label=name, linewidth=1)
        _label(ax, f"dominant share ({mode})", 1.05)
    shares = _save(plt, fig, axes, f"Dominant share per framework{named}", out / "shares.png")
    return [utilization, shares]


def _panels(plt: Any, count: int) -> tuple[Any, Any]:
    """A figure of `count` panels, one above the other, sharing the time axis."""
    return plt.subplots(count, 1, figsize=(10, 3.2 * count), sharex=True, squeeze=False)


def _label(ax: Any, ylabel: str, top: float) -> None:
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")


def _save(plt: Any, fig: Any, axes: Any, title: str, path: Path) -> Path:
    axes[-1, 0].set_xlabel("time (minutes)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
