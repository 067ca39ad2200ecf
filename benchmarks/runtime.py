"""Runtime overhead: calibrate each workload, check both sides compute the same thing, run interleaved pairs.

Why calibrate on the original: one run should take 0.5-2 s of CPU so that process start-up (a few ms) is noise
and the timer resolution is irrelevant; the same size is then used for both sides. Why compare outputs: a
hardened binary that is fast because it computes something else (or crashes early) must not produce a ratio.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import PairStats, Run, interleave, run_child, summarise
from benchmarks.workloads import Cmd, Workload, digest


@dataclass
class RuntimeResult:
    name: str
    group: str
    n: int
    ok: bool
    error: str = ""
    stats: PairStats | None = None
    hardened: tuple[str, ...] = ()  # the files that differ between the two sides

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "group": self.group,
            "n": self.n,
            "ok": self.ok,
            "error": self.error,
            "stats": self.stats.as_dict() if self.stats else None,
            "hardened": list(self.hardened),
        }


class Runner:
    def __init__(self, work: Path, nice: int, timeout: float) -> None:
        self.work = work
        self.nice = nice
        self.timeout = timeout

    def run(self, c: Cmd, stdout_path: str | None = os.devnull) -> Run:
        return run_child(c.argv, c.env, c.stdin, stdout_path, timeout=self.timeout, nice=self.nice)

    def calibrate(self, w: Workload, target: float, max_n: int = 10_000) -> int:
        """Smallest n (from w.n up) whose original run takes at least `target` CPU seconds, growing
        geometrically; the final n is scaled to land near the target rather than overshoot by 2x."""
        n = w.n
        while True:
            r = self.run(w.command("orig", n))
            if r.returncode != 0:
                raise RuntimeError(f"original failed (exit {r.returncode}): {r.last_stderr_line}")
            if r.cpu >= target * 0.7 or n >= max_n:
                return n
            grow = target / max(r.cpu, 0.005)
            n = min(max_n, max(n + 1, math.ceil(n * min(grow, 20.0))))

    def validate(self, w: Workload, n: int) -> str:
        """Run each side once with stdout to a file; '' if both exit 0 with the same output, else why not."""
        outs = {}
        for side in ("orig", "hard"):
            path = self.work / f"validate-{side}.out"
            r = self.run(w.command(side, n), str(path))
            if r.returncode != 0:
                return f"{side} exit {r.returncode}: {r.last_stderr_line}"
            outs[side] = digest(path.read_bytes())
            path.unlink()
        if outs["orig"] != outs["hard"]:
            return f"outputs differ (sha256 {outs['orig']} vs {outs['hard']})"
        return ""

    def measure(self, w: Workload, pairs: int, target: float) -> RuntimeResult:
        try:
            n = self.calibrate(w, target)
        except RuntimeError as e:
            return RuntimeResult(w.name, w.group, w.n, False, str(e), hardened=tuple(w.hardened))
        err = self.validate(w, n)
        if err:
            return RuntimeResult(w.name, w.group, n, False, err, hardened=tuple(w.hardened))
        a, b = interleave(
            lambda: self.run(w.command("orig", n)),
            lambda: self.run(w.command("hard", n)),
            pairs,
            warmup=False,
        )
        bad = [r for r in a + b if r.returncode != 0]
        if bad:
            return RuntimeResult(
                w.name,
                w.group,
                n,
                False,
                f"exit {bad[0].returncode}: {bad[0].last_stderr_line}",
                hardened=tuple(w.hardened),
            )
        return RuntimeResult(w.name, w.group, n, True, stats=summarise(a, b), hardened=tuple(w.hardened))
