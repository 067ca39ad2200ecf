"""The verifier follows only reachable code: nothing after a call to a function that never returns.

A program whose `die` ends in `call exit` and is followed by one padding byte and then another function: the
padding byte decodes as the start of an instruction that swallows the next function's first byte. The bytes
after `call exit` are reachable only if exit returned, so they carry no RET label and need no decoding.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ASM = """
        .text
        .globl main
        .type main, @function
main:   push %rbx
        lea next(%rip), %rax
        call *%rax
        cmp $5, %edi
        jg 1f
        xor %eax, %eax
        pop %rbx
        ret
1:      call die
        .size main, .-main
        .type die, @function
die:    push %rbx
        mov $3, %edi
        call exit@PLT
        .byte 0x48              # padding: `48 e9 ...` would swallow next's forwarding jump
        .size die, .-die
        .type next, @function
next:   mov $1, %eax
        ret
        .size next, .-next
        .section .note.GNU-stack,"",@progbits
"""


def test_no_decoding_past_a_noreturn_import(tmp_path: Path) -> None:
    src = tmp_path / "nr.s"
    src.write_text(ASM)
    exe = tmp_path / "nr"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = tmp_path / "nr.cfi"
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(exe), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "verify", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
    assert subprocess.run([str(out)]).returncode == 0
    assert subprocess.run([str(out), "a", "b", "c", "d", "e", "f"]).returncode == 3  # die -> exit(3)
