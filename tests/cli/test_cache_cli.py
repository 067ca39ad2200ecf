"""The content-addressed cache (`--cache DIR`, `CFIGUARD_CACHE`): a hit copies the stored output and report,
the key follows the input bytes, the options and SOURCE_DATE_EPOCH, damaged entries are misses, and a hit
keeps every refusal of a normal run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cfiguard(*args, **extra: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    for k in ("CFIGUARD_CACHE", "SOURCE_DATE_EPOCH"):
        if k not in extra:
            e.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *map(str, args)], capture_output=True, text=True, env=e
    )


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cache")
    (d / "p.c").write_text(
        "#include <stdio.h>\nstatic int sq(int x) { return x * x; }\nint (*volatile op)(int) = sq;\n"
        'int main(void) { printf("%d\\n", op(7)); return 0; }\n'
    )
    subprocess.run(["gcc", "-O2", "-o", str(d / "p"), str(d / "p.c")], check=True)
    return d / "p"


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("1/*/*"))


def test_miss_then_hit(exe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ref = tmp_path / "ref"
    assert cfiguard("harden", exe, "-o", ref).returncode == 0  # no cache
    a = cfiguard("harden", exe, "-o", tmp_path / "a", "--cache", cache, "-v", "--report", tmp_path / "a.json")
    assert a.returncode == 0 and "cache miss" in a.stderr and "from the cache" not in a.stderr
    assert len(entries(cache)) == 1
    b = cfiguard("harden", exe, "-o", tmp_path / "b", "--cache", cache, "-v", "--report", tmp_path / "b.json")
    assert b.returncode == 0 and "cache hit" in b.stderr
    line = b.stderr.splitlines()[0]
    assert line.startswith(f"cfiguard: {exe}: ") and "from the cache" in line
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == ref.read_bytes()
    assert (tmp_path / "b").stat().st_mode == exe.stat().st_mode
    ra, rb = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert rb["output"] == str(tmp_path / "b") and rb["input"] == str(exe)
    assert {**ra, "output": None} == {**rb, "output": None}  # the stored report, for this output
    assert subprocess.run([str(tmp_path / "b")], capture_output=True, text=True).stdout == "49\n"


def test_env_variable_and_key_parts(exe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    c = {"CFIGUARD_CACHE": str(cache)}
    assert cfiguard("harden", exe, "-o", tmp_path / "1", **c).returncode == 0
    assert len(entries(cache)) == 1
    assert "cache hit" in cfiguard("harden", exe, "-o", tmp_path / "2", "-v", **c).stderr
    # different options, a different input, a SOURCE_DATE_EPOCH: each a new entry
    assert "cache miss" in cfiguard("harden", exe, "-o", tmp_path / "3", "-v", "--no-verify", **c).stderr
    other = tmp_path / "other"
    other.write_bytes(exe.read_bytes() + b"\0")
    other.chmod(0o755)
    assert "cache miss" in cfiguard("harden", other, "-o", tmp_path / "4", "-v", **c).stderr
    dated = cfiguard("harden", exe, "-o", tmp_path / "5", "-v", SOURCE_DATE_EPOCH="1700000000", **c)
    assert "cache miss" in dated.stderr
    assert len(entries(cache)) == 4
    assert (tmp_path / "5").read_bytes() != (tmp_path / "1").read_bytes()  # the date is in the manifest
    # --strict is part of the key too; a run that fails stores nothing
    assert "cache miss" in cfiguard("harden", exe, "-o", tmp_path / "6", "-v", "--strict", **c).stderr
    assert len(entries(cache)) == 5
    assert cfiguard("harden", exe, "-o", tmp_path / "no" / "such" / "dir", **c).returncode == 2
    assert len(entries(cache)) == 5


def test_damaged_entry_is_a_miss_and_is_replaced(exe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cfiguard("harden", exe, "-o", tmp_path / "a", "--cache", cache).returncode == 0
    (entry,) = entries(cache)
    data = bytearray((entry / "output").read_bytes())
    data[100] ^= 0xFF
    (entry / "output").write_bytes(bytes(data))
    p = cfiguard("harden", exe, "-o", tmp_path / "b", "--cache", cache, "-v")
    assert p.returncode == 0 and "cache miss" in p.stderr
    assert (tmp_path / "b").read_bytes() == (tmp_path / "a").read_bytes()
    p = cfiguard("harden", exe, "-o", tmp_path / "c", "--cache", cache, "-v")
    assert "cache hit" in p.stderr and (tmp_path / "c").read_bytes() == (tmp_path / "a").read_bytes()


def test_hit_keeps_refusals(exe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cfiguard("harden", exe, "-o", tmp_path / "a", "--cache", cache).returncode == 0
    copy = tmp_path / "p"
    copy.write_bytes(exe.read_bytes())
    p = cfiguard("harden", copy, "-o", copy, "--cache", cache)
    assert p.returncode == 2 and "output would overwrite the input" in p.stderr
    p = cfiguard("harden", exe, "-o", tmp_path / "no" / "dir" / "x", "--cache", cache)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = cfiguard("harden", copy, "--in-place", "--cache", cache, "-v")  # in place, from the cache
    assert p.returncode == 0 and "cache hit" in p.stderr
    assert copy.read_bytes() == (tmp_path / "a").read_bytes()


def test_cache_that_cannot_be_created(exe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = cfiguard("harden", exe, "-o", tmp_path / "a", "--cache", blocker / "sub")
    assert p.returncode == 2 and "--cache" in p.stderr and not (tmp_path / "a").exists()
