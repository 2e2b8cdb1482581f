"""Every setting in one typed object: flags over MESO_* variables over the config file.

    MESO_CONFIG       the config file (default: config.yaml in the platform's config directory,
                      else /etc/meso-agentless/config.yaml), with keys inventory, controller,
                      token_file, state
    MESO_INVENTORY    the Ansible inventory of the cluster
    MESO_STATE        the state database (SQLite) of an embedded or `meso controller` process
    MESO_ADDR         the controller's address(es), comma-separated: the CLI becomes its client
    MESO_TOKEN        the API's bearer token; or MESO_TOKEN_FILE, a file holding it
    MESO_LISTEN       where `meso controller` listens (default 127.0.0.1:4646)

The lab's own settings (MESO_LAB_*) are read in lab/paths.py.

A plain dataclass read with the standard library, not pydantic-settings: a client command
(`meso hosts -o json` through a controller) must start and answer within 0.1 s, and importing
pydantic-settings alone takes longer than that here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from meso_agentless.errors import UsageError

SYSTEM_CONFIG = Path("/etc/meso-agentless/config.yaml")
DEFAULT_LISTEN = "127.0.0.1:4646"
CONFIG_KEYS = ("inventory", "controller", "token_file", "state")


@dataclass(frozen=True)
class Settings:
    config: Path | None  # the config file read, if any
    inventory: str | None
    state: Path
    addrs: tuple[str, ...]  # controller addresses; empty: embedded
    token: str | None
    token_file: Path
    listen: str
    state_url: str | None = None  # MESO_STATE as a postgresql:// URL (`meso controller` only)

    @property
    def remote(self) -> bool:
        return bool(self.addrs)

    def inventory_source(self, given: str | None = None) -> str:
        """-i, then MESO_INVENTORY, then `inventory:` in the config file."""
        source = given or self.inventory
        if not source:
            raise UsageError(
                "no inventory: pass -i INVENTORY, set MESO_INVENTORY, or put inventory: in "
                f"{self.config or 'the config file (MESO_CONFIG)'}"
            )
        return source

    def read_token(self) -> str:
        """MESO_TOKEN, else the token file's content (printable ASCII, no spaces)."""
        token = self.token
        if token is None:
            try:
                token = self.token_file.read_bytes().decode("ascii", "replace").strip()
            except OSError as exc:
                raise UsageError(
                    f"no API token: set MESO_TOKEN, or MESO_TOKEN_FILE / token_file: in the "
                    f"config ({self.token_file}: {exc.strerror})"
                ) from None
        if not token or not all("\x21" <= c <= "\x7e" for c in token):
            where = "MESO_TOKEN" if self.token else str(self.token_file)
            raise UsageError(f"{where}: not a token (printable ASCII, no spaces)")
        return token


def state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("meso-agentless"))


def config_path(env: Mapping[str, str]) -> Path | None:
    """MESO_CONFIG, else the user's config.yaml, else the system's; None if there is none."""
    if env.get("MESO_CONFIG"):
        return Path(env["MESO_CONFIG"])
    import platformdirs

    user = Path(platformdirs.user_config_dir("meso-agentless")) / "config.yaml"
    for path in (user, SYSTEM_CONFIG):
        if path.exists():
            return path
    return None


def read_config(path: Path | None) -> dict[str, str]:
    """The config file's settings (strings), checked key by key."""
    if path is None or not path.exists():
        return {}
    from meso_agentless import yamlsafe

    data, _ = yamlsafe.load(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config file is a mapping of {', '.join(CONFIG_KEYS)}")
    out = {}
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            raise UsageError(f"{path}: {key}: unknown setting (known: {', '.join(CONFIG_KEYS)})")
        if not isinstance(value, str) or not value:
            raise UsageError(f"{path}: {key}: must be a non-empty string")
        out[key] = value
    return out


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment and the config file (flags override them afterwards)."""
    env = os.environ if env is None else env
    path = config_path(env)
    config = read_config(path)
    addrs = env.get("MESO_ADDR") or config.get("controller") or ""
    token_file = env.get("MESO_TOKEN_FILE") or config.get("token_file")
    state = env.get("MESO_STATE") or config.get("state")
    return Settings(
        config=path if config else None,
        inventory=env.get("MESO_INVENTORY") or config.get("inventory"),
        state=Path(state) if state else state_dir() / "state.db",
        addrs=tuple(a.strip().rstrip("/") for a in addrs.split(",") if a.strip()),
        token=env.get("MESO_TOKEN") or None,
        token_file=Path(token_file) if token_file else state_dir() / "token",
        listen=env.get("MESO_LISTEN") or DEFAULT_LISTEN,
        state_url=state if state and state.startswith(("postgresql://", "postgres://")) else None,
    )


@cache
def current() -> Settings:
    """This process's settings (read once)."""
    return load()
