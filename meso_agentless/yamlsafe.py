"""Safe YAML for files users hand us: plain data only, with the line each value came from.

What gets in: regular files of at most MAX_BYTES (read with that limit, whatever the file
claims), UTF-8 text without control characters, one document, plain scalars, lists and
mappings with plain keys, at most MAX_DEPTH deep and MAX_NODES values. Aliases, duplicate keys
and tags other than the core ones (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map) are
refused; dates stay strings. A value a tag cannot make (`!!int abc`, an integer of thousands of
digits) is refused at its line. Everything is refused with one line and a line number where
there is one, never with a traceback.

`load(path)` returns the data and a function that maps a field path (as pydantic reports it)
to the line it came from, so errors can say "job.yaml:12: tasks[0].count: ...". `parse(text)`
does the same for text that did not come from a file. Events come from libyaml when PyYAML has
it (a 1 MiB file in a fraction of a second), else from PyYAML's own parser; the tree is built
here, iteratively, so no input can exhaust the stack.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml import constructor, events, nodes, resolver

from meso_agentless.errors import UsageError

try:
    from yaml._yaml import CParser as _Parser  # libyaml
except ImportError:  # pragma: no cover - PyYAML built without libyaml

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 20_000

Locate = Callable[[Sequence[str | int]], int | None]

# What YAML allows in a stream (its printable set); anything else is refused up front.
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}


class TextError(ValueError):
    """Text that is not plain data; `line` (1-based) where it is known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class _Resolver(resolver.Resolver):
    """YAML 1.1's implicit types, without timestamps (a date stays a string) and merge keys."""

    yaml_implicit_resolvers: ClassVar[dict] = {
        first: [(tag, rx) for tag, rx in found if tag not in (_CORE + "timestamp", _CORE + "merge")]
        for first, found in resolver.Resolver.yaml_implicit_resolvers.items()
    }


