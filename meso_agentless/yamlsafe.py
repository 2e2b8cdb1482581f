"""Safe YAML for files users hand us: size cap, no aliases, no duplicate keys, line numbers.

`load(path)` returns the data and a function that maps a field path (as pydantic reports it)
to the line it came from, so errors can say "job.yaml:12: tasks[0].count: ...".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from meso_agentless.errors import UsageError

MAX_BYTES = 1 << 20

Locate = Callable[[Sequence[str | int]], int | None]


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no billion laughs) and duplicate keys."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: Path, what: str = "file") -> tuple[Any, Locate]:
    """Parse `path` safely; raise UsageError with file and line on anything wrong."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UsageError(f"{path}: {what} is {size} bytes, more than the {MAX_BYTES} allowed")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what}: {exc}") from None
    return loads(text, str(path))


def loads(text: bytes | str, source: str = "text") -> tuple[Any, Locate]:
    """Parse YAML text (at most MAX_BYTES) safely; UsageError with source and line."""
    if len(text) > MAX_BYTES:
        raise UsageError(f"{source}: {len(text)} bytes, more than the {MAX_BYTES} allowed")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{source}: not UTF-8 text: {exc}") from None
    path = source
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UsageError(f"{path}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {exc}") from None
    return data, lambda loc: _line_of(node, loc)


def _line_of(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the value at `loc`, or of the nearest parent that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = key if value is None else value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part >= 0:
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
