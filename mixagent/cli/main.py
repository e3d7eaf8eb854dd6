"""Entry point of the ``mixagent`` command.

Sub-command groups live in their own modules (``mixagent/cli/<stage>.py``) and are attached here.
The pipeline stages are top-level verbs (``data …``, ``collect``, ``train``, ``train-online``,
``cpt``, ``evaluate``, ``demo``); auxiliary commands sit in noun groups (``env``, ``model``,
``policy``, ``trajectories``). Old spellings still work, hidden (:mod:`mixagent.cli.aliases`).
User errors (:class:`~mixagent.errors.MixagentError`) are printed as one clear message with exit
code 2 instead of a traceback; command-line usage errors get the usage line and exit code 2, as
in any click program; anything else is a bug and keeps its traceback.

Help is rendered by click's plain formatter (``rich_markup_mode=None``), not typer's rich
panels: typer 0.29's rich help keeps the hard line breaks of docstrings (sentences broken
mid-line), puts a ``<bool>`` type after flags that take no value, and truncates option help to
"…" on an 80-column terminal. The plain formatter reflows paragraphs to the terminal (at most
80 columns, the same when piped) and shows flags bare. The root app's mode is inherited by every
sub-command, so this one setting covers all of them.
"""

from __future__ import annotations

import logging
import sys

import typer

from mixagent import __version__
from mixagent.cli import cpt as cpt_cli
from mixagent.cli import data as data_cli
from mixagent.cli import demo as demo_cli
from mixagent.cli import evaluate as evaluate_cli
from mixagent.cli import policies as policies_cli
from mixagent.cli import proxy as proxy_cli
from mixagent.cli import trajectories as trajectories_cli
from mixagent.cli.aliases import add_aliases
from mixagent.errors import MixagentError

app = typer.Typer(
    name="mixagent",
    help=(
        "Learn data mixtures for continual pre-training (CPT), then drive real CPT runs with them.\n\n"
        "Workflow: data (corpora -> domain token shards) -> env (proxy CPT environment) -> "
        "collect (trajectories) -> train (mixing policy) -> cpt (production run) -> evaluate."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
# the pipeline, in workflow order: verbs
app.add_typer(data_cli.app, name="data")
app.command("collect")(trajectories_cli.collect)
app.command("train")(policies_cli.train)
app.command("train-online")(policies_cli.train_online_cmd)
app.command("cpt")(cpt_cli.cpt_cmd)
app.command("evaluate")(evaluate_cli.evaluate_cmd)
app.command("demo")(demo_cli.demo_cmd)
# what the pipeline makes and reads: nouns, each a group of verbs
app.add_typer(proxy_cli.env_app, name="env")
app.add_typer(cpt_cli.model_app, name="model")
app.add_typer(policies_cli.policy_app, name="policy")
app.add_typer(trajectories_cli.app, name="trajectories")
add_aliases(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mixagent {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main() -> None:
    """Console-script entry: run the app, turning user errors into a message and exit code 2.

    The app runs in click's standalone mode so that typer itself reports usage errors (bad or
    missing options and arguments, values out of range) with the usage line and exit code 2,
    and exits 0 after ``--help``. Typer 0.29 raises its own vendored copies of click's
    exceptions, so catching ``click.ClickException`` here would miss them; standalone mode needs
    no knowledge of which click they come from. :class:`MixagentError` is not a click exception,
    so it still reaches us; any other exception is a bug and keeps its traceback.
    """
    try:
        app(prog_name="mixagent", standalone_mode=True)
    except MixagentError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
