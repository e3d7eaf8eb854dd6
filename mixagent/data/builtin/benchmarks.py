"""The built-in benchmarks of the code and prose fields, made from packages no domain reads.

A benchmark measures what a practitioner would measure a continued pre-training run by, so it
must be text the model never trains on *and* not a domain's held-out split (a domain's held-out
loss is already the v1 score, which uniform mixing optimises). Both benchmarks therefore come from
installed packages that :mod:`.families` names in no family (``CODE_BENCHMARK_LIBS``,
``PROSE_BENCHMARK_LIBS``): no domain of any size can sample them. Copies are the remaining risk (a
package that vendors a stdlib function), so every candidate item that shares a 13-word n-gram with
any document of the build — training or held-out — is dropped before the items are chosen.

- ``code_return_completion`` (field ``code``): a function, docstrings removed as in the code
  field, up to its final ``return``; the answer is the returned expression, to the end of the line.
- ``prose_cloze`` (field ``prose``): a docstring's reference-page header (``name(signature)``, as
  in the prose field) and its first sentence without the last word; the answer is that word.
- ``code_output_prediction`` (field ``code``): a unittest test method, docstrings removed, up to
  the expected value of one of its one-line ``self.assertEqual(actual, expected)`` calls; the
  answer is that value (CRUXEval-O's task — predict what code outputs — on real test suites).
  Unlike return completion, it is tied unevenly to the code domains: a unittest suite reads like
  the ``stdlib-tests`` domain and little like the rest (measured in docs/DECISIONS.md).

Prompts end where the answer starts, less the one space the evaluator's default delimiter adds
(``prompt + " " + answer`` is the original text), so an item is scored on text shaped like its
field's training text. The items depend on (size, seed, the benchmark packages' files, the build's
documents); nothing here enters the corpus's content hash, so adding the benchmarks left every v1
data directory's hash — and every v1 env spec's hash — as it was. Each benchmark's own hash (of
its stored file) is recorded instead, and enters an env spec's hash only when the spec evaluates it
(:mod:`mixagent.trajectories.identity`).
"""

from __future__ import annotations

import ast
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mixagent.data.benchmarks import NgramIndex, words
from mixagent.data.builtin.code import definitions, strip_docstrings
from mixagent.data.builtin.families import CODE_BENCHMARK_LIBS, CODE_OUTPUT_BENCHMARK_LIBS, PROSE_BENCHMARK_LIBS
from mixagent.data.builtin.prose import docstring_pages
from mixagent.data.builtin.sources import ParsedFile, SourceFile, SourceIndex, parse_python

log = logging.getLogger(__name__)

BENCHMARKS_VERSION = "builtin-benchmarks-v2"  # v2: code_output_prediction added
"""Bumped whenever item extraction changes, so cached corpora get their benchmarks rebuilt."""

CODE_BENCHMARK = "code_return_completion"
PROSE_BENCHMARK = "prose_cloze"
CODE_OUTPUT_BENCHMARK = "code_output_prediction"
NGRAM = 13
"""Words per n-gram of the overlap check (``data build``'s decontamination default, with its
definition of a word: :func:`mixagent.data.benchmarks.words`)."""

ITEMS = {"tiny": 100, "small": 300, "full": 800}
"""Items per benchmark and size. Kept out of :class:`~.sizes.SizeSpec` on purpose: the size spec
is part of the corpus's content hash, and the benchmarks must not change it."""
OUTPUT_ITEMS = {"tiny": 100, "small": 200, "full": 200}
"""Items of ``code_output_prediction``: its one test suite gives ~240 candidates (fewer after the
overlap check), so it cannot grow with the size as the others do."""

MAX_ANSWER_CHARS = 48
MAX_ANSWER_TOKENS = 24  # with the corpus's tokenizer: an answer must fit a proxy context of 32 tokens
MAX_PROMPT_CHARS = 2_000  # the evaluator cuts prompts from the left; longer adds nothing
MAX_LINE_CHARS = 200
_TRIVIAL_RETURNS = frozenset({"None", "True", "False", "self"})  # boilerplate, not completion
_EQUALITY_ASSERTS = frozenset({"assertEqual", "assertEquals"})  # unittest's (actual, expected)
_POOL_FACTOR = 2  # candidates read per item wanted, so the overlap check can drop some
_EXCLUDED_PARTS = re.compile(r"(^|/)_distutils(/|$)|_test\.py$")  # setuptools' stdlib copy; tests
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_LAST_WORD = re.compile(r"(?<= )([A-Za-z]{3,}(?:-[A-Za-z]+)*)$")


