"""The manifest of a data directory, and :class:`DataDir`, the validated handle on one.

The manifest is the contract between the data layer and everything downstream (sampler, proxy
engine, CPT run): domain names and their fields, each field's role (``source`` — the ability to
keep — or ``target`` — the ability to gain), token counts, the tokenizer hash, benchmarks (and
the older task sets, read as question/answer benchmarks), and provenance. Opening a directory checks every shard against the manifest, so a truncated or
swapped file is reported by path instead of producing silently wrong training data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


BenchmarkKind = Literal["qa", "text"]
BENCHMARK_METRICS: dict[str, tuple[str, ...]] = {
    "qa": ("exact_match", "answer_loss", "answer_logprob"),
    "text": ("loss",),
}
"""What each benchmark kind is scored by (reward terms are ``<benchmark>.<metric>``): a qa item
by exact match and the answer tokens' mean NLL and log-probability, a text benchmark by loss."""


def metric_value(metrics: Mapping[str, float], metric: str) -> float:
    """A benchmark metric from an evaluation's metrics of that benchmark.

    ``answer_logprob`` (the mean log-probability per answer token, the Data Mixing Agent's
    signal) is by definition ``-answer_loss``: it is derived here, in one place, rather than
    carried beside ``answer_loss`` by every evaluation path (the proxy's evaluator, the folded
    K-replica one, the CPT run's broadcast), which would then all have to agree on it.
    """
    if metric == "answer_logprob":
        return -float(metrics["answer_loss"])
    return float(metrics[metric])


class OverlapInfo(StrictModel):
    """How many corpus documents share a long n-gram with a benchmark (decontamination).

    ``removed`` says whether they are gone: a benchmark declared in the build config has its
    overlapping documents dropped from both splits; one added to an existing directory
    (``mixagent data add-benchmark``) can only count them — they are still in the shards until
    the directory is rebuilt with the benchmark in its config.
    """

    ngram: int = Field(description="words per n-gram (lowercased, punctuation-normalised)")
    min_item_words: int = Field(description="items shorter than ngram but this long match whole")
    documents: int = Field(description="corpus documents sharing an n-gram with an item")
    by_domain: dict[str, int] = Field(default_factory=dict)
    removed: bool
    unchecked_items: int = Field(0, description="items too short to be checked")


class BenchmarkInfo(StrictModel):
    """A benchmark stored as JSONL: ``qa`` rows (``prompt``, ``answer``) or ``text`` rows."""

    name: str
    field: str
    kind: BenchmarkKind
    file: str
    count: int
    sha256: str = Field("", description="of the stored file ('' for a legacy task set)")
    description: str = ""
    source: dict[str, Any] = Field(default_factory=dict, description="where it came from")
    overlap: OverlapInfo | None = None


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
    benchmarks: list[BenchmarkInfo] = Field(default_factory=list)
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
        for b in self.manifest.benchmarks:
            if not (self.path / b.file).is_file():
                raise DataError(f"{self.path / b.file}: file of benchmark {b.name!r} is missing; "
                                "rebuild the data directory or add the benchmark again")

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

    @property
    def benchmarks(self) -> list[BenchmarkInfo]:
        """Every benchmark, the older task sets included as ``qa`` benchmarks.

        One list so that env specs, the evaluator and reward terms name either the same way
        (``eval.tasks``, ``<name>.<metric>``) and a task set written before benchmarks existed
        keeps working unchanged.
        """
        legacy = [
            BenchmarkInfo(name=t.name, field=t.field, kind="qa", file=t.file, count=t.count,
                          description=t.description)
            for t in self.manifest.tasks
        ]
        return [*legacy, *self.manifest.benchmarks]

    def benchmark(self, name: str) -> BenchmarkInfo:
        for b in self.benchmarks:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.benchmarks) or "none"
        raise DataError(f"unknown benchmark {name!r}; benchmarks here: {known}")

    def benchmark_rows(self, name: str) -> list[dict[str, Any]]:
        """Rows of a benchmark: ``{prompt, answer}`` for ``qa``, ``{text}`` for ``text``."""
        return _read_jsonl(self.path / self.benchmark(name).file)

    def task_examples(self, name: str) -> list[dict[str, Any]]:
        """Rows of a task set (JSONL with at least ``prompt`` and ``answer``)."""
        return _read_jsonl(self.path / self.task(name).file)

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r}, domains={len(self.domains)})"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a stored JSONL file; a broken line is an error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{i}: not valid JSON ({err})") from None
    return rows
