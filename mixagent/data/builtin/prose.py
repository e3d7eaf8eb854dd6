"""The source field ``prose``: documentation text — docstrings and the Python reference topics.

Prose is what a general model should keep while it learns code or math, so it is the *source*
field. There is no natural-language corpus on a fresh machine, but there is a lot of English
written for people: the Python documentation's topic pages (``pydoc_data/topics.py``, the text
behind ``help('if')``) and the docstrings of the standard library and of the installed packages.
Docstrings are gathered per module into reference pages (``name(signature)`` then the docstring),
the way ``pydoc`` renders them, and split by package family into domains.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import random
from collections.abc import Iterator

from mixagent.data.builtin.families import (
    ML_LIBS,
    NUMERIC_LIBS,
    STDLIB_EXCLUDED,
    TOOLING_LIBS,
    stdlib_group,
)
from mixagent.data.builtin.sizes import SizeSpec
from mixagent.data.builtin.sources import (
    STDLIB,
    DocumentFn,
    DomainSource,
    DomainStats,
    ParsedFile,
    SourceFile,
    SourceIndex,
    cap_documents,
    file_documents,
    pack_pieces,
    parse_python,
    split_text,
)

FIELD = "prose"
MIN_DOC_CHARS = 40  # a docstring shorter than this ("Return x.") says nothing on its own
MIN_STRING_CHARS = 200  # documentation registered outside docstrings (add_newdoc, function_docs)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    try:
        sig = ast.unparse(node.args)
    except Exception:  # unparse has no error contract; a signature is optional
        return "(...)"
    return f"({sig})" if len(sig) <= 120 else "(...)"


def _prose_like(text: str, min_share: float) -> bool:
    """Enough letters and spaces to be documentation (even formula-heavy documentation), not a
    data table or an encoded blob kept in a module-level string."""
    if not text:
        return False
    good = sum(ch.isalpha() or ch.isspace() for ch in text)
    return good / len(text) >= min_share


def _registered_docs(parsed: ParsedFile, module: str) -> list[str]:
    """Documentation attached outside docstrings.

    numpy and torch attach most of their reference text with module-level calls like
    ``add_newdoc('numpy._core', 'ndarray', '''...''')`` or ``add_docstr(torch.abs, r'''...''')``,
    and mpmath keeps its function documentation as module-level string constants
    (``mpmath/function_docs.py``); without these, the prose of those packages would be missing.
    Only module-level statements are looked at: walking every node of every file would cost more
    than parsing it.
    """
    entries: list[str] = []
    look_for_calls = "newdoc" in parsed.text or "docstr" in parsed.text
    for node in _module_statements(parsed.tree.body):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                text = value.value.strip()
                if len(text) >= MIN_STRING_CHARS and _prose_like(text, 0.45):
                    entries.append(f"{module}.{node.targets[0].id}\n\n{_clean(text)}")
        elif look_for_calls and isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            entries.extend(_doc_call(node.value, module))
    return entries


def _module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements at module level, including those inside top-level ``if``/``try`` blocks."""
    for node in body:
        if isinstance(node, ast.If | ast.Try):
            yield from _module_statements(node.body)
            yield from _module_statements(node.orelse)
            if isinstance(node, ast.Try):
                for h in node.handlers:
                    yield from _module_statements(h.body)
        else:
            yield node


def _literal_text(node: ast.AST) -> str | None:
    """The text of a string expression as documentation code writes it: a literal, ``'...'.format()``,
    literals joined with ``+``, or an f-string's literal parts."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _literal_text(node.func.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts = [_literal_text(node.left), _literal_text(node.right)]
        return "".join(p for p in parts if p is not None) if any(p is not None for p in parts) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return None


def _doc_call(call: ast.Call, module: str) -> list[str]:
    """The documentation passed to an ``add_newdoc``/``add_docstr``-style call, named by the call's
    other arguments (``add_newdoc('numpy._core', 'ndarray', ('T', doc))`` -> ``numpy._core.ndarray.T``)."""
    func = call.func
    fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if "newdoc" not in fname and "docstr" not in fname:
        return []
    args: list[ast.expr] = []
    for arg in call.args:
        args.extend(arg.elts if isinstance(arg, ast.Tuple) else [arg])
    names: list[str] = []
    texts: list[str] = []
    for arg in args:
        text = _literal_text(arg)
        if text is None:
            if not texts and not names:
                with contextlib.suppress(Exception):  # unparse has no error contract
                    names.append(ast.unparse(arg))
        elif text.strip() and not any(ch.isspace() for ch in text.strip()):
            names.append(text.strip())
        elif len(text.strip()) >= MIN_DOC_CHARS:
            texts.append(text)
    name = ".".join(names) or module
    return [f"{name}\n\n{_clean(t)}" for t in texts]


def _clean(text: str) -> str:
    return inspect.cleandoc(text)


def docstring_pages(parsed: ParsedFile, module: str, include_private: bool = False) -> list[str]:
    """A module's documentation as entries: the module docstring, then each class/function's.

    Each entry is ``qualified.name(signature)`` followed by the cleaned docstring. Private names
    (one leading underscore) are skipped unless asked for: their docstrings are notes to
    maintainers more than documentation. Function bodies are not entered (nested helpers).
    """
    entries: list[str] = []
    tree = parsed.tree
    doc = ast.get_docstring(tree, clean=True)
    if doc and len(doc) >= MIN_DOC_CHARS:
        entries.append(f"Module {module}\n\n{doc}")

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                if _is_private(node.name) and not include_private:
                    continue
                qual = f"{prefix}.{node.name}"
                d = ast.get_docstring(node, clean=True)
                if d and len(d) >= MIN_DOC_CHARS:
                    head = f"class {qual}" if isinstance(node, ast.ClassDef) else qual + _signature(node)
                    entries.append(f"{head}\n\n{d}")
                if isinstance(node, ast.ClassDef):
                    visit(node.body, qual)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body, prefix)
                visit(node.orelse, prefix)
                if isinstance(node, ast.Try):
                    for h in node.handlers:
                        visit(h.body, prefix)

    visit(tree.body, module)
    entries.extend(_registered_docs(parsed, module))
    return entries


def extract_docs(parsed: ParsedFile, spec: SizeSpec) -> list[str]:
    """Documents of one module: its reference pages packed to the size's document length."""
    pages = docstring_pages(parsed, parsed.source.module)
    return cap_documents(pack_pieces(pages, spec.doc_chars), spec.file_chars)


