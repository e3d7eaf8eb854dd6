"""``mixagent data ...``: build, inspect and ship data directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Build and inspect data directories (per-domain token shards + manifest).", no_args_is_help=True)


_BUILD_HELP = (
    "Build a data directory from your own corpora: tokenizer + per-domain token shards + manifest."
    "\n\nInputs are local jsonl/json/parquet/text/arrow/csv files (paths or globs, relative to the "
    "config file) or a Hugging Face hub dataset (online only). Each document gets a domain from a "
    "metadata column, a constant, or unsupervised clustering. The tokenizer is a byte-level BPE "
    "trained on a seeded sample, or a local Hugging Face tokenizer directory."
    "\n\nRe-running with the same config and input files reuses the output; any change rebuilds."
    "\n\nExample: mixagent data build corpus.yaml --out data/my-corpus"
)


@app.command("build", help=_BUILD_HELP)
def build(
    config: Path = typer.Argument(
        ...,
        help="Build config (YAML): name, tokenizer, eval_fraction, min_eval_tokens, "
        "min_sequence_tokens, seed and fields (each with role source|target and inputs). See "
        "docs/DATA.md.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output data directory. Reused as is if it holds a build of the same config and "
        "inputs; otherwise replaced atomically. A non-empty directory that is not a mixagent "
        "data directory is never touched.",
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the output is up to date."),
) -> None:
    """Build (or reuse) a data directory from a YAML config, then print its summary."""
    from mixagent.data.build import build_data_dir

    print_summary(build_data_dir(config, out, force=force))


@app.command("info")
def info(data_dir: Path = typer.Argument(..., help="A data directory made by 'mixagent data build' or 'data builtin'.")) -> None:
    """Print a table of the domains, their fields and token counts, and each cluster's top terms."""
    print_summary(data_dir)


def cluster_terms(manifest: Any) -> dict[str, list[str]]:
    """Top terms of every clustered domain, by domain name.

    They are what tells a person what ``math/cluster-3`` holds (and what to name it with
    ``cluster.names``). Read from the manifest's provenance; a manifest written before it listed
    the clusters' domains falls back to the domain descriptions.
    """
    terms: dict[str, list[str]] = {}
    for entry in (manifest.provenance.get("clusters") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("domains"), list):
            terms.update(zip(entry["domains"], entry.get("top_terms") or [], strict=False))
    marker = "(k-means on tf-idf); top terms: "
    for d in manifest.domains:
        if d.name not in terms and marker in d.description:
            listed = d.description.split(marker, 1)[1]
            terms[d.name] = [] if listed.startswith("(") else listed.split(", ")
    return {d.name: terms[d.name] for d in manifest.domains if d.name in terms}


def print_summary(data_dir: Path) -> None:
    """Print a data directory's domain table, tokenizer line and tasks (used after every build)."""
    from rich.console import Console
    from rich.table import Table

    from mixagent.data import DataDir

    dd = DataDir(data_dir)
    m = dd.manifest
    table = Table(title=f"{m.name}  ({data_dir})")
    for col in ("domain", "field", "role", "train tokens", "eval tokens", "train docs", "eval docs"):
        table.add_column(col, justify="right" if "tokens" in col or "docs" in col else "left")
    for d in m.domains:
        table.add_row(d.name, d.field, d.role, f"{d.train_tokens:,}", f"{d.eval_tokens:,}", f"{d.train_documents:,}", f"{d.eval_documents:,}")
    console = Console()
    console.print(table)
    console.print(f"tokenizer: {m.tokenizer.kind}, vocab {m.tokenizer.vocab_size}, hash {m.tokenizer.hash[:12]}  |  dtype {m.dtype}  |  content hash {m.content_hash[:12]}")
    for t in m.tasks:
        console.print(f"task {t.name!r} ({t.kind}, field {t.field}): {t.count} examples")
    for b in m.benchmarks:
        console.print(f"benchmark {b.name!r} ({b.kind}, field {b.field}): {b.count} items"
                      f"{overlap_note(b)}", markup=False, highlight=False)
    clusters = cluster_terms(m)
    if clusters:
        console.print("clusters (top terms; name them with 'names' in the cluster config):")
        for name, words in clusters.items():
            console.print(f"  {name}: {', '.join(words) or '(no distinctive terms)'}", markup=False, highlight=False)


