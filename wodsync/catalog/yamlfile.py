"""Reading YAML that anyone can put in a pull request, safely and with positions kept.

The catalog is user input reviewed in git, so a file can be hostile by accident or on purpose:
huge, not UTF-8, full of tabs, a billion-laughs alias bomb, or nested ten thousand levels deep.
Each of these becomes a located `Diagnostic` instead of a traceback, a hang or a memory blow-up.
The tree is loaded round-trip so every mapping and sequence keeps its line and column, which is
how validation errors are pointed back at `file:line:col`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
    ScalarEvent,
)

from wodsync.diagnostics import Diagnostic, Severity

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_TAB_REPORTS = 5


@dataclass
class Document:
    """A loaded YAML file: its repository-relative path and the position-carrying tree."""

    rel: str
    tree: Any = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def at(self, *loc: str | int, key: bool = False) -> tuple[int, int]:
        """1-based position of the node at `loc`; synthetic or missing parts are skipped.

        With `key=True` the last part points at the mapping key rather than its value (used for
        unknown keys, where the key itself is the mistake).
        """
        node = self.tree
        line, col = _node_pos(node)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap):
                k = _match_key(node, part)
                if k is _MISSING:
                    continue
                line, col = node.lc.key(k) if (key and last) else node.lc.value(k)
                node = node[k]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, col = node.lc.item(part)
                node = node[part]
        return line + 1, col + 1

    def diag(self, code: str, message: str, *loc: str | int, key: bool = False,
             severity: Severity = "error") -> Diagnostic:
        line, col = self.at(*loc, key=key)
        return Diagnostic(self.rel, line, col, code, message, severity)


_MISSING = object()


def _match_key(node: CommentedMap, part: str | int) -> Any:
    if part in node:
        return part
    for k in node:
        if str(k) == str(part):
            return k
    return _MISSING


def _node_pos(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line, lc.col
    return 0, 0


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _offset_pos(text: bytes, offset: int) -> tuple[int, int]:
    line = text.count(b"\n", 0, offset) + 1
    col = offset - (text.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def _decode(rel: str, raw: bytes) -> tuple[str | None, list[Diagnostic]]:
    if len(raw) > MAX_FILE_BYTES:
        return None, [Diagnostic(rel, 1, 1, "file-too-large",
                                 f"file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")]
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line, col = _offset_pos(raw, exc.start)
        return None, [Diagnostic(rel, line, col, "encoding",
                                 f"file is not UTF-8 (byte 0x{raw[exc.start]:02x})")]


def _tab_diagnostics(rel: str, text: str) -> list[Diagnostic]:
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        if "\t" in line:
            found.append(Diagnostic(rel, n, line.index("\t") + 1, "tab",
                                    "tab character; YAML catalog files are indented with spaces"))
            if len(found) == MAX_TAB_REPORTS:
                break
    return found


def _mark_pos(exc: YAMLError) -> tuple[int, int]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return 1, 1
    return mark.line + 1, mark.column + 1


def _structure_check(rel: str, text: str) -> Diagnostic | None:
    """Walk parser events (no tree is built) to bound nesting depth and alias expansion.

    A billion-laughs document is tiny on disk but expands exponentially once aliases are
    followed, so the expanded node count of every anchor is tracked as the events stream by.
    """
    anchors: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]
    for event in _yaml().parse(text):
        if isinstance(event, AliasEvent) and any(s[0] == event.anchor for s in stack):
            return _event_diag(rel, event, "alias-bomb",
                               f"alias *{event.anchor} refers to a node that contains it")
        if isinstance(event, CollectionStartEvent):
            stack.append([event.anchor, 1])
            if len(stack) - 1 > MAX_DEPTH:
                return _event_diag(rel, event, "too-deep",
                                   f"data is nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, CollectionEndEvent):
            anchor, count = stack.pop()
            _add_count(stack, anchors, anchor, count)
        elif isinstance(event, ScalarEvent):
            _add_count(stack, anchors, event.anchor, 1)
        elif isinstance(event, AliasEvent):
            stack[-1][1] += anchors.get(event.anchor, 1)
        if isinstance(event, NodeEvent) and stack[0][1] + sum(s[1] for s in stack[1:]) > MAX_NODES:
            return _event_diag(rel, event, "alias-bomb",
                               f"document expands to more than {MAX_NODES} nodes through aliases")
    return None


def _add_count(stack: list[list[Any]], anchors: dict[str, int], anchor: str | None,
               count: int) -> None:
    if anchor:
        anchors[anchor] = count
    stack[-1][1] += count


def _event_diag(rel: str, event: Any, code: str, message: str) -> Diagnostic:
    mark = event.start_mark
    return Diagnostic(rel, mark.line + 1, mark.column + 1, code, message)


def _needs_structure_check(text: str) -> bool:
    """Aliases need `*`; deep nesting needs many brackets or deep indentation."""
    return "*" in text or text.count("[") + text.count("{") > MAX_DEPTH or " " * 40 in text


def parse_yaml(rel: str, raw: bytes, *, allow_tabs: bool = False) -> Document:
    """Parse bytes into a `Document`; problems become diagnostics and leave `tree` as None."""
    doc = Document(rel)
    text, problems = _decode(rel, raw)
    if text is None:
        doc.diagnostics = problems
        return doc
    if not allow_tabs:
        doc.diagnostics = _tab_diagnostics(rel, text)
        if doc.diagnostics:
            return doc
    try:
        if _needs_structure_check(text):
            bad = _structure_check(rel, text)
            if bad:
                doc.diagnostics = [bad]
                return doc
        doc.tree = _yaml().load(text)
    except MarkedYAMLError as exc:
        line, col = _mark_pos(exc)
        code = "duplicate-key" if "duplicate key" in str(exc) else "yaml-syntax"
        doc.diagnostics = [Diagnostic(rel, line, col, code, _yaml_message(exc))]
    except YAMLError as exc:
        doc.diagnostics = [Diagnostic(rel, 1, 1, "yaml-syntax", str(exc).splitlines()[0])]
    except RecursionError:
        doc.diagnostics = [Diagnostic(rel, 1, 1, "too-deep", "data is nested too deeply")]
    return doc


def _yaml_message(exc: MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    return "; ".join(" ".join(str(p).split()) for p in parts) or "invalid YAML"


def load_yaml(root: Path, path: Path, *, allow_tabs: bool = False) -> Document:
    """Read and parse one file, refusing symlinks and oversized files before reading them."""
    rel = path.relative_to(root).as_posix()
    if path.is_symlink():
        return Document(rel, diagnostics=[Diagnostic(rel, 1, 1, "symlink",
                                                     "catalog files must not be symlinks")])
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        return Document(rel, diagnostics=[Diagnostic(
            rel, 1, 1, "file-too-large", f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")])
    return parse_yaml(rel, path.read_bytes(), allow_tabs=allow_tabs)


def to_plain(node: Any) -> Any:
    """Round-trip containers → plain dict/list/scalars, the input Pydantic validates."""
    if isinstance(node, dict):
        return {(str(k) if not isinstance(k, int | bool) else k): to_plain(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def dump_yaml(data: Any, header: str = "") -> str:
    """Serialize plain data as block-style YAML, keys in the given order, with a header line."""
    out = io.StringIO()
    y = YAML(typ="rt")
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    y.default_flow_style = False
    if header:
        out.write(header.rstrip("\n") + "\n")
    y.dump(data, out)
    return out.getvalue()
