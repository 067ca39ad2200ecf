"""Command line: a thin typer layer over cfiguard.api. One module per subcommand in cfiguard/commands/.

Exit codes: 0 success, 1 policy failure (--strict with unguarded sites, an output or a file that does not
verify), 2 unusable input or output.
"""

from __future__ import annotations

import sys

import typer

from cfiguard.commands import analyze as _analyze
from cfiguard.commands import harden as _harden
from cfiguard.commands import info as _info
from cfiguard.commands import verify as _verify
from cfiguard.commands import wheel as _wheel

HELP = """Label-based control-flow integrity for x86-64 ELF binaries, by static rewriting.

Every indirect call, indirect jump and return of a hardened binary first checks that its target carries the
right label; anything else stops the process with `cfiguard: CFI violation: ...` and SIGABRT.

Start with `cfiguard harden --help`. Documentation: docs/index.md. Shell completion: `--install-completion`.

**Exit codes** (every command): 0 success, 1 policy failure (a file that does not verify, unguarded sites
under `--strict`), 2 unusable input or output, with one line `cfiguard: error: ...` on stderr.
"""

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _cmake_dir(value: bool) -> None:
    if value:
        from cfiguard import api

        typer.echo(api.cmake_dir())
        raise typer.Exit(0)


def _version(value: bool) -> None:
    if value:
        from cfiguard import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(
    cmake_dir: bool = typer.Option(
        False,
        "--cmake-dir",
        is_eager=True,
        callback=_cmake_dir,
        help="Print the directory of cfiguardConfig.cmake, for "
        "`cmake -Dcfiguard_DIR=$(cfiguard --cmake-dir)` and `find_package(cfiguard CONFIG)`; then exit.",
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    pass


app.command("harden", help=_harden.HELP, short_help="Harden binaries (one, in place, or a batch).")(
    _harden.harden
)
app.command("verify", help=_verify.HELP, short_help="Check hardened binaries independently.")(_verify.verify)
app.command("info", help=_info.HELP, short_help="Summarize the .cfiguard manifest, checksec-style.")(
    _info.info
)
app.command(
    "analyze", help=_analyze.HELP, short_help="Report the precision of the CFI policy (writes nothing)."
)(_analyze.analyze)
app.command("wheel", help=_wheel.HELP, short_help="Harden every ELF file of a Python wheel.")(_wheel.wheel)


@app.command()
def version() -> None:
    """Print the version."""
    from cfiguard import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - the console script
    app(prog_name="cfiguard")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app(prog_name="cfiguard"))