def overlap_note(bench: Any) -> str:
    """The decontamination status of a benchmark, as one clause for the summary."""
    o = bench.overlap
    if o is None:
        return ""
    if not o.documents:
        return f"; no corpus document shares a {o.ngram}-word n-gram with it"
    if o.removed:
        return f"; {o.documents} overlapping documents were dropped from the build"
    return (f"; {o.documents} overlapping documents are STILL in training "
            "(rebuild with it in the config's 'benchmarks:' to drop them)")


_ADD_HELP = (
    "Add benchmarks to an existing data directory without rebuilding its shards."
    "\n\nCONFIG is a YAML file with a 'benchmarks:' list, each as in a build config: name, field, "
    "path (jsonl/json/parquet/csv, relative to CONFIG), kind (qa: prompt_column, answer_column; "
    "text: text_column) and optional max_examples, description; optionally 'decontamination: "
    "{ngram: 13, min_item_words: 8}'. The directory's documents are checked for long n-gram "
    "overlap with the items; the count is recorded in the manifest and reported, since dropping "
    "them needs a rebuild (add the benchmarks to the build config and run 'mixagent data build')."
    "\n\nExample: mixagent data add-benchmark data/my-corpus benchmarks.yaml --strict"
)


@app.command("add-benchmark", help=_ADD_HELP)
def add_benchmark(
    data_dir: Path = typer.Argument(..., help="A data directory made by 'mixagent data build'."),
    config: Path = typer.Argument(..., help="YAML with a 'benchmarks:' list (see docs/DATA.md)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (add nothing) if any document "
                                "of the directory overlaps a new benchmark."),
) -> None:
    """Add benchmarks to a built data directory, then print its summary."""
    from mixagent.data.build import add_benchmarks

    for info in add_benchmarks(data_dir, config, strict=strict):
        typer.echo(f"added benchmark {info.name!r} ({info.kind}, field {info.field}): "
                   f"{info.count} items{overlap_note(info)}")
    print_summary(data_dir)


@app.command("builtin")
def builtin(
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: <cache>/builtin-<size>; MIXAGENT_CACHE sets the cache)."),
    size: str = typer.Option("small", "--size", help="tiny (seconds, for tests) | small (default, ~5M tokens) | full (everything installed)."),
    seed: int = typer.Option(0, "--seed", help="Seed for file sampling, the word problems and the held-out set."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an up-to-date corpus exists."),
) -> None:
    """Build the offline built-in corpus from text already installed (reused when up to date).

    Nothing is downloaded; see docs/BUILTIN.md. Fields:

    - prose (source): Python documentation topics and docstrings

    - code (target): Python source with docstrings removed

    - math (target): sympy/mpmath docs, generated word problems, held-out task 'math_exact_match'
    """
    import time

    from mixagent.data import DataDir
    from mixagent.data.builtin import build_builtin, default_builtin_dir

    target = out if out is not None else default_builtin_dir(size)
    manifest = target / "manifest.json"
    before = manifest.stat().st_mtime_ns if manifest.is_file() else None
    t0 = time.perf_counter()
    path = build_builtin(out, size=size, seed=seed, force=force)
    reused = before is not None and manifest.stat().st_mtime_ns == before
    m = DataDir(path).manifest
    typer.echo(f"{'reused' if reused else 'built'} the {size} built-in corpus at {path} ({time.perf_counter() - t0:.1f} s)")
    for f in m.fields:
        doms = [d for d in m.domains if d.field == f.name]
        tokens = sum(d.train_tokens + d.eval_tokens for d in doms)
        typer.echo(f"  {f.name:6s} ({f.role}): {len(doms)} domains, {tokens:,} tokens")
    typer.echo(f"  tokenizer: vocab {m.tokenizer.vocab_size}; tasks: {', '.join(f'{t.name} ({t.count})' for t in m.tasks)}")
    typer.echo(f"inspect with: mixagent data info {path}")
