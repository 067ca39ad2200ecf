"""Differential testing with csmith: random C programs, hardened vs original, must print the same checksum.

A fixed set of seeds runs in CI. More on demand:
    CFIGUARD_CSMITH_SEEDS=200 python -m pytest tests/e2e/test_csmith.py
(seeds 1..N; each is compiled with gcc and clang at -O0 and -O2, PIE and non-PIE by turns).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_support import check_report, harden

CSMITH = shutil.which("csmith")
INCLUDE = "/usr/include/csmith"
N_SEEDS = int(os.environ.get("CFIGUARD_CSMITH_SEEDS", "8"))
FLAVOURS = [
    ("gcc", "-O2", "pie"),
    ("clang", "-O0", "nopie"),
    ("gcc", "-O0", "nopie"),
    ("clang", "-O2", "pie"),
]

pytestmark = pytest.mark.skipif(
    CSMITH is None or not os.path.isdir(INCLUDE),
    reason="csmith not installed (Debian packages csmith and libcsmith-dev)",
)


def _run(path: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(path)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("seed", range(1, N_SEEDS + 1))
def test_csmith_checksum(seed: int, tmp_path: Path) -> None:
    cc, opt, pie = FLAVOURS[seed % len(FLAVOURS)]
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    src = tmp_path / f"s{seed}.c"
    subprocess.run([CSMITH, "--seed", str(seed), "-o", str(src)], check=True, capture_output=True, timeout=60)
    exe = tmp_path / f"s{seed}"
    pie_flags = ["-fPIE", "-pie"] if pie == "pie" else ["-fno-pie", "-no-pie"]
    subprocess.run(
        [cc, opt, *pie_flags, "-w", f"-I{INCLUDE}", "-o", str(exe), str(src)], check=True, capture_output=True
    )
    try:
        original = _run(exe, 10)
    except subprocess.TimeoutExpired:
        pytest.skip(
            f"seed {seed}: the original program does not finish in 10 s (csmith may generate long loops)"
        )
    assert "checksum" in original.stdout
    proc = harden(exe, tmp_path / "h", tmp_path / "h.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "h.json").read_text())
    check_report(report)
    assert report["counts"]["unguarded"] == 0, report["functions_not_relocated"]
    result = _run(tmp_path / "h", 60)
    assert result.returncode == original.returncode, result.stderr[-2000:]
    assert result.stdout == original.stdout
