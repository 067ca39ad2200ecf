"""Shared helpers for the real-world suites: run the real `cfiguard harden` CLI, read its report, add up
coverage, and build a clean environment for the programs under test.

Knobs (environment):
  CFIGUARD_REALWORLD=1          run the tests marked `realworld` (see conftest.py)
  CFIGUARD_REALWORLD_OUT=DIR    keep results (JSON, logs, hardened files of failures) in DIR
  CFIGUARD_REALWORLD_JOBS=N     parallel jobs for hardening and test runners (default 2)
  CFIGUARD_HARDEN_TIMEOUT=S     timeout of one `cfiguard harden` (default 1800 s)
  CFIGUARD_SOURCE=DIR           run the cfiguard package found in DIR (e.g. `git archive HEAD cfiguard`
                                unpacked there) instead of this checkout's: a long sweep stays on one version
                                while the work tree changes
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REALWORLD_ENV = "CFIGUARD_REALWORLD"
OUT_ENV = "CFIGUARD_REALWORLD_OUT"

# Variables of the test runner's own interpreter that must not leak into the programs under test.
_PYTHON_VARS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONWARNINGS",
)


def realworld_enabled() -> bool:
    return os.environ.get(REALWORLD_ENV, "") not in ("", "0")


def jobs() -> int:
    return max(1, int(os.environ.get("CFIGUARD_REALWORLD_JOBS", "2")))


def source_dir() -> Path:
    """The directory whose `cfiguard` package the CLI runs from (CFIGUARD_SOURCE, default the repo)."""
    return Path(os.environ.get("CFIGUARD_SOURCE") or REPO).resolve()


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=prepend_path("PYTHONPATH", str(source_dir()), os.environ))


def cli_command(*args: str) -> list[str]:
    """`python -m cfiguard.cli ARGS` running the package of source_dir(). `-P` (Python 3.11+) keeps the
    current directory off sys.path: run from a checkout, `-m` would otherwise import the checkout's
    package, whatever PYTHONPATH says."""
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-m", "cfiguard.cli", *args]


def harden_timeout() -> float:
    return float(os.environ.get("CFIGUARD_HARDEN_TIMEOUT", "1800"))


def out_dir(default: Path) -> Path:
    """Where a suite keeps its results: CFIGUARD_REALWORLD_OUT if set, else `default` (a pytest tmp dir)."""
    d = Path(os.environ.get(OUT_ENV) or default).resolve()
    d.mkdir(parents=True, exist_ok=True)
    return d


def clean_env(extra: Mapping[str, str] | None = None, drop: Iterable[str] = ()) -> dict[str, str]:
    """os.environ without the test runner's Python variables (and `drop`), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _PYTHON_VARS and k not in set(drop)}
    env.update(extra or {})
    return env


def prepend_path(var: str, value: str, env: Mapping[str, str]) -> str:
    old = env.get(var, "")
    return f"{value}:{old}" if old else value


@dataclass
class Finding:
    """One finding of the verifier (from a harden report's `verification.findings`, harden's stderr, or
    `cfiguard verify --format json`)."""

    check: str
    address: int | None
    reason: str

    def as_dict(self) -> dict:
        return {
            "check": self.check,
            "address": None if self.address is None else hex(self.address),
            "reason": self.reason,
        }


# harden's stderr when its own output fails verification: `cfiguard: [0xADDR: ]CHECK: REASON`
_FINDING_LINE = re.compile(r"^cfiguard: (?:(0x[0-9a-fA-F]+): )?([a-z][a-z0-9_-]*): (.*)$")


