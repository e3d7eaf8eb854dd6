"""The schema of a build config (``mixagent data build CONFIG``), checked key by key.

One file that reads as the reference behind docs/DATA.md's key tables: every key, its default and
its bounds. Cross-key rules (one domain kind per input, distinct cluster names) are checked here,
when the config is loaded, not at build time: a typo must not cost a streaming pass or a
clustering run.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixagent.config import StrictModel, load_yaml_config
from mixagent.data.benchmarks import BENCHMARK_NAME

Format = Literal["json", "jsonl", "parquet", "text", "arrow", "csv"]
_FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TrainTokenizerConfig(StrictModel):
    """Train a byte-level BPE on a seeded sample of the inputs (equal share per input)."""

    vocab_size: int = Field(8192, ge=300, description="vocabulary size incl. 256 byte tokens")
    sample_documents: int = Field(100_000, ge=1, description="documents sampled for training")
    sample_max_chars: int = Field(20_000, ge=1, description="each sampled document is cut to this")
    min_frequency: int = Field(2, ge=1, description="a merge needs at least this many occurrences")


class TokenizerConfig(StrictModel):
    """Exactly one of ``train`` (a new BPE) or ``path`` (a local HF tokenizer directory)."""

    train: TrainTokenizerConfig | None = None
    path: str | None = Field(None, description="local HF tokenizer dir (relative to the config)")

    @model_validator(mode="after")
    def _one_kind(self) -> TokenizerConfig:
        if (self.train is None) == (self.path is None):
            raise ValueError("give exactly one of 'train' (e.g. {vocab_size: 8192}) or 'path'")
        return self


class ClusterConfig(StrictModel):
    """Unsupervised domains: k-means over tf-idf of hashed words, fitted on a seeded sample."""

    k: int = Field(ge=1, description="number of clusters = domains")
    sample_documents: int = Field(10_000, ge=1, description="documents sampled to fit on")
    n_features: int = Field(1 << 18, ge=16, description="hashed word-feature dimensions")
    top_terms: int = Field(8, ge=1, description="terms recorded per cluster in the manifest")
    max_chars: int = Field(20_000, ge=1, description="each document is cut to this to featurise")
    n_init: int = Field(3, ge=1, description="k-means restarts")
    prefix: str = Field("cluster", min_length=1, description="domain names: '<field>/<prefix>-<i>'")
    names: list[str] | dict[int, str] | None = Field(
        None,
        description="names of the clusters (a list of k, or {index: name}); unnamed ones keep "
        "'<prefix>-<i>'",
    )

    @model_validator(mode="after")
    def _valid_names(self) -> ClusterConfig:
        """Names are checked here, not at build time: a typo must not cost a clustering run."""
        if self.names is None:
            return self
        if isinstance(self.names, list):
            if len(self.names) != self.k:
                raise ValueError(
                    f"'names' lists {len(self.names)} names for k={self.k} clusters; give one "
                    "per cluster (in cluster order, 0 = largest), or a mapping {index: name}"
                )
        else:
            bad = sorted(i for i in self.names if not 0 <= i < self.k)
            if bad:
                raise ValueError(
                    f"'names' has cluster indices {bad} outside 0..{self.k - 1} (k={self.k})"
                )
        given = self.names if isinstance(self.names, list) else list(self.names.values())
        for name in given:
            if not _FIELD_NAME.match(name):
                raise ValueError(
                    f"'names': cluster name {name!r} must start with a letter or digit and hold "
                    "only letters, digits, '_', '.', '-'"
                )
        seen = Counter(self.domain_suffixes())
        dups = sorted(n for n, c in seen.items() if c > 1)
        if dups:
            raise ValueError(
                f"'names': cluster names must be distinct (also from the unnamed "
                f"'{self.prefix}-<i>'); {', '.join(dups)} repeats"
            )
        return self

    def domain_suffix(self, cluster: int) -> str:
        """The part after '<field>/' of cluster ``cluster``'s domain name."""
        given = self.names[cluster] if isinstance(self.names, list) else (
            (self.names or {}).get(cluster)
        )
        return given if given is not None else f"{self.prefix}-{cluster}"

    def domain_suffixes(self) -> list[str]:
        return [self.domain_suffix(c) for c in range(self.k)]


