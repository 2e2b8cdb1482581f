"""The node command: the one small program the controller runs on a host (stdlib only)."""

from pathlib import Path

NODE_COMMAND = Path(__file__).with_name("nodecmd.py")
BOOTSTRAP = Path(__file__).with_name("bootstrap.py")


def node_command_source() -> bytes:
    """The program's source, streamed to `python3 -` on hosts where it is not installed."""
    return NODE_COMMAND.read_bytes()


def bootstrap_source() -> str:
    """What `python3 -c` runs on such hosts to read that source from stdin and run it."""
    return BOOTSTRAP.read_text()
