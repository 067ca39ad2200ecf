"""Inputs that cannot be hardened: exit 2, one `cfiguard: error:` line, no traceback, no output file.

Also a short hypothesis fuzz of ELF headers and code bytes: harden ends with exit 0 or 2, never anything else.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]


def cfiguard(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("CFIGUARD_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def sample_elf(elf: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample as a path (a bytes fixture would be printed whole in hypothesis' falsifying example)."""
    path = tmp_path_factory.mktemp("sample") / "p"
    path.write_bytes(elf)
    return path


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("elf")
    (d / "p.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    subprocess.run(["gcc", "-O2", "-o", str(d / "p"), str(d / "p.c")], check=True)
    return (d / "p").read_bytes()


def patched(data: bytes, fmt: str, offset: int, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


CASES = {
    "aarch64": (lambda d: patched(d, "<H", 18, 183), "not an x86-64 ELF"),
    "elf32": (lambda d: patched(d, "<B", 4, 1), "32-bit"),
    "core": (lambda d: patched(d, "<H", 16, 4), "core file"),
    "big-endian": (lambda d: patched(d, "<B", 5, 2), "big-endian"),
    "phdr-offset": (lambda d: patched(d, "<Q", 0x20, 1 << 40), "corrupt program header table"),
    "phdr-count": (lambda d: patched(d, "<H", 0x38, 0xFFFF), "corrupt program header table"),
    "shdr-offset": (lambda d: patched(d, "<Q", 0x28, 1 << 40), "corrupt section header table"),
    "shdr-count": (lambda d: patched(d, "<H", 0x3C, 0xFFFF), "corrupt section header table"),
    "truncated": (lambda d: d[: len(d) // 3], "cfiguard: error:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_or_foreign_elf(elf: bytes, tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    src, out = tmp_path / case, tmp_path / "out"
    src.write_bytes(make(elf))
    proc = cfiguard("harden", str(src), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("cfiguard: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()


def test_relocatable_object(tmp_path: Path) -> None:
    (tmp_path / "o.c").write_text("int f(int x) { return x + 1; }\n")
    subprocess.run(["gcc", "-c", "-o", str(tmp_path / "o.o"), str(tmp_path / "o.c")], check=True)
    proc = cfiguard("harden", str(tmp_path / "o.o"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2 and "relocatable object" in proc.stderr


def test_go_binary_refused(elf: bytes, tmp_path: Path) -> None:
    """A Go toolchain is not available here: mark a C binary the way the Go linker does (.note.go.buildid)."""
    if shutil.which("objcopy") is None:
        pytest.skip("objcopy (binutils) not installed")
    src = tmp_path / "p"
    src.write_bytes(elf)
    note = tmp_path / "note"
    note.write_bytes(b"\x04\x00\x00\x00\x04\x00\x00\x00\x04\x00\x00\x00Go\x00\x00abcd")
    gob = tmp_path / "gob"
    subprocess.run(["objcopy", "--add-section", f".note.go.buildid={note}", str(src), str(gob)], check=True)
    proc = cfiguard("harden", str(gob), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Go binaries are not supported" in proc.stderr


def test_read_only_output_directory(elf: bytes, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    src = tmp_path / "p"
    src.write_bytes(elf)
    proc = cfiguard("harden", str(src), "-o", str(ro / "x"))
    assert proc.returncode == 2 and "cannot write" in proc.stderr


def test_output_path_is_a_directory(elf: bytes, tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_bytes(elf)
    os.chmod(src, 0o755)
    (tmp_path / "dir").mkdir()
    proc = cfiguard("harden", str(src), "-o", str(tmp_path / "dir"))
    assert proc.returncode == 2 and proc.stderr.startswith("cfiguard: error:")
    assert (tmp_path / "dir").is_dir()


@settings(
    max_examples=int(os.environ.get("CFIGUARD_FUZZ_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_headers_and_code(
    sample_elf: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Random byte flips in the ELF/program headers and in the first code page, or a random truncation.

    A longer run: CFIGUARD_FUZZ_EXAMPLES=2000 (see docs/testing.md)."""
    b = bytearray(sample_elf.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        b = b[: data.draw(st.integers(0, len(b) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            region = data.draw(
                st.sampled_from([(0, 64), (64, 64 + 13 * 56), (0x1000, 0x2000)]), label="region"
            )
            pos = data.draw(st.integers(*region), label="pos")
            if pos < len(b):
                b[pos] = data.draw(st.integers(0, 255), label="byte")
    d = tmp_path_factory.mktemp("fz")
    (d / "in").write_bytes(bytes(b))
    os.chmod(d / "in", 0o755)
    proc = cfiguard("harden", str(d / "in"), "-o", str(d / "out"))
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    if proc.returncode == 2:
        assert proc.stderr.startswith("cfiguard: error:") and not (d / "out").exists()
    if proc.returncode == 1:  # hardened, but the output failed harden's own verification: nothing written
        assert "does not pass cfiguard verify" in proc.stderr and not (d / "out").exists()
