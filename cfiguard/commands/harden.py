"""`cfiguard harden`: one file (`-o OUT` or `--in-place`) or many (`--out-dir DIR`, `--jobs N`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cfiguard.commands.common import Reporter, die, jobs_count
from cfiguard.integrations.batch import POLICIES, Job, harden_many, harden_one, worst

HELP = """Harden ELF executables and shared libraries: every indirect call, indirect jump and return of the
output checks that its target carries the right label.

**Three ways to name the output** (give exactly one):

* `cfiguard harden IN -o OUT`: one file. IN is never modified.
* `cfiguard harden FILE... --in-place`: replace each FILE, atomically, only after it succeeded.
* `cfiguard harden FILE... --out-dir DIR [--jobs N]`: each FILE to `DIR/<its name>`, N at a time.

**Safety.** Each output is checked by the independent verifier (`cfiguard verify`) before it is written; an
output that would not pass is never written (exit 1, the first findings on stderr). Outputs are written to a
temporary file and renamed, with the input's permission bits: an interrupted run leaves no partial file.
The same input, options and cfiguard give a byte-identical output.

**Messages** (stderr): one summary line per file, `cfiguard: IN: N sites, G guarded, S proven safe, U
unguarded; ...`, or one line `cfiguard: error: ...`. `--quiet` keeps only errors and warnings, `--verbose`
adds every unguarded site and function left in place, with the reason, and cache hits and misses. With
several files on a terminal, a progress bar.

**Batches.** One bad file is reported and the others go on. Every file is hardened in a worker process; a
file whose process dies (a crash, the OOM killer) is reported alone. Each worker needs the memory of one
hardening: choose `--jobs` accordingly.

**Cache** (`--cache DIR` or `CFIGUARD_CACHE=DIR`): outputs are stored under a key made of the sha256 of the
input bytes, the cfiguard version (and a digest of its code), the options and `SOURCE_DATE_EPOCH`. A hit
copies the stored output (and report) instead of hardening. Share a cache only with writers you trust.

**Reports**: `--report FILE.json` (one file) or `--report-dir DIR` (`DIR/<output name>.json` per file): every
site with its outcome and reason, format 1, see docs/usage.md.

**Exit codes**: 0 success; 1 policy failure (`--strict` with unguarded sites, an output that does not
verify); 2 unusable input or output (`cfiguard: error: ...`, nothing written). A batch exits with the worst
code of its files.

Examples:

```
cfiguard harden /bin/ls -o ls.cfi --report ls.json
cfiguard harden build/app build/libfoo.so --in-place --strict
cfiguard harden dist/bin/* --out-dir hardened/ -j 0 --cache ~/.cache/cfiguard
```
"""


def harden(
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="FILE",
        help="ELF executables or shared libraries to harden (never modified, unless --in-place).",
        show_default=False,
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Where to write the hardened binary (exactly one FILE)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Write each hardened FILE to `DIR/<its name>` (any number of FILEs)."
    ),
    in_place: bool = typer.Option(
        False,
        "--in-place",
        help="Replace each FILE (atomically, only after success) instead of -o/--out-dir.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Fail (exit 1, no output) if any site would stay unguarded."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write a JSON report of every site here (exactly one FILE)."
    ),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="Write one JSON report per file, `DIR/<output name>.json`."
    ),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Skip the independent verification of the output (by default an output that fails "
        "`cfiguard verify` is not written, and harden exits 1).",
    ),
    audit: bool = typer.Option(
        False,
        "--audit",
        help="Audit mode, for a gradual roll-out: the hardened binary logs each violation "
        "(`cfiguard: CFI violation (audit, continuing): ...`) and lets the transfer happen. "
        "`cfiguard verify` fails such a file unless --allow-audit; `cfiguard info` shows the mode.",
    ),
    race_free_returns: bool = typer.Option(
        False,
        "--race-free-returns",
        help="Returns of functions that clobber r10/r11 pop their address and jump through the checked "
        "register: no other thread can swap it between check and use, at the cost of the return-stack "
        "buffer's prediction (docs/guards.md has the measured cost).",
    ),
    policy: str = typer.Option(
        "coarse",
        "--policy",
        help=f"Label policy. Implemented: {', '.join(POLICIES)} (docs/usage.md).",
        autocompletion=lambda: list(POLICIES),
    ),
    jobs: int = typer.Option(1, "-j", "--jobs", help="Files hardened at the same time; 0: one per CPU."),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        envvar="CFIGUARD_CACHE",
        help="Content-addressed cache directory (created if missing): a hit copies the stored output.",
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only errors and warnings."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Also print unguarded sites, functions left in place, cache use."
    ),
) -> None:
    if sum((output is not None, out_dir is not None, in_place)) != 1:
        die("give exactly one of -o OUTPUT, --out-dir DIR and --in-place")
    if quiet and verbose:
        die("--quiet and --verbose exclude each other")
    if policy not in POLICIES:
        die(f"--policy {policy!r}: unknown (implemented: {', '.join(POLICIES)})")
    workers = jobs_count(jobs)
    if output is not None and len(inputs) != 1:
        die(f"-o names one output, but {len(inputs)} files were given (use --out-dir DIR)")
    if report is not None and len(inputs) != 1:
        die(f"--report names one report, but {len(inputs)} files were given (use --report-dir DIR)")
    for d, what in ((out_dir, "--out-dir"), (report_dir, "--report-dir")):
        if d is not None and not d.is_dir():
            die(f"{what} {d}: not a directory")
    if cache is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            die(f"--cache {cache}: {e.strerror or e}")

    if out_dir is not None:
        outs = [out_dir / p.name for p in inputs]
        seen: dict[Path, Path] = {}
        for p, o in zip(inputs, outs, strict=True):
            if o in seen:
                die(f"{seen[o]} and {p} would both be written to {o}")
            seen[o] = p
    else:
        outs = [output] if output is not None else list(inputs)

    def job(i: Path, o: Path) -> Job:
        rep = report if report is not None else (report_dir / f"{o.name}.json" if report_dir else None)
        return Job(
            str(i),
            str(o),
            in_place=in_place,
            strict=strict,
            verify=not no_verify,
            policy=policy,
            race_free_returns=race_free_returns,
            audit=audit,
            report=None if rep is None else str(rep),
            cache=None if cache is None else os.fspath(cache),
        )

    todo = [job(i, o) for i, o in zip(inputs, outs, strict=True)]
    batch = out_dir is not None or len(todo) > 1
    with Reporter(quiet, verbose, total=len(todo) if batch else 0) as rep:
        if batch:
            outcomes = harden_many(todo, workers, rep.outcome)
        else:
            outcomes = [harden_one(todo[0])]
            rep.outcome(outcomes[0])
    if batch and not quiet:
        ok = [o for o in outcomes if o.exit_code == 0]
        cached = sum(o.cached for o in ok)
        bad = len(outcomes) - len(ok)
        typer.echo(
            f"cfiguard: {len(outcomes)} file{'s' if len(outcomes) != 1 else ''}: {len(ok)} hardened"
            + (f" ({cached} from the cache)" if cached else "")
            + (f", {bad} failed" if bad else ""),
            err=True,
        )
    raise typer.Exit(worst(outcomes))
