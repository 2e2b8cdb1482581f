"""The shape of a lab, as pure data: host names, addresses, interface and namespace names.

Nothing here touches the machine; `plan_lab` derives everything from a name, a size and a subnet,
so the same lab is described the same way by `up`, `status` and `down`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from meso_agentless.errors import UsageError

Mode = Literal["nspawn", "vm"]

LAB_NAME = re.compile(r"^[a-z][a-z0-9]{0,6}$")
MAX_HOSTS = 200
FIRST_HOST_OCTET = 11
LAB_SUPERNET = ipaddress.IPv4Network("10.213.0.0/16")


@dataclass(frozen=True)
class HostLayout:
    """One lab host: its name, address and the names of what carries its network."""

    name: str
    index: int
    address: str
    netns: str
    veth: str
    mac: str


@dataclass(frozen=True)
class LabLayout:
    """A whole lab: mode, subnet, per-host resources and hosts."""

    name: str
    mode: Mode
    subnet: str
    cpus: int
    mem_mib: int
    hosts: tuple[HostLayout, ...] = field(default=())
    numa: int = 1  # NUMA nodes of each VM (its CPUs and memory split evenly between them)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def bridge(self) -> str:
        return f"mb-{self.name}"

    def host(self, name: str) -> HostLayout:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise UsageError(f"host {name!r} is not in lab {self.name!r} (hosts: {known})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LabLayout:
        """As `to_dict` wrote it; fields this version does not know (a lab that another version
        of meso started) are left out, so its neighbours can still be read and taken down."""
        hosts = tuple(HostLayout(**_known(HostLayout, h)) for h in data["hosts"])
        return cls(**{**_known(cls, data), "hosts": hosts})


def _known(kind: type, data: dict) -> dict:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in data.items() if k in names}


def check_lab_name(name: str) -> str:
    """A lab name becomes part of interface names (15 bytes at most), so it is kept short."""
    if not LAB_NAME.match(name):
        raise UsageError(
            f"lab name {name!r} is invalid: use 1-7 lowercase letters and digits, "
            "starting with a letter"
        )
    return name


def choose_subnet(
    taken: Iterable[ipaddress.IPv4Network], supernet: ipaddress.IPv4Network = LAB_SUPERNET
) -> ipaddress.IPv4Network:
    """The first /24 of the lab supernet that overlaps no route or other lab on this machine."""
    taken = list(taken)
    for candidate in supernet.subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise UsageError(f"no free /24 left in {supernet} for another lab")


def plan_lab(
    name: str,
    count: int,
    subnet: ipaddress.IPv4Network,
    mode: Mode,
    cpus: int,
    mem_mib: int,
    numa: int = 1,
) -> LabLayout:
    """Describe a lab of `count` hosts named NAME-1..NAME-count on `subnet`."""
    check_lab_name(name)
    if not 1 <= count <= MAX_HOSTS:
        raise UsageError(f"--hosts must be between 1 and {MAX_HOSTS}, not {count}")
    if cpus < 1:
        raise UsageError(f"--cpus must be at least 1, not {cpus}")
    if mem_mib < 256:
        raise UsageError(f"--mem must be at least 256 MiB, not {mem_mib}")
    if numa != 1 and (mode != "vm" or numa < 1 or cpus % numa or mem_mib % numa):
        raise UsageError(f"--numa {numa}: VM hosts only, and a divisor of --cpus and --mem")
    if subnet.prefixlen > 24:
        raise UsageError(f"lab subnet {subnet} is too small: a /24 or larger is needed")
    hosts = []
    for index in range(1, count + 1):
        address = subnet.network_address + FIRST_HOST_OCTET - 1 + index
        octets = address.packed
        hosts.append(
            HostLayout(
                name=f"{name}-{index}",
                index=index,
                address=str(address),
                netns=f"meso-{name}-{index}",
                veth=f"mv-{name}-{index}",
                mac="52:54:00:{:02x}:{:02x}:{:02x}".format(*octets[1:]),
            )
        )
    return LabLayout(
        name=name,
        mode=mode,
        subnet=str(subnet),
        cpus=cpus,
        mem_mib=mem_mib,
        hosts=tuple(hosts),
        numa=numa,
    )