class _Constructor(constructor.SafeConstructor):
    """Python values from a checked tree: duplicate keys refused, bad values at their line."""

    def construct_object(self, node: nodes.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except TextError:
            raise
        except (ValueError, LookupError, TypeError, ArithmeticError, AttributeError) as exc:
            raise TextError(_bad_value(node, exc), node.start_mark.line + 1) from None

    def construct_mapping(self, node: nodes.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise TextError(f"invalid YAML: duplicate key {short(key)}",
                                key_node.start_mark.line + 1)  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _bad_value(node: nodes.Node, exc: Exception) -> str:
    kind = node.tag.removeprefix(_CORE)
    value = node.value if isinstance(node, nodes.ScalarNode) else ""
    digits = sum(c.isdigit() for c in value)
    if kind == "int" and digits > 100:
        return f"invalid YAML: a number with {digits} digits is too large"
    return f"invalid YAML: {short(value)} is not a valid {kind}"


def short(value: object, limit: int = 60) -> str:
    """repr() cut to a length that fits a one-line message (the node command has its twin)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_file(path: Path, what: str = "file") -> bytes:
    """At most MAX_BYTES of a regular file (never a device, FIFO or directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: {what} is not a regular file")
        if info.st_size > MAX_BYTES:
            raise UsageError(
                f"{path}: {what} is {info.st_size} bytes, more than the {MAX_BYTES} allowed"
            )
        chunks, size = [], 0
        while size <= MAX_BYTES:  # a file may say 0 bytes and hold more (/proc)
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise UsageError(f"{path}: {what} is more than the {MAX_BYTES} allowed")
    return b"".join(chunks)


def decode(data: bytes | str) -> str:
    """Text as it may be parsed: UTF-8, at most MAX_BYTES, no control characters."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise TextError(f"{len(data)} bytes, more than the {MAX_BYTES} allowed")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise TextError(f"not UTF-8 text (byte {data[exc.start]:#04x})", line) from None
    else:
        text = data
        if len(text) > MAX_BYTES:
            raise TextError(f"{len(text)} characters, more than the {MAX_BYTES} allowed")
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        char = bad.group()
        line = text.count("\n", 0, bad.start()) + 1
        kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        raise TextError(f"{kind} (U+{ord(char):04X}) is not allowed", line)
    return text


def parse(text: str) -> tuple[Any, Locate]:
    """Plain data from decoded YAML text, and where each value came from (TextError if not)."""
    try:
        node = _compose(_Parser(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(exc.problem or exc.context or "").split())
        raise TextError(f"invalid YAML: {message}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise TextError("invalid YAML: " + " ".join(str(exc).split())[:200]) from None
    data = _Constructor().construct_document(node) if node is not None else None
    return data, lambda loc: _line_of(node, loc)


def load(path: Path, what: str = "file") -> tuple[Any, Locate]:
    """Read and parse `path` safely; UsageError with file and line on anything wrong."""
    data = read_file(path, what)
    try:
        return parse(decode(data))
    except TextError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise UsageError(f"{where}: {exc.reason}") from None


def locator(text: str) -> Locate:
    """Where each value of `text` (YAML, or JSON) is, as far as it can be told; never raises."""
    try:
        return parse(text)[1]
    except (TextError, RecursionError):
        return lambda loc: None


def _compose(parser: Any) -> nodes.Node | None:
    """The document's tree, built from parser events without recursion.

    Refuses aliases, keys that are not plain values, unknown tags, nesting deeper than
    MAX_DEPTH, more than MAX_NODES values and more than one document.
    """
    parser.get_event()  # stream start
    if parser.check_event(events.StreamEndEvent):
        return None
    parser.get_event()  # document start
    resolve = _Resolver()
    root: nodes.Node | None = None
    stack: list[nodes.Node] = []  # open lists and mappings
    keys: list[nodes.Node | None] = []  # each open mapping's key awaiting its value
    count = 0
    while True:
        event = parser.get_event()
        line = event.start_mark.line + 1
        if isinstance(event, events.AliasEvent):
            raise TextError("invalid YAML: aliases (*name) are not allowed", line)
        if isinstance(event, events.SequenceEndEvent | events.MappingEndEvent):
            node = stack.pop()
            keys.pop()
            node.end_mark = event.end_mark
            if not stack:
                root = node
                break
            continue
        count += 1
        if count > MAX_NODES:
            raise TextError(f"invalid YAML: more than {MAX_NODES} values", line)
        if isinstance(event, events.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve.resolve(nodes.ScalarNode, event.value, event.implicit)
            _check_tag(tag, _SCALAR_TAGS, line)
            node = nodes.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                    style=event.style)  # fmt: skip
        else:
            is_seq = isinstance(event, events.SequenceStartEvent)
            kind = nodes.SequenceNode if is_seq else nodes.MappingNode
            default = _CORE + ("seq" if is_seq else "map")
            tag = default if event.tag in (None, "!") else event.tag
            _check_tag(tag, {default}, line)
            if stack and isinstance(stack[-1], nodes.MappingNode) and keys[-1] is None:
                raise TextError("invalid YAML: keys must be plain values, not lists or "
                                "mappings", line)  # fmt: skip
            if len(stack) >= MAX_DEPTH:
                raise TextError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", line)
            node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        if stack:
            parent = stack[-1]
            if isinstance(parent, nodes.SequenceNode):
                parent.value.append(node)
            elif keys[-1] is None:
                keys[-1] = node
            else:
                parent.value.append((keys[-1], node))
                keys[-1] = None
        if isinstance(node, nodes.ScalarNode):
            if not stack:
                root = node
                break
        else:
            stack.append(node)
            keys.append(None)
    parser.get_event()  # document end
    if not parser.check_event(events.StreamEndEvent):
        line = parser.peek_event().start_mark.line + 1
        raise TextError("invalid YAML: more than one document", line)
    return root


def _check_tag(tag: str, allowed: set[str], line: int) -> None:
    if tag not in allowed:
        shown = "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
        raise TextError(f"invalid YAML: tag {short(shown)} is not allowed here "
                        "(plain values, lists and mappings only)", line)  # fmt: skip


def _line_of(node: nodes.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the value at `loc`, or of the nearest parent that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, nodes.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = key if value is None else value
                    break
        elif isinstance(node, nodes.SequenceNode) and isinstance(part, int) and part >= 0:
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