@dataclass
class BenchmarkSource:
    """One built-in benchmark before extraction: where its items may come from and how."""

    name: str
    field: str
    description: str
    packages: tuple[str, ...]
    files: list[SourceFile]
    extract: Callable[[ParsedFile], list[dict[str, str]]]
    items: dict[str, int] = field(default_factory=lambda: dict(ITEMS))

    def fingerprint(self) -> dict[str, object]:
        return {"files": [[f"{f.origin}:{f.rel}", f.size] for f in self.files]}


@dataclass
class BuiltBenchmark:
    """A benchmark's chosen rows and what the manifest's provenance says about them."""

    source: BenchmarkSource
    rows: list[dict[str, str]]
    candidates: int
    overlapping: int
    files_used: int
    packages: set[str] = field(default_factory=set)


def benchmark_sources(index: SourceIndex) -> list[BenchmarkSource]:
    """The built-in benchmarks with their candidate files (walks directories, reads nothing)."""
    return [
        BenchmarkSource(
            name=CODE_BENCHMARK,
            field="code",
            description=(
                "complete the returned expression of held-out Python functions (packages no code "
                "domain reads: torchgen, setuptools, distlib, platformdirs, psutil); prompt: the "
                "function, docstrings removed, up to its final 'return'; answer: the expression to "
                "the end of the line"
            ),
            packages=CODE_BENCHMARK_LIBS,
            files=_files(index, CODE_BENCHMARK_LIBS),
            extract=return_items,
        ),
        BenchmarkSource(
            name=PROSE_BENCHMARK,
            field="prose",
            description=(
                "cloze over held-out documentation (docstrings of packages no prose domain reads: "
                "protobuf, virtualenv, opencensus, smart_open, dill, attrs, jsonschema); prompt: "
                "'name(signature)', a blank line and the first sentence of the docstring without "
                "its last word; answer: that word"
            ),
            packages=PROSE_BENCHMARK_LIBS,
            files=_files(index, PROSE_BENCHMARK_LIBS),
            extract=cloze_items,
        ),
        BenchmarkSource(
            name=CODE_OUTPUT_BENCHMARK,
            field="code",
            description=(
                "predict the expected value of a unittest assertion in a held-out test suite (the "
                "regex package's, read by no code domain); prompt: the test method, docstrings "
                "removed, up to 'self.assertEqual(actual,'; answer: the expected value"
            ),
            packages=CODE_OUTPUT_BENCHMARK_LIBS,
            files=_files(index, CODE_OUTPUT_BENCHMARK_LIBS, tests=True),
            extract=assertion_items,
            items=dict(OUTPUT_ITEMS),
        ),
    ]


def _files(index: SourceIndex, packages: tuple[str, ...], tests: bool = False) -> list[SourceFile]:
    """A benchmark's candidate files: the packages' test suites if ``tests``, else the rest."""
    return [
        f for p in packages for f in index.package(p) if f.is_test == tests and not _EXCLUDED_PARTS.search(f.rel)
    ]


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's first line, 0-based: its first decorator's, else its ``def``'s."""
    return min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1


def _too_long(prompt: str) -> bool:
    return len(prompt) > MAX_PROMPT_CHARS or any(len(line) > MAX_LINE_CHARS for line in prompt.split("\n"))


