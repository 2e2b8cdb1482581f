"""The lab network: a bridge on this machine, one network namespace per host, veth pairs between.

A host is cut off by taking its veth down on the bridge side: nothing inside the host can undo it.
"""

from __future__ import annotations

import ipaddress
import json

from meso_agentless.lab.layout import HostLayout, LabLayout
from meso_agentless.lab.system import run

HOST_IFACE = "eth0"


def ip(*args: str, check: bool = True) -> str:
    return run(["ip", *args], check=check)


def routed_networks() -> list[ipaddress.IPv4Network]:
    """Networks this machine already routes, so a new lab subnet overlaps none of them."""
    nets = []
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and route.get("type", "unicast") == "unicast":
            nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def create_bridge(lab: LabLayout) -> None:
    ip("link", "add", lab.bridge, "type", "bridge")
    ip("addr", "add", f"{lab.gateway}/{lab.prefixlen}", "dev", lab.bridge)
    ip("link", "set", lab.bridge, "up")


def create_host_network(lab: LabLayout, host: HostLayout) -> None:
    """A namespace whose eth0 is wired to the lab bridge.

    For an nspawn host the namespace itself holds the address. For a VM, eth0 and a tap device
    are bridged inside the namespace and the guest holds the address, so it sits on the lab
    network with all its ports.
    """
    ns = host.netns
    ip("netns", "add", ns)
    ip("link", "add", host.veth, "type", "veth", "peer", "name", HOST_IFACE, "netns", ns)
    ip("link", "set", host.veth, "master", lab.bridge, "up")
    ip("-n", ns, "link", "set", "lo", "up")
    if lab.mode == "vm":
        ip("-n", ns, "link", "add", "br0", "type", "bridge")
        ip("-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
        for link in (HOST_IFACE, "tap0"):
            ip("-n", ns, "link", "set", link, "master", "br0", "up")
        ip("-n", ns, "link", "set", "br0", "up")
    else:
        ip("-n", ns, "addr", "add", f"{host.address}/{lab.prefixlen}", "dev", HOST_IFACE)
        ip("-n", ns, "link", "set", HOST_IFACE, "up")
        ip("-n", ns, "route", "add", "default", "via", lab.gateway)


def set_connected(lab: LabLayout, host: HostLayout, connected: bool) -> None:
    """Cut a host off the lab network (and this machine), or heal it.

    Healing also forgets failed neighbour (ARP) entries for the host on this machine and in the
    other namespaces, so it answers at once rather than after the kernel retries.
    """
    ip("link", "set", host.veth, "up" if connected else "down")
    if connected:
        ip("neigh", "flush", "to", host.address, check=False)
        for other in lab.hosts:
            ip("-n", other.netns, "neigh", "flush", "to", host.address, check=False)


def is_connected(host: HostLayout) -> bool:
    links = json.loads(ip("-j", "link", "show", "dev", host.veth, check=False) or "[]")
    return bool(links) and "UP" in links[0].get("flags", [])


def namespaces(prefix: str) -> list[str]:
    listed = json.loads(ip("-j", "netns", "list") or "[]")
    return [ns["name"] for ns in listed if ns["name"].startswith(prefix)]


def links(prefix: str) -> list[str]:
    listed = json.loads(ip("-j", "link", "show") or "[]")
    return [link["ifname"] for link in listed if link["ifname"].startswith(prefix)]


def remove_lab_network(lab_name: str) -> None:
    """Delete every namespace, veth and bridge of a lab, found by name, whatever state left."""
    for ns in namespaces(f"meso-{lab_name}-"):
        ip("netns", "delete", ns, check=False)
    bridge = f"mb-{lab_name}"
    for link in links(f"mv-{lab_name}-") + [b for b in links(bridge) if b == bridge]:
        ip("link", "delete", link, check=False)
