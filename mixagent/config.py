"""Typed configs loaded from YAML.

All configs are pydantic models that forbid unknown keys, so a typo in a YAML file is an error
that names the key instead of a silently ignored setting. ``load_yaml_config`` turns pydantic's
validation errors into :class:`~mixagent.errors.ConfigError` with dotted key paths.

Every YAML file a user writes is read by :func:`load_yaml`, which rejects a key repeated in one
mapping: plain YAML loaders keep the last occurrence silently, so a second ``math:`` field or
``cpt:`` block would quietly discard the first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mixagent.errors import ConfigError

T = TypeVar("T", bound="StrictModel")


class StrictModel(BaseModel):
    """Base for every mixagent config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def config_hash(self) -> str:
        """A stable content hash of the config, used to name cached outputs."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render pydantic errors as ``source: key.path: message`` lines a user can act on."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the docs for allowed keys)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def validate_config(cls: type[T], data: Any, source: str = "config") -> T:
    """Validate a mapping into ``cls``, raising :class:`ConfigError` that names every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> Any:
    """The contents of a user's YAML file (safe types only), or :class:`ConfigError`.

    Unlike ``yaml.safe_load``, a key given twice in the same mapping, at any depth, is an error
    naming the file, the key's dotted path and both lines, because the silent last-one-wins rule
    of YAML loaders drops settings the user wrote. Merge keys (``<<: *anchor``) may still be
    overridden by explicit keys: that is what they are for.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as UTF-8 text: {err}") from None
    loader = yaml.SafeLoader(text)
    loader.name = str(path)  # YAML syntax errors then point at the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _reject_duplicate_keys(loader, node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


def load_yaml_config(cls: type[T], path: str | Path) -> T:
    """Load and validate a YAML config file."""
    data = load_yaml(path)
    return validate_config(cls, data or {}, source=str(Path(path)))


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _reject_duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node, path: Path) -> None:
    """Walk the composed node tree (before construction, so the line of every key is known)."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        if id(node) in seen_nodes:  # an alias to a node already checked (or a recursive one)
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_key: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    stack.append((value_node, where))
                    continue
                key = loader.construct_object(key_node, deep=True)
                dotted = f"{where}.{key}" if where else str(key)
                try:
                    first = first_key.setdefault(key, key_node)
                except TypeError:  # an unhashable key: construction reports it
                    first = key_node
                if first is not key_node:
                    raise ConfigError(
                        f"{path}: key {dotted!r} is given twice (lines "
                        f"{first.start_mark.line + 1} and {key_node.start_mark.line + 1}); YAML "
                        "would silently keep only the last one. Remove or merge one of them.")
                stack.append((value_node, dotted))

