"""Where the built-in corpus's text comes from: installed ``.py`` files, found and read, never run.

Every text in the corpus is already on the machine: the standard library that ships with Python
and the packages mixagent depends on. This module finds their files by walking directories
(``sysconfig`` for the standard library, ``importlib.util.find_spec`` for a package's location —
which locates a package without importing it), reads them with their declared encoding, and
parses them with :mod:`ast`. Nothing found here is ever imported or executed: importing torch or
transformers would cost seconds and run arbitrary package code just to read its docstrings.

It also holds :class:`DomainSource`, the one shape every domain of the corpus takes (a name, a
field, the files it may draw from, and a document generator), and :func:`file_documents`, the
seeded, capped walk that turns a domain's files into documents.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import io
import logging
import multiprocessing
import os
import random
import re
import sys
import sysconfig
import tokenize
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tqdm.auto import tqdm

from mixagent.data.builtin.sizes import SizeSpec

log = logging.getLogger(__name__)

STDLIB = "python-stdlib"
"""The pseudo package name under which standard-library files are recorded."""

# Path components that mark test suites, vendored copies and build leftovers.
_TEST_PARTS = frozenset({"test", "tests", "testing", "idle_test", "_testing", "test_data"})
_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "lib-dynload"})
_VENDOR_RE = re.compile(r"(^|/)(_vendor|vendored|_vendored|extern)(/|$)")


@dataclass(frozen=True)
class SourceFile:
    """One installed ``.py`` file, named relative to the directory its package lives in."""

    root: Path
    rel: str  # posix path relative to ``root``, e.g. "email/utils.py", "numpy/linalg/_linalg.py"
    package: str  # top-level import name ("email", "numpy"); the stdlib keeps its module names
    size: int
    stdlib: bool = False

    @property
    def origin(self) -> str:
        """What installed this file: :data:`STDLIB` or the top-level package's name."""
        return STDLIB if self.stdlib else self.package

    @property
    def path(self) -> Path:
        return self.root / self.rel

    @property
    def module(self) -> str:
        """The dotted module name ("email.utils"; a package's ``__init__`` is the package)."""
        parts = self.rel[: -len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)

    @property
    def is_test(self) -> bool:
        """Whether the file belongs to a test suite (by a path component like ``tests``)."""
        parts = self.rel.split("/")
        return any(p in _TEST_PARTS for p in parts[:-1]) or parts[-1].startswith("test_")


@dataclass
class ParsedFile:
    """A source file's text (newlines normalised to ``\\n``) and its syntax tree."""

    source: SourceFile
    text: str
    tree: ast.Module

    @cached_property
    def lines(self) -> list[str]:
        """The text's lines with their ``\\n``, split only on ``\\n`` as :mod:`ast` counts lines
        (``str.splitlines`` also splits on form feeds and other separators found in source)."""
        parts = self.text.split("\n")
        lines = [p + "\n" for p in parts[:-1]]
        if parts[-1]:
            lines.append(parts[-1])
        return lines


def stdlib_root() -> Path:
    """The directory holding the standard library's pure-Python modules."""
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(root: Path, start: Path, package: str, files: list[SourceFile], stdlib: bool = False) -> None:
    """Append every ``.py`` file under ``start`` in sorted order (deterministic across runs)."""
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if _VENDOR_RE.search(rel):
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            files.append(SourceFile(root=root, rel=rel, package=package, size=size, stdlib=stdlib))


def stdlib_files() -> list[SourceFile]:
    """All pure-Python standard-library files (plus the ``test`` package where it is installed).

    Only names in :data:`sys.stdlib_module_names` are taken, so a stray file that happens to sit
    in the stdlib directory (a distro's add-on, a local experiment) never enters the corpus.
    """
    root = stdlib_root()
    allowed = set(sys.stdlib_module_names) | {"test"}
    files: list[SourceFile] = []
    if not root.is_dir():
        log.warning("standard library directory %s not found; the corpus will lack stdlib text", root)
        return files
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and entry.name in allowed and entry.name not in _SKIP_DIRS:
            _walk(root, entry, entry.name, files, stdlib=True)
        elif entry.suffix == ".py" and entry.stem in allowed:
            size = entry.stat().st_size
            files.append(SourceFile(root=root, rel=entry.name, package=entry.stem, size=size, stdlib=True))
    return files


