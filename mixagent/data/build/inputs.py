"""Input resolution and hashing: globs to files, files to sha256, a hub id to a commit.

Everything here runs before any expensive work, and everything it finds goes into the content
hash, so that a changed byte, a new file matching a glob, or a new hub commit forces a rebuild.
Errors name the config key (``fields.<f>.inputs[i].path``) and the file.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from mixagent.data.build.config import InputConfig
from mixagent.errors import DataError
from mixagent.utils.io import sha256_file, sha256_json

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


def infer_format(path: str | Path) -> str | None:
    """The ``datasets`` loader for a file, from its extension (compression suffixes skipped)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


def display_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` where it lies inside: hashes survive moving a project."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def resolve_files(
    inp: InputConfig, label: str, base: Path, exclude: Path | None = None
) -> list[Path]:
    """The files an input's ``path`` names, in order; a pattern matching nothing is an error."""
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


def input_format(inp: InputConfig, label: str, files: list[Path]) -> str:
    """One ``datasets`` loader per input: files of mixed formats cannot share one reader."""
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


def hash_file(path: Path) -> InputFile:
    """sha256 and size of an input file; an unreadable file is an error naming it."""
    try:
        return InputFile(path=path, sha256=sha256_file(path), size=path.stat().st_size)
    except OSError as err:
        raise DataError(f"cannot read input file {path}: {err.strerror or err}") from None


def hash_tokenizer_dir(path: Path) -> str:
    """Hash every file of an adopted tokenizer directory: any change there must rebuild."""
    if not path.is_dir():
        raise DataError(
            f"tokenizer.path: {path} is not a directory holding a Hugging Face tokenizer"
        )
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            entries.append([str(p.relative_to(path)), hash_file(p).sha256])
    if not entries:
        raise DataError(f"tokenizer.path: {path} is empty; it must hold a Hugging Face tokenizer")
    return sha256_json(entries)


def resolve_hub_revision(inp: InputConfig, label: str) -> str:
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