def return_items(parsed: ParsedFile) -> list[dict[str, str]]:
    """Completion items of one file: each function whose last statement is a one-line ``return``.

    The function's text is the code field's (docstrings removed), from its first decorator to the
    ``return`` keyword. A return on a line that docstring removal changed, or followed by anything
    on its line (a comment, ``; x``), is skipped: the answer must be exactly what ends the line.
    """
    lines = strip_docstrings(parsed)
    items: list[dict[str, str]] = []
    for node in definitions(parsed.tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        last = node.body[-1]
        if not isinstance(last, ast.Return) or last.value is None or last.lineno != last.end_lineno:
            continue
        r = last.lineno - 1
        if r <= node.lineno - 1 or lines[r] != parsed.lines[r] or last.end_col_offset is None:
            continue
        raw = lines[r].encode("utf-8")
        head, tail = raw[: last.col_offset], raw[last.end_col_offset :]
        if head.strip() or tail.strip() or raw[last.col_offset : last.value.col_offset] != b"return ":
            continue
        answer = raw[last.value.col_offset : last.end_col_offset].decode("utf-8")
        if not answer or len(answer) > MAX_ANSWER_CHARS or answer in _TRIVIAL_RETURNS:
            continue
        start = _first_line(node)
        prompt = "".join(lines[start:r]) + head.decode("utf-8") + "return"
        if _too_long(prompt):
            continue
        items.append({"prompt": prompt, "answer": answer})
    return items


def assertion_items(parsed: ParsedFile) -> list[dict[str, str]]:
    """Output-prediction items of one test file: each one-line ``self.assertEqual(actual, expected)``
    statement of a function body, its expected value blanked.

    The prompt is the function in the code field's form (docstrings removed), from its first
    decorator to the comma before ``expected`` — earlier assertions included, with their answers,
    as a reader of the suite sees them. The call must fill its line (nothing after the closing
    parenthesis), on a line docstring removal left alone; ``None``/``True``/``False`` are skipped
    (a guess, not a prediction).
    """
    lines = strip_docstrings(parsed)
    items: list[dict[str, str]] = []
    for node in definitions(parsed.tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        start = _first_line(node)
        for st in node.body:
            call = st.value if isinstance(st, ast.Expr) else None
            if (
                not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute)
                or call.func.attr not in _EQUALITY_ASSERTS or len(call.args) != 2 or call.keywords
                or st.lineno != st.end_lineno or call.args[1].end_col_offset is None
            ):
                continue
            r = st.lineno - 1
            if r <= start or lines[r] != parsed.lines[r]:
                continue
            raw = lines[r].rstrip("\n").encode("utf-8")
            expected = call.args[1]
            head = raw[: expected.col_offset]
            if raw[: st.col_offset].strip() or raw[expected.end_col_offset :] != b")" or not head.endswith(b", "):
                continue
            answer = raw[expected.col_offset : expected.end_col_offset].decode("utf-8")
            if not answer or len(answer) > MAX_ANSWER_CHARS or answer in _TRIVIAL_RETURNS:
                continue
            prompt = "".join(lines[start:r]) + head[:-1].decode("utf-8")
            if _too_long(prompt):
                continue
            items.append({"prompt": prompt, "answer": answer})
    return items


def cloze_items(parsed: ParsedFile) -> list[dict[str, str]]:
    """Cloze items of one module: per documented object, its header and first sentence, the
    sentence's last word blanked.

    Only a last word of three or more letters that follows a space is taken: a blank after a line
    break would not be where the delimiter puts it, and markup or a number is not a word to fill.
    """
    items: list[dict[str, str]] = []
    for page in docstring_pages(parsed, parsed.source.module):
        head, sep, doc = page.partition("\n\n")
        if not sep:
            continue
        para = doc.split("\n\n", 1)[0]
        end = _SENTENCE_END.search(para)
        if end is None:
            continue
        sentence = para[: end.start()]
        m = _LAST_WORD.search(sentence)
        if m is None:
            continue
        prompt = f"{head}\n\n{sentence[: m.start() - 1]}"
        if len(prompt) > MAX_PROMPT_CHARS:
            continue
        items.append({"prompt": prompt, "answer": m.group(1)})
    return items


def candidate_items(source: BenchmarkSource, want: int, seed: int) -> tuple[list[dict[str, str]], int]:
    """Up to ``_POOL_FACTOR * want`` candidates, spread over files; and the number of files read.

    Files are read in a seeded order, packages taking turns, until the pool is full, each file's
    items in a seeded order; the pool interleaves files (every file's first item, then every
    file's second ...), so the items a benchmark keeps come from many packages and modules. Items of at least
    :data:`NGRAM` words only, so that every kept item is checked for overlap in full; a prompt
    seen before (a duplicated function or docstring) is skipped.
    """
    order = _interleaved_files(source, seed)
    per_file: list[list[dict[str, str]]] = []
    seen: set[str] = set()
    total = files_used = 0
    for sf in order:
        if total >= _POOL_FACTOR * want:
            break
        parsed = parse_python(sf)
        if parsed is None:
            continue
        items = []
        for item in source.extract(parsed):
            if item["prompt"] in seen or len(words(f"{item['prompt']} {item['answer']}")) < NGRAM:
                continue
            seen.add(item["prompt"])
            items.append({**item, "package": sf.origin, "source": f"{sf.origin}:{sf.rel}"})
        if not items:
            continue
        random.Random(f"{seed}/benchmark/{source.name}/{sf.rel}").shuffle(items)
        per_file.append(items)
        total += len(items)
        files_used += 1
    pool = [f[i] for i in range(max((len(f) for f in per_file), default=0)) for f in per_file if i < len(f)]
    return pool, files_used


def _interleaved_files(source: BenchmarkSource, seed: int) -> list[SourceFile]:
    """Each package's files in a seeded order, the packages taking turns: otherwise a package
    with many files (protobuf's ``google``) would fill most of the benchmark."""
    by_package: dict[str, list[SourceFile]] = {}
    for f in source.files:
        by_package.setdefault(f.origin, []).append(f)
    lists = []
    for package in sorted(by_package):
        files = by_package[package]
        random.Random(f"{seed}/benchmark/{source.name}/{package}").shuffle(files)
        lists.append(files)
    return [lst[i] for i in range(max((len(x) for x in lists), default=0)) for lst in lists if i < len(lst)]


def overlapping_items(items: list[dict[str, str]], documents: Iterable[str], n: int = NGRAM) -> set[int]:
    """Indices of items sharing an ``n``-word n-gram with any of ``documents``.

    The decontamination index of ``data build`` with one entry per item, so a hit names the
    item. The items' n-grams are few and held in memory; the documents are streamed, so a
    ``full`` build's tens of millions of words cost time, not memory.
    """
    index = NgramIndex(n, n)
    for i, item in enumerate(items):
        index.add(str(i), [f"{item['prompt']} {item['answer']}"])
    hit: set[int] = set()
    if not index:
        return hit
    for doc in documents:
        hit |= index.match(doc)
    return hit


def build_benchmark(
    source: BenchmarkSource,
    size: str,
    seed: int,
    documents: Callable[[], Iterable[str]],
    answer_tokens: Callable[[str], int] | None = None,
) -> BuiltBenchmark:
    """Choose a benchmark's rows: candidates, less those overlapping the build's ``documents``.

    ``documents`` yields every document of the build (both splits, every domain);
    ``answer_tokens`` counts the tokens of ``" " + answer`` with the corpus's tokenizer, so that
    no answer is too long for a small proxy's context (the evaluator refuses those). Fewer items
    than the size asks for is a warning, not an error: the benchmark still measures, on fewer.
    """
    want = source.items[size]
    pool, files_used = candidate_items(source, want, seed)
    if answer_tokens is not None:
        pool = [item for item in pool if answer_tokens(" " + item["answer"]) <= MAX_ANSWER_TOKENS]
    hit = overlapping_items(pool, documents())
    kept = [item for i, item in enumerate(pool) if i not in hit][:want]
    if len(kept) < want:
        log.warning(
            "built-in benchmark %s has %d items, fewer than the %d a %s corpus asks for (are its "
            "packages %s installed?)", source.name, len(kept), want, size, ", ".join(source.packages),
        )
    log.info(
        "benchmark %s: %d items from %d candidates in %d files (%d dropped for a %d-word overlap with the corpus)",
        source.name, len(kept), len(pool), files_used, len(hit), NGRAM,
    )
    return BuiltBenchmark(
        source, kept, len(pool), len(hit), files_used, packages={r["package"] for r in kept}
    )


def source_entry(built: BuiltBenchmark, versions: dict[str, str]) -> dict[str, Any]:
    """Where a built-in benchmark came from, as its manifest entry's ``source`` records it."""
    return {
        "builder": "mixagent data builtin",
        "version": BENCHMARKS_VERSION,
        "packages": versions,
        "files_available": len(built.source.files),
        "files_used": built.files_used,
        "candidates": built.candidates,
        "dropped_overlap": built.overlapping,
        "ngram": NGRAM,
    }
