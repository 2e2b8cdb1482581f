"""SSH keys for the lab: the user key that logs in, and one real host key per host."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key in OpenSSH formats."""

    private_openssh: bytes
    public_openssh: str  # "ssh-ed25519 AAAA..."


def new_keypair(comment: str) -> KeyPair:
    """Generate a fresh ed25519 key pair."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return KeyPair(private, f"{public.decode()} {comment}")


def known_hosts_line(names: list[str], public_openssh: str) -> str:
    """One known_hosts line for a host known by several names (hostname, address)."""
    keytype, blob = public_openssh.split()[:2]
    return f"{','.join(names)} {keytype} {blob}\n"
