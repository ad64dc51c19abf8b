"""YAML loading the yaml.safe_load way (libyaml when there), with the line of every key and item kept for error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from logwatch.util.safeio import RULES_MAX_BYTES, read_capped

# A real config or rules file has a few thousand nodes; aliases may repeat a subtree, and a
# 446-byte "billion laughs" expands to 10^9 nodes that every later walk would visit.
MAX_EXPANDED_NODES = 200_000

Marks = dict[tuple, int]
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(Exception):
    """A YAML file that cannot be read or parsed; the message names file and line."""


def expanded_size_ok(root: yaml.Node | None, limit: int = MAX_EXPANDED_NODES) -> bool:
    """Whether the document, with every alias expanded, has at most `limit` nodes (stops
    counting at the limit, so a bomb costs no more than a legitimate file)."""
    if root is None:
        return True
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return False
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.append(key_node)
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return True


def _walk(node: yaml.Node, path: tuple, marks: Marks) -> None:
    marks[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            marks[path + (key,)] = key_node.start_mark.line + 1
            if isinstance(value_node, (yaml.MappingNode, yaml.SequenceNode)):
                _walk(value_node, path + (key,), marks)
                marks[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), marks)


def _compose_and_construct(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    """The node tree (lines, alias budget) and the data of one document, parsed once (by
    libyaml when PyYAML has it) and built by the safe constructor, as yaml.safe_load does,
    once the alias budget has passed."""
    loader = _SafeLoader(text)
    try:
        root = loader.get_single_node()
        if not expanded_size_ok(root):
            raise YamlError(f"{path}: refused: more than {MAX_EXPANDED_NODES} nodes once "
                            "its aliases are expanded")
        return root, (None if root is None else loader.construct_document(root))
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> tuple[Any, Marks]:
    """Parse a YAML file safely (yaml.safe_load's constructor); also return {key path: line number}."""
    path = Path(path)
    try:
        text = read_capped(path, RULES_MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError(f"{path}: cannot read: {exc}") from exc
    try:
        root, data = _compose_and_construct(text, path)
    except RecursionError:
        raise YamlError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"{where}: invalid YAML: {problem}") from exc
    marks: Marks = {}
    if root is not None:
        _walk(root, (), marks)
    return data, marks


def line_of(marks: Marks, path: tuple) -> int:
    """The line of a key path, or of its nearest ancestor that has one."""
    while path:
        if path in marks:
            return marks[path]
        path = path[:-1]
    return marks.get((), 1)
