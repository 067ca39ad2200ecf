"""What every subcommand shares: error exits, and a reporter that prints lines and, on a terminal, a rich
progress bar for batches. Messages go to stderr; stdout carries only reports (`verify`, `info`)."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

from cfiguard.errors import CfiguardError


def die(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"cfiguard: error: {message}", err=True)
    raise typer.Exit(code)


def fail(e: CfiguardError) -> NoReturn:
    die(str(e), e.exit_code)


def jobs_count(jobs: int) -> int:
    if jobs < 0:
        die(f"--jobs {jobs}: must be 0 (one per core) or more")
    return jobs or os.cpu_count() or 1


class Reporter:
    """Prints outcome lines; with `total` > 1 on a terminal (and not --quiet), under a rich progress bar.

    --quiet: only errors and warnings. --verbose: also per-file details (unguarded sites, cache keys)."""

    def __init__(self, quiet: bool = False, verbose: bool = False, total: int = 0, what: str = "hardening"):
        self.quiet, self.verbose = quiet, verbose
        self.progress = None
        if total > 1 and not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.progress.add_task(what, total=total)

    def __enter__(self) -> Reporter:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            typer.echo(text, err=True)

    def outcome(self, o) -> None:
        """One file done: its findings and errors always, the summary unless --quiet, details if --verbose."""
        for text in o.lines:
            self.line(text)
        if o.exit_code == 0 and o.summary and not self.quiet:
            self.line(o.summary)
        if self.verbose:
            for text in o.details:
                self.line(text)
        if self.progress is not None:
            self.progress.advance(self.task)
