"""Running children and summarising interleaved measurements.

Why CPU time from wait4 and not wall time: this machine is shared (2 cores, tests running beside us), so wall
time mostly measures the scheduler. user+sys CPU time of the child alone, read from its own rusage by wait4, is
what the hardened code costs; wall time is recorded too, for reference. Original and hardened runs alternate
(A B, then B A, ...) so that slow drifts of the machine (thermal, a neighbour starting a build) hit both sides
equally, and the statistic is the per-pair ratio rather than a ratio of independent means.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Run:
    """One finished child: CPU seconds (user+sys), wall seconds, peak RSS in KiB, exit status."""

    cpu: float
    wall: float
    maxrss_kib: int
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def last_stderr_line(self) -> str:
        lines = [ln for ln in self.stderr.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def run_child(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdin_path: str | None = None,
    stdout_path: str | None = None,
    timeout: float | None = None,
    nice: int = 0,
    cwd: str | None = None,
) -> Run:
    """Run argv to completion and return its own rusage from os.wait4, not RUSAGE_CHILDREN: the latter adds up
    every child and keeps the maximum RSS over all of them, so one child's peak RSS could not be told apart.
    stdout and stderr go to files (no pipes to drain while we block in wait4); a timer kills on timeout."""
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        out = stack.enter_context(open(stdout_path, "w+b") if stdout_path else tempfile.TemporaryFile())
        err = stack.enter_context(tempfile.TemporaryFile())
        t0 = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=out,
            stderr=err,
            cwd=cwd,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
        err.seek(0)
        stderr = err.read()
        if timer and wall >= timeout:  # type: ignore[operator]
            stderr += f"\ntimeout after {timeout} s".encode()
        stdout = b""
        if not stdout_path:
            out.seek(0)
            stdout = out.read()
    return Run(ru.ru_utime + ru.ru_stime, wall, ru.ru_maxrss, proc.returncode, stdout, stderr)


@dataclass
class PairStats:
    """Summary of per-pair ratios hardened/original."""

    pairs: int
    median_ratio: float
    min_ratio: float
    max_ratio: float
    q1_ratio: float
    q3_ratio: float
    wall_median_ratio: float
    orig_cpu_median: float
    hard_cpu_median: float
    ratios: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 (inclusive method); for fewer than 2 values both are the value itself."""
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarise(orig: Sequence[Run], hard: Sequence[Run]) -> PairStats:
    ratios = [h.cpu / o.cpu for o, h in zip(orig, hard, strict=True) if o.cpu > 0]
    walls = [h.wall / o.wall for o, h in zip(orig, hard, strict=True) if o.wall > 0]
    q1, q3 = quartiles(ratios)
    return PairStats(
        pairs=len(ratios),
        median_ratio=statistics.median(ratios),
        min_ratio=min(ratios),
        max_ratio=max(ratios),
        q1_ratio=q1,
        q3_ratio=q3,
        wall_median_ratio=statistics.median(walls),
        orig_cpu_median=statistics.median(r.cpu for r in orig),
        hard_cpu_median=statistics.median(r.cpu for r in hard),
        ratios=[round(r, 4) for r in ratios],
    )


def geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def interleave(
    run_a: Callable[[], Run], run_b: Callable[[], Run], pairs: int, warmup: bool = True
) -> tuple[list[Run], list[Run]]:
    """Run A and B alternately, swapping the order every pair (A B, B A, A B, ...), after one warm-up of each
    (page cache, dynamic loader cache) that is not counted, unless the caller has just run both."""
    if warmup:
        run_a()
        run_b()
    a_runs: list[Run] = []
    b_runs: list[Run] = []
    for i in range(pairs):
        if i % 2 == 0:
            a_runs.append(run_a())
            b_runs.append(run_b())
        else:
            b_runs.append(run_b())
            a_runs.append(run_a())
    return a_runs, b_runs
