"""``mixagent data ...``: build, inspect and ship data directories."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build and inspect data directories (per-domain token shards + manifest).", no_args_is_help=True)


@app.command("info")
def info(data_dir: Path = typer.Argument(..., help="A data directory made by 'mixagent data build' or 'data builtin'.")) -> None:
    """Print a table of the domains, their fields and token counts."""
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
