"""Jump tables whose base is loaded in an earlier block than the dispatch (Rust, LLVM): every table the base
register may hold is taken, so no legitimate target is left without a label (hyperfine used to abort with
`CFI violation: jmp at 0x37321 -> 0x37323`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Two tables loaded into rdx: T1 in the entry block (it reaches the loop's dispatch), T2 in a block that lies
# between it and the dispatch in address order but never reaches it (it has a dispatch of its own). Taking the
# nearest `lea rdx` before the loop's dispatch picks T2, and T1's targets get no label.
ASM = """
        .text
        .globl main
        .type main, @function
main:   push %rbx
        lea T1(%rip), %rdx
        xor %ebx, %ebx
        xor %eax, %eax
        jmp 3f
2:      lea T2(%rip), %rdx          # never reaches the first dispatch: a dispatch of its own through T2
        movslq (%rdx), %rax
        add %rdx, %rax
        jmp *%rax
d0:     mov $3, %eax
        pop %rbx
        ret
3:      cmp $3, %ebx
        jae 9f
        mov %ebx, %ecx
        movslq (%rdx,%rcx,4), %rcx
        add %rdx, %rcx
        jmp *%rcx
c0:     add $1, %eax
        jmp 8f
c1:     add $10, %eax
        jmp 8f
c2:     add $100, %eax
8:      inc %ebx
        jmp 3b
9:      cmp $111, %eax
        jne 2b
        xor %eax, %eax
        pop %rbx
        ret
        .size main, .-main
        .section .rodata
        .balign 4
T1:     .long c0 - T1, c1 - T1, c2 - T1
T2:     .long d0 - T2
        .section .note.GNU-stack,"",@progbits
"""


def harden(exe: Path, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(exe), "-o", str(out), "--strict"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_table_of_an_earlier_block_is_found(tmp_path: Path) -> None:
    src = tmp_path / "h.s"
    src.write_text(ASM)
    exe, out = tmp_path / "h", tmp_path / "h.cfi"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0
    harden(exe, out)
    proc = subprocess.run([str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and "CFI violation" not in proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("rustc") is None, reason="rustc is not installed")
def test_rust_state_machine(tmp_path: Path) -> None:
    exe, out = tmp_path / "sm", tmp_path / "sm.cfi"
    subprocess.run(["rustc", "-O", "-o", str(exe), str(ROOT / "samples/lang/state_machine.rs")], check=True)
    harden(exe, out)
    text = b"".join(p.read_bytes() for p in sorted((ROOT / "cfiguard").rglob("*.py")))
    want = subprocess.run([str(exe)], input=text, capture_output=True)
    got = subprocess.run([str(out)], input=text, capture_output=True)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
