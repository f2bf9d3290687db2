"""Manifest files as YAML documents, bounded: hostile input fails fast with one line.

A manifest file is read only up to :data:`MAX_INPUT_BYTES` (a larger one is refused
before any parsing), must be UTF-8 text, and each document's *expanded* size (every
alias counted as often as it is used) is checked before it is constructed, so an alias
bomb ("billion laughs": an anchor used a few times, nested a few levels) is refused in
milliseconds instead of taking minutes and gigabytes. Ordinary anchors and merge keys
(``<<: *defaults``) keep working.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import yaml

# A Kubernetes object is at most ~1.5 MiB (etcd's limit); a file holds a few of them.
MAX_INPUT_BYTES = 8 * 1024 * 1024
# Expanded size of one document: nodes (aliases counted at every use) and scalar
# characters. A document without aliases never exceeds its own size, so the limits only
# bite where aliases multiply it.
MAX_EXPANDED_NODES = 200_000
MAX_EXPANDED_CHARS = 2 * MAX_INPUT_BYTES


class ManifestError(ValueError):
    """The input is not a usable YAML manifest; the message is one line for the user."""


def read_bounded(stream: BinaryIO, path: str) -> bytes:
    """At most :data:`MAX_INPUT_BYTES` from ``stream``; a longer input is refused."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise ManifestError(
            f"{path} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB: "
            "that is not a manifest; split it or check that it is the right file"
        )
    return data


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(nodes, scalar characters) of ``root`` with every alias expanded, computed over
    the node graph (aliases are shared nodes) without expanding it."""
    sizes: dict[int, tuple[int, int]] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if not children_done and id(node) in visiting:
            return MAX_EXPANDED_NODES + 1, 0  # an anchor used inside itself: endless
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = (1, len(str(node.value)))
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not children_done:
            visiting.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        nodes, chars = 1, 0
        for child in children:
            child_nodes, child_chars = sizes[id(child)]
            nodes += child_nodes
            chars += child_chars
        visiting.discard(id(node))
        sizes[id(node)] = (nodes, chars)
    return sizes[id(root)]


def load_documents(data: bytes, path: str) -> list[Any]:
    """The YAML documents of ``data`` (safe types only). Raises ManifestError."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path} is not text (invalid UTF-8 at byte {exc.start}): "
            "give a YAML manifest, not a binary file"
        ) from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise ManifestError(
            f"{path} is not YAML text (control character at position {exc.position}): "
            "give a YAML manifest, not a binary file"
        ) from None
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            nodes, chars = _expanded_size(node)
            if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
                raise ManifestError(
                    f"{path}: a document expands to more than {MAX_EXPANDED_NODES} values "
                    "through YAML aliases (an alias bomb?); write the values out instead "
                    "of nesting anchors"
                )
            docs.append(loader.construct_document(node))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ManifestError(f"{path} is not valid YAML{where}") from None
    except RecursionError:
        raise ManifestError(
            f"{path}: the YAML is nested too deeply to be a manifest; check the file"
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"{path}: a value cannot be read ({exc}); check the file") from None
    finally:
        loader.dispose()
    return docs
