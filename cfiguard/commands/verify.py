"""`cfiguard verify`: the independent check of hardened binaries (cfiguard.verify)."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Check hardened FILEs independently of the rewriter: every reachable `ret`, indirect call and indirect
`jmp` must be guarded by an exact guard sequence whose constants match the layout, and the label table and
code must be laid out as the `.cfiguard` manifest says. The verifier shares no code with the rewriter; it
parses the ELF file and decodes the code itself (docs/verifier.md). A file that is not hardened fails with
the `manifest` finding `not hardened by cfiguard`.

**Formats** (`--format`, to stdout or `-o REPORT`): `text` (one line `FILE: ADDRESS: CHECK: REASON` per
finding, nothing for a file that verifies), `json` (schema `cfiguard-verify`, version 1), `sarif` (SARIF
2.1.0, one result per finding, for code-scanning dashboards). One status line per file on stderr.

**Exit codes**: 0 every file verifies; 1 some file fails; 2 some file is unusable (missing, not ELF).

Examples:

```
cfiguard verify ls.cfi
cfiguard verify build/app build/libfoo.so --format sarif -o cfiguard.sarif
```
"""


def verify(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="Hardened ELF files to check."),
    fmt: str = typer.Option(
        "text",
        "--format",
        help="Report format: text, json or sarif.",
        autocompletion=lambda: ["text", "json", "sarif"],
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the report here instead of stdout."
    ),
    allow_audit: bool = typer.Option(
        False,
        "--allow-audit",
        help="Accept audit-mode binaries (`harden --audit`: violations are logged, not stopped). Without it "
        "they fail with the `audit` finding, so a release gate never passes one silently.",
    ),
) -> None:
    from cfiguard import __version__
    from cfiguard.verify import verify_file
    from cfiguard.verify.report import render, status

    if fmt not in ("text", "json", "sarif"):
        typer.echo(f"cfiguard: error: unknown --format {fmt!r} (use text, json or sarif)", err=True)
        raise typer.Exit(2)
    results = [verify_file(str(f), allow_audit=allow_audit) for f in files]
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
