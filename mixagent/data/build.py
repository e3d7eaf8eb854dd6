"""``mixagent data build``: a user's corpora in, a validated data directory out.

A build config (YAML, :class:`BuildConfig`) names *fields* — each a ``source`` (ability to keep)
or ``target`` (ability to gain) — and their inputs: local jsonl/json/parquet/text/arrow/csv files
or a Hugging Face hub dataset, the text column, and how each document gets its *domain* (a metadata
column, a constant, or unsupervised clustering). :func:`build_data_dir` then

1. resolves every input file and hashes it, and hashes the normalised config with them: if the
   output already holds a build with that content hash it is reused untouched, so re-running a
   pipeline is free and a changed byte anywhere forces a rebuild;
2. streams the inputs once to draw seeded, bounded samples (for the tokenizer and for fitting the
   clusterers) — only when a tokenizer is trained or an input is clustered;
3. trains a byte-level BPE on the sample or adopts a local HF tokenizer;
4. streams the inputs again and tokenizes them batch by batch through
   :class:`~mixagent.data.writer.DataDirWriter`, which splits eval/train by content hash, checks
   every domain and writes the manifest.

Memory stays flat in the corpus size: inputs are read with ``datasets`` in streaming mode (no Arrow
cache is written; its lock files go to a temporary directory), samples are bounded by the config,
and shards are written as they fill. Everything happens inside
:func:`~mixagent.utils.io.atomic_directory`, so a failure leaves either no output or the previous
good one.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import platform
import random
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixagent.config import StrictModel, load_yaml_config, validate_config
from mixagent.data.clustering import TextClusterer
from mixagent.data.manifest import MANIFEST_NAME, DataDir, Manifest
from mixagent.errors import DataError, MixagentError
from mixagent.utils.io import (
    atomic_directory,
    remove_stale_temporaries,
    sha256_file,
    sha256_json,
)
from mixagent.utils.progress import Progress

logger = logging.getLogger(__name__)

# Bumped whenever the bytes a build writes for the same inputs would change (tokenization,
# split, shard layout): part of the content hash, so old outputs are rebuilt, never misread.
DATA_FORMAT_VERSION = 1

Format = Literal["json", "jsonl", "parquet", "text", "arrow", "csv"]
_SUFFIX_FORMATS = {
    ".jsonl": "json",
    ".json": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".arrow": "arrow",
    ".csv": "csv",
}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4"}
_FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# -- config ----------------------------------------------------------------------------------
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

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        for name in v:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"field name {name!r} must be letters, digits, '_', '.', '-'")
        return v


def load_build_config(path: str | Path) -> BuildConfig:
    """Load a build config from YAML (unknown keys are errors that name the key)."""
    return load_yaml_config(BuildConfig, path)


# -- input resolution and hashing --------------------------------------------------------------
@dataclass(frozen=True)
class InputFile:
    path: Path
    sha256: str
    size: int


@dataclass
class ResolvedInput:
    """An input with its files found and hashed (or its hub revision pinned)."""

    field: str
    index: int
    config: InputConfig
    format: str | None
    files: list[InputFile]
    hub_revision: str | None = None

    @property
    def label(self) -> str:
        return f"fields.{self.field}.inputs[{self.index}]"


@dataclass
class BuildPlan:
    """Everything the content hash covers, resolved before any expensive work."""

    config: BuildConfig
    base_dir: Path
    inputs: list[ResolvedInput]
    tokenizer_dir: Path | None
    tokenizer_source_hash: str | None
    content_hash: str = ""
    provenance_inputs: list[dict[str, Any]] = field(default_factory=list)


def infer_format(path: str | Path) -> str | None:
    """The ``datasets`` loader for a file, from its extension (compression suffixes skipped)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _resolve_files(
    inp: InputConfig, label: str, base: Path, exclude: Path | None = None
) -> list[Path]:
    files: list[Path] = []
    for pattern in inp.path or []:
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base / full
        if any(c in pattern for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
            matches = [p for p in matches if p.is_file() and not _inside(p, exclude)]
            if not matches:
                raise DataError(
                    f"{label}.path: the glob {pattern!r} matches no files (looked in {full})"
                )
        elif full.is_dir():
            raise DataError(
                f"{label}.path: {full} is a directory; name its files with a glob such as "
                f"'{pattern.rstrip('/')}/*.jsonl'"
            )
        elif not full.is_file():
            raise DataError(f"{label}.path: file not found: {full}")
        else:
            matches = [full]
        files.extend(p for p in matches if p not in files)
    return files


def _input_format(inp: InputConfig, label: str, files: list[Path]) -> str:
    if inp.format is not None:
        return "json" if inp.format == "jsonl" else inp.format
    formats = {}
    for f in files:
        fmt = infer_format(f)
        if fmt is None:
            raise DataError(
                f"{label}: cannot infer the format of {f} from its extension; set "
                "'format' to one of json, parquet, text, arrow, csv"
            )
        formats.setdefault(fmt, f)
    if len(formats) > 1:
        listing = ", ".join(f"{k} ({v.name})" for k, v in formats.items())
        raise DataError(
            f"{label}: the files have several formats: {listing}; use one input per format"
        )
    return next(iter(formats))


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _hash_file(path: Path) -> InputFile:
    try:
        return InputFile(path=path, sha256=sha256_file(path), size=path.stat().st_size)
    except OSError as err:
        raise DataError(f"cannot read input file {path}: {err.strerror or err}") from None


def _hash_tokenizer_dir(path: Path) -> str:
    """Hash every file of an adopted tokenizer directory: any change there must rebuild."""
    if not path.is_dir():
        raise DataError(
            f"tokenizer.path: {path} is not a directory holding a Hugging Face tokenizer"
        )
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            entries.append([str(p.relative_to(path)), _hash_file(p).sha256])
    if not entries:
        raise DataError(f"tokenizer.path: {path} is empty; it must hold a Hugging Face tokenizer")
    return sha256_json(entries)


def _resolve_hub_revision(inp: InputConfig, label: str) -> str:
    """Pin a hub dataset to a commit, so the content hash changes when the dataset does."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        raise DataError(
            f"{label}: hub dataset {inp.hub!r} needs network, but HF offline mode is set; "
            "use local files"
        )
    try:
        from huggingface_hub import HfApi

        info = HfApi().dataset_info(inp.hub, revision=inp.revision)
    except Exception as err:
        raise DataError(
            f"{label}: cannot reach hub dataset {inp.hub!r} ({type(err).__name__}: {err}); "
            "check the id and the network, or download it and use local files"
        ) from None
    return str(info.sha)


def plan_build(
    config: BuildConfig, base_dir: str | Path | None = None, *, exclude: str | Path | None = None
) -> BuildPlan:
    """Resolve and hash every input, and compute the build's content hash.

    The hash covers the normalised config (defaults filled in, so spelling a default out changes
    nothing), each input file's name and sha256, the adopted tokenizer's files and
    :data:`DATA_FORMAT_VERSION`. Paths are taken relative to ``base_dir`` (the config file's
    folder), so moving a project folder as a whole keeps its builds valid. Glob matches inside
    ``exclude`` (the output directory) are skipped, so a broad glob never eats its own output.
    """
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    skip = Path(exclude).resolve() if exclude is not None else None
    inputs: list[ResolvedInput] = []
    for fname, fcfg in config.fields.items():
        for i, icfg in enumerate(fcfg.inputs):
            label = f"fields.{fname}.inputs[{i}]"
            if icfg.hub is not None:
                inputs.append(
                    ResolvedInput(fname, i, icfg, None, [], _resolve_hub_revision(icfg, label))
                )
                continue
            paths = _resolve_files(icfg, label, base, skip)
            fmt = _input_format(icfg, label, paths)
            inputs.append(ResolvedInput(fname, i, icfg, fmt, [_hash_file(p) for p in paths]))
    tok_dir = tok_hash = None
    if config.tokenizer.path is not None:
        tok_dir = Path(config.tokenizer.path).expanduser()
        tok_dir = tok_dir if tok_dir.is_absolute() else base / tok_dir
        tok_hash = _hash_tokenizer_dir(tok_dir)
    plan = BuildPlan(config, base, inputs, tok_dir, tok_hash)
    plan.provenance_inputs = [
        {
            "input": r.label,
            "field": r.field,
            "format": r.format,
            "hub": r.config.hub,
            "hub_revision": r.hub_revision,
            "files": [{"path": str(f.path), "sha256": f.sha256, "size": f.size} for f in r.files],
        }
        for r in inputs
    ]
    plan.content_hash = sha256_json(
        {
            "data_format_version": DATA_FORMAT_VERSION,
            "config": _hashed_config(config),
            "inputs": [
                [
                    r.label,
                    r.hub_revision,
                    [[_display(f.path, base), f.sha256, f.size] for f in r.files],
                ]
                for r in inputs
            ],
            "tokenizer_source": tok_hash,
        }
    )
    return plan


# Keys added after data format 1, with the default that reproduces what builds did before them:
# left out of the content hash at that default, so existing outputs stay valid. (A domain with no
# held-out document was an error before, so the default min_eval_documents=1 changes no output
# that exists.)
_LATER_TOP_KEYS = {"min_eval_tokens": 0, "min_eval_documents": 1}
_LATER_CLUSTER_KEYS: dict[str, Any] = {"names": None}


def _hashed_config(config: BuildConfig) -> dict[str, Any]:
    """The normalised config as the content hash sees it (see :data:`_LATER_TOP_KEYS`)."""
    dump = config.model_dump(mode="json")
    for key, default in _LATER_TOP_KEYS.items():
        if dump.get(key) == default:
            dump.pop(key)
    for fcfg in dump["fields"].values():
        for inp in fcfg["inputs"]:
            cluster = inp["domain"].get("cluster")
            for key, default in _LATER_CLUSTER_KEYS.items():
                if cluster is not None and cluster.get(key) == default:
                    cluster.pop(key)
    return dump


# -- streaming reads ---------------------------------------------------------------------------
@dataclass
class _Batch:
    source: str  # the file (or hub id) the documents came from, for error messages
    texts: list[str]
    values: list[Any] | None  # domain-column values, when the domain comes from a column


def _needed_columns(inp: InputConfig) -> list[str]:
    cols = [inp.text_column]
    if inp.domain.column is not None and inp.domain.column not in cols:
        cols.append(inp.domain.column)
    return cols


def _check_columns(present: list[str] | None, inp: InputConfig, label: str, source: str) -> None:
    if present is None:
        return
    for role, col in (("text_column", inp.text_column), ("domain.column", inp.domain.column)):
        if col is not None and col not in present:
            raise DataError(
                f"{label}.{role}: column {col!r} is not in {source}; its columns are: "
                f"{', '.join(present) or '(none)'}"
            )


@contextlib.contextmanager
def _no_download_count(datasets: Any) -> Iterator[None]:
    """Stop ``datasets`` from pinging the hub to count a load of its json/parquet/... loader.

    It sends that request for local files too (and can wait seconds for it offline); reading a
    local file must not touch the network. Scoped, so a caller's own hub use is unchanged.
    """
    old = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = old


def _open(inp: ResolvedInput, source: Path | None, cache_dir: str) -> Any:
    """A streaming ``datasets`` IterableDataset over one file (or the hub); None if empty."""
    import datasets

    cfg = inp.config
    if source is None:
        try:
            return datasets.load_dataset(
                cfg.hub,
                cfg.hub_config,
                split=cfg.split,
                revision=inp.hub_revision,
                streaming=True,
                cache_dir=cache_dir,
            )
        except Exception as err:
            raise DataError(
                f"{inp.label}: cannot open hub dataset {cfg.hub!r} ({type(err).__name__}: {err})"
            ) from None
    fmt = inp.format or ""
    kwargs: dict[str, Any] = {}
    if fmt == "text":
        kwargs["sample_by"] = cfg.text_unit
    if fmt == "parquet":  # check the schema first: a clear error, and read only needed columns
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(source).names
        except Exception as err:
            raise DataError(
                f"{source}: not a readable parquet file ({err}); re-export it"
            ) from None
        _check_columns(names, cfg, inp.label, str(source))
        kwargs["columns"] = _needed_columns(cfg)
    if source.stat().st_size == 0:
        return None
    try:
        with _no_download_count(datasets):
            return datasets.load_dataset(
                fmt,
                data_files=[str(source)],
                split="train",
                streaming=True,
                cache_dir=cache_dir,
                **kwargs,
            )
    except StopIteration:  # the json loader's way of saying the file holds no rows
        return None
    except Exception as err:
        raise DataError(
            f"{source}: cannot read as {fmt} ({type(err).__name__}: {err}); check that the file "
            "is intact and that 'format' is right"
        ) from None


def iter_input_batches(inp: ResolvedInput, batch_size: int, cache_dir: str) -> Iterator[_Batch]:
    """Stream an input's non-empty documents in batches of at most ``batch_size``.

    Applies ``max_documents``, checks columns and value types, and names the file in every error.
    Raises :class:`DataError` if the input yields no document at all.
    """
    cfg = inp.config
    sources: list[Path | None] = [f.path for f in inp.files] if inp.files else [None]
    remaining = cfg.max_documents
    total = 0
    for source in sources:
        name = str(source) if source is not None else f"hub dataset {cfg.hub!r}"
        ds = _open(inp, source, cache_dir)
        if ds is None:
            logger.warning("%s: %s is empty; skipping it", inp.label, name)
            continue
        _check_columns(ds.column_names, cfg, inp.label, name)
        if ds.column_names is not None:
            ds = ds.select_columns(_needed_columns(cfg))
        first = True
        try:
            for raw in ds.iter(batch_size=batch_size):
                if first:
                    _check_columns(list(raw), cfg, inp.label, name)
                    first = False
                batch = _clean_batch(raw, cfg, inp.label, name)
                if remaining is not None:
                    batch.texts = batch.texts[:remaining]
                    if batch.values is not None:
                        batch.values = batch.values[:remaining]
                    remaining -= len(batch.texts)
                if batch.texts:
                    total += len(batch.texts)
                    yield batch
                if remaining is not None and remaining <= 0:
                    return
        except MixagentError:
            raise
        except Exception as err:
            raise DataError(
                f"{name}: cannot read as {inp.format or 'a dataset'} "
                f"({type(err).__name__}: {err}); "
                "check that the file is intact and that 'format' is right"
            ) from None
    if total == 0:
        where = ", ".join(str(f.path) for f in inp.files) or f"hub dataset {cfg.hub!r}"
        raise DataError(
            f"{inp.label}: no non-empty documents in column {cfg.text_column!r} of {where}; "
            "an empty input would make an empty domain — fix the input or remove it"
        )


def _clean_batch(raw: dict[str, list[Any]], cfg: InputConfig, label: str, source: str) -> _Batch:
    """Drop empty documents, and reject values that are not text (naming file and column)."""
    texts: list[str] = []
    values: list[Any] | None = [] if cfg.domain.column is not None else None
    col_values = raw[cfg.domain.column] if cfg.domain.column is not None else None
    for i, t in enumerate(raw[cfg.text_column]):
        if t is None:
            continue
        if not isinstance(t, str):
            raise DataError(
                f"{label}.text_column: column {cfg.text_column!r} of {source} must hold text, "
                f"but a row holds {type(t).__name__} ({str(t)[:40]!r})"
            )
        if not t.strip():
            continue
        texts.append(t)
        if values is not None and col_values is not None:
            values.append(col_values[i])
    return _Batch(source, texts, values)


# -- sampling ------------------------------------------------------------------------------------
class _Reservoir:
    """Uniform sample of at most ``size`` items from a stream (Algorithm R), seeded."""

    def __init__(self, size: int, seed: str):
        self.size = size
        self.items: list[str] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: str) -> None:
        if self.size <= 0:
            return
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen + 1)
            if j < self.size:
                self.items[j] = item
        self.seen += 1


def _shares(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def _sample_inputs(plan: BuildPlan, cache_dir: str) -> tuple[list[str], dict[str, list[str]]]:
    """One streaming pass drawing the tokenizer sample and each clustered input's fit sample.

    Each input gets an equal share of the tokenizer sample, so a small target corpus is as present
    in the vocabulary as a large source corpus. Memory is bounded by the sample sizes in the config.
    """
    cfg = plan.config
    train = cfg.tokenizer.train
    tok_shares = (
        _shares(train.sample_documents, len(plan.inputs)) if train else [0] * len(plan.inputs)
    )
    tok_sample: list[str] = []
    cluster_samples: dict[str, list[str]] = {}
    todo = [
        (inp, share)
        for inp, share in zip(plan.inputs, tok_shares, strict=True)
        if share > 0 or inp.config.domain.cluster is not None
    ]
    if not todo:
        return tok_sample, cluster_samples
    with Progress(None, "sampling documents", "doc", logger=logger) as bar:
        for inp, share in todo:
            bar.set_postfix(input=inp.label)
            cl = inp.config.domain.cluster
            tok_res = _Reservoir(share, f"{cfg.seed}:tokenizer:{inp.label}")
            cl_res = _Reservoir(cl.sample_documents if cl else 0, f"{cfg.seed}:cluster:{inp.label}")
            tok_chars = train.sample_max_chars if train else 0
            cl_chars = cl.max_chars if cl else 0
            for batch in iter_input_batches(inp, cfg.batch_size, cache_dir):
                for t in batch.texts:
                    tok_res.add(t[:tok_chars])
                    cl_res.add(t[:cl_chars])
                bar.update(len(batch.texts))
            tok_sample.extend(tok_res.items)
            if cl:
                cluster_samples[inp.label] = cl_res.items
    return tok_sample, cluster_samples


# -- the build -----------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    """Versions of what decides the bytes of a build (recorded in the manifest's provenance)."""
    from mixagent import __version__

    versions = {"mixagent": __version__, "python": platform.python_version()}
    for pkg in ("datasets", "tokenizers", "pyarrow", "transformers", "scikit-learn", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def _is_mixagent_data_dir(path: Path) -> bool:
    """Whether ``path`` looks like a data directory we wrote (and so may be replaced)."""
    import json

    try:
        raw = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and {"schema_version", "content_hash", "domains"} <= raw.keys()


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not _is_mixagent_data_dir(out):
        raise DataError(
            f"--out {out} exists and is not a mixagent data directory "
            f"(no mixagent {MANIFEST_NAME}); "
            "refusing to replace it — choose another output path or empty it yourself"
        )


def _up_to_date(out: Path, content_hash: str) -> Manifest | None:
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = DataDir(out).manifest
    except DataError as err:
        logger.warning("existing %s is not a valid data directory (%s); rebuilding it", out, err)
        return None
    return manifest if manifest.content_hash == content_hash else None


def _coerce_config(
    config_or_path: BuildConfig | Mapping[str, Any] | str | Path, base_dir: str | Path | None
) -> tuple[BuildConfig, Path, str | None]:
    if isinstance(config_or_path, BuildConfig):
        return config_or_path, Path(base_dir or Path.cwd()).resolve(), None
    if isinstance(config_or_path, Mapping):
        cfg = validate_config(BuildConfig, dict(config_or_path), source="build config")
        return cfg, Path(base_dir or Path.cwd()).resolve(), None
    path = Path(config_or_path)
    cfg = load_build_config(path)
    return cfg, Path(base_dir or path.resolve().parent).resolve(), str(path.resolve())


def build_data_dir(
    config_or_path: BuildConfig | Mapping[str, Any] | str | Path,
    out: str | Path,
    *,
    force: bool = False,
    base_dir: str | Path | None = None,
) -> Path:
    """Build (or reuse) the data directory ``out`` for a build config; returns ``out``.

    ``config_or_path`` is a :class:`BuildConfig`, a mapping, or a YAML file; relative input paths
    are resolved against ``base_dir`` (default: the YAML file's folder, else the working
    directory). An existing ``out`` holding a build with the same content hash is reused as is
    unless ``force``; any other mixagent data directory there is replaced atomically, and a
    non-empty directory that is not one is never touched (:class:`DataError`).
    """
    config, base, config_file = _coerce_config(config_or_path, base_dir)
    out = Path(out)
    _check_output(out)
    remove_stale_temporaries(out)  # also when the output is reused: a killed build's leftovers
    plan = plan_build(config, base, exclude=out)
    if not force and (existing := _up_to_date(out, plan.content_hash)) is not None:
        logger.info(
            "reusing %s: it already holds %r built from the same config and inputs "
            "(content hash %s)",
            out,
            existing.name,
            plan.content_hash[:12],
        )
        return out
    logger.info("building %s (content hash %s)", out, plan.content_hash[:12])
    roles = {f.role for f in config.fields.values()}
    if roles != {"source", "target"}:
        logger.warning(
            "the config has only %s fields; mixing needs a source and a target field", roles.pop()
        )
    with (
        tempfile.TemporaryDirectory(prefix="mixagent-datasets-") as cache_dir,
        atomic_directory(out, replace=True) as tmp,
    ):
        manifest = _build_into(tmp, plan, cache_dir, config_file)
    logger.info(
        "built %s: %d domains, %s train tokens",
        out,
        len(manifest.domains),
        f"{sum(d.train_tokens for d in manifest.domains):,}",
    )
    return out


def _build_into(root: Path, plan: BuildPlan, cache_dir: str, config_file: str | None) -> Manifest:
    from mixagent.data.tokenizer import adopt_pretrained, train_bpe
    from mixagent.data.writer import DataDirWriter, reliable_eval_tokens

    cfg = plan.config
    tok_sample, cluster_samples = _sample_inputs(plan, cache_dir)
    if cfg.tokenizer.train is not None:
        t = cfg.tokenizer.train
        logger.info(
            "training a byte-level BPE (vocab %d) on %d sampled documents",
            t.vocab_size,
            len(tok_sample),
        )
        tok_info = train_bpe(
            tok_sample, t.vocab_size, root / "tokenizer", min_frequency=t.min_frequency
        )
        tok_source: dict[str, Any] = {"kind": "trained-bpe", "sample_documents": len(tok_sample)}
    else:
        assert plan.tokenizer_dir is not None
        tok_info = adopt_pretrained(plan.tokenizer_dir, root / "tokenizer")
        tok_source = {
            "kind": "pretrained",
            "path": str(plan.tokenizer_dir),
            "files_hash": plan.tokenizer_source_hash,
        }
    del tok_sample

    clusterers: dict[str, TextClusterer] = {}
    for inp in plan.inputs:
        cl = inp.config.domain.cluster
        if cl is None:
            continue
        logger.info("clustering %s into %d domains", inp.label, cl.k)
        try:
            clusterers[inp.label] = TextClusterer(
                cl.k,
                seed=cfg.seed,
                n_features=cl.n_features,
                top_terms=cl.top_terms,
                max_chars=cl.max_chars,
                n_init=cl.n_init,
            ).fit(cluster_samples.pop(inp.label))
        except DataError as err:
            raise DataError(f"{inp.label}.domain.cluster: {err}") from None

    writer = DataDirWriter(
        root,
        tok_info,
        eval_fraction=cfg.eval_fraction,
        min_sequence_tokens=cfg.min_sequence_tokens,
        min_eval_tokens=cfg.min_eval_tokens,
        min_eval_documents=cfg.min_eval_documents,
        warn_eval_tokens=reliable_eval_tokens(cfg.min_sequence_tokens),
    )
    for fname, fcfg in cfg.fields.items():
        writer.add_field(fname, fcfg.role, fcfg.description)
    domains: set[str] = set()
    cluster_owner: dict[str, str] = {}  # cluster domain -> the input it belongs to
    documents: dict[str, int] = {}
    with Progress(None, "tokenizing", "doc", logger=logger) as bar:
        for inp in plan.inputs:
            bar.set_postfix(input=inp.label)
            clusterer = clusterers.get(inp.label)
            if clusterer is not None:  # register every cluster, so an empty one is an error
                for c in range(clusterer.k):
                    name = _cluster_domain(inp, c)
                    if name in domains:
                        raise DataError(
                            f"{inp.label}.domain.cluster: its domain {name!r} is also produced "
                            f"by {cluster_owner.get(name, 'another input')}; give the cluster "
                            "another name ('names' or 'prefix')"
                        )
                    _register(domains, name, cfg.max_domains, inp)
                    cluster_owner[name] = inp.label
                    writer.add_documents(name, inp.field, [], description=clusterer.describe(c))
            n = 0
            for batch in iter_input_batches(inp, cfg.batch_size, cache_dir):
                names = _domain_names(inp, batch, clusterer)
                groups: dict[str, list[str]] = {}
                for name, text in zip(names, batch.texts, strict=True):
                    groups.setdefault(name, []).append(text)
                for name, texts in groups.items():
                    owner = cluster_owner.get(name)
                    if owner is not None and owner != inp.label:
                        raise DataError(
                            f"{inp.label}: its domain {name!r} is also a cluster of {owner}; "
                            "a cluster's domain must be its own — rename the cluster ('names' "
                            "or 'prefix') or this domain"
                        )
                    if name not in domains:
                        _register(domains, name, cfg.max_domains, inp)
                    writer.add_documents(name, inp.field, texts, description=_describe(inp, name))
                n += len(batch.texts)
                bar.update(len(batch.texts))
            documents[inp.label] = n

    provenance = {
        "builder": "mixagent data build",
        "data_format_version": DATA_FORMAT_VERSION,
        "config_file": config_file,
        "base_dir": str(plan.base_dir),
        "config": cfg.model_dump(mode="json"),
        "inputs": [dict(p, documents=documents[p["input"]]) for p in plan.provenance_inputs],
        "tokenizer_source": tok_source,
        "clusters": {
            label: {
                "k": c.k,
                "domains": [_cluster_domain(_input(plan, label), i) for i in range(c.k)],
                "sample_sizes": c.sample_sizes,
                "top_terms": c.terms,
            }
            for label, c in clusterers.items()
        },
        "packages": package_versions(),
    }
    return writer.finish(cfg.name, plan.content_hash, provenance)


def _register(domains: set[str], name: str, limit: int, inp: ResolvedInput) -> None:
    if len(domains) >= limit:
        col = inp.config.domain.column
        hint = f" (column {col!r} has too many distinct values; cluster instead?)" if col else ""
        raise DataError(
            f"{inp.label}: more than max_domains={limit} domains{hint}; raise 'max_domains' "
            "or assign fewer domains"
        )
    domains.add(name)


def _cluster_domain(inp: ResolvedInput, cluster: int) -> str:
    assert inp.config.domain.cluster is not None
    return f"{inp.field}/{inp.config.domain.cluster.domain_suffix(cluster)}"


def _input(plan: BuildPlan, label: str) -> ResolvedInput:
    return next(i for i in plan.inputs if i.label == label)


def _domain_names(inp: ResolvedInput, batch: _Batch, clusterer: TextClusterer | None) -> list[str]:
    dom = inp.config.domain
    if clusterer is not None:
        return [_cluster_domain(inp, int(c)) for c in clusterer.predict(batch.texts)]
    if dom.constant is not None:
        return [f"{inp.field}/{dom.constant}"] * len(batch.texts)
    assert batch.values is not None
    names = []
    for value, text in zip(batch.values, batch.texts, strict=True):
        if value is None or (isinstance(value, str) and not value.strip()):
            if dom.default is None:
                raise DataError(
                    f"{inp.label}.domain.column: a document in {batch.source} has no value in "
                    f"column {dom.column!r} (text starts {text[:40]!r}); fill the column or set "
                    "'domain.default'"
                )
            value = dom.default
        if not isinstance(value, str | int | float | bool):
            raise DataError(
                f"{inp.label}.domain.column: column {dom.column!r} of {batch.source} must hold "
                f"plain values (text or numbers), not {type(value).__name__}"
            )
        names.append(f"{inp.field}/{str(value).strip()}")
    return names


def _describe(inp: ResolvedInput, name: str) -> str:
    dom = inp.config.domain
    if dom.constant is not None:
        return dom.description
    if dom.column is not None:
        return f"documents whose {dom.column!r} is {name.split('/', 1)[1]!r}"
    return ""  # clusters were described when registered


__all__ = [
    "DATA_FORMAT_VERSION",
    "BuildConfig",
    "BuildPlan",
    "ClusterConfig",
    "DomainConfig",
    "FieldConfig",
    "InputConfig",
    "TokenizerConfig",
    "TrainTokenizerConfig",
    "build_data_dir",
    "infer_format",
    "iter_input_batches",
    "load_build_config",
    "package_versions",
    "plan_build",
]