@dataclass
class Hardened:
    """One run of `cfiguard harden`. status: ok (exit 0), unverified (exit 1: the output did not pass the
    independent verifier, nothing was written), refused (exit 2 with a `cfiguard: error:` line: unusable
    input), crashed (exit 2 with an internal error, or any other exit), timeout."""

    src: str
    out: Path
    rc: int | None
    stderr: str
    seconds: float
    report: dict | None = None
    problems: list[str] = field(default_factory=list)  # report inconsistencies

    @property
    def status(self) -> str:
        if self.rc is None:
            return "timeout"
        if self.rc == 2 and ": internal error (" in self.error_line:
            return "crashed"  # an unexpected exception, reported as one line with exit 2: not by design
        return {0: "ok", 1: "unverified", 2: "refused"}.get(self.rc, "crashed")

    @property
    def findings(self) -> list[Finding]:
        """The verifier's findings when harden exited 1 (from the report, else from stderr)."""
        ver = (self.report or {}).get("verification") or {}
        if ver.get("findings"):
            return [Finding(f["check"], f.get("address"), f.get("reason") or "") for f in ver["findings"]]
        out = []
        for ln in self.stderr.splitlines():
            m = _FINDING_LINE.match(ln)
            if m and m.group(2) != "error":
                out.append(Finding(m.group(2), int(m.group(1), 16) if m.group(1) else None, m.group(3)))
        return out

    @property
    def error_line(self) -> str:
        """The `cfiguard: error: ...` line, or the last stderr line (a traceback's exception)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        for ln in lines:
            if ln.startswith("cfiguard: error:"):
                return ln
        return lines[-1] if lines else ""

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.report["counts"]) if self.report else {}


def harden(src: str | Path, out: Path, report: Path | None = None, timeout: float | None = None) -> Hardened:
    """Run the real CLI (`python -m cfiguard.cli harden SRC -o OUT --report R`) on `src`."""
    report = report or out.with_name(out.name + ".report.json")
    cmd = cli_command("harden", str(src), "-o", str(out), "--report", str(report))
    env = cli_env()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=timeout or harden_timeout(),
        )
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, stderr = None, f"cfiguard harden timed out after {e.timeout:.0f} s"
    h = Hardened(str(src), out, rc, stderr, time.monotonic() - t0)
    if rc == 0:
        h.report = json.loads(report.read_text())
        h.problems = report_problems(h.report)
    elif rc == 1 and report.exists():  # not verified: the report of the rejected output is still written
        try:
            h.report = json.loads(report.read_text())
        except ValueError:
            pass
    return h


@dataclass
class Verified:
    """One run of `cfiguard verify FILE` (exit 0 verified, 1 findings, 2 unusable; None: timed out)."""

    rc: int | None
    findings: list[Finding]
    error: str | None
    seconds: float

    @property
    def status(self) -> str:
        if self.rc is None:
            return "timeout"
        return {0: "verified", 1: "failed", 2: "unusable"}.get(self.rc, "crashed")


def verify(path: str | Path, timeout: float | None = None) -> Verified:
    """Run the real CLI (`python -m cfiguard.cli verify --format json FILE`) as a separate process."""
    cmd = cli_command("verify", "--format", "json", str(path))
    env = cli_env()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=timeout or harden_timeout(),
        )
    except subprocess.TimeoutExpired as e:
        return Verified(None, [], f"cfiguard verify timed out after {e.timeout:.0f} s", time.monotonic() - t0)
    findings: list[Finding] = []
    error = None
    try:
        for f in json.loads(proc.stdout)["files"]:
            error = error or f.get("error")
            findings += [Finding(x["check"], x.get("address"), x.get("reason") or "") for x in f["findings"]]
    except (ValueError, KeyError, TypeError):
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        error = lines[-1] if lines else f"cfiguard verify exited {proc.returncode} with no JSON output"
    return Verified(proc.returncode, findings, error, time.monotonic() - t0)


def report_problems(doc: dict) -> list[str]:
    """Inconsistencies in a harden report: counts that do not add up, unguarded sites with no reason."""
    c, sites = doc["counts"], doc["sites"]
    out = []
    if c["found"] != c["guarded"] + c["safe"] + c["unguarded"]:
        out.append(f"counts do not add up: {c}")
    if len(sites) != c["found"]:
        out.append(f"{len(sites)} sites listed, {c['found']} counted")
    for outcome in ("guarded", "safe", "unguarded"):
        n = sum(1 for s in sites if s["outcome"] == outcome)
        if n != c[outcome]:
            out.append(f"{n} {outcome} sites listed, {c[outcome]} counted")
    missing = [s for s in sites if s["outcome"] == "unguarded" and not s.get("reason")]
    if missing:
        out.append(f"{len(missing)} unguarded sites without a reason, e.g. {hex(missing[0]['address'])}")
    return out


_HEX = re.compile(r"0x[0-9a-fA-F]+")
_BYTES = re.compile(r"\b[0-9a-f]{6,}\b")  # instruction bytes
_NUM = re.compile(r"\b\d+\b")


def reason_class(reason: str) -> str:
    """A report reason with addresses, instruction bytes and numbers elided, so that equal causes group
    together."""
    return _NUM.sub("N", _BYTES.sub("…", _HEX.sub("0x…", reason)))


@dataclass
class Coverage:
    """Sites added up over several reports."""

    found: int = 0
    guarded: int = 0
    safe: int = 0
    unguarded: int = 0
    reasons: Counter = field(default_factory=Counter)  # reason class -> unguarded sites
    kinds: Counter = field(default_factory=Counter)  # kind -> unguarded sites
    modules: Counter = field(default_factory=Counter)  # module -> unguarded sites

    def add(self, name: str, doc: dict) -> None:
        c = doc["counts"]
        self.found += c["found"]
        self.guarded += c["guarded"]
        self.safe += c["safe"]
        self.unguarded += c["unguarded"]
        for s in doc["sites"]:
            if s["outcome"] == "unguarded":
                self.reasons[reason_class(s.get("reason") or "(no reason)")] += 1
                self.kinds[s["kind"]] += 1
                self.modules[name] += 1

    @property
    def covered_fraction(self) -> float:
        return (self.guarded + self.safe) / self.found if self.found else 1.0

    def as_dict(self) -> dict:
        return {
            "found": self.found,
            "guarded": self.guarded,
            "safe": self.safe,
            "unguarded": self.unguarded,
            "covered_fraction": self.covered_fraction,
            "unguarded_by_reason": dict(self.reasons.most_common()),
            "unguarded_by_kind": dict(self.kinds.most_common()),
            "unguarded_by_module": dict(self.modules.most_common()),
        }


def is_elf(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def mapped_paths(pid_maps: str, basename: str) -> set[str]:
    """Paths of the mappings in a /proc/PID/maps text whose file name is `basename`."""
    out = set()
    for line in pid_maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and os.path.basename(parts[5]) == basename:
            out.add(parts[5])
    return out


def write_json(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
