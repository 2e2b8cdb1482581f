"""`meso lab`: a real multi-host cluster on this machine (like kind or minikube)."""

from __future__ import annotations

import dataclasses
import os
import shutil

import click
from rich.table import Table

from meso_agentless.cli.base import OUTPUT_OPTION, print_json, progress
from meso_agentless.lab import cluster
from meso_agentless.lab.paths import LabPaths, default_lab
from meso_agentless.lab.system import LabError

LAB_OPTION = click.option(
    "--lab", "lab_name", default=default_lab,
    show_default="lab, or $MESO_LAB", help="Which lab (several can run side by side).",
)  # fmt: skip


@click.group()
def lab() -> None:
    """Lab hosts on this machine: systemd-nspawn containers or QEMU guests (root only)."""


@lab.command()
@LAB_OPTION
@click.option("--hosts", "count", type=click.IntRange(1, 200), default=3, show_default=True)
@click.option("--vm", is_flag=True, help="QEMU guests with their own kernel (enforced cgroup v2).")
@click.option(
    "--cpus",
    type=click.IntRange(1, 64),
    default=None,
    help="CPUs per host  [default: 2; 1 with --vm]",
)
@click.option(
    "--mem",
    "mem_mib",
    type=click.IntRange(256, 1 << 20),
    default=None,
    help="MiB of memory per host  [default: 4096; 1024 with --vm]",
)
@click.option(
    "--numa",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="NUMA nodes per VM host (CPUs and memory split evenly; with --vm).",
)
def up(
    lab_name: str, count: int, vm: bool, cpus: int | None, mem_mib: int | None, numa: int
) -> None:
    """Start N hosts named LAB-1..LAB-N, each with its own address, sshd and systemd."""
    cpus = cpus or (1 if vm else 2)
    mem_mib = mem_mib or (1024 if vm else 4096)
    with progress() as report:
        layout = cluster.up(
            lab_name, count, "vm" if vm else "nspawn", cpus, mem_mib, report, numa=numa
        )
    click.echo(LabPaths.of(layout.name).inventory)


@lab.command()
@LAB_OPTION
def down(lab_name: str) -> None:
    """Stop the lab and remove every process, mount, namespace, link and file it made."""
    with progress() as report:
        cluster.down(lab_name, report)
        report(f"lab {lab_name!r} is down")


@lab.command()
@LAB_OPTION
@OUTPUT_OPTION
def status(lab_name: str, output: str) -> None:
    """Each host: process, network, and what systemd inside it says."""
    layout, hosts = cluster.status(lab_name)
    if output == "json":
        print_json(
            {
                "lab": layout.name,
                "mode": layout.mode,
                "subnet": layout.subnet,
                "inventory": str(LabPaths.of(layout.name).inventory),
                "hosts": [dataclasses.asdict(h) for h in hosts],
            }
        )
        return
    table = Table("host", "address", "process", "network", "systemd", box=None)
    for h in hosts:
        table.add_row(h.name, h.address, h.process, h.network, h.systemd)
    from rich.console import Console

    Console(highlight=False).print(table)


@lab.command()
@LAB_OPTION
def inventory(lab_name: str) -> None:
    """Print the path of the lab's Ansible inventory."""
    cluster.require_lab(lab_name)
    click.echo(LabPaths.of(lab_name).inventory)


@lab.command(context_settings={"ignore_unknown_options": True})
@LAB_OPTION
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(lab_name: str, host: str, command: tuple[str, ...]) -> None:
    """Log into HOST (or run COMMAND there) with strict host key checking."""
    argv = cluster.ssh_argv(lab_name, host, list(command))
    if shutil.which("ssh") is None:
        raise LabError("ssh not found on PATH: install the Debian package openssh-client")
    os.execvp("ssh", argv)  # noqa: S606


@lab.command()
@LAB_OPTION
@click.argument("host")
def restart(lab_name: str, host: str) -> None:
    """Power-cycle HOST: it boots again; its transient units are gone, its disk is kept."""
    with progress() as report:
        cluster.restart(lab_name, host, report)


@lab.command()
@LAB_OPTION
@click.argument("host")
def cut(lab_name: str, host: str) -> None:
    """Cut HOST off the network: unreachable from this machine and from the other hosts."""
    cluster.set_connected(lab_name, host, False)
    click.echo(f"{host}: cut off")


@lab.command()
@LAB_OPTION
@click.argument("host")
def heal(lab_name: str, host: str) -> None:
    """Put HOST back on the network."""
    cluster.set_connected(lab_name, host, True)
    click.echo(f"{host}: connected")
