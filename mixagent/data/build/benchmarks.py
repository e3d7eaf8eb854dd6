"""Benchmark files of a build config: found, hashed and read into normalised items.

A benchmark is small (hundreds to thousands of items) and read whole: it is stored in the data
directory as JSONL and its n-grams are held in memory for decontamination. The reading goes
through the corpus readers (:mod:`~mixagent.data.build.readers`), so a missing file, a missing
column, an unreadable or empty file gets the same kind of error as a corpus, naming the config
key (``benchmarks[i].answer_column``) and the file. :func:`add_benchmarks` adds benchmarks to a
directory that is already built (``mixagent data add-benchmark``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixagent.config import load_yaml_config
from mixagent.data.benchmarks import (
    NgramIndex,
    count_overlaps,
    item_text,
    log_overlap,
    overlap_info,
    write_benchmark_file,
)
from mixagent.data.build.config import AddBenchmarksConfig, BenchmarkConfig
from mixagent.data.build.inputs import InputFile, display_path, hash_file, infer_format
from mixagent.data.build.readers import iter_file_rows
from mixagent.data.manifest import MANIFEST_NAME, BenchmarkInfo, DataDir, Manifest
from mixagent.errors import ConfigError, DataError
from mixagent.utils.io import write_json_atomic

_FORMATS = ("json", "parquet", "csv")


@dataclass
class ResolvedBenchmark:
    """A benchmark with its file found and hashed (before anything is read)."""

    index: int
    config: BenchmarkConfig
    format: str
    file: InputFile

    @property
    def label(self) -> str:
        return f"benchmarks[{self.index}]"

    def source(self, base: Path) -> dict[str, Any]:
        """Where the items came from, as the manifest records it."""
        cfg = self.config
        return {
            "path": display_path(self.file.path, base),
            "sha256": self.file.sha256,
            "size": self.file.size,
            "format": self.format,
            "columns": dict(cfg.columns()),
            "max_examples": cfg.max_examples,
        }


def resolve_benchmark(cfg: BenchmarkConfig, index: int, base: Path) -> ResolvedBenchmark:
    """Find and hash a benchmark's file; a missing file or an unknown format names the key."""
    label = f"benchmarks[{index}]"
    path = Path(cfg.path).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        raise DataError(f"{label}.path: {path} is a directory; a benchmark is one file")
    if not path.is_file():
        raise DataError(f"{label}.path: file not found: {path}")
    fmt = "json" if cfg.format == "jsonl" else cfg.format or infer_format(path)
    if fmt not in _FORMATS:
        raise DataError(
            f"{label}.path: cannot read {path.name} as a benchmark; use a jsonl/json, parquet "
            "or csv file (or set 'format')"
        )
    return ResolvedBenchmark(index, cfg, fmt, hash_file(path))


def read_benchmark_items(
    bench: ResolvedBenchmark, cache_dir: str, batch_size: int = 1000
) -> list[dict[str, str]]:
    """The benchmark's items, normalised to ``{prompt, answer}`` (qa) or ``{text}`` (text).

    A qa row needs text (or a whole number) in both columns and a non-empty answer: a missing
    answer would make the item unscorable, so it is an error naming the row, not a skipped row.
    A text row that is empty is skipped, as in a corpus. ``max_examples`` keeps the first items.
    """
    cfg, label, source = bench.config, bench.label, bench.file.path
    columns = cfg.columns()
    cap = cfg.max_examples
    items: list[dict[str, str]] = []
    row = 0
    for raw in iter_file_rows(source, bench.format, columns, label, batch_size, cache_dir):
        values = [raw[col] for _, col in columns]
        for cells in zip(*values, strict=True):
            row += 1
            item = _item(cfg, cells, label, source, row)
            if item is not None:
                items.append(item)
            if cap is not None and len(items) >= cap:
                return items
    if not items:
        what = "text" if cfg.kind == "text" else "items"
        raise DataError(
            f"{label}: no {what} in {source} (column(s) "
            f"{', '.join(repr(c) for _, c in columns)}); an empty benchmark scores nothing — fix "
            "the file or remove the benchmark"
        )
    return items