def pydoc_topics(index: SourceIndex) -> tuple[SourceFile | None, dict[str, str]]:
    """The Python documentation's topic pages, read from ``pydoc_data/topics.py`` without import."""
    for sf in index.stdlib():
        if sf.rel == "pydoc_data/topics.py":
            parsed = parse_python(sf)
            if parsed is None:
                return sf, {}
            for node in parsed.tree.body:
                if (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "topics" for t in node.targets)
                ):
                    try:
                        value = ast.literal_eval(node.value)
                    except ValueError:
                        return sf, {}
                    if isinstance(value, dict):
                        return sf, {str(k): str(v) for k, v in value.items()}
            return sf, {}
    return None, {}


def _topic_documents(topics: dict[str, str]) -> DocumentFn:
    def documents(spec: SizeSpec, seed: int, stats: DomainStats) -> Iterator[str]:
        names = sorted(topics)
        random.Random(f"{seed}/prose/pydoc-topics").shuffle(names)
        stats.packages.add(STDLIB)
        stats.files_used = 1
        for name in names:
            for part in split_text(topics[name].strip(), spec.doc_chars):
                if not part.strip():
                    continue
                stats.documents += 1
                stats.chars += len(part)
                yield part
                if stats.chars >= spec.domain_chars:
                    return

    return documents


# Standard-library prose domains: name -> stdlib groups (see families.STDLIB_GROUPS). Text and
# data modules share a domain: apart, each has too few docstrings for a small-size domain.
_STDLIB_DOMAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "stdlib-core": (
        ("text", "data"),
        "docstrings of text and data modules (re, json, csv, collections, datetime, decimal, typing...)",
    ),
    "stdlib-system": (
        ("system", "concurrency"),
        "docstrings of OS, file, process and concurrency modules (os, pathlib, subprocess, asyncio...)",
    ),
    "stdlib-net": (("net",), "docstrings of internet modules (email, http, urllib, smtplib...)"),
    "stdlib-devtools": (("devtools",), "docstrings of developer tools (unittest, inspect, argparse, idlelib...)"),
}
_LIB_DOMAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "numpy-scipy": (("numpy", "scipy"), "docstrings of numpy and scipy (numpydoc reference pages)"),
    "data-libs": (
        tuple(p for p in NUMERIC_LIBS if p not in ("numpy", "scipy")),
        "docstrings of pandas, scikit-learn, networkx, matplotlib, pyarrow",
    ),
    "torch": (("torch",), "docstrings of PyTorch"),
    "hf-libs": (
        tuple(p for p in ML_LIBS if p != "torch"),
        "docstrings of transformers, datasets, tokenizers, accelerate, huggingface_hub, gymnasium, SB3",
    ),
    "tooling-libs": (TOOLING_LIBS, "docstrings of ray, pydantic, typer, click, rich, pytest, hypothesis..."),
}
TINY_DOMAINS = ("pydoc-topics", "stdlib-core", "stdlib-system")


def prose_domains(index: SourceIndex, spec: SizeSpec) -> list[DomainSource]:
    """The prose domains this size includes (a domain whose packages are absent is left out)."""
    domains: list[DomainSource] = []
    topics_file, topics = pydoc_topics(index)
    if topics_file is not None and topics:
        domains.append(
            DomainSource(
                name=f"{FIELD}/pydoc-topics",
                field=FIELD,
                description="Python documentation topic pages (pydoc_data.topics): the language reference",
                files=[topics_file],
                documents=_topic_documents(topics),
                packages=(STDLIB,),
            )
        )
    stdlib = [
        f for f in index.stdlib() if not f.is_test and f.package not in STDLIB_EXCLUDED and f.package != "test"
    ]
    for short, (groups, desc) in _STDLIB_DOMAINS.items():
        files = [f for f in stdlib if stdlib_group(f.package) in groups]
        domains.append(_file_domain(short, desc, files, (STDLIB,)))
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
        return file_documents(name, files, extract_docs, spec, seed, stats)

    return DomainSource(name=name, field=FIELD, description=desc, files=files, documents=documents, packages=packages)
