"""Streaming reads of one resolved input, batch by batch, through ``datasets``.

Streaming keeps memory flat in the corpus size and writes no Arrow cache; local files never touch
the network. Every error names the input's config key and the file, since the user has to find it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixagent.data.build.config import InputConfig
from mixagent.data.build.inputs import ResolvedInput
from mixagent.errors import DataError, MixagentError

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """A batch of one input's non-empty documents, with what error messages need to name."""

    source: str  # the file (or hub id) the documents came from, for error messages
    texts: list[str]
    values: list[Any] | None  # domain-column values, when the domain comes from a column


def _needed_columns(inp: InputConfig) -> list[str]:
    cols = [inp.text_column]
    if inp.domain.column is not None and inp.domain.column not in cols:
        cols.append(inp.domain.column)
    return cols


def _check_columns(present: list[str] | None, inp: InputConfig, label: str, source: str) -> None:
    named = [("text_column", inp.text_column), ("domain.column", inp.domain.column)]
    check_named_columns(present, named, label, source)


def check_named_columns(
    present: list[str] | None, named: list[tuple[str, str | None]], label: str, source: str
) -> None:
    """Every ``(config key, column)`` must be a column of ``source``; the error names both."""
    if present is None:
        return
    for role, col in named:
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
    return _load_local(source, fmt, cache_dir, kwargs)


def _load_local(source: Path, fmt: str, cache_dir: str, kwargs: dict[str, Any]) -> Any:
    """A streaming ``datasets`` IterableDataset over one local file; None if it is empty."""
    import datasets

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


def iter_file_rows(
    source: Path,
    fmt: str,
    columns: list[tuple[str, str]],
    label: str,
    batch_size: int,
    cache_dir: str,
) -> Iterator[dict[str, list[Any]]]:
    """Stream the named columns of one local json/parquet/csv file, batch by batch.

    The corpus reader's loader and column checks for tables that are not corpora (benchmark
    files): ``columns`` pairs each column with the config key that names it, so a missing one is
    an error naming the key, the file and the columns it has. An empty file yields nothing.
    """
    kwargs: dict[str, Any] = {}
    needed = list(dict.fromkeys(col for _, col in columns))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(source).names
        except Exception as err:
            raise DataError(f"{source}: not a readable parquet file ({err}); re-export it") from None
        check_named_columns(names, list(columns), label, str(source))
        kwargs["columns"] = needed
    ds = _load_local(source, fmt, cache_dir, kwargs)
    if ds is None:
        return
    check_named_columns(ds.column_names, list(columns), label, str(source))
    if ds.column_names is not None:
        ds = ds.select_columns(needed)
    first = True
    try:
        for raw in ds.iter(batch_size=batch_size):
            if first:
                check_named_columns(list(raw), list(columns), label, str(source))
                first = False
            yield raw
    except MixagentError:
        raise
    except Exception as err:
        raise DataError(
            f"{source}: cannot read as {fmt} ({type(err).__name__}: {err}); "
            "check that the file is intact and that 'format' is right"
        ) from None


def iter_input_batches(inp: ResolvedInput, batch_size: int, cache_dir: str) -> Iterator[Batch]:
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


def _clean_batch(raw: dict[str, list[Any]], cfg: InputConfig, label: str, source: str) -> Batch:
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
    return Batch(source, texts, values)
