"""Cross-module attacks: a return that leaves the module must land right after a call; a target in the
module's own data never passes. Each attack first hijacks the original; legitimate cross-module traffic
(callbacks into libc and back, signal handlers returning to the restorer, exceptions) is in the samples."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("xmod")
    exe, out = d / "attack_ret2libc", d / "attack_ret2libc.cfi"
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-fno-stack-protector",
            "-o",
            str(exe),
            str(ROOT / "samples/attack_ret2libc.c"),
            "-ldl",
        ],
        check=True,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(exe), "-o", str(out), "--strict"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return exe, out


@pytest.mark.parametrize("mode", ["entry", "gadget"])
def test_return_into_libc(built: tuple[Path, Path], mode: str) -> None:
    exe, out = built
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == "ok 42\n"
    orig = subprocess.run([str(exe), mode], capture_output=True, text=True)
    assert orig.returncode == 42 and "ok" not in orig.stdout, (orig.returncode, orig.stdout)  # hijacked
    assert subprocess.run([str(out)], capture_output=True, text=True).stdout == "ok 42\n"
    hard = subprocess.run([str(out), mode], capture_output=True, text=True)
    assert hard.returncode == -signal.SIGABRT, (hard.returncode, hard.stderr)
    assert "cfiguard: CFI violation: ret at 0x" in hard.stderr
