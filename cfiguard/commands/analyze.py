"""`cfiguard analyze`: the precision of the label policy for a file, without writing anything."""

from __future__ import annotations

import json
from pathlib import Path

import typer

SCHEMA, VERSION = "cfiguard-analyze", 1

HELP = """Analyze FILE and report how precise its CFI policy would be, without writing anything: the functions,
the indirect sites by kind, how many addresses of the module each site's guard accepts, the number of
equivalence classes (distinct target sets), AIR (Average Indirect target Reduction, as BinCFI defines it:
the mean over sites of 1 - |targets| / executable bytes), AICT (the mean number of allowed targets per
indirect call site), and the largest target set with a site that has it. Sites whose set is as wide as the
coarse policy makes it are listed with the reason.

Targets outside the module are not counted: the coarse policy accepts any of them (docs/security.md).

**Policies**: `coarse` (BinCFI/CCFIR classes: RET, CALL, JMP). `fine` is not implemented yet.

**Formats**: `text` (a summary) or `json` (schema `cfiguard-analyze`, version 1; top-level keys `policy`,
`air` (a fraction from 0 to 1), `aict`, `classes`, `sites`, plus `functions`, `code_bytes`, `targets`,
`largest`, `by_kind`; docs/precision.md).

**Exit codes**: 0 analyzed; 2 unusable input, or a policy that is not implemented.
"""


def analyze(
    file: Path = typer.Argument(..., metavar="FILE", help="ELF executable or shared library to analyze."),
    fmt: str = typer.Option(
        "text", "--format", help="Output format: text or json.", autocompletion=lambda: ["text", "json"]
    ),
    policy: str = typer.Option(
        "coarse",
        "--policy",
        help="Label policy: coarse (fine is planned).",
        autocompletion=lambda: ["coarse"],
    ),
) -> None:
    import os

    from cfiguard import __version__, api
    from cfiguard.commands.common import die, fail
    from cfiguard.errors import CfiguardError

    if fmt not in ("text", "json"):
        typer.echo(f"cfiguard: error: unknown --format {fmt!r} (use text or json)", err=True)
        raise typer.Exit(2)
    try:
        facts, p = api.analyze(str(file), policy)
    except CfiguardError as e:
        fail(e)
    except Exception as e:  # noqa: BLE001 - one line and exit 2, as harden does
        if os.environ.get("CFIGUARD_DEBUG"):
            raise
        die(f"{file}: internal error ({type(e).__name__}: {e}); set CFIGUARD_DEBUG=1")
    doc = to_json(str(file), len(facts.functions), p, __version__)
    typer.echo(json.dumps(doc, indent=1) if fmt == "json" else to_text(doc), nl=fmt == "json")


def to_json(path: str, functions: int, p, version: str) -> dict:
    by_kind = {}
    for kind in ("call", "jmp", "ret"):
        ks = [s for s in p.sites if s.kind == kind]
        by_kind[kind] = {
            "sites": len(ks),
            "mean_targets": round(sum(s.targets for s in ks) / len(ks), 3) if ks else 0,
        }
    big = p.largest
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "tool": {"name": "cfiguard", "version": version},
        "input": path,
        "policy": p.policy,
        "air": p.air,
        "aict": p.aict,
        "classes": len(p.class_sizes),
        "functions": functions,
        "code_bytes": p.code_bytes,
        "targets": p.targets,
        "by_kind": by_kind,
        "largest": None
        if big is None
        else {"targets": big.targets, "kind": big.kind, "address": big.address},
        "sites": [
            {
                "address": s.address,
                "kind": s.kind,
                "targets": s.targets,
                "class": s.target_class,
                "fallback": s.fallback,
            }
            for s in p.sites
        ],
    }


def to_text(doc: dict) -> str:
    k = doc["by_kind"]
    big = doc["largest"]
    lines = [
        f"{doc['input']}: policy {doc['policy']}, {doc['functions']} functions, {doc['code_bytes']} bytes of code",
        f"  sites: {k['call']['sites']} indirect calls, {k['jmp']['sites']} indirect jumps, {k['ret']['sites']} returns",
        f"  labelled targets: {doc['targets']['call']} CALL, {doc['targets']['jmp']} JMP, {doc['targets']['ret']} RET",
        f"  AIR {doc['air'] * 100:.4f}%   AICT {doc['aict']:.1f}   classes {doc['classes']}",
    ]
    if big:
        lines.append(f"  largest target set: {big['targets']} ({big['kind']} at {big['address']:#x})")
    fallback = sum(1 for s in doc["sites"] if s["fallback"])
    lines.append(f"  {fallback} site(s) at coarse precision (--format json lists each with the reason)")
    return "\n".join(lines) + "\n"
