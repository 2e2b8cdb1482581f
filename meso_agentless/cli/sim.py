"""`meso sim`: replay a workload trace through the real allocator, shared vs statically
partitioned, in simulated time; or write a synthetic trace (`--generate`)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import click

from meso_agentless.cli.base import INVENTORY_OPTION, OUTPUT_OPTION, print_json
from meso_agentless.errors import UsageError


@click.command()
@click.argument("trace", required=False)
@INVENTORY_OPTION
@click.option("--partition", type=click.Choice(["shared", "static", "both"]), default="both",
              show_default=True, help="Share every host, give each framework its own hosts, "
              "or run both and compare.")  # fmt: skip
@click.option(
    "--interval",
    default="0",
    show_default=True,
    help="Allocate every INTERVAL of simulated time (1s, 500ms); 0: at each event.",
)
@OUTPUT_OPTION
@click.option("--plot", "plot_dir", metavar="DIR", help="Write PNG charts into DIR.")
@click.option("--generate", type=click.Choice(["mesos-paper"]),
              help="Print a synthetic trace instead (see -p).")  # fmt: skip
@click.option("--seed", type=int, default=7, show_default=True, help="With --generate.")
@click.option("--hosts", type=int, default=96, show_default=True, help="With --generate.")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A generator parameter (duration, load, burst, period, mix, web).",
)
def sim(
    trace: str | None,
    inventory: str | None,
    partition: str,
    interval: str,
    output: str,
    plot_dir: str | None,
    generate: str | None,
    seed: int,
    hosts: int,
    params: tuple[str, ...],
) -> None:
    """Replay TRACE (CSV: submit_s,framework,job,task,count,cpus,mem,duration_s[,disk,ports,
    type,constraints,gang]) on INVENTORY's hosts and frameworks, with no SSH and no clock.

    Prints utilization (mean, p50, p95), makespan, per-framework job waits and completion
    times, dominant shares, and what was never placed and why."""
    if generate:
        if trace:
            raise UsageError("give a TRACE or --generate, not both")
        from meso_agentless.sim.generate import GENERATORS
        from meso_agentless.sim.generate import params as parse_params
        from meso_agentless.sim.trace import format_trace

        raw = {}
        for item in params:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--param {item!r}: expected KEY=VALUE")
            raw[key.strip()] = value.strip()
        click.echo(format_trace(GENERATORS[generate](parse_params(seed, hosts, raw))), nl=False)
        return
    if not trace:
        raise UsageError("give a TRACE file (or --generate mesos-paper)")
    ctx = click.get_current_context()
    for name in ("params", "seed", "hosts"):
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            raise UsageError(f"--{name.rstrip('s') if name == 'params' else name} is for "
                             "--generate")  # fmt: skip
    from meso_agentless import settings
    from meso_agentless.inventory import load_inventory
    from meso_agentless.sim.events import simulate
    from meso_agentless.sim.report import render, summarize
    from meso_agentless.sim.trace import read_trace

    step = parse_interval(interval)
    rows = read_trace(trace)
    cluster = load_inventory(settings.current().inventory_source(inventory))
    for node in cluster.nodes:
        missing = [r for r in ("cpus", "mem") if r not in node.declared]
        if missing:
            raise UsageError(
                f"inventory {cluster.source}: host {node.name} declares no "
                f"meso_resources.{missing[0]}; meso sim needs declared capacity"
            )
    nodes = [node.to_host() for node in cluster.nodes]
    if plot_dir:
        from meso_agentless.sim.plot import prepare

        prepare(plot_dir)
    modes = ["shared", "static"] if partition == "both" else [partition]
    runs = {m: simulate(rows, nodes, cluster.frameworks, mode=m, interval_ms=step) for m in modes}
    summaries = {m: summarize(run) for m, run in runs.items()}
    if plot_dir:
        from meso_agentless.sim.plot import plot

        files = plot(runs, plot_dir)
        click.echo("plots: " + ", ".join(str(f) for f in files), err=True)
    if output == "json":
        print_json({"trace": trace, "inventory": cluster.source, "runs": summaries})
    else:
        click.echo(render(summaries))


def parse_interval(text: str) -> int:
    """Milliseconds from "0", "1s", "500ms", "2m", "1.5" (seconds)."""
    value = text.strip().lower()
    factor = 1000
    for suffix, ms in (("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)):
        if value.endswith(suffix):
            value, factor = value[: -len(suffix)], ms
            break
    try:
        number = Decimal(value) * factor
    except InvalidOperation:
        raise UsageError(f"--interval {text!r} is not a duration like 1s or 500ms") from None
    if not number.is_finite() or number < 0 or number != number.to_integral_value():
        raise UsageError(f"--interval {text!r}: a whole number of milliseconds, at least 0")
    if number > 86_400_000:
        raise UsageError(f"--interval {text!r}: at most a day")
    return int(number)
