"""Typed configs loaded from YAML.

All configs are pydantic models that forbid unknown keys, so a typo in a YAML file is an error
that names the key instead of a silently ignored setting. ``load_yaml_config`` turns pydantic's
validation errors into :class:`~mixagent.errors.ConfigError` with dotted key paths.
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


def load_yaml_config(cls: type[T], path: str | Path) -> T:
    """Load and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return validate_config(cls, data or {}, source=str(path))
