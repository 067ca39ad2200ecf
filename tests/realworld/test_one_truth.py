"""One truth for "safe": the switch dispatches harden leaves unguarded are exactly those the verifier proves.

harden re-runs the verifier on its output and guards whatever it cannot re-prove; this checks the end result
from outside, on sample flavours built here and on stock system programs: the set of new-code addresses the
rewriter left unguarded as proven switches equals the set of dispatches the verifier proved, and every output
verifies.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cfiguard import api
from cfiguard.verify import verify_file

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = ["/usr/bin/xz", "/usr/bin/git", "/usr/bin/sqlite3", "/usr/bin/python3.11", "/bin/ls"]
FLAVOURS = [
    ("gcc", "-O2", "-fPIE -pie"),
    ("clang", "-O2", "-fPIE -pie"),
    ("gcc", "-O3", "-no-pie"),
    ("clang", "-O1", "-no-pie"),
]


def _check(src: str, out: Path) -> int:
    result = api.harden(src, str(out))
    assert result.verified is True
    check = verify_file(str(out))
    assert check.ok, check.findings[:3]
    assert set(result.safe_switches) == set(check.proven_switches)
    assert result.count("safe") == len(result.safe_switches)
    return len(result.safe_switches)


@pytest.mark.parametrize("src", SYSTEM, ids=[Path(p).name for p in SYSTEM])
def test_system_programs(src: str, tmp_path: Path) -> None:
    if not os.path.exists(src):
        pytest.skip(f"{src} is not installed here")
    assert _check(src, tmp_path / "out") > 0  # each of these has proven switches


@pytest.mark.parametrize("cc,opt,pie", FLAVOURS, ids=[" ".join(f) for f in FLAVOURS])
def test_switch_sample(cc: str, opt: str, pie: str, tmp_path: Path) -> None:
    exe = tmp_path / "switch"
    subprocess.run([cc, opt, *pie.split(), "-o", str(exe), str(ROOT / "samples/switch.c")], check=True)
    _check(str(exe), tmp_path / "switch.cfi")
