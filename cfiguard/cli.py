"""Command line: a thin typer layer over cfiguard.api. No logic lives here.

Exit codes: 0 success, 1 policy failure (--strict with unguarded sites), 2 unusable input or output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cfiguard.errors import CfiguardError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Label-based CFI for x86-64 ELF binaries.")


def _fail(e: CfiguardError) -> None:
    typer.echo(f"cfiguard: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


@app.command()
def harden(
    input: Path = typer.Argument(..., help="ELF executable or shared library to harden (never modified)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the hardened binary."),
    strict: bool = typer.Option(
        False, "--strict", help="Fail (exit 1, no output) if any site stays unguarded."
    ),
    report: Path | None = typer.Option(None, "--report", help="Write a JSON report of every site here."),
) -> None:
    """Harden INPUT into OUTPUT: every indirect call, indirect jump and return checks its target's label."""
    from cfiguard import api
    from cfiguard.report.harden_report import harden_report, summary_line, write_json

    try:
        result = api.harden(str(input), str(output), strict=strict)
    except CfiguardError as e:
        _fail(e)
        return
    if report is not None:
        try:
            write_json(str(report), harden_report(result))
        except CfiguardError as e:
            _fail(e)
    typer.echo(summary_line(result), err=True)


@app.command()
def version() -> None:
    """Print the version."""
    from cfiguard import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
