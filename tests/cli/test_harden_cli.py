"""Golden behaviour of `cfiguard harden`: exit codes, messages, no partial output, permissions, --strict."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROGRAM = r"""
#include <stdio.h>
static int sq(int x) { return x * x; }
int (*volatile op)(int) = sq;
int main(void) { printf("%d\n", op(7)); return 3; }
"""

TINY_RET = r"""
#include <stdio.h>
__attribute__((noinline)) int f(int x) { return x + 1; }
int main(int argc, char **argv) { printf("%d\n", f(argc)); return 0; }
"""


def cfiguard(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prog")
    (d / "p.c").write_text(PROGRAM)
    subprocess.run(["gcc", "-O2", "-o", str(d / "p"), str(d / "p.c")], check=True)
    os.chmod(d / "p", 0o750)
    return d / "p"


def test_harden_success_summary_and_mode(program: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "p.cfi", tmp_path / "r.json"
    before = program.read_bytes()
    proc = cfiguard("harden", str(program), "-o", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cfiguard: {program}: ") and "guarded" in line and "unguarded" in line
    assert program.read_bytes() == before  # the input is never modified
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    run = subprocess.run([str(out)], capture_output=True, text=True)
    assert (run.returncode, run.stdout) == (3, "49\n")
    doc = json.loads(report.read_text())
    c = doc["counts"]
    assert c["found"] == c["guarded"] + c["safe"] + c["unguarded"] == len(doc["sites"])
    assert all(s["kind"] in ("call", "jmp", "ret") for s in doc["sites"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cfiguard-")]  # no temporary left behind


def test_rehardening_is_refused(program: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.cfi"
    assert cfiguard("harden", str(program), "-o", str(out)).returncode == 0
    proc = cfiguard("harden", str(out), "-o", str(tmp_path / "again"))
    assert proc.returncode == 2
    assert "already hardened" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "again").exists()


def _file(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d / name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "No such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _file(d, "empty", b""), "not an ELF"),
        (lambda d: _file(d, "script", b"#!/bin/sh\necho hi\n"), "not an ELF"),
        (lambda d: _file(d, "random", bytes(range(256)) * 16), "not an ELF"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path: Path, make, message: str) -> None:
    src = make(tmp_path)
    out = tmp_path / "out"
    proc = cfiguard("harden", str(src), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("cfiguard: error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_truncated_elf(program: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes(program.read_bytes()[:2000])
    proc = cfiguard("harden", str(cut), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "cfiguard: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_output_directory_missing(program: Path, tmp_path: Path) -> None:
    proc = cfiguard("harden", str(program), "-o", str(tmp_path / "no" / "such" / "dir" / "x"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def tiny_function_program(tmp_path: Path, load: str, link: str) -> Path:
    """A program whose 1-byte function `tiny` is packed right before `main`, which loads its address with
    `load` and calls it. Assembly, so that the layout is exact."""
    asm = tmp_path / "t.s"
    asm.write_text(
        f"""
        .text
        .globl main
        .type tiny, @function
tiny:   ret
        .size tiny, 1
        .type main, @function
main:   {load}
        call *%rax
        xor %eax, %eax
        ret
        .size main, .-main
        .section .note.GNU-stack,"",@progbits
"""
    )
    exe = tmp_path / "t"
    subprocess.run(["gcc", link, "-o", str(exe), str(asm)], check=True)
    return exe


def unrelocatable_program(tmp_path: Path) -> Path:
    """A program whose function `tx` holds an `xbegin` (cfiguard does not relocate transactional code), so its
    `ret` stays unguarded. main calls it with an argument that skips the transaction."""
    asm = tmp_path / "x.s"
    asm.write_text(
        """
        .text
        .globl main
        .type tx, @function
tx:     test %edi, %edi
        jz 1f
        xbegin 1f
        xend
1:      ret
        .size tx, .-tx
        .type main, @function
main:   xor %edi, %edi
        call tx
        xor %eax, %eax
        ret
        .size main, .-main
        .section .note.GNU-stack,"",@progbits
