"""Command line: a thin typer layer over cfiguard.api. No logic lives here.

Exit codes: 0 success, 1 policy failure (--strict with unguarded sites), 2 unusable input or output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from cfiguard.errors import CfiguardError

FIRST_FINDINGS = 10  # verifier findings shown when harden's own output fails verification

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Label-based CFI for x86-64 ELF binaries.")


def _fail(e: CfiguardError) -> None:
    typer.echo(f"cfiguard: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _internal(what: str, e: Exception) -> None:
    """An unexpected exception: one line and exit 2, as for unusable input; CFIGUARD_DEBUG=1 shows the trace.

    Release pipelines parse our stderr and exit code; a traceback helps nobody there. Corrupt inputs that
    slip past the ELF checks end up here too.
    """
    if os.environ.get("CFIGUARD_DEBUG"):
        raise e
    typer.echo(
        f"cfiguard: error: {what}: internal error ({type(e).__name__}: {e}); set CFIGUARD_DEBUG=1", err=True
    )
    raise typer.Exit(2)


@app.command()
def harden(
    input: Path = typer.Argument(..., help="ELF executable or shared library to harden (never modified)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where to write the hardened binary."),
    in_place: bool = typer.Option(
        False, "--in-place", help="Replace INPUT (atomically, only after success) instead of writing -o."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Fail (exit 1, no output) if any site stays unguarded."
    ),
    report: Path | None = typer.Option(None, "--report", help="Write a JSON report of every site here."),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Skip the independent verification of the output (by default an output that fails "
        "`cfiguard verify` is not written, and harden exits 1).",
    ),
) -> None:
    """Harden INPUT into OUTPUT: every indirect call, indirect jump and return checks its target's label.

    The output is checked with the independent verifier before it is written: an output that would not pass
    `cfiguard verify` is never written (exit 1, the first findings on stderr)."""
    from cfiguard import api
    from cfiguard.report.harden_report import harden_report, summary_line, write_json

    if (output is None) == (not in_place):
        typer.echo("cfiguard: error: give exactly one of -o OUTPUT and --in-place", err=True)
        raise typer.Exit(2)
    try:
        result = api.harden(
            str(input), str(output or input), strict=strict, in_place=in_place, verify=not no_verify
        )
    except CfiguardError as e:
        partial = getattr(e, "result", None)  # --strict: the report still says which sites and why
        if report is not None and partial is not None:
            write_json(str(report), harden_report(partial))
        for f in getattr(partial, "findings", [])[:FIRST_FINDINGS]:
            where = "" if f.address is None else f"{f.address:#x}: "
            typer.echo(f"cfiguard: {where}{f.check}: {f.reason}", err=True)
        _fail(e)
        return
    except Exception as e:  # noqa: BLE001 - see _internal
        _internal(str(input), e)
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


@app.command()
def verify(
    files: list[Path] = typer.Argument(..., help="Hardened ELF files to check."),
    fmt: str = typer.Option("text", "--format", help="Report format: text, json or sarif."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the report here instead of stdout."
    ),
) -> None:
    """Check FILES independently of the rewriter: every reachable ret, indirect call and indirect jmp must be
    guarded. Exit 0 if every file verifies, 1 if any fails, 2 if any input is unusable."""
    from cfiguard import __version__
    from cfiguard.verify import verify_file
    from cfiguard.verify.report import render, status

    if fmt not in ("text", "json", "sarif"):
        typer.echo(f"cfiguard: error: unknown --format {fmt!r} (use text, json or sarif)", err=True)
        raise typer.Exit(2)
    results = [verify_file(str(f)) for f in files]
    for r in results:
        if r.error is not None:
            typer.echo(f"cfiguard: error: {r.path}: {r.error}", err=True)
        else:
            n = len(r.findings)
            typer.echo(f"cfiguard: {r.path}: {status(r)}" + (f" ({n} finding(s))" if n else ""), err=True)
    report = render(results, fmt, __version__)
    if output is None:
        typer.echo(report, nl=False)
    else:
        try:
            output.write_text(report)
        except OSError as e:
            typer.echo(f"cfiguard: error: {output}: {e.strerror or e}", err=True)
            raise typer.Exit(2) from None
    if any(r.error is not None for r in results):
        raise typer.Exit(2)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
