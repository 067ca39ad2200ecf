"""`cfiguard analyze`: precision metrics, cross-checked against the label table of the hardened file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def table_counts(path: Path) -> dict[str, int]:
    """Label bits counted in the hardened file's own table (found through its manifest)."""
    data = path.read_bytes()
    start = data.index(b"CFIGUARD{") + 8
    m, _ = json.JSONDecoder().raw_decode(data[start : start + 65536].decode("latin-1"))
    phoff, phnum = struct.unpack_from("<Q", data, 0x20)[0], struct.unpack_from("<H", data, 0x38)[0]
    for i in range(phnum):
        t, _, off, va, _, fs, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i)
        if t == 1 and va <= m["table"] < va + fs:
            table = data[off + m["table"] - va : off + m["table"] - va + m["size"]]
            break
    return {"ret": sum(1 for b in table if b & 1), "call": sum(1 for b in table if b & 2)}


def test_analyze_json_against_the_hardened_table(tmp_path: Path) -> None:
    exe = tmp_path / "fptr"
    subprocess.run(["gcc", "-O2", "-no-pie", "-o", str(exe), str(ROOT / "samples/fptr.c")], check=True)
    before = set(tmp_path.iterdir())
    proc = cli("analyze", str(exe), "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(tmp_path.iterdir()) == before  # analyze writes nothing
    doc = json.loads(proc.stdout)
    assert {"policy", "air", "aict", "classes", "sites"} <= set(doc)
    assert doc["policy"] == "coarse" and 0 < doc["air"] < 1 and doc["classes"] >= 3
    calls = [s for s in doc["sites"] if s["kind"] == "call"]
    assert calls and doc["aict"] == sum(s["targets"] for s in calls) / len(calls)
    assert doc["largest"]["targets"] == max(s["targets"] for s in doc["sites"])
    # In a non-PIE file nothing is redirected: every CALL label of the hardened table is one of the policy's,
    # so the coarse call target set is exactly the table's CALL-labelled addresses.
    out = tmp_path / "fptr.cfi"
    assert cli("harden", str(exe), "-o", str(out)).returncode == 0
    assert table_counts(out)["call"] == doc["targets"]["call"] == calls[0]["targets"]
    text = cli("analyze", str(exe))
    assert text.returncode == 0 and "AIR" in text.stdout and "AICT" in text.stdout


def test_analyze_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    proc = cli("analyze", "/bin/ls", "--policy", "fine")
    assert proc.returncode == 2 and "only the coarse policy" in proc.stderr
    bad = tmp_path / "x"
    bad.write_text("not an ELF file")
    proc = cli("analyze", str(bad))
    assert proc.returncode == 2 and proc.stderr.startswith("cfiguard: error:")