def _item(
    cfg: BenchmarkConfig, cells: tuple[Any, ...], label: str, source: Path, row: int
) -> dict[str, str] | None:
    if cfg.kind == "text":
        (text,) = cells
        if text is None:
            return None
        if not isinstance(text, str):
            raise DataError(
                f"{label}.text_column: column {cfg.text_column!r} of {source} must hold text, "
                f"but row {row} holds {type(text).__name__} ({str(text)[:40]!r})"
            )
        return {"text": text} if text.strip() else None
    out = {}
    for (key, col), value in zip(cfg.columns(), cells, strict=True):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise DataError(
                f"{label}.{key}: column {col!r} of {source} must hold text, but row {row} holds "
                f"{type(value).__name__} ({str(value)[:40]!r})"
            )
        out[key.removesuffix("_column")] = value
    if not out["answer"].strip():
        raise DataError(
            f"{label}.answer_column: row {row} of {source} has an empty answer in column "
            f"{cfg.answer_column!r}; every item needs an answer to score"
        )
    return out


def add_benchmarks(data_dir: str | Path, config_path: str | Path, *, strict: bool = False) -> list[BenchmarkInfo]:
    """Add a config's benchmarks to a built data directory without rewriting its shards.

    The config (:class:`~mixagent.data.build.config.AddBenchmarksConfig`) lists benchmarks as a
    build config does. The directory's documents are checked for overlap; since dropping them
    needs a rebuild, the count is recorded (``overlap.removed: false``) and logged, or with
    ``strict`` any overlap refuses the benchmarks before anything is written. The manifest is
    replaced atomically; the shards, tokenizer and content hash are untouched (specs that do not
    use the new benchmarks keep their env-spec hash).
    """
    config_path = Path(config_path)
    cfg = load_yaml_config(AddBenchmarksConfig, config_path)
    data = DataDir(data_dir)
    fields = [f.name for f in data.manifest.fields]
    taken = {b.name for b in data.benchmarks}
    for i, b in enumerate(cfg.benchmarks):
        if b.field not in fields:
            raise ConfigError(f"{config_path}: benchmarks[{i}].field: unknown field {b.field!r}; "
                              f"{data.path} has fields: {', '.join(fields)}")
        if b.name in taken:
            raise ConfigError(f"{config_path}: benchmarks[{i}].name: {data.path} already has a "
                              f"benchmark {b.name!r}; choose another name")
    base = config_path.resolve().parent
    index = NgramIndex(cfg.decontamination.ngram, cfg.decontamination.min_item_words)
    loaded = []
    with tempfile.TemporaryDirectory(prefix="mixagent-datasets-") as cache_dir:
        for i, b in enumerate(cfg.benchmarks):
            res = resolve_benchmark(b, i, base)
            items = read_benchmark_items(res, cache_dir)
            unchecked = index.add(b.name, (item_text(b.kind, it) for it in items))
            loaded.append((res, items, unchecked))
    counts = count_overlaps(data, index)
    overlaps = [overlap_info(index, i, counts[i], unchecked, removed=False)
                for i, (_, _, unchecked) in enumerate(loaded)]
    if strict and any(o.documents for o in overlaps):
        listing = "; ".join(f"{b.name}: {o.documents} documents ({', '.join(o.by_domain)})"
                            for b, o in zip(cfg.benchmarks, overlaps, strict=True) if o.documents)
        raise DataError(f"{data.path}: training data overlaps the new benchmarks ({listing}); "
                        "nothing was added. Add them to the build config's 'benchmarks:' and "
                        "rebuild to drop those documents, or run without --strict to record "
                        "the overlap")
    infos = []
    for (res, items, _), overlap in zip(loaded, overlaps, strict=True):
        b = res.config
        rel, digest = write_benchmark_file(data.path, b.name, items)
        infos.append(BenchmarkInfo(name=b.name, field=b.field, kind=b.kind, file=rel,
                                   count=len(items), sha256=digest, description=b.description,
                                   source=res.source(base), overlap=overlap))
        log_overlap(b.name, overlap, str(data.path))
    _append_to_manifest(data.path, infos)
    return infos


def _append_to_manifest(root: Path, infos: list[BenchmarkInfo]) -> None:
    """Re-read the manifest just before replacing it (atomically), so nothing else is lost."""
    manifest: Manifest = DataDir(root).manifest
    clash = {b.name for b in manifest.benchmarks} & {b.name for b in infos}
    if clash:
        raise DataError(f"{root}: benchmark(s) {', '.join(sorted(clash))} were added meanwhile")
    added = list(manifest.provenance.get("benchmarks_added", []))
    added.extend({"name": b.name, "sha256": b.sha256} for b in infos)
    updated = manifest.model_copy(update={
        "benchmarks": [*manifest.benchmarks, *infos],
        "provenance": dict(manifest.provenance, benchmarks_added=added),
    })
    write_json_atomic(root / MANIFEST_NAME, updated.model_dump(mode="json"))
