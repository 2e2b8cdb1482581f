"""A small paramiko layer: connect with verified host keys, run an argv with a timeout.

Host keys are checked against a known_hosts file with RejectPolicy: an unknown or changed key
is refused and nothing runs: keys are never trusted on first use.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from meso_agentless.errors import MesoError
from meso_agentless.hosts import dial


class SSHError(MesoError):
    """A host could not be reached, refused our key, or showed a host key we do not trust."""


class HostKeyError(SSHError):
    """The host's key is unknown or changed: nothing may run there, and retrying will not help."""


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def connect(
    address: str,
    *,
    user: str,
    key_file: Path | None,
    known_hosts: Path,
    port: int = 22,
    timeout: float = 10.0,
) -> paramiko.SSHClient:
    """An authenticated client whose host key matched `known_hosts`.

    With no key file, ssh-agent and the user's default keys are tried, as ssh does. The TCP
    connection is one dialed ahead (hosts.dial), if there is one.
    """
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(known_hosts))
    except OSError as exc:
        raise HostKeyError(f"{address}: cannot read known_hosts {known_hosts}: {exc}") from exc
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        sock = dial.take(address, port, timeout) or dial.dial(address, port, timeout)
        client.connect(
            address,
            port=port,
            sock=sock,
            username=user,
            key_filename=None if key_file is None else str(key_file),
            look_for_keys=key_file is None,
            allow_agent=key_file is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(f"{address}: host key changed ({exc}); refusing to connect") from exc
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(f"{address}: host key not in {known_hosts}; refusing") from exc
        raise SSHError(f"{address}: {exc}") from exc
    except (OSError, EOFError) as exc:
        client.close()
        raise SSHError(f"{address}: {exc.__class__.__name__}: {exc}") from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


def shlex_join(argv: Sequence[str]) -> str:
    """argv quoted for the remote login shell: each word stays one word, nothing expands."""
    return shlex.join(argv)


def run_argv(
    client: paramiko.SSHClient, argv: Sequence[str], timeout: float, stdin: bytes | None = None
) -> CommandResult:
    """Run argv on the host (quoted for the remote shell, never interpolated) within `timeout`.

    `stdin`, when given, is sent and then closed (how the node command is streamed).
    """
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise SSHError("connection is closed")
    channel = transport.open_session(timeout=timeout)
    channel.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        channel.exec_command(shlex_join(argv))
        if stdin is not None:
            channel.sendall(stdin)
            channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.eof_received:
                break  # all output is in; the exit status follows
            elif time.monotonic() > deadline:
                raise SSHError(f"{argv[0]} did not finish within {timeout:.0f} s")
            else:
                time.sleep(0.001)
        if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise SSHError(f"{argv[0]} did not finish within {timeout:.0f} s")
        status = channel.recv_exit_status()
    except (OSError, paramiko.SSHException) as exc:
        raise SSHError(f"{argv[0]}: {exc}") from exc
    finally:
        channel.close()
    return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))
