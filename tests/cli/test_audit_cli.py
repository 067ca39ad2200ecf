"""`harden --audit`: a violation is logged and the program goes on; a release gate never passes it silently."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True, env=env
    )


def test_audit_mode(tmp_path: Path) -> None:
    exe = tmp_path / "attack_fptr"
    subprocess.run(["gcc", "-O2", "-no-pie", "-o", str(exe), str(ROOT / "samples/attack_fptr.c")], check=True)
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    sym = {m.group(2): int(m.group(1), 16) for m in re.finditer(r"^([0-9a-f]+) [tT] (\w+)$", nm, re.M)}
    off = f"{sym['win'] - sym['ref']:x}"
    enforce, audit = tmp_path / "enforce", tmp_path / "audit"
    assert cli("harden", str(exe), "-o", str(enforce)).returncode == 0
    proc = cli("harden", str(exe), "-o", str(audit), "--audit")
    assert proc.returncode == 0, proc.stderr  # harden's own check accepts audit mode for an --audit output
    # Normal runs are identical.
    want = subprocess.run([str(exe)], capture_output=True, text=True)
    got = subprocess.run([str(audit)], capture_output=True, text=True)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    # The attack: enforce mode stops it; audit mode logs it and lets it happen (as the original does).
    assert subprocess.run([str(exe), off], capture_output=True).returncode == 42
    assert subprocess.run([str(enforce), off], capture_output=True).returncode == -signal.SIGABRT
    run = subprocess.run([str(audit), off], capture_output=True, text=True)
    assert re.search(r"cfiguard: CFI violation \(audit, continuing\): (call|jmp) at 0x", run.stderr), (
        run.stderr
    )
    assert run.returncode == 42 and "HIJACKED" in run.stdout  # it went on, to win()
    # The gate: verify fails it unless told otherwise; info shows the mode.
    v = cli("verify", str(audit), "--format", "json")
    assert v.returncode == 1
    assert any(f["check"] == "audit" for f in json.loads(v.stdout)["files"][0]["findings"])
    assert cli("verify", str(audit), "--allow-audit").returncode == 0
    assert cli("verify", str(enforce)).returncode == 0
    info = json.loads(cli("info", str(audit), "--format", "json").stdout)
    assert "audit" in json.dumps(info)
