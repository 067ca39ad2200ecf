"""`cfiguard wheel`: harden the ELF files of a Python wheel (integrations.wheel)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cfiguard.commands.common import Reporter, die, fail, jobs_count
from cfiguard.errors import CfiguardError

HELP = """Harden every ELF file in a wheel (extension modules, vendored libraries in `<pkg>.libs/`,
executables), in the manner of `auditwheel repair`, and write the result to `OUTDIR/<same file name>`.

The new wheel keeps every member, its order, timestamps and permission bits; `RECORD` gets the new hashes
and sizes (RECORD signatures no longer match and are dropped), so `pip install` takes it as it took the
original. Each hardened file has passed the independent verifier, as with `cfiguard harden`. Members already
hardened by cfiguard are kept as they are.

**A member that cannot be hardened** (an unsupported or refused file, unguarded sites under `--strict`, an
output that fails verification) is reported, and nothing is written: exit 1. With `--skip-unhardenable` it
is kept unhardened, listed as a warning, and the wheel is written.

**Exit codes**: 0 written; 1 some member cannot be hardened (nothing written); 2 the wheel or OUTDIR is
unusable.

Example:

```
pip download msgpack --no-deps --only-binary=:all: -d dl/
cfiguard wheel dl/msgpack-*.whl -o wheelhouse/
pip install wheelhouse/msgpack-*.whl
```
"""


def wheel(
    wheel: Path = typer.Argument(..., metavar="WHEEL", help="The wheel (.whl) to harden (never modified)."),
    out_dir: Path = typer.Option(
        ..., "-o", "--out-dir", help="Directory for the hardened wheel (same file name as WHEEL)."
    ),
    skip_unhardenable: bool = typer.Option(
        False, "--skip-unhardenable", help="Keep members that cannot be hardened as they are (warned)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="A member with any site left unguarded cannot be hardened."
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip the independent verification of each hardened member."
    ),
    jobs: int = typer.Option(1, "-j", "--jobs", help="Members hardened at the same time; 0: one per CPU."),
    cache: Path | None = typer.Option(
        None, "--cache", envvar="CFIGUARD_CACHE", help="Content-addressed cache directory (see `harden`)."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only errors, warnings and the result."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Also print unguarded sites, cache use."),
) -> None:
    from cfiguard import api

    if quiet and verbose:
        die("--quiet and --verbose exclude each other")
    workers = jobs_count(jobs)
    if cache is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            die(f"--cache {cache}: {e.strerror or e}")
    name = wheel.name
    with Reporter(quiet, verbose) as rep:

        def done(o) -> None:
            if o.exit_code and skip_unhardenable:  # not fatal: say so once, as a warning
                rep.line(f"cfiguard: warning: {o.error}; kept unhardened (--skip-unhardenable)")
                return
            rep.outcome(o)

        try:
            res = api.harden_wheel(
                str(wheel),
                str(out_dir),
                strict=strict,
                verify=not no_verify,
                skip_unhardenable=skip_unhardenable,
                workers=workers,
                cache=None if cache is None else os.fspath(cache),
                on_done=done,
            )
        except CfiguardError as e:
            fail(e)
        for m in res.members:
            if m.status == "already hardened" and not quiet:
                rep.line(f"cfiguard: {name}: {m.name}: already hardened by cfiguard; kept")
    failed = [m.name for m in res.members if m.status == "failed"]
    if failed:
        die(
            f"{name}: {len(failed)} file(s) cannot be hardened: {', '.join(failed)}; nothing written "
            "(--skip-unhardenable keeps them unhardened)",
            res.exit_code,
        )
    n = res.count("hardened")
    labels = {"already hardened": "already hardened", "kept": "kept unhardened"}
    extra = [f"{k} {text}" for s, text in labels.items() if (k := res.count(s))]
    extra_text = f" ({', '.join(extra)})" if extra else ""
    if n == 0 and not res.count("already hardened") and not res.count("kept"):
        typer.echo(f"cfiguard: {name}: no ELF files; copied unchanged to {res.output}", err=True)
    else:
        typer.echo(f"cfiguard: {name}: {n} file(s) hardened{extra_text}; wrote {res.output}", err=True)
    raise typer.Exit(0)
