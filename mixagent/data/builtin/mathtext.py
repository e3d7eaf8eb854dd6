"""The target field ``math``: sympy and mpmath documentation, and generated word problems.

torch installs sympy (and sympy installs mpmath), so every mixagent machine has two symbolic-math
libraries whose docstrings are mathematics written out in English and LaTeX, with doctests that
show computations and their results (``>>> integrate(x**2, x)`` / ``x**3/3``). They are split by
subject — sympy's core, algebra, calculus, discrete mathematics, matrices, applied packages, and
mpmath — so a mixture can favour one. Two more domains are generated (see
:mod:`~mixagent.data.builtin.problems`): arithmetic and algebra word problems with worked
solutions, the text behind the field's exact-match task.
"""

from __future__ import annotations

from collections.abc import Iterator

from mixagent.data.builtin import problems
from mixagent.data.builtin.prose import docstring_pages
from mixagent.data.builtin.sizes import SizeSpec
from mixagent.data.builtin.sources import (
    DomainSource,
    DomainStats,
    ParsedFile,
    SourceFile,
    SourceIndex,
    cap_documents,
    file_documents,
    pack_pieces,
)

FIELD = "math"

# sympy subpackage -> domain; subpackages not listed (and top-level modules) are "sympy-core".
_SYMPY_GROUPS: dict[str, tuple[str, ...]] = {
    "sympy-algebra": ("polys", "solvers", "simplify", "algebras", "liealgebras"),
    "sympy-calculus": ("integrals", "series", "calculus", "concrete", "holonomic", "discrete"),
    "sympy-discrete": ("combinatorics", "ntheory", "logic", "sets", "crypto", "categories"),
    "sympy-matrices": ("matrices", "tensor"),
    "sympy-applied": ("physics", "stats", "geometry", "vector", "diffgeom", "plotting", "codegen"),
}
_DESCRIPTIONS = {
    "sympy-core": "sympy docstrings and doctests: core, functions, assumptions, printing, parsing",
    "sympy-algebra": "sympy docstrings and doctests: polynomials, equation solving, simplification",
    "sympy-calculus": "sympy docstrings and doctests: integrals, series, limits, sums",
    "sympy-discrete": "sympy docstrings and doctests: combinatorics, number theory, logic, sets",
    "sympy-matrices": "sympy docstrings and doctests: matrices and tensors",
    "sympy-applied": "sympy docstrings and doctests: physics, statistics, geometry, vectors",
    "mpmath": "mpmath docstrings and doctests: arbitrary-precision special functions",
}
_GROUP_OF = {sub: group for group, subs in _SYMPY_GROUPS.items() for sub in subs}
TINY_DOMAINS = ("mpmath", "arithmetic-problems", "algebra-problems")


def sympy_group(source: SourceFile) -> str:
    """The domain of a sympy file, by its subpackage."""
    parts = source.rel.split("/")
    return _GROUP_OF.get(parts[1], "sympy-core") if len(parts) > 2 else "sympy-core"


def extract_math_docs(parsed: ParsedFile, spec: SizeSpec) -> list[str]:
    """A module's docstrings and doctests as reference pages (private helpers included: in sympy
    the ``_eval_*`` methods document the mathematics)."""
    pages = docstring_pages(parsed, parsed.source.module, include_private=True)
    return cap_documents(pack_pieces(pages, spec.doc_chars), spec.file_chars)


def math_domains(index: SourceIndex, spec: SizeSpec, heldout_questions: set[str]) -> list[DomainSource]:
    """The math domains this size includes; problem domains never emit a held-out question."""
    domains: list[DomainSource] = []
    sympy_files = [f for f in index.package("sympy") if not f.is_test and "/benchmarks/" not in f.rel]
    for short in ("sympy-core", *_SYMPY_GROUPS):
        files = [f for f in sympy_files if sympy_group(f) == short]
        domains.append(_file_domain(short, files, ("sympy",)))
    mp_files = [f for f in index.package("mpmath") if not f.is_test]
    domains.append(_file_domain("mpmath", mp_files, ("mpmath",)))
    domains = [d for d in domains if d.files]
    for kind in problems.KINDS:
        domains.append(_problem_domain(kind, heldout_questions))
    if not spec.full_domains:
        domains = [d for d in domains if d.name.split("/", 1)[1] in TINY_DOMAINS]
    return domains


def _file_domain(short: str, files: list[SourceFile], packages: tuple[str, ...]) -> DomainSource:
    name = f"{FIELD}/{short}"

    def documents(spec: SizeSpec, seed: int, stats: DomainStats) -> Iterator[str]:
        return file_documents(name, files, extract_math_docs, spec, seed, stats)

    return DomainSource(
        name=name, field=FIELD, description=_DESCRIPTIONS[short], files=files, documents=documents, packages=packages
    )


def _problem_domain(kind: str, exclude: set[str]) -> DomainSource:
    def documents(spec: SizeSpec, seed: int, stats: DomainStats) -> Iterator[str]:
        for text in problems.training_documents(kind, seed, spec.domain_chars, exclude):
            stats.documents += 1
            stats.chars += len(text)
            yield text

    return DomainSource(
        name=f"{FIELD}/{kind}-problems",
        field=FIELD,
        description=f"generated {kind} word problems (levels 1-4) with worked step-by-step solutions",
        files=[],
        documents=documents,
        extra_fingerprint={"generator": problems.GENERATOR_VERSION},
    )
