"""Cost of hardening and verifying: wall time, CPU time and peak RSS of the `cfiguard` child process.

Why a child process through the CLI: that is what a user runs, and it is the only way to get the peak RSS of
one hardening alone (ru_maxrss from wait4 of that child). A failure is a result, not a crash: the record keeps
the exit code and the last stderr line so that the table can say what went wrong.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import elfinfo
from benchmarks.measure import run_child


@dataclass
class RewriteRecord:
    """One `cfiguard harden` (or `verify`) of one file."""

    action: str  # harden or verify
    input: str
    input_bytes: int
    code_bytes: int  # executable PT_LOAD segments
    text_bytes: int  # SHF_EXECINSTR sections
    ok: bool
    returncode: int
    wall: float
    cpu: float
    maxrss_kib: int
    sites: dict = field(default_factory=dict)  # report counts (harden only)
    functions: dict = field(default_factory=dict)
    summary: str = ""  # the one-line summary or the last stderr line
    output: str = ""

    @property
    def mb_per_s_wall(self) -> float:
        return self.code_bytes / 1e6 / self.wall if self.wall > 0 else 0.0

    @property
    def mb_per_s_cpu(self) -> float:
        return self.code_bytes / 1e6 / self.cpu if self.cpu > 0 else 0.0

    @property
    def rss_over_input(self) -> float:
        return self.maxrss_kib * 1024 / self.input_bytes if self.input_bytes else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            mb_per_s_wall=round(self.mb_per_s_wall, 3),
            mb_per_s_cpu=round(self.mb_per_s_cpu, 3),
            rss_over_input=round(self.rss_over_input, 2),
        )
        return d


def _sizes(path: str) -> tuple[int, int, int]:
    try:
        return os.path.getsize(path), elfinfo.code_bytes(path), elfinfo.text_bytes(path)
    except (OSError, ValueError):
        return 0, 0, 0


def harden(
    src: str,
    dst: str,
    report: str | None = None,
    timeout: float | None = None,
    nice: int = 0,
    self_check: bool = True,
) -> RewriteRecord:
    """Harden src into dst with the CLI, timed. An existing dst is removed first so a failure cannot leave a
    stale binary that a later runtime benchmark would silently use. `self_check=False` passes --no-verify
    (harden's own verification of its output is skipped), to measure what that check costs."""
    Path(dst).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "cfiguard.cli", "harden", src, "-o", dst] + (
        [] if self_check else ["--no-verify"]
    )
    if report:
        Path(report).unlink(missing_ok=True)
        argv += ["--report", report]
    r = run_child(argv, timeout=timeout, nice=nice)
    size, code, text = _sizes(src)
    rec = RewriteRecord(
        "harden" if self_check else "harden --no-verify", src, size, code, text,
        r.returncode == 0 and os.path.exists(dst), r.returncode, r.wall,
        r.cpu, r.maxrss_kib, summary=r.last_stderr_line, output=dst,
    )  # fmt: skip
    if report and os.path.exists(report):
        with open(report) as f:
            rep = json.load(f)
        rec.sites = rep.get("counts", {})
        rec.functions = rep.get("functions", {})
    return rec


def verify_available() -> bool:
    """`cfiguard verify` is written separately and may be missing from this checkout."""
    r = run_child([sys.executable, "-m", "cfiguard.cli", "verify", "--help"], timeout=120)
    return r.returncode == 0


def verify(path: str, original: str, timeout: float | None = None, nice: int = 0) -> RewriteRecord:
    """Verify a hardened file, timed. Exit 1 (findings) still counts as a completed verification: the time and
    memory are what we measure; the status is reported beside them."""
    argv = [sys.executable, "-m", "cfiguard.cli", "verify", path, "--format", "json"]
    r = run_child(argv, timeout=timeout, nice=nice)
    size, code, text = _sizes(original)
    summary = r.last_stderr_line
    findings = 0
    try:
        doc = json.loads(r.stdout)
        files = doc.get("files", doc if isinstance(doc, list) else [])
        for f in files if isinstance(files, list) else []:
            findings += len(f.get("findings", [])) if isinstance(f, dict) else 0
    except (ValueError, AttributeError):
        pass
    rec = RewriteRecord(
        "verify", original, size, code, text, r.returncode in (0, 1), r.returncode, r.wall, r.cpu,
        r.maxrss_kib, summary=summary, output=path,
    )  # fmt: skip
    rec.sites = {"findings": findings}
    return rec