"""
    )
    exe = tmp_path / "x"
    subprocess.run(["gcc", "-o", str(exe), str(asm)], check=True)
    return exe


def test_strict_writes_nothing_when_a_site_stays_unguarded(tmp_path: Path) -> None:
    exe = unrelocatable_program(tmp_path)
    out, report = tmp_path / "x.cfi", tmp_path / "x.json"
    proc = cfiguard("harden", str(exe), "-o", str(out), "--strict", "--report", str(report))
    assert proc.returncode == 1, proc.stderr
    assert "--strict" in proc.stderr and not out.exists()
    doc = json.loads(report.read_text())
    unguarded = [s for s in doc["sites"] if s["outcome"] == "unguarded"]
    assert unguarded and all("xbegin" in s["reason"] for s in unguarded)
    # Without --strict, harden checks its own output: the unguarded ret fails verification, nothing is written.
    proc = cfiguard("harden", str(exe), "-o", str(out), "--report", str(report))
    assert proc.returncode == 1, proc.stderr
    assert "does not pass cfiguard verify" in proc.stderr and "unguarded" in proc.stderr
    assert not out.exists()
    assert json.loads(report.read_text())["verification"]["verified"] is False
    # --no-verify writes it anyway, and the site is reported; the program still runs.
    proc = cfiguard("harden", str(exe), "-o", str(out), "--no-verify")
    assert proc.returncode == 0 and "1 unguarded" in proc.stderr
    assert subprocess.run([str(out)]).returncode == 0
    assert cfiguard("verify", str(out)).returncode == 1


def test_entries_one_byte_apart_are_forwarded_by_punning(tmp_path: Path) -> None:
    # A 1-byte function whose address is an immediate in non-PIE code, packed right before `main`: its
    # forwarding jump is the single byte `eb`, whose rel8 is the opcode of main's own forwarding jump.
    exe = tiny_function_program(tmp_path, "mov $tiny, %eax", "-no-pie")
    out = tmp_path / "t.cfi"
    proc = cfiguard("harden", str(exe), "-o", str(out), "--strict")
    assert proc.returncode == 0 and "0 unguarded" in proc.stderr, proc.stderr
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    tiny = int(re.search(r"^([0-9a-f]+) [tT] tiny$", nm, re.M).group(1), 16)
    data = out.read_bytes()
    off = tiny - 0x400000  # non-PIE: first PT_LOAD at 0x400000, offset 0
    assert data[off] == 0xEB and data[off + 1] in (0xE9, 0xEB)
    assert subprocess.run([str(out)]).returncode == 0  # the call through the old address takes the pun
    assert cfiguard("verify", str(out)).returncode == 0


def test_cet_ibt_bit_cleared_shstk_kept(tmp_path: Path) -> None:
    """Forwarded targets carry no endbr64, so IBT must not be claimed; returns stay paired, so SHSTK may."""
    src = tmp_path / "c.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "c"
    subprocess.run(
        ["gcc", "-fcf-protection=full", "-Wl,-z,ibt", "-Wl,-z,shstk", "-o", str(exe), str(src)], check=True
    )

    def features(path: Path) -> str:
        notes = subprocess.run(
            ["readelf", "-n", str(path)], capture_output=True, text=True, check=True
        ).stdout
        return next((line for line in notes.splitlines() if "x86 feature" in line), "")

    assert "IBT" in features(exe) and "SHSTK" in features(exe)
    out = tmp_path / "c.cfi"
    assert cfiguard("harden", str(exe), "-o", str(out)).returncode == 0
    assert "IBT" not in features(out) and "SHSTK" in features(out)
    assert subprocess.run([str(out)]).returncode == 0


def test_one_byte_function_is_redirected(tmp_path: Path) -> None:
    """A 1-byte function packed against its neighbour gets no forwarding jump; in a PIE every reference to it
    (here a rip-relative lea in relocated code) is rewritten to the new address instead."""
    exe = tiny_function_program(tmp_path, "lea tiny(%rip), %rax", "-pie")
    out, report = tmp_path / "t.cfi", tmp_path / "t.json"
    proc = cfiguard("harden", str(exe), "-o", str(out), "--strict", "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["counts"]["unguarded"] == 0
    assert subprocess.run([str(out)]).returncode == 0


@pytest.mark.skipif(
    subprocess.run(["which", "gdb"], capture_output=True).returncode != 0, reason="gdb not installed"
)
def test_gdb_backtrace_through_relocated_frames(tmp_path: Path) -> None:
    src = tmp_path / "bt.c"
    src.write_text(
        """
#include <stdlib.h>
__attribute__((noinline)) void leaf(int n) { if (n) abort(); }
__attribute__((noinline)) void mid(int n) { leaf(n); __asm__ volatile(""); }
__attribute__((noinline)) void top(int n) { mid(n); __asm__ volatile(""); }
int main(int c, char **v) { top(c); return 0; }
"""
    )
    exe = tmp_path / "bt"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    out = tmp_path / "bt.cfi"
    assert cfiguard("harden", str(exe), "-o", str(out)).returncode == 0
    gdb = subprocess.run(
        ["gdb", "-q", "-batch", "-ex", "run", "-ex", "bt", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    frames = [line for line in gdb.stdout.splitlines() if line.startswith("#")]
    # abort's frames, then leaf, mid, top, main (relocated: shown as ??), then __libc_start_call_main.
    assert any("__libc_start_call_main" in f or "__libc_start_main" in f for f in frames), gdb.stdout


def test_output_is_deterministic(program: Path, tmp_path: Path) -> None:
    """Same input, same version: byte-identical output (reproducible builds)."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert cfiguard("harden", str(program), "-o", str(a)).returncode == 0
    assert cfiguard("harden", str(program), "-o", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.2])
def test_killed_run_leaves_no_partial_output(program: Path, tmp_path: Path, delay: float) -> None:
    """SIGKILL at various moments: the output path either does not exist or holds a complete, working file."""
    import signal
    import time

    out = tmp_path / "p.cfi"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(program), "-o", str(out)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():
        run = subprocess.run([str(out)], capture_output=True, text=True)
        assert (run.returncode, run.stdout) == (3, "49\n")
