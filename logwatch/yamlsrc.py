"""YAML loading through yaml.safe_load, with the line of every key and item kept for error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Marks = dict[tuple, int]
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(Exception):
    """A YAML file that cannot be read or parsed; the message names file and line."""


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


def load_yaml(path: str | Path) -> tuple[Any, Marks]:
    """Parse a YAML file with yaml.safe_load; also return {key path: line number}."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlError(f"{path}: cannot read: {exc}") from exc
    try:
        # One parse: the node tree gives the lines, then the data is built from it (what
        # safe_load does), by libyaml when PyYAML has it (20x faster: rules load at every start).
        loader = _SafeLoader(text)
        try:
            root = loader.get_single_node()
            data = None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
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