class DomainConfig(StrictModel):
    """How an input's documents get a domain: exactly one of column, constant, cluster.

    Domain names are ``<field>/<value>`` for a column, ``<field>/<constant>``, or
    ``<field>/<prefix>-<i>`` for clusters.
    """

    column: str | None = None
    default: str | None = Field(None, description="with 'column': value for rows without one")
    constant: str | None = None
    cluster: ClusterConfig | None = None
    description: str = Field("", description="with 'constant': the domain's description")

    @model_validator(mode="after")
    def _one_kind(self) -> DomainConfig:
        given = [k for k in ("column", "constant", "cluster") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'column' (a metadata column), 'constant' (one domain) or "
                f"'cluster' ({{k: N}}); got {', '.join(given) or 'none'}"
            )
        if self.default is not None and self.column is None:
            raise ValueError("'default' only applies together with 'column'")
        return self


class InputConfig(StrictModel):
    """One input: local files (paths/globs) or a hub dataset, with its text column and domains."""

    path: list[str] | None = Field(None, description="file(s) or glob(s), relative to the config")
    format: Format | None = Field(None, description="inferred from the file extension if unset")
    hub: str | None = Field(None, description="Hugging Face hub dataset id (needs network)")
    hub_config: str | None = None
    split: str = "train"
    revision: str | None = None
    text_column: str = "text"
    text_unit: Literal["line", "paragraph", "document"] = Field(
        "line", description="for format 'text': what one document is"
    )
    domain: DomainConfig = Field(default_factory=lambda: DomainConfig(constant="all"))
    max_documents: int | None = Field(None, ge=1, description="stop after this many documents")

    @field_validator("path", mode="before")
    @classmethod
    def _path_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_source(self) -> InputConfig:
        if (self.path is None) == (self.hub is None):
            raise ValueError(
                "give exactly one of 'path' (local files/globs) or 'hub' (a dataset id)"
            )
        if self.path is not None and not self.path:
            raise ValueError("'path' is empty")
        if self.hub is None and (self.hub_config or self.revision):
            raise ValueError("'hub_config' and 'revision' only apply to a 'hub' input")
        if self.hub is not None and self.format is not None:
            raise ValueError("'format' only applies to local files; a hub dataset has its own")
        return self


