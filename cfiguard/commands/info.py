"""`cfiguard info`: a checksec-style summary of what the `.cfiguard` manifest of each file says."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Summarize FILEs, checksec-style: hardened by cfiguard or not, and from the `.cfiguard` manifest the
cfiguard version that hardened it, the label policy, the coverage (sites guarded or proven safe, of all
indirect calls, jumps and returns found), the mode (`enforce`: a violation aborts) and the date
(`SOURCE_DATE_EPOCH` at hardening time; `not recorded` without it, since outputs are reproducible).

This only reads what the manifest claims; `cfiguard verify` checks it.

**Formats**: `text` (a table on stdout) or `json` (schema `cfiguard-info`, version 1: one object per file
with `status` = `hardened`, `not hardened`, `invalid manifest` or `unusable`).

**Exit codes**: 0 every FILE could be read (hardened or not); 2 some FILE is unusable (missing, not ELF).

Example:

```
$ cfiguard info /bin/ls ls.cfi
FILE     CFI  VERSION  POLICY  COVERAGE          MODE     DATE
/bin/ls  no   -        -       -                 -        -
ls.cfi   yes  0.1.0    coarse  100.0% (492/492)  enforce  not recorded
```
"""


def info(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="ELF files to summarize."),
    fmt: str = typer.Option(
        "text", "--format", help="Output format: text or json.", autocompletion=lambda: ["text", "json"]
    ),
) -> None:
    from cfiguard import __version__, api
    from cfiguard.integrations.manifest import render_json, render_text

    if fmt not in ("text", "json"):
        typer.echo(f"cfiguard: error: unknown --format {fmt!r} (use text or json)", err=True)
        raise typer.Exit(2)
    records = [api.info(str(f)) for f in files]
    for r in records:
        if r["status"] == "unusable":
            typer.echo(f"cfiguard: error: {r['path']}: {r['error']}", err=True)
        elif r["status"] == "invalid manifest":
            typer.echo(f"cfiguard: warning: {r['path']}: {r['error']}", err=True)
    typer.echo(render_text(records) if fmt == "text" else render_json(records, __version__), nl=False)
    raise typer.Exit(2 if any(r["status"] == "unusable" for r in records) else 0)
