"""The manifest of a data directory, and :class:`DataDir`, the validated handle on one.

The manifest is the contract between the data layer and everything downstream (sampler, proxy
engine, CPT run): domain names and their fields, each field's role (``source`` — the ability to
keep — or ``target`` — the ability to gain), token counts, the tokenizer hash, task sets, and
provenance. Opening a directory checks every shard against the manifest, so a truncated or
swapped file is reported by path instead of producing silently wrong training data.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixagent.config import StrictModel, validate_config
from mixagent.data.shards import DTYPES, open_shard
from mixagent.errors import DataError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
Role = Literal["source", "target"]
Split = Literal["train", "eval"]


class FieldInfo(StrictModel):
    """A field: a body of ability (general prose, code, math) split into domains."""

    name: str
    role: Role
    description: str = ""


class DomainInfo(StrictModel):
    """One domain: the unit the mixture assigns a weight to."""

    name: str = Field(description="unique name, conventionally 'field/domain'")
    field: str
    role: Role
    train_file: str
    eval_file: str
    train_tokens: int
    eval_tokens: int
    train_documents: int
    eval_documents: int
    description: str = ""


class TaskInfo(StrictModel):
    """A task set checked by a metric (e.g. math problems by exact match), stored as JSONL."""

    name: str
    field: str
    kind: Literal["exact_match"] = "exact_match"
    file: str
    count: int
    description: str = ""


class TokenizerInfo(StrictModel):
    path: str = "tokenizer"
    hash: str
    vocab_size: int
    eos_token_id: int
    kind: Literal["trained-bpe", "pretrained"]


class Manifest(StrictModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    content_hash: str
    dtype: Literal["uint16", "uint32"]
    tokenizer: TokenizerInfo
    fields: list[FieldInfo]
    domains: list[DomainInfo]
    tasks: list[TaskInfo] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict)
    created_at: str = ""

    def field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.fields)
        raise DataError(f"unknown field {name!r}; this data directory has: {known}")


class DataDir:
    """A validated, read-only data directory.

    Construction reads the manifest and checks that every shard exists with exactly the size its
    token count implies; it does not read token data. Memmaps are opened lazily and cached.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / MANIFEST_NAME
        if not self.path.is_dir():
            raise DataError(f"data directory not found: {self.path} (build one with 'mixagent data build' or 'mixagent data builtin')")
        if not mpath.is_file():
            raise DataError(f"{self.path} is not a mixagent data directory: {MANIFEST_NAME} is missing")
        try:
            raw = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{mpath}: unreadable manifest ({err}); rebuild the data directory") from None
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != SCHEMA_VERSION:
            raise DataError(
                f"{mpath}: manifest schema version {version!r} is not supported by this mixagent "
                f"(expects {SCHEMA_VERSION}); rebuild the data directory or upgrade mixagent"
            )
        try:
            self.manifest: Manifest = validate_config(Manifest, raw, source=str(mpath))
        except Exception as err:  # ConfigError -> DataError: it is a data problem here
            raise DataError(str(err)) from None
        self._check_files()
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    def _check_files(self) -> None:
        itemsize = np.dtype(DTYPES[self.manifest.dtype]).itemsize
        names = set()
        for d in self.manifest.domains:
            if d.name in names:
                raise DataError(f"{self.path}: domain {d.name!r} is listed twice in the manifest")
            names.add(d.name)
            for split, rel, tokens in (("train", d.train_file, d.train_tokens), ("eval", d.eval_file, d.eval_tokens)):
                p = self.path / rel
                if not p.is_file():
                    raise DataError(f"{p}: {split} shard of domain {d.name!r} is missing; rebuild the data directory")
                size = p.stat().st_size
                if size != tokens * itemsize:
                    raise DataError(
                        f"{p}: {split} shard of domain {d.name!r} has {size} bytes but the manifest "
                        f"says {tokens} tokens ({tokens * itemsize} bytes); the file is truncated or "
                        "foreign — rebuild the data directory"
                    )

    # -- lookups -----------------------------------------------------------------------------
    @property
    def domains(self) -> list[DomainInfo]:
        return self.manifest.domains

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.manifest.domains]

    def domain(self, name: str) -> DomainInfo:
        for d in self.manifest.domains:
            if d.name == name:
                return d
        raise DataError(f"unknown domain {name!r}; known domains: {', '.join(self.domain_names)}")

    def domains_of_field(self, field: str) -> list[DomainInfo]:
        self.manifest.field(field)
        return [d for d in self.manifest.domains if d.field == field]

    def tokens(self, domain: str, split: Split = "train") -> np.ndarray:
        """The domain's token ids for a split, as a read-only memmap."""
        key = (domain, split)
        if key not in self._maps:
            d = self.domain(domain)
            rel = d.train_file if split == "train" else d.eval_file
            self._maps[key] = open_shard(self.path / rel, self.manifest.dtype)
        return self._maps[key]

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / self.manifest.tokenizer.path

    @cached_property
    def tokenizer(self) -> Any:
        """The HF fast tokenizer (imported lazily: transformers is heavy)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(self.tokenizer_dir))

    def task(self, name: str) -> TaskInfo:
        for t in self.manifest.tasks:
            if t.name == name:
                return t
        raise DataError(f"unknown task {name!r}; tasks here: {', '.join(t.name for t in self.manifest.tasks) or 'none'}")

    def task_examples(self, name: str) -> list[dict[str, Any]]:
        """Rows of a task set (JSONL with at least ``prompt`` and ``answer``)."""
        t = self.task(name)
        path = self.path / t.file
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}:{i}: not valid JSON ({err})") from None
        return rows

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r}, domains={len(self.domains)})"
