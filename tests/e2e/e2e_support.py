"""Helpers shared by the end-to-end tests: flavour selection, running binaries, hardening.

Flavours are the names that ``make -C samples list-all`` prints,
``<prog>.<cc>.<opt>.<pie|nopie>[.cet][.stripped]`` (samples/Makefile documents the matrix).

Which flavours the tests use:

* default: a subset that still covers, for every program, both compilers, every -O level,
  PIE and non-PIE, stripped, and -fcf-protection=full builds. Each sample program gets
  one flavour per compiler x -O level (8), the remaining dimension rotating through
  pie, nopie, cet, pie.stripped, nopie.stripped, cet.stripped. Each attack demo gets
  {gcc,clang} x {O0,O2} x {pie,nopie} plus two stripped/CET extras per compiler.
* ``CFIGUARD_FULL_MATRIX=1``: every flavour the Makefile builds.

Other environment knobs:

* ``CFIGUARD_SAMPLES_DIR=DIR``: build into (and reuse) DIR instead of a fresh temporary
  directory; make only rebuilds what changed, which is handy while iterating.
* ``CFIGUARD_HARDEN_TIMEOUT=SECONDS``: limit for one ``cfiguard harden`` run (default 300).
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
FULL_MATRIX = os.environ.get("CFIGUARD_FULL_MATRIX", "") not in ("", "0")
HARDEN_TIMEOUT = float(os.environ.get("CFIGUARD_HARDEN_TIMEOUT", "300"))
RUN_TIMEOUT = 60.0
HAVE_CLANG = bool(shutil.which("clang") and shutil.which("clang++"))
CLANG_SKIP = (
    "clang/clang++ not installed, so samples/Makefile skipped the clang flavours (apt-get install clang)"
)
VIOLATION = b"cfiguard: CFI violation"

CCS = ("gcc", "clang")
OPTS = ("O0", "O1", "O2", "O3")
# The dimension that rotates across a sample program's compiler x -O slots.
ROTATION = ("pie", "nopie", "cet", "pie.stripped", "nopie.stripped", "cet.stripped")
ATTACK_BASE = [(cc, opt, pie) for cc in CCS for opt in ("O0", "O2") for pie in ("pie", "nopie")]
ATTACK_EXTRAS = {
    "gcc": [("O1", "nopie.stripped"), ("O3", "cet.stripped")],
    "clang": [("O1", "cet"), ("O3", "pie.stripped")],
}


def variant_of(name: str) -> tuple[str, str, str, str]:
    """(prog, cc, opt, variant) of a flavour name, variant being one of ROTATION."""
    prog, cc, opt, pie, *rest = name.split(".")
    variant = "cet" if "cet" in rest else pie
    if "stripped" in rest:
        variant += ".stripped"
    return prog, cc, opt, variant


def unstripped(name: str) -> str:
    return name.removesuffix(".stripped")


def _list_all_flavours() -> list[str]:
    try:
        out = subprocess.run(
            ["make", "-s", "--no-print-directory", "-C", str(SAMPLES), "list-all"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


ALL_FLAVOURS = _list_all_flavours()
PROGRAMS = list(dict.fromkeys(variant_of(f)[0] for f in ALL_FLAVOURS))
ATTACK_PROGRAMS = [p for p in PROGRAMS if p.startswith("attack_")]
SAMPLE_PROGRAMS = [p for p in PROGRAMS if not p.startswith("attack_")]


def _select() -> tuple[list[str], list[str]]:
    if FULL_MATRIX:
        samples = [f for f in ALL_FLAVOURS if variant_of(f)[0] in SAMPLE_PROGRAMS]
        attacks = [f for f in ALL_FLAVOURS if variant_of(f)[0] in ATTACK_PROGRAMS]
        return samples, attacks
    index = {variant_of(f): f for f in ALL_FLAVOURS}
    samples = []
    for i, prog in enumerate(SAMPLE_PROGRAMS):
        for k, (cc, opt) in enumerate(itertools.product(CCS, OPTS)):
            key = (prog, cc, opt, ROTATION[(i + k) % len(ROTATION)])
            if key in index:
                samples.append(index[key])
    attacks = []
    for prog in ATTACK_PROGRAMS:
        keys = [(prog, cc, opt, pie) for cc, opt, pie in ATTACK_BASE]
        keys += [(prog, cc, opt, v) for cc in CCS for opt, v in ATTACK_EXTRAS[cc]]
        attacks += [index[k] for k in keys if k in index]
    return samples, attacks


SAMPLE_FLAVOURS, ATTACK_FLAVOURS = _select()


def flavours_of(program: str) -> list[str]:
    """The selected flavours of one program."""
    return [f for f in SAMPLE_FLAVOURS + ATTACK_FLAVOURS if variant_of(f)[0] == program]


# ---- running --------------------------------------------------------------------------------


def run_binary(path: Path, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run a sample with bytes stdout/stderr captured, no stdin, in its own directory."""
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run(
        [str(path), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
        cwd=path.parent,
    )


def describe_run(p: subprocess.CompletedProcess[bytes]) -> str:
    return (
        f"exit {p.returncode}\n--- stdout (tail) ---\n{p.stdout[-1500:].decode(errors='replace')}"
        f"\n--- stderr (tail) ---\n{p.stderr[-1500:].decode(errors='replace')}"
    )


def output_diff(expected: bytes, actual: bytes, limit: int = 60) -> str:
    lines = difflib.unified_diff(
        expected.decode(errors="replace").splitlines(),
        actual.decode(errors="replace").splitlines(),
        "original",
        "hardened",
        lineterm="",
    )
    return "\n".join(itertools.islice(lines, limit))


def symbol_offset(path: Path, target: str = "win", base: str = "ref") -> str:
    """Hex string of sym(target) - sym(base), read with nm from an unstripped binary."""
    out = subprocess.run(
        ["nm", "--defined-only", str(path)], capture_output=True, text=True, check=True
    ).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    missing = {target, base} - syms.keys()
    assert not missing, f"{path.name}: no symbol {sorted(missing)}"
    return hex(syms[target] - syms[base])


# ---- hardening ------------------------------------------------------------------------------


def harden(src: Path, dst: Path, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``cfiguard harden src -o dst --report report [extra...]`` from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "cfiguard.cli",
        "harden",
        str(src),
        "-o",
        str(dst),
        "--report",
        str(report),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=HARDEN_TIMEOUT)


@dataclass
class Hardened:
    flavour: str
    proc: subprocess.CompletedProcess[str]
    path: Path
    report_path: Path

    def describe(self) -> str:
        return f"cfiguard harden {self.flavour}: exit {self.proc.returncode}\n{self.proc.stderr[-4000:]}"

    def require(self) -> Path:
        """The hardened binary; fails the test unless hardening succeeded."""
        assert self.proc.returncode == 0, self.describe()
        assert self.path.is_file(), f"{self.describe()}\nno output written to {self.path}"
        assert os.access(self.path, os.X_OK), f"{self.path} is not executable"
        return self.path

    def report(self) -> dict:
        assert self.report_path.is_file(), f"{self.describe()}\nno report written to {self.report_path}"
        return json.loads(self.report_path.read_text())


def check_report(report: dict) -> None:
    """Invariants every hardening report must satisfy."""
    counts = report["counts"]
    sites = report["sites"]
    found, guarded, safe, unguarded = (counts[k] for k in ("found", "guarded", "safe", "unguarded"))
    examples = [s for s in sites if s["outcome"] == "unguarded"][:10]
    assert unguarded == 0, f"{unguarded} unguarded sites, e.g. {examples}"
    assert found == guarded + safe + unguarded, counts
    assert len(sites) == found, f"{len(sites)} sites listed, counts say {found}"
    for outcome in ("guarded", "safe", "unguarded"):
        assert sum(s["outcome"] == outcome for s in sites) == counts[outcome], (outcome, counts)
    assert all(s["kind"] in ("call", "jmp", "ret") for s in sites), {s["kind"] for s in sites}
    assert isinstance(report["functions_not_relocated"], list)