class FieldConfig(StrictModel):
    """A field (a body of ability) with its role and inputs."""

    role: Literal["source", "target"]
    description: str = ""
    inputs: list[InputConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_cluster_prefixes(self) -> FieldConfig:
        prefixes = [i.domain.cluster.prefix for i in self.inputs if i.domain.cluster]
        if len(prefixes) != len(set(prefixes)):
            raise ValueError(
                "two clustered inputs share a cluster prefix, which would merge unrelated "
                "clusters; give each its own 'domain.cluster.prefix'"
            )
        # a cluster's domain must be its own: sharing a name would merge unrelated documents
        owners: dict[str, int] = {}
        for i, inp in enumerate(self.inputs):
            if inp.domain.cluster is not None:
                for name in inp.domain.cluster.domain_suffixes():
                    if name in owners:
                        raise ValueError(
                            f"inputs[{i}]: cluster name {name!r} is also a domain of "
                            f"inputs[{owners[name]}]; give each cluster its own name"
                        )
                    owners[name] = i
        for i, inp in enumerate(self.inputs):
            if inp.domain.constant is not None and inp.domain.constant in owners:
                raise ValueError(
                    f"inputs[{i}]: domain {inp.domain.constant!r} is also a cluster of "
                    f"inputs[{owners[inp.domain.constant]}]; rename one of them"
                )
        return self


_KIND_COLUMNS = {"qa": {"prompt_column": "prompt", "answer_column": "answer"},
                 "text": {"text_column": "text"}}


class BenchmarkConfig(StrictModel):
    """A benchmark from a local file: ``qa`` items scored by answer log-probability and exact
    match, or ``text`` documents scored by loss. The columns of the other kind are errors, and
    this kind's defaults are filled in, so spelling a default out changes no content hash."""

    name: str = Field(description="referenced by env specs: eval.tasks and '<name>.<metric>'")
    field: str = Field(description="the field it measures (a field of the build)")
    path: str = Field(description="a local jsonl/json/parquet/csv file, relative to the config")
    kind: Literal["qa", "text"]
    format: Literal["json", "jsonl", "parquet", "csv"] | None = Field(
        None, description="inferred from the file extension if unset")
    prompt_column: str | None = None
    answer_column: str | None = None
    text_column: str | None = None
    max_examples: int | None = Field(None, ge=1, description="keep the first N items")
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _columns_of_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("kind") not in _KIND_COLUMNS:
            return data  # a missing or unknown kind is reported by the field itself
        kind = data["kind"]
        data = dict(data)
        for other, cols in _KIND_COLUMNS.items():
            if other == kind:
                continue
            for col in cols:
                if data.get(col) is not None:
                    mine = " and ".join(f"'{c}'" for c in _KIND_COLUMNS[kind])
                    raise ValueError(f"'{col}' applies to kind '{other}'; a '{kind}' benchmark "
                                     f"has {mine}")
        for col, default in _KIND_COLUMNS[kind].items():
            if data.get(col) is None:
                data[col] = default
        return data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not BENCHMARK_NAME.match(v):
            raise ValueError(f"benchmark name {v!r} must start with a letter or digit and hold "
                             "only letters, digits, '_', '-' (reward terms are '<name>.<metric>')")
        return v

    def columns(self) -> list[tuple[str, str]]:
        """``(config key, column)`` of the columns this kind reads, in row order."""
        return [(k, getattr(self, k)) for k in _KIND_COLUMNS[self.kind]]


class DecontaminationConfig(StrictModel):
    """Which shared text makes a corpus document a copy of a benchmark item.

    Words are lowercased runs of letters/digits (punctuation and whitespace are separators), so
    re-spacing or re-punctuating an item does not hide it. An item shorter than ``ngram`` words
    but at least ``min_item_words`` long matches as a whole; shorter items are not checked
    (counted as ``unchecked_items`` in the manifest): a 3-word answer occurs everywhere.
    """

    ngram: int = Field(13, ge=1, description="words per n-gram")
    min_item_words: int = Field(8, ge=1, description="shorter items are not checked")

    @model_validator(mode="after")
    def _bounds(self) -> DecontaminationConfig:
        if self.min_item_words > self.ngram:
            raise ValueError(f"min_item_words={self.min_item_words} must not exceed "
                             f"ngram={self.ngram}")
        return self


def check_benchmark_names(benchmarks: list[BenchmarkConfig], taken: set[str] | None = None) -> None:
    """Names are distinct (also from ``taken``): env specs and reward terms refer to them."""
    seen = set(taken or ())
    for i, b in enumerate(benchmarks):
        if b.name in seen:
            raise ValueError(f"benchmarks[{i}].name: {b.name!r} is already a benchmark's name; "
                             "give each benchmark its own name")
        seen.add(b.name)


class BuildConfig(StrictModel):
    """The config of ``mixagent data build`` (see docs/DATA.md)."""

    name: str = Field(min_length=1)
    tokenizer: TokenizerConfig
    fields: dict[str, FieldConfig] = Field(min_length=1)
    eval_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    min_eval_tokens: int = Field(
        0, ge=0, description="held-out tokens every domain gets at least (from its documents)"
    )
    min_eval_documents: int = Field(
        1, ge=0, description="held-out documents every domain gets at least"
    )
    min_sequence_tokens: int = Field(512, ge=1, description="min train tokens of every domain")
    seed: int = 0
    batch_size: int = Field(1000, ge=1, description="documents read and tokenized per batch")
    max_domains: int = Field(256, ge=1, description="guards against a high-cardinality column")
    benchmarks: list[BenchmarkConfig] = Field(
        default_factory=list, description="benchmarks stored with the data and kept out of it")
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        for name in v:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"field name {name!r} must be letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="after")
    def _benchmark_fields(self) -> BuildConfig:
        for i, b in enumerate(self.benchmarks):
            if b.field not in self.fields:
                raise ValueError(f"benchmarks[{i}].field: unknown field {b.field!r}; the "
                                 f"config's fields are: {', '.join(self.fields)}")
        check_benchmark_names(self.benchmarks)
        return self


class AddBenchmarksConfig(StrictModel):
    """The config of ``mixagent data add-benchmark DIR CONFIG``: benchmarks for a built directory."""

    benchmarks: list[BenchmarkConfig] = Field(min_length=1)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)

    @model_validator(mode="after")
    def _distinct(self) -> AddBenchmarksConfig:
        check_benchmark_names(self.benchmarks)
        return self


def load_build_config(path: str | Path) -> BuildConfig:
    """Load a build config from YAML (unknown keys are errors that name the key)."""
    return load_yaml_config(BuildConfig, path)
