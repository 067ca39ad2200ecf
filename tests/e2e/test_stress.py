"""Stress programs (samples/stress/): hardened binaries behave exactly as the originals.

16 threads making millions of indirect calls under a 1 kHz timer signal; fork and exec in a loop; recursion
deep into the stack through a function pointer; siglongjmp out of a signal handler; exceptions thrown in
callbacks on 8 threads. Built with gcc and clang, PIE and non-PIE.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_support import check_report, harden

STRESS = Path(__file__).resolve().parents[2] / "samples" / "stress"
PROGRAMS = ["stress_threads.c", "stress_fork.c", "stress_stack.c", "stress_exceptions.cpp"]
FLAVOURS = [("gcc", "-O2", "pie"), ("clang", "-O1", "nopie")]


@pytest.mark.parametrize("build", FLAVOURS, ids=lambda f: ".".join(f))
@pytest.mark.parametrize("source", PROGRAMS)
def test_stress(source: str, build: tuple[str, str, str], tmp_path: Path) -> None:
    cc, opt, pie = build
    cxx = source.endswith(".cpp")
    compiler = {"gcc": "g++", "clang": "clang++"}[cc] if cxx else cc
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed")
    exe = tmp_path / Path(source).stem
    pie_flags = ["-fPIE", "-pie"] if pie == "pie" else ["-fno-pie", "-no-pie"]
    subprocess.run([compiler, opt, *pie_flags, "-pthread", "-o", str(exe), str(STRESS / source)], check=True)
    original = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert original.returncode == 0, original.stderr
    proc = harden(exe, tmp_path / "h", tmp_path / "h.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "h.json").read_text())
    check_report(report)
    assert report["counts"]["unguarded"] == 0
    hardened = subprocess.run([str(tmp_path / "h")], capture_output=True, text=True, timeout=300)
    assert (hardened.returncode, hardened.stdout) == (original.returncode, original.stdout), hardened.stderr
    assert "CFI violation" not in hardened.stderr
