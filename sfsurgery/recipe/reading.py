"""Reading recipes safely: bounded, plain YAML, and ``--set`` overrides.

A recipe is untrusted input. It is read with a size limit, parsed with PyYAML's safe loader
(no tags that build objects), with duplicate keys refused, with the expanded size of its
aliases bounded (a 364-byte alias bomb would otherwise expand to a billion items) and with
only plain JSON values (mappings with string keys, lists, strings, numbers, booleans, null).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError

MAX_BYTES = 1 << 20  # 1 MiB: recipes are a few hundred bytes
MAX_NODES = 100_000  # after alias expansion
MAX_DEPTH = 64
_TAG_HINT = "recipes are plain YAML; tags such as !!python/... or !!set are refused"


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise RecipeError(f"line {key_node.start_mark.line + 1}: mapping keys must be strings",
                                  hint="quote the key")
            if key in seen:
                raise RecipeError(f"line {key_node.start_mark.line + 1}: duplicate key {_short(key)}",
                                  hint="each key may appear once in a mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters: never format unbounded input."""
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_size(node: yaml.Node) -> None:
    """Refuse documents whose aliases expand past MAX_NODES or that nest past MAX_DEPTH."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(node, 1, False)]
    while stack:  # iterative: a deep document must not exhaust Python's stack here
        current, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise RecipeError(f"the recipe nests deeper than {MAX_DEPTH} levels", hint="recipes are a few levels deep")
        children = _children(current)
        if done:
            sizes[id(current)] = min(MAX_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if id(current) in sizes:
            continue
        stack.append((current, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    if sizes[id(node)] > MAX_NODES:
        raise RecipeError(f"the recipe expands to more than {MAX_NODES:,} values (YAML aliases)",
                          hint="recipes do not need aliases that repeat large structures")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_plain(value: Any, where: str = "recipe") -> None:
    """Only JSON values: YAML's sets, dates and binary would not survive the file's JSON."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
        elif not (item is None or isinstance(item, (str, bool, int, float))):
            raise RecipeError(f"{at}: {type(item).__name__} values are not allowed", hint=_TAG_HINT)


def _parse(text: str) -> Any:
    """Parse one YAML document under the limits above; YAML's own errors pass through."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except RecursionError:
        raise RecipeError("the recipe nests too deeply", hint="recipes are a few levels deep") from None
    finally:
        loader.dispose()


def parse_yaml(text: str, name: str) -> Any:
    """Parse one YAML document; every problem is a RecipeError naming ``name`` and the line."""
    try:
        return _parse(text)
    except RecipeError as exc:
        raise RecipeError(f"{name}: {exc.detail}", hint=exc.hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tag = isinstance(exc, yaml.constructor.ConstructorError)
        hint = _TAG_HINT if tag else "check the indentation and the `key: value` syntax near that line"
        raise RecipeError(f"{name}{at}: {_short(problem, 200)}", hint=hint) from None


def read_recipe_file(path: Path) -> dict[str, Any]:
    """Read a recipe file: at most 1 MiB of UTF-8 YAML that is a mapping of plain values."""
    if path.is_dir():
        raise RecipeError(f"{path} is a folder, not a recipe", hint="pass a .yaml file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}",
                          hint="check the path; recipes are YAML files") from None
    if len(raw) > MAX_BYTES:
        raise RecipeError(f"{path} is larger than {MAX_BYTES >> 20} MiB; recipes are small YAML files",
                          hint="pass a recipe, not a model or data file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path} is not UTF-8 text (byte {exc.start})",
                          hint="recipes are UTF-8 YAML files; is this a model or data file?") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise RecipeError(f"{path} is empty", hint="a recipe needs at least base: (see the README's recipe reference)")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with base: and ops:",
                          hint="start from one of the files in recipes/")
    _check_plain(data)
    return data


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = ".".join(parts[:i]) or "recipe"
        if isinstance(node, list):
            if not (part.isascii() and part.isdecimal()) or int(part) >= len(node):
                raise RecipeError(f"--set {_short(dotted)}: {here} has {len(node)} entries, no index {_short(part)}",
                                  hint=f"indices run from 0 to {len(node) - 1}" if node else f"{here} is empty")
            part = int(part)
        elif not isinstance(node, dict):
            raise RecipeError(f"--set {_short(dotted)}: {here} is not a mapping",
                              hint="set the whole value instead, e.g. --set input.size=[112,112]")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict:
    """Return a copy of ``data`` with each ``"dotted.path": value`` set."""
    data = copy.deepcopy(dict(data))
    for dotted, value in (overrides or {}).items():
        _check_plain(value, f"--set {_short(dotted)}")
        _set_path(data, dotted, value)
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["ops.2.num_classes=10"]`` → ``{"ops.2.num_classes": 10}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {_short(item)}: expected KEY=VALUE", hint="e.g. --set ops.0.num_classes=10")
        try:
            out[key] = _parse(raw) if raw.strip() else raw
        except RecipeError as exc:
            raise RecipeError(f"--set {_short(key)}: {exc.detail}", hint=exc.hint) from None
        except yaml.constructor.ConstructorError:
            raise RecipeError(f"--set {_short(key)}: YAML tags are refused", hint=_TAG_HINT) from None
        except yaml.YAMLError:
            out[key] = raw  # not YAML: keep it as a string
    return out


__all__ = ["apply_overrides", "parse_set", "parse_yaml", "read_recipe_file"]
