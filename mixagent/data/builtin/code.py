"""The target field ``code``: Python source of the standard library and installed packages.

Docstrings are removed so that this field is code, not a second copy of the prose field: each
docstring's line range (from the :mod:`ast` node) is deleted, or replaced with ``...`` where the
docstring was a body's only statement, so the result is still valid Python. Comments stay —
they are part of what code looks like. Files are cut into documents at top-level statements
(each definition with the comments just above it), and one file gives at most the size's
``file_chars``, so a huge generated module cannot dominate its domain.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator

from mixagent.data.builtin.families import ML_LIBS, NUMERIC_LIBS, TOOLING_LIBS, stdlib_group
from mixagent.data.builtin.sizes import SizeSpec
from mixagent.data.builtin.sources import (
    STDLIB,
    DomainSource,
    DomainStats,
    ParsedFile,
    SourceFile,
    SourceIndex,
    cap_documents,
    file_documents,
    pack_pieces,
)

FIELD = "code"
MAX_LINE_CHARS = 400  # a longer line is generated data (tables, blobs), not code to learn from

_DEFINITIONS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstring_expr(owner: ast.AST) -> ast.Expr | None:
    body = getattr(owner, "body", None)
    if not body:
        return None
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def definitions(tree: ast.Module) -> Iterator[ast.AST]:
    """The module and every class/function in it, visiting statements only (not expressions:
    ``ast.walk`` over every node costs more than parsing the file)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DEFINITIONS):
            yield node
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, name, None)
            if isinstance(children, list):
                stack.extend(c for c in children if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case))


def strip_docstrings(parsed: ParsedFile) -> list[str]:
    """The file's lines with every docstring blanked; the list keeps one entry per original line.

    A docstring alone on its lines is deleted (or becomes ``...`` when it is the body's only
    statement, so ``def f(): '''doc'''`` stays a function). One that shares a line with code is
    replaced in place by ``...``. :mod:`ast` column offsets count UTF-8 bytes, so slicing is done
    on encoded lines.
    """
    lines = list(parsed.lines)
    for owner in definitions(parsed.tree):
        node = _docstring_expr(owner)
        if node is None or node.end_lineno is None or node.end_col_offset is None:
            continue
        only = len(owner.body) == 1 and not isinstance(owner, ast.Module)
        s, e = node.lineno - 1, node.end_lineno - 1
        first = lines[s].encode("utf-8")
        last = lines[e].encode("utf-8")
        before = first[: node.col_offset]
        after = last[node.end_col_offset :]
        if before.strip() == b"" and after.strip() == b"":
            lines[s] = (before.decode("utf-8") + "...\n") if only else ""
        else:
            lines[s] = (before + b"..." + after).decode("utf-8", errors="replace")
        for i in range(s + 1, e + 1):
            lines[i] = ""
    return lines


def top_level_chunks(parsed: ParsedFile, lines: list[str]) -> list[str]:
    """Cut a file at its top-level statements; comments directly above a statement go with it."""
    original = parsed.lines
    starts: list[int] = []
    prev_end = 0
    for node in parsed.tree.body:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        while start - 1 >= prev_end and original[start - 1].lstrip().startswith("#"):
            start -= 1
        starts.append(start)
        prev_end = node.end_lineno or node.lineno
    bounds = [*sorted({0, *starts[1:]}), len(lines)]
    chunks = []
    for a, b in itertools.pairwise(bounds):
        text = "".join(lines[a:b]).strip("\n")
        if text.strip():
            chunks.append(text)
    return chunks


def _is_code_like(doc: str) -> bool:
    return all(len(line) <= MAX_LINE_CHARS for line in doc.split("\n"))


def extract_code(parsed: ParsedFile, spec: SizeSpec) -> list[str]:
    """Documents of one file: docstring-free code, packed by top-level chunks, capped per file."""
    chunks = top_level_chunks(parsed, strip_docstrings(parsed))
    docs = [d for d in pack_pieces(chunks, spec.doc_chars) if _is_code_like(d)]
    return cap_documents(docs, spec.file_chars)


# Standard-library code domains: name -> (stdlib groups, description).
_STDLIB_DOMAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "stdlib-core": (("text", "data"), "stdlib text and data modules (re, json, collections, datetime, typing...)"),
    "stdlib-system": (("system",), "stdlib OS, file and process modules (os, pathlib, shutil, tarfile, logging...)"),
    "stdlib-net": (("net",), "stdlib internet modules (email, http, urllib, smtplib, xmlrpc...)"),
    "concurrency": (("concurrency",), "asyncio, concurrent.futures, multiprocessing, threading, queue"),
    "stdlib-devtools": (("devtools",), "stdlib developer tools (unittest, pdb, inspect, argparse, idlelib...)"),
}
_LIB_DOMAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "numpy": (("numpy",), "numpy's Python sources"),
    "scientific": (
        tuple(p for p in NUMERIC_LIBS if p != "numpy"),
        "scipy, pandas, scikit-learn, networkx, matplotlib, pyarrow sources",
    ),
    "torch": (("torch",), "PyTorch's Python sources"),
    "hf": (
        tuple(p for p in ML_LIBS if p not in ("torch", "gymnasium", "stable_baselines3")),
        "Hugging Face sources: transformers, datasets, tokenizers, accelerate, huggingface_hub",
    ),
    "tooling": (
        (*TOOLING_LIBS, "gymnasium", "stable_baselines3"),
        "ray, pydantic, typer, click, rich, pytest, hypothesis, gymnasium, stable-baselines3...",
    ),
}
# Encodings are codec tables (one long literal per file), not code anyone writes.
_CODE_EXCLUDED = frozenset({"encodings", "pydoc_data", "this", "antigravity", "__hello__", "__phello__"})
TINY_DOMAINS = ("stdlib-core", "stdlib-system")


def code_domains(index: SourceIndex, spec: SizeSpec) -> list[DomainSource]:
    """The code domains this size includes (a domain whose packages are absent is left out)."""
    stdlib = [f for f in index.stdlib() if f.package not in _CODE_EXCLUDED]
    domains: list[DomainSource] = []
    for short, (groups, desc) in _STDLIB_DOMAINS.items():
        files = [f for f in stdlib if not f.is_test and stdlib_group(f.package) in groups]
        domains.append(_file_domain(short, desc, files, (STDLIB,)))
    tests = [f for f in stdlib if f.is_test]
    domains.append(_file_domain("stdlib-tests", "the standard library's own test suites", tests, (STDLIB,)))
    for short, (packages, desc) in _LIB_DOMAINS.items():
        files = [f for p in packages for f in index.package(p) if not f.is_test]
        domains.append(_file_domain(short, desc, files, packages))
    domains = [d for d in domains if d.files]
    if not spec.full_domains:
        domains = [d for d in domains if d.name.split("/", 1)[1] in TINY_DOMAINS]
    return domains


def _file_domain(short: str, desc: str, files: list[SourceFile], packages: tuple[str, ...]) -> DomainSource:
    name = f"{FIELD}/{short}"

    def documents(spec: SizeSpec, seed: int, stats: DomainStats) -> Iterator[str]:
        return file_documents(name, files, extract_code, spec, seed, stats)

    return DomainSource(name=name, field=FIELD, description=desc, files=files, documents=documents, packages=packages)