def package_files(name: str) -> list[SourceFile]:
    """All ``.py`` files of an installed top-level package, or ``[]`` when it is not installed.

    ``find_spec`` on a top-level name locates the package without executing it.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    files: list[SourceFile] = []
    if spec.submodule_search_locations:
        for loc in sorted(spec.submodule_search_locations):
            pkg_dir = Path(loc)
            if pkg_dir.is_dir():
                _walk(pkg_dir.parent, pkg_dir, name, files)
    elif spec.origin and spec.origin.endswith(".py"):
        path = Path(spec.origin)
        files.append(SourceFile(root=path.parent, rel=path.name, package=name, size=path.stat().st_size))
    return files


class SourceIndex:
    """The files of the standard library and of named packages, walked once per build."""

    def __init__(self) -> None:
        self._stdlib: list[SourceFile] | None = None
        self._packages: dict[str, list[SourceFile]] = {}
        self._dists: dict[str, list[str]] | None = None

    def stdlib(self) -> list[SourceFile]:
        if self._stdlib is None:
            self._stdlib = stdlib_files()
        return self._stdlib

    def package(self, name: str) -> list[SourceFile]:
        if name not in self._packages:
            self._packages[name] = package_files(name)
        return self._packages[name]

    def version(self, package: str) -> str:
        """The installed version behind a top-level import name (the Python version for stdlib)."""
        if package == STDLIB:
            return python_version()
        if self._dists is None:
            self._dists = importlib.metadata.packages_distributions()
        for dist in sorted(self._dists.get(package, [package])):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "unknown"

    def distribution(self, package: str) -> str:
        """The distribution (pip) name behind a top-level import name."""
        if package == STDLIB:
            return STDLIB
        if self._dists is None:
            self._dists = importlib.metadata.packages_distributions()
        names = sorted(self._dists.get(package, [package]))
        return names[0] if names else package


def python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def read_python(path: Path) -> str | None:
    """Read a source file with its declared encoding; newlines normalised. ``None`` if unreadable."""
    try:
        data = path.read_bytes()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
        return None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_python(source: SourceFile) -> ParsedFile | None:
    """Read and parse a file; ``None`` for files that are not valid Python 3 of this interpreter.

    The stdlib's own tests ship deliberately broken files (``badsyntax_*.py``) and lib2to3 keeps
    Python 2 samples; those are skipped, not errors.
    """
    text = read_python(source.path)
    if text is None or "\x00" in text:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. in third-party code
        try:
            tree = ast.parse(text, filename=str(source.path))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    return ParsedFile(source, text, tree)


@dataclass
class DomainStats:
    """What a domain's documents were drawn from: recorded in the manifest's provenance."""

    files_used: int = 0
    documents: int = 0
    chars: int = 0
    packages: set[str] = field(default_factory=set)


DocumentFn = Callable[[SizeSpec, int, DomainStats], Iterator[str]]
"""``documents(spec, seed, stats)``: a domain's texts for a size and seed, recording provenance."""


@dataclass
class DomainSource:
    """One domain of the built-in corpus, before tokenization.

    ``files`` are the candidate source files (they enter the content hash, so an upgraded package
    rebuilds the corpus); ``documents(spec, seed, stats)`` yields the domain's texts,
    deterministically for a given seed, and records what it used in ``stats``.
    """

    name: str
    field: str
    description: str
    files: list[SourceFile]
    documents: DocumentFn
    packages: tuple[str, ...] = ()  # packages named by the domain (for provenance)
    extra_fingerprint: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, object]:
        """The inputs that decide this domain's text: file names and sizes, generator versions."""
        return {
            "files": [[f"{f.origin}:{f.rel}", f.size] for f in self.files],
            **self.extra_fingerprint,
        }


Extractor = Callable[[ParsedFile, SizeSpec], list[str]]


def file_documents(
    domain: str, files: list[SourceFile], extract: Extractor, spec: SizeSpec, seed: int, stats: DomainStats
) -> Iterator[str]:
    """Documents of a file-based domain: files in a seeded order until the domain's cap is reached.

    The order is a seeded shuffle of the sorted file list, so a capped domain is a random sample
    of its packages rather than their alphabetically first files, and the same seed gives the same
    sample on every machine with the same installed files.
    """
    order = list(files)
    random.Random(f"{seed}/{domain}").shuffle(order)
    # Per-file bars only in the main process: worker processes' bars would garble each other.
    quiet = True if multiprocessing.parent_process() is not None else None
    for sf in tqdm(order, desc=f"reading {domain}", unit="file", disable=quiet, leave=False):
        parsed = parse_python(sf)
        if parsed is None:
            continue
        docs = [d for d in extract(parsed, spec) if d.strip()]
        if not docs:
            continue
        stats.files_used += 1
        stats.packages.add(sf.origin)
        for doc in docs:
            stats.documents += 1
            stats.chars += len(doc)
            yield doc
            if stats.chars >= spec.domain_chars:
                return


def cap_documents(docs: list[str], max_chars: int) -> list[str]:
    """The leading documents of a file up to ``max_chars`` (so one huge file cannot dominate)."""
    out: list[str] = []
    total = 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d)
        total += len(d)
    return out


def pack_pieces(pieces: list[str], max_chars: int, sep: str = "\n\n") -> list[str]:
    """Join consecutive pieces into documents of at most ``max_chars`` (oversized pieces split)."""
    docs: list[str] = []
    cur: list[str] = []
    size = 0
    for piece in pieces:
        for part in split_text(piece, max_chars):
            grown = size + len(part) + (len(sep) if cur else 0)
            if cur and grown > max_chars:
                docs.append(sep.join(cur))
                cur, grown = [], len(part)
            cur.append(part)
            size = grown
    if cur:
        docs.append(sep.join(cur))
    return docs


def split_text(text: str, max_chars: int) -> list[str]:
    """Split a long text at paragraph, then line, then word boundaries into parts <= ``max_chars``."""
    if len(text) <= max_chars:
        return [text]
    for sep in ("\n\n", "\n", " "):
        pieces = text.split(sep)
        if len(pieces) == 1:
            continue
        out: list[str] = []
        cur = ""
        for piece in pieces:
            for part in split_text(piece, max_chars) if len(piece) > max_chars else [piece]:
                if cur and len(cur) + len(sep) + len(part) > max_chars:
                    out.append(cur)
                    cur = part
                else:
                    cur = f"{cur}{sep}{part}" if cur else part
        if cur:
            out.append(cur)
        return out
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
