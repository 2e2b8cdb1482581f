"""Plain YAML inventories read as ansible-core reads them, without ansible-core (its import
alone is most of a CLI command's start).

Only the plainest case is read here: a YAML file of groups with `hosts`, `vars` and `children`
(mappings), host names without ranges or ports, no group_vars or host_vars beside it, no
executable bit (a script), no `plugin:` key, no ansible configuration or ANSIBLE_* setting
that could change how it reads. Each host's variables are then what ansible-core's variable
manager gives without a play: group `all`'s, then the host's groups' sorted by depth and name,
then the host's own, each replacing the last. Anything else returns None, and ansible-core
reads it (tests check the two agree).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECTIONS = ("vars", "children", "hosts")
# settings that do not change how an inventory is read (in the environment, or [defaults])
HARMLESS = frozenset({"host_key_checking", "nocolor", "force_color", "stdout_callback",
                      "interpreter_python", "collections_path", "collections_paths", "forks",
                      "timeout", "roles_path", "retry_files_enabled", "callbacks_enabled",
                      "deprecation_warnings", "log_path", "remote_user", "private_key_file",
                      "inventory", "config"})  # fmt: skip
CONFIG_FILES = ("ansible.cfg", "~/.ansible.cfg", "/etc/ansible/ansible.cfg")


class Declined(Exception):
    """Not the plain case: ansible-core reads this inventory."""


def plain_hostvars(source: str, group: str) -> dict[str, dict[str, Any]] | None:
    """The variables of each host of `group` (every host if there is no such group), or None
    when ansible-core must read `source`."""
    try:
        groups, hosts = _parse(_plain_yaml(Path(source)))
        return _hostvars(groups, hosts, group if group in groups else "all")
    except Declined:
        return None


def _plain_yaml(path: Path) -> dict:
    settings = [k[8:].lower() for k in os.environ if k.startswith("ANSIBLE_")]
    if any(k not in HARMLESS for k in settings):
        raise Declined
    for config in (os.environ.get("ANSIBLE_CONFIG"), *CONFIG_FILES):
        if config and Path(os.path.expanduser(config)).exists():
            _harmless_config(Path(os.path.expanduser(config)))
    if path.suffix not in (".yml", ".yaml") or not path.is_file() or os.access(path, os.X_OK):
        raise Declined
    if any((path.parent / d).exists() for d in ("group_vars", "host_vars")):
        raise Declined
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        raise Declined from None  # ansible-core says what is wrong with it
    if not isinstance(data, dict) or not data or "plugin" in data:
        raise Declined
    return data


def _harmless_config(path: Path) -> None:
    """Declined unless the ansible.cfg only says things that do not change inventories."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, UnicodeError, configparser.Error):
        raise Declined from None
    if parser.has_section("inventory") or any(k not in HARMLESS for k in parser["DEFAULT"]):
        raise Declined
    if parser.has_section("defaults") and any(k not in HARMLESS for k in parser["defaults"]):
        raise Declined


class _Group:
    def __init__(self) -> None:
        self.vars: dict[str, Any] = {}
        self.children: list[str] = []
        self.hosts: list[str] = []


def _parse(data: dict) -> tuple[dict[str, _Group], dict[str, dict[str, Any]]]:
    groups: dict[str, _Group] = {"all": _Group()}
    hosts: dict[str, dict[str, Any]] = {}

    def group(name: object, body: object) -> str:
        if not isinstance(name, str) or not isinstance(body, (Mapping, type(None))):
            raise Declined
        this = groups.setdefault(name, _Group())
        for key, section in (body or {}).items():
            if key not in SECTIONS or not isinstance(section, (Mapping, type(None))):
                raise Declined  # strings for sections, unknown keys: as ansible-core has it
            for item, value in (section or {}).items():
                if key == "vars":
                    if item == "ansible_group_priority" or not isinstance(item, str):
                        raise Declined
                    this.vars[item] = value
                elif key == "children":
                    this.children.append(group(item, value))
                else:
                    if (
                        not isinstance(item, str)
                        or any(c in item for c in "[]:,")
                        or not (isinstance(value, (Mapping, type(None))))
                    ):
                        raise Declined
                    hosts.setdefault(item, {}).update(value or {})
                    this.hosts.append(item)
        return name

    for name, body in data.items():
        group(name, body)
    parented = {c for g in groups.values() for c in g.children}
    groups["all"].children += [g for g in groups if g != "all" and g not in parented]
    return groups, hosts


def _hostvars(
    groups: dict[str, _Group], hosts: dict[str, dict[str, Any]], selected: str
) -> dict[str, dict[str, Any]]:
    depth: dict[str, int] = {}

    def deepen(name: str, level: int, path: tuple[str, ...]) -> None:
        if name in path:
            raise Declined  # a cycle: ansible-core refuses it
        if depth.get(name, -1) >= level:
            return
        depth[name] = level
        for child in groups[name].children:
            deepen(child, level + 1, (*path, name))

    deepen("all", 0, ())
    if len(depth) != len(groups):
        raise Declined  # groups only in a cycle of their own
    member: dict[str, set[str]] = {h: set() for h in hosts}  # host -> its groups and theirs

    def collect(name: str, ancestors: tuple[str, ...]) -> None:
        for host in groups[name].hosts:
            member[host].update((*ancestors, name))
        for child in groups[name].children:
            collect(child, (*ancestors, name))

    collect("all", ())
    out = {}
    for host, own in hosts.items():
        if selected not in member[host] and selected != "all":
            continue
        values = dict(groups["all"].vars)
        for name in sorted(member[host] - {"all"}, key=lambda g: (depth[g], g)):
            values.update(groups[name].vars)
        values.update(own)
        out[host] = values
    return out
