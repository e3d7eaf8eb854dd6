"""Building (or reusing) the built-in corpus: plan, fingerprint, extract, tokenize, write.

A build is a function of (size, seed, the installed files): :func:`plan_builtin` lists the domains
and the files each may draw from, :func:`builtin_content_hash` hashes that list with file sizes,
package versions, the size's limits and the generator versions, and :func:`build_builtin` reuses
an existing directory whose manifest carries the same hash. Otherwise it extracts every domain's
documents once into a JSONL spill (so memory stays flat and sources are parsed only once), picks
the tokenizer sample and the eval split from it, trains the BPE, and writes through
:class:`~mixagent.data.writer.DataDirWriter` inside :func:`~mixagent.utils.io.atomic_directory`,
so an interrupted build leaves the previous corpus in place.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import platform
import random
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixagent.data.builtin import benchmarks, problems
from mixagent.data.builtin.benchmarks import BenchmarkSource, BuiltBenchmark
from mixagent.data.builtin.code import code_domains
from mixagent.data.builtin.mathtext import math_domains
from mixagent.data.builtin.prose import prose_domains
from mixagent.data.builtin.sizes import SizeSpec, size_spec
from mixagent.data.builtin.sources import DomainSource, DomainStats, SourceIndex, python_version
from mixagent.data.manifest import DataDir
from mixagent.data.tokenizer import load_tokenizer, train_bpe
from mixagent.data.writer import DataDirWriter, is_eval_document, safe_filename
from mixagent.errors import DataError
from mixagent.utils.io import atomic_directory, remove_stale_temporaries, sha256_json
from mixagent.utils.paths import cache_dir
from mixagent.utils.progress import Progress

log = logging.getLogger(__name__)

BUILTIN_VERSION = "builtin-v1"
"""Bumped whenever extraction or layout changes, so cached corpora from older code are rebuilt."""

TASK_NAME = "math_exact_match"
FIELDS = (
    ("prose", "source", "documentation prose: Python reference topics and docstrings of the stdlib and libraries"),
    ("code", "target", "Python source code with docstrings removed: stdlib and installed libraries"),
    ("math", "target", "sympy/mpmath docstrings and doctests, and generated word problems with worked solutions"),
)
_SALT_CANDIDATES = 16
_MIN_EVAL_SHARE = 0.4  # a domain's held-out text must be at least this share of the expected
_BUILDER = "mixagent data builtin"  # provenance mark: only directories carrying it are replaced
#: content hashes of the built-in corpora the shipped results (reports/, trajectories/, policies/)
#: were measured on, by (size, seed); pinned by constraints.txt with Python 3.11.7
SHIPPED_CONTENT_HASHES = {
    ("small", 0): "46c7ca5861fcc4b348f68c69c6ed48cd416d23c313cd4eb75de4214f986c641d",
}


def default_builtin_dir(size: str = "small") -> Path:
    """Where ``mixagent data builtin`` puts a size by default: ``<cache>/builtin-<size>``."""
    size_spec(size)
    return cache_dir() / f"builtin-{size}"


@dataclass
class BuiltinPlan:
    """What a build of one size and seed will read: its domains and the held-out problems."""

    spec: SizeSpec
    seed: int
    index: SourceIndex
    domains: list[DomainSource]
    heldout: list[problems.Problem]
    benchmarks: list[BenchmarkSource] = field(default_factory=list)

    def packages(self) -> list[str]:
        return sorted({p for d in self.domains for p in d.packages})

    def benchmark_packages(self) -> list[str]:
        return sorted({p for b in self.benchmarks for p in b.packages if b.files})


def plan_builtin(size: str = "small", seed: int = 0) -> BuiltinPlan:
    """List the domains of a build (walks directories; reads no file contents)."""
    spec = size_spec(size)
    index = SourceIndex()
    heldout = problems.heldout_problems(seed, spec.heldout_problems)
    questions = {p.question for p in heldout}
    domains = [
        *prose_domains(index, spec),
        *code_domains(index, spec),
        *math_domains(index, spec, questions),
    ]
    return BuiltinPlan(spec, seed, index, domains, heldout, benchmarks.benchmark_sources(index))


def builtin_content_hash(plan: BuiltinPlan) -> str:
    """Hash of everything that decides the corpus's bytes, except mixagent's own code.

    Size limits, seed, corpus and generator versions, Python version, the version of every
    package read, and each domain's candidate files with their sizes: upgrading numpy or
    patching a stdlib file changes the hash and the corpus is rebuilt.
    """
    payload = {
        "builtin_version": BUILTIN_VERSION,
        "size": plan.spec.as_dict(),
        "seed": plan.seed,
        "python": python_version(),
        "problem_generator": problems.GENERATOR_VERSION,
        "packages": {p: plan.index.version(p) for p in plan.packages()},
        "domains": {d.name: d.fingerprint() for d in plan.domains},
    }
    return sha256_json(payload)


def builtin_benchmarks_fingerprint(plan: BuiltinPlan) -> str:
    """Hash of what decides the built-in benchmarks beyond the corpus (whose hash covers the rest).

    Kept apart from :func:`builtin_content_hash` so that adding or changing the benchmarks leaves
    the corpus's content hash — and so the env-spec hash of every spec that does not evaluate
    them — unchanged; recorded in the manifest, so a corpus whose benchmarks are missing or stale
    is rebuilt (to the same shards) rather than reused.
    """
    return sha256_json({
        "benchmarks_version": benchmarks.BENCHMARKS_VERSION,
        "items": {b.name: b.items[plan.spec.name] for b in plan.benchmarks},
        "seed": plan.seed,
        "packages": {p: plan.index.version(p) for p in plan.benchmark_packages()},
        "sources": {b.name: b.fingerprint() for b in plan.benchmarks},
    })


def build_builtin(
    out: Path | str | None = None,
    size: str = "small",
    seed: int = 0,
    force: bool = False,
    workers: int | None = None,
) -> Path:
    """Build the built-in corpus into ``out`` (default :func:`default_builtin_dir`), or reuse it.

    An existing, valid data directory whose manifest has this build's content hash is reused
    untouched unless ``force``. ``workers`` processes extract domains in parallel (parsing is
    most of the build's time); by default up to 4 for ``small``/``full``, 1 for ``tiny``. The
    result does not depend on it. Returns the directory.
    """
    spec = size_spec(size)
    out = Path(out) if out is not None else default_builtin_dir(size)
    remove_stale_temporaries(out)  # a killed earlier build's leftovers, also when we reuse `out`
    _check_replaceable(out, size)
    t0 = time.perf_counter()
    plan = plan_builtin(size, seed)
    content_hash = builtin_content_hash(plan)
    bench_fp = builtin_benchmarks_fingerprint(plan)
    _check_shipped(size, seed, content_hash)
    if not force and _existing_hash(out) == content_hash:
        if _existing_benchmarks(out) == bench_fp:
            log.info("built-in corpus %s is up to date (content hash %s); reusing it", out, content_hash[:12])
            return out
        log.info("built-in corpus %s lacks its current benchmarks; rebuilding it (to the same shards)", out)
    log.info("building the %s built-in corpus (seed %d) into %s", spec.name, seed, out)
    with atomic_directory(out, replace=True) as tmp:
        work = tmp / "_extract"
        work.mkdir()
        spilled = _extract(plan, work, workers)
        chars = sum(sp.stats.chars for sp in spilled)
        log.info("extracted %.1f M characters from %d domains in %.1f s", chars / 1e6, len(spilled), _since(t0))
        dropped: dict[str, str] = {}
        spilled = _drop_empty(spilled, dropped)
        salt = _choose_salt(spilled, spec, seed)
        t1 = time.perf_counter()
        info = train_bpe(_tokenizer_sample(spilled, spec, seed), spec.vocab_size, tmp / "tokenizer")
        log.info("trained a %d-token byte-level BPE on a seeded sample in %.1f s", spec.vocab_size, _since(t1))
        spilled = _drop_small(spilled, tmp / info.path, spec, salt, dropped)
        _check_fields(spilled)
        _check_heldout_disjoint(spilled, plan.heldout)
        tokenizer: Any = load_tokenizer(tmp / info.path)
        built = [
            benchmarks.build_benchmark(
                b, spec.name, seed, functools.partial(_all_documents, spilled),
                lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
            )
            for b in plan.benchmarks
        ]

        writer = DataDirWriter(
            tmp, info, eval_fraction=spec.eval_fraction, min_sequence_tokens=spec.min_domain_tokens, split_salt=salt
        )
        for name, role, desc in FIELDS:
            writer.add_field(name, role, desc)
        t2 = time.perf_counter()
        with Progress(len(spilled), "tokenizing", "domain", logger=log) as bar:
            for sp in bar.wrap(spilled):
                writer.add_documents(sp.source.name, sp.source.field, sp.documents(), sp.source.description)
        log.info("tokenized %d domains in %.1f s", len(spilled), _since(t2))
        writer.add_task(
            TASK_NAME,
            "math",
            problems.heldout_rows(plan.heldout),
            description=(
                "held-out arithmetic/algebra problems, none in training; prompt 'Problem: ...\\nAnswer:', "
                "the model generates the answer without a worked solution; compare its greedy "
                "continuation up to the first newline or EOS, stripped, with 'answer'"
            ),
        )
        _add_benchmarks(writer, built, plan)
        shutil.rmtree(work)
        provenance = _provenance(plan, spilled, dropped, salt)
        provenance["benchmarks_fingerprint"] = bench_fp
        manifest = writer.finish(f"builtin-{spec.name}", content_hash, provenance)
    elapsed = _since(t0)
    per_field = {f: sum(d.train_tokens + d.eval_tokens for d in manifest.domains if d.field == f) for f, _, _ in FIELDS}
    log.info(
        "built-in corpus %s ready in %.1f s: %d domains, tokens per field %s",
        out, elapsed, len(manifest.domains), ", ".join(f"{k}={v:,}" for k, v in per_field.items()),
    )
    return out


def _check_shipped(size: str, seed: int, content_hash: str) -> None:
    """Say so when this corpus is not the one the shipped results were measured on: the corpus is
    extracted from installed packages, so other versions give other text, another tokenizer and
    other env-spec hashes — everything works, but no shipped number or cache entry applies."""
    shipped = SHIPPED_CONTENT_HASHES.get((size, seed))
    if shipped is not None and shipped != content_hash:
        log.warning("the %s built-in corpus here (content hash %s) is not the one the shipped "
                    "results were measured on (%s): the installed package versions or Python "
                    "differ from constraints.txt (Python 3.11.7). Reports, headroom numbers and "
                    "caches in the repository do not apply to it; to reproduce them, install with "
                    "pip install -e '.[dev]' -c constraints.txt", size, content_hash[:12],
                    shipped[:12])


def _since(t: float) -> float:
    return time.perf_counter() - t


def _check_replaceable(out: Path, size: str) -> None:
    """Refuse to replace anything but an empty directory or a built-in corpus.

    A rebuild swaps the whole output directory, so a mistyped ``--out`` pointing at a project
    folder or at a corpus made by ``mixagent data build`` must be an error, not a deletion. The
    default location (``<cache>/builtin-<size>``) is mixagent's own and always replaceable.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out} is a file; the built-in corpus needs a directory path (--out)")
    if not any(out.iterdir()):
        return
    try:
        raw = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        builder = raw.get("provenance", {}).get("builder")
    except (OSError, ValueError, AttributeError):
        builder = None
    if builder != _BUILDER and out.resolve() != default_builtin_dir(size).resolve():
        raise DataError(
            f"{out} exists and is not a built-in corpus; refusing to replace it. "
            "Choose another output directory (--out) or remove that one first."
        )


def _existing_benchmarks(out: Path) -> str | None:
    """The benchmarks fingerprint an existing corpus records (``None`` before benchmarks existed)."""
    try:
        value = DataDir(out).manifest.provenance.get("benchmarks_fingerprint")
    except DataError:
        return None
    return value if isinstance(value, str) else None


def _all_documents(spilled: list[_Spilled]) -> Iterator[str]:
    for sp in spilled:
        yield from sp.documents()


def _add_benchmarks(writer: DataDirWriter, built: list[BuiltBenchmark], plan: BuiltinPlan) -> None:
    """Store the built-in benchmarks (``qa``; the manifest records each file's hash).

    Not decontaminated by the writer: the items were chosen to share no n-gram with any
    document, so there is nothing to drop, and the shards stay those of a build without them.
    """
    for b in built:
        if not b.rows:
            log.warning("built-in benchmark %s has no items; leaving it out", b.source.name)
            continue
        versions = {plan.index.distribution(p): plan.index.version(p) for p in sorted(b.packages)}
        writer.add_benchmark(
            b.source.name, b.source.field, "qa", b.rows, description=b.source.description,
            source=benchmarks.source_entry(b, versions), decontaminate=False,
        )


def _existing_hash(out: Path) -> str | None:
    if not (out / "manifest.json").is_file():
        return None
    try:
        return DataDir(out).manifest.content_hash
    except DataError as err:
        log.warning("existing built-in corpus at %s is unusable (%s); rebuilding", out, err)
        return None


@dataclass
class _Spilled:
    """A domain's extracted documents, one JSON string per line in ``path``."""

    source: DomainSource
    path: Path
    stats: DomainStats

    def documents(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def _extract(plan: BuiltinPlan, work: Path, workers: int | None) -> list[_Spilled]:
    """Extract every domain into ``work``, in worker processes when more than one is allowed.

    Each domain's documents depend only on (size, seed, domain, installed files), so running
    domains in parallel cannot change the output. Workers receive names, not objects: they
    re-plan the build themselves (a directory walk), and write documents and stats to files.
    """
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if plan.spec.full_domains else 1
    if multiprocessing.current_process().daemon:
        workers = 1  # daemonic processes (e.g. a multiprocessing pool's workers) cannot have children
    paths = {d.name: work / f"{safe_filename(d.name)}.jsonl" for d in plan.domains}
    with Progress(len(plan.domains), "reading sources", "domain", logger=log) as bar:
        if workers <= 1:
            for d in plan.domains:
                _spill(d, plan.spec, plan.seed, paths[d.name])
                bar.update(note=d.name)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {
                    pool.submit(_spill_in_worker, plan.spec.name, plan.seed, d.name, str(paths[d.name])): d.name
                    for d in plan.domains
                }
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(note=futures[fut])
    return [_Spilled(d, paths[d.name], _read_stats(paths[d.name])) for d in plan.domains]


@functools.lru_cache(maxsize=2)
def _worker_plan(size: str, seed: int) -> BuiltinPlan:
    return plan_builtin(size, seed)


def _spill_in_worker(size: str, seed: int, name: str, path: str) -> None:
    plan = _worker_plan(size, seed)
    source = next(d for d in plan.domains if d.name == name)
    _spill(source, plan.spec, seed, Path(path))


def _spill(source: DomainSource, spec: SizeSpec, seed: int, path: Path) -> None:
    """Write a domain's documents as JSONL, and what they came from beside them."""
    stats = DomainStats()
    with open(path, "w", encoding="utf-8") as f:
        for doc in source.documents(spec, seed, stats):
            # Lone surrogates (from escapes in string literals) cannot be tokenized; replace them.
            clean = doc.encode("utf-8", "replace").decode("utf-8")
            if clean.strip():
                f.write(json.dumps(clean) + "\n")
    record = {
        "files_used": stats.files_used,
        "documents": stats.documents,
        "chars": stats.chars,
        "packages": sorted(stats.packages),
    }
    path.with_suffix(".stats.json").write_text(json.dumps(record), encoding="utf-8")
    log.debug("%s: %d documents, %d chars from %d files", source.name, stats.documents, stats.chars, stats.files_used)


def _read_stats(path: Path) -> DomainStats:
    record = json.loads(path.with_suffix(".stats.json").read_text(encoding="utf-8"))
    return DomainStats(
        files_used=record["files_used"],
        documents=record["documents"],
        chars=record["chars"],
        packages=set(record["packages"]),
    )


def _drop_empty(spilled: list[_Spilled], dropped: dict[str, str]) -> list[_Spilled]:
    kept = []
    for sp in spilled:
        if sp.stats.documents == 0:
            dropped[sp.source.name] = "no documents could be extracted"
            log.warning("dropping domain %s: no documents could be extracted", sp.source.name)
        else:
            kept.append(sp)
    return kept


def _choose_salt(spilled: list[_Spilled], spec: SizeSpec, seed: int) -> str:
    """An eval-split salt under which every domain has a usable held-out set.

    The writer splits by a hash of each document, so a domain of a hundred documents can, by
    chance, hold out one or none of them. Candidate salts are scored in one pass over the
    documents; the first under which every domain has training documents and at least
    ``_MIN_EVAL_SHARE`` of its expected held-out text wins, else the one with the best worst
    domain. The candidates' fixed order keeps the choice deterministic.
    """
    salts = [f"builtin/{seed}" + (f"/{k}" if k else "") for k in range(_SALT_CANDIDATES)]
    eval_chars = [[0] * len(salts) for _ in spilled]
    eval_docs = [[0] * len(salts) for _ in spilled]
    train_docs = [[0] * len(salts) for _ in spilled]
    for i, sp in enumerate(spilled):
        for doc in sp.documents():
            for k, salt in enumerate(salts):
                if is_eval_document(doc, spec.eval_fraction, salt):
                    eval_chars[i][k] += len(doc)
                    eval_docs[i][k] += 1
                else:
                    train_docs[i][k] += 1
    best, best_score = None, -1.0
    for k, salt in enumerate(salts):
        if any(eval_docs[i][k] == 0 or train_docs[i][k] == 0 for i in range(len(spilled))):
            continue
        score = min(
            eval_chars[i][k] / max(1.0, spec.eval_fraction * sp.stats.chars) for i, sp in enumerate(spilled)
        )
        if score >= _MIN_EVAL_SHARE:
            return salt
        if score > best_score:
            best, best_score = salt, score
    if best is None:
        raise DataError(
            "could not split every built-in domain into training and held-out documents; "
            "some domain has too few documents (is the Python installation missing its standard library?)"
        )
    log.info("eval split: smallest held-out share is %.0f%% of the expected", 100 * best_score)
    return best


def _tokenizer_sample(spilled: list[_Spilled], spec: SizeSpec, seed: int) -> Iterator[str]:
    """The same number of characters from every domain, chosen by a seeded shuffle."""
    for sp in spilled:
        docs = list(sp.documents())
        order = list(range(len(docs)))
        random.Random(f"{seed}/tokenizer/{sp.source.name}").shuffle(order)
        total = 0
        for i in order:
            if total >= spec.tokenizer_sample_chars:
                break
            total += len(docs[i])
            yield docs[i]


def _drop_small(
    spilled: list[_Spilled], tok_dir: Path, spec: SizeSpec, salt: str, dropped: dict[str, str]
) -> list[_Spilled]:
    """Leave out domains with fewer training tokens than ``min_domain_tokens`` (counted exactly
    for the borderline ones; a domain with six characters per required token always passes)."""
    tokenizer = None
    kept = []
    for sp in spilled:
        train = [d for d in sp.documents() if not is_eval_document(d, spec.eval_fraction, salt)]
        chars = sum(len(d) for d in train)
        if chars >= 6 * spec.min_domain_tokens:
            kept.append(sp)
            continue
        if tokenizer is None:
            tokenizer = load_tokenizer(tok_dir)
        tokens = sum(len(e.ids) + 1 for e in tokenizer.encode_batch(train, add_special_tokens=False))  # type: ignore[attr-defined]
        if tokens >= spec.min_domain_tokens:
            kept.append(sp)
        else:
            reason = f"{tokens} training tokens, fewer than the {spec.min_domain_tokens} a {spec.name} domain needs"
            dropped[sp.source.name] = reason
            log.warning("dropping domain %s: %s", sp.source.name, reason)
    return kept


def _check_fields(spilled: list[_Spilled]) -> None:
    for name, _, _ in FIELDS:
        n = sum(sp.source.field == name for sp in spilled)
        if n == 0:
            raise DataError(
                f"the built-in corpus has no {name!r} domain: none of its sources are installed "
                "or readable (check the Python installation and mixagent's dependencies)"
            )
        if n == 1:
            log.warning("field %r has a single domain; mixtures within it will have nothing to choose", name)


def _question(doc: str) -> str:
    return doc.split("\n", 1)[0].removeprefix("Problem: ")


def _check_heldout_disjoint(spilled: list[_Spilled], heldout: list[problems.Problem]) -> None:
    """Guard the task's promise: no held-out question is also a training document's question."""
    questions = {p.question for p in heldout}
    for sp in spilled:
        if sp.source.name.endswith("-problems"):
            leaked = {_question(d) for d in sp.documents()} & questions
            if leaked:  # pragma: no cover - the generator excludes them; this is a tripwire
                raise RuntimeError(f"{len(leaked)} held-out problems leaked into {sp.source.name}")


def _provenance(plan: BuiltinPlan, spilled: list[_Spilled], dropped: dict[str, str], salt: str) -> dict[str, object]:
    index = plan.index

    def versions(packages: set[str] | tuple[str, ...]) -> dict[str, str]:
        return {index.distribution(p): index.version(p) for p in sorted(packages)}

    domains: dict[str, object] = {}
    used: set[str] = set()
    for sp in spilled:
        used |= sp.stats.packages
        entry: dict[str, object] = {
            "packages": versions(sp.stats.packages),
            "files_available": len(sp.source.files),
            "files_used": sp.stats.files_used,
            "documents": sp.stats.documents,
            "chars": sp.stats.chars,
        }
        entry.update(sp.source.extra_fingerprint)
        domains[sp.source.name] = entry
    return {
        "builder": _BUILDER,
        "builtin_version": BUILTIN_VERSION,
        "size": plan.spec.name,
        "size_spec": plan.spec.as_dict(),
        "seed": plan.seed,
        "python": {"version": python_version(), "implementation": platform.python_implementation()},
        "problem_generator": problems.GENERATOR_VERSION,
        "packages": versions(used),
        "domains": domains,
        "dropped_domains": dropped,
        "split_salt": salt,
        "task": {"name": TASK_NAME, "count": len(plan.heldout), "prompt_format": "direct"},
    }
