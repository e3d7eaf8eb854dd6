"""Old command spellings, kept working as hidden aliases that name the new spelling.

Users' scripts must not break when a command moves into a noun group (issue 11), but ``--help``
should show one spelling per command. An alias therefore forwards its raw arguments to the new
spelling instead of registering the command's function twice: it parses, helps and fails exactly
as the new command does, a renamed option included, and this table is the one place that says
what moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import typer


@dataclass(frozen=True)
class Renamed:
    """Where an old top-level command now lives, and which of its options were renamed."""

    new: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)

    def note(self, old: str) -> str:
        """The one line an old spelling prints: enough to fix the script that used it."""
        options = ", ".join(f"{n}, not {o}" for o, n in self.options.items())
        return (f"note: 'mixagent {old}' is deprecated; use 'mixagent {' '.join(self.new)}'"
                + (f" ({options})" if options else ""))

    def forward(self, args: list[str]) -> list[str]:
        """The arguments for the new spelling, renamed options (also ``--opt=value``) replaced."""
        out = list(self.new)
        for arg in args:
            name, eq, value = arg.partition("=")
            out.append(self.options[name] + eq + value if name in self.options else arg)
        return out


#: old top-level command -> its new spelling
RENAMED: dict[str, Renamed] = {
    "pretrain": Renamed(("env", "pretrain")),
    "pretrain-model": Renamed(("model", "pretrain"), {"--config": "--size"}),
}


def add_aliases(app: typer.Typer) -> None:
    """Register every old spelling of :data:`RENAMED` on the root ``app``, hidden from help."""
    for old, renamed in RENAMED.items():
        app.command(
            old,
            hidden=True,
            add_help_option=False,  # '--help' is forwarded: the new command's help is the truth
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_alias(app, old, renamed))


def _alias(app: typer.Typer, old: str, renamed: Renamed) -> object:
    def alias(ctx: typer.Context) -> None:
        typer.echo(renamed.note(old), err=True)
        # not standalone: usage errors and user errors travel up to the root command's handling
        typer.main.get_command(app).main(
            args=renamed.forward(ctx.args), prog_name="mixagent", standalone_mode=False
        )

    alias.__doc__ = f"Deprecated spelling of 'mixagent {' '.join(renamed.new)}'."
    return alias
