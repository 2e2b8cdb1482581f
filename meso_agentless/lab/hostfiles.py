"""The files that make a lab host itself: hostname, host key, login key, network (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from meso_agentless.lab.aptproxy import PORT as APT_PROXY_PORT
from meso_agentless.lab.layout import HostLayout, LabLayout

# Marks a host's root as part of a lab, so its processes can be found if it is orphaned.
LAB_MARK_FILE = "/etc/meso-lab"

SSHD_DROPIN = """\
# written by meso lab: key-only root login with this host's own key
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


@dataclass(frozen=True)
class HostFile:
    """A file to place in a host's root filesystem."""

    path: str  # absolute inside the host
    content: bytes
    mode: int = 0o644


def host_files(
    lab: LabLayout,
    host: HostLayout,
    *,
    machine_id: str,
    host_key_private: bytes,
    host_key_public: str,
    authorized_key: str,
) -> list[HostFile]:
    """Everything that differs between two hosts made from the same base image."""
    hosts_lines = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}"]
    hosts_lines += [f"{h.address} {h.name}" for h in lab.hosts]
    files = [
        HostFile("/etc/hostname", f"{host.name}\n".encode()),
        HostFile(LAB_MARK_FILE, f"{lab.name}\n".encode()),
        HostFile("/etc/hosts", ("\n".join(hosts_lines) + "\n").encode()),
        HostFile("/etc/machine-id", f"{machine_id}\n".encode(), 0o444),
        HostFile("/etc/ssh/sshd_config.d/meso-lab.conf", SSHD_DROPIN.encode()),
        HostFile("/etc/ssh/ssh_host_ed25519_key", host_key_private, 0o600),
        HostFile("/etc/ssh/ssh_host_ed25519_key.pub", f"{host_key_public}\n".encode()),
        HostFile("/root/.ssh/authorized_keys", f"{authorized_key}\n".encode(), 0o600),
        HostFile(
            "/etc/apt/apt.conf.d/01meso-lab-proxy",
            f'Acquire::http::Proxy "http://{lab.gateway}:{APT_PROXY_PORT}";\n'.encode(),
        ),
    ]
    if lab.mode == "vm":
        network = (
            "[Match]\nName=eth0\n\n[Network]\n"
            f"Address={host.address}/{lab.prefixlen}\nGateway={lab.gateway}\n"
        )
        files += [
            HostFile("/etc/systemd/network/10-meso-lab.network", network.encode()),
            HostFile("/etc/fstab", b"/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"),
        ]
    return files
