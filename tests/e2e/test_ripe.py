"""RIPE-style attack matrix (samples/ripe/attack_matrix.c): code-pointer location x corruption technique.

Each combination must first hijack the ORIGINAL binary (HIJACKED, exit 42); then the hardened binary must stop
it with the violation message and SIGABRT, and still run normally without an attack.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_support import harden

SOURCE = Path(__file__).resolve().parents[2] / "samples" / "ripe" / "attack_matrix.c"
LOCATIONS = ["stack", "heap", "bss", "data", "ret", "got"]
TECHNIQUES = ["direct", "overflow"]
BUILDS = [("gcc", "-O2", "nopie"), ("gcc", "-O0", "pie"), ("clang", "-O2", "pie"), ("clang", "-O1", "nopie")]


def _symbols(path: Path) -> dict[str, int]:
    out = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout
    return {p[2]: int(p[0], 16) for p in (line.split() for line in out.splitlines()) if len(p) == 3}


def _got_slot(path: Path, name: str) -> int:
    out = subprocess.run(["readelf", "-rW", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "JUMP_SLOT" in line and (f" {name}@" in line or line.rstrip().endswith(f" {name} + 0")):
            return int(line.split()[0], 16)
    raise AssertionError(f"no JUMP_SLOT relocation for {name} in {path}")


@pytest.fixture(scope="module", params=BUILDS, ids=lambda b: ".".join(b))
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, list[str]]:
    cc, opt, pie = request.param
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    d = tmp_path_factory.mktemp("ripe")
    exe = d / "attack_matrix"
    pie_flags = ["-fPIE", "-pie"] if pie == "pie" else ["-fno-pie", "-no-pie"]
    # Lazy binding and no RELRO keep the GOT writable, as in the classic GOT-overwrite attack.
    flags = [opt, *pie_flags, "-Wl,-z,lazy", "-Wl,-z,norelro", "-o", str(exe), str(SOURCE)]
    subprocess.run([cc, *flags], check=True)
    proc = harden(exe, d / "h", d / "h.json")
    assert proc.returncode == 0, proc.stderr
    syms = _symbols(exe)
    offsets = [hex(syms["win"] - syms["ref"]), hex(_got_slot(exe, "puts") - syms["anchor"])]
    return exe, d / "h", offsets


def _attack(
    path: Path, location: str, technique: str, offsets: list[str]
) -> subprocess.CompletedProcess[str]:
    args = [str(path), location, technique, offsets[0]] + ([offsets[1]] if location == "got" else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("location", LOCATIONS)
def test_attack_matrix(built: tuple[Path, Path, list[str]], location: str, technique: str) -> None:
    exe, hardened, offsets = built
    if location == "got" and technique == "overflow":
        pytest.skip("the GOT is corrupted by a direct write only (no buffer sits next to it)")
    original = _attack(exe, location, technique, offsets)
    assert original.returncode == 42 and "HIJACKED" in original.stdout, "the attack must work on the original"
    result = _attack(hardened, location, technique, offsets)
    assert "HIJACKED" not in result.stdout
    assert result.returncode == -6, (result.returncode, result.stderr)
    assert "cfiguard: CFI violation:" in result.stderr


def test_normal_mode(built: tuple[Path, Path, list[str]]) -> None:
    exe, hardened, _ = built
    a = subprocess.run([str(exe)], capture_output=True, text=True)
    b = subprocess.run([str(hardened)], capture_output=True, text=True)
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout) == (0, a.stdout)
