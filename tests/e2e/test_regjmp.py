"""`jmp r11` / `jmp r10` inside a function (gcc and clang emit them for variadic tail calls through a pointer):
the guard jumps through the value it checked, never through the copy it saved on the stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import capstone

from cfiguard.verify.guards import CHECK, CHECK_LEN, PRESERVE_HEAD, PRESERVE_TAIL, match_unit

ROOT = Path(__file__).resolve().parents[2]

ASM = """
        .text
        .globl main
        .type target, @function
target: lea 1(%rdi), %eax
        ret
        .size target, .-target
        .type via, @function
via:    mov fp(%rip), %{reg}
        test %edi, %edi
        js 1f
        jmp *%{reg}
1:      xor %eax, %eax
        ret
        .size via, .-via
        .type main, @function
main:   sub $8, %rsp
        mov $41, %edi
        call via
        add $8, %rsp
        sub $42, %eax
        ret
        .size main, .-main
        .data
fp:     .quad target
        .section .note.GNU-stack,"",@progbits
"""


def _harden(tmp_path: Path, reg: str) -> Path:
    src = tmp_path / f"{reg}.s"
    src.write_text(ASM.replace("{reg}", reg))
    exe = tmp_path / reg
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0
    out = tmp_path / f"{reg}.cfi"
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(exe), "-o", str(out), "--strict"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_register_jump_uses_the_checked_value(tmp_path: Path) -> None:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for reg in ("r10", "r11"):
        out = _harden(tmp_path, reg)
        assert subprocess.run([str(out)]).returncode == 0
        data = out.read_bytes()
        jmp = {"r10": b"\x41\xff\xe2", "r11": b"\x41\xff\xe3"}[reg]
        k = data.rfind(jmp)
        assert k > 0
        # The instructions just before the jmp: no pop into the jump register (a reload from the stack).
        window = data[k - 40 : k + 3]
        text = []
        for off in range(len(window)):
            insns = list(md.disasm(window[off:], 0))
            if insns and sum(i.size for i in insns) == len(window) - off and insns[-1].bytes == jmp:
                text = [f"{i.mnemonic} {i.op_str}" for i in insns]
                break
        assert text, window.hex()
        assert f"pop {reg}" not in text[-4:], text
        assert subprocess.run([sys.executable, "-m", "cfiguard.cli", "verify", str(out)]).returncode == 0


def test_verifier_rejects_the_reloading_form() -> None:
    """The old form (restore r10/r11 from the stack, then jmp through it) is a race: not a guard."""
    check = bytearray(CHECK_LEN)
    for off, fixed in CHECK:
        check[off : off + len(fixed)] = fixed
    for mov, jmp in ((b"\x4d\x8b\xda", b"\x41\xff\xe2"), (b"\x4d\x8b\xdb", b"\x41\xff\xe3")):
        unit = match_unit(PRESERVE_HEAD + mov + bytes(check) + PRESERVE_TAIL + jmp, 0, 0x1000)
        assert unit is not None and unit.problem and "restored from the stack" in unit.problem


IRET = """
        .text
        .globl main
        .type odd, @function
odd:    test %edi, %edi
        jz 1f
        {insn}
1:      ret
        .size odd, .-odd
        .type main, @function
main:   xor %edi, %edi
        call odd
        xor %eax, %eax
        ret
        .size main, .-main
        .section .note.GNU-stack,"",@progbits
"""


def test_far_returns_are_refused_with_their_reason(tmp_path: Path) -> None:
    import json

    for insn in ("iretq", "lretq"):
        src = tmp_path / f"{insn}.s"
        src.write_text(IRET.replace("{insn}", insn))
        exe, out, report = tmp_path / insn, tmp_path / f"{insn}.cfi", tmp_path / f"{insn}.json"
        subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cfiguard.cli",
                "harden",
                str(exe),
                "-o",
                str(out),
                "--report",
                str(report),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and not out.exists(), proc.stderr
        sites = json.loads(report.read_text())["sites"]
        name = {"lretq": "retfq"}.get(insn, insn)  # capstone's name for lretq
        far = [s for s in sites if s["outcome"] == "unguarded" and f"`{name}`" in s["reason"]]
        nm = subprocess.run(["objdump", "-d", str(exe)], capture_output=True, text=True).stdout
        at = int(next(ln for ln in nm.splitlines() if ln.strip().endswith(insn)).split(":")[0], 16)
        assert at in {s["address"] for s in far}, far


def test_race_free_returns(tmp_path: Path) -> None:
    """--race-free-returns: returns of functions that clobber r10/r11 pop their address once and jump through
    the checked register. The program runs the same, verifies, and its return attack is still stopped."""
    import re

    exe, out = tmp_path / "fptr", tmp_path / "fptr.cfi"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "samples/fptr.c")], check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(exe), "-o", str(out), "--race-free-returns"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    want = subprocess.run([str(exe)], capture_output=True, text=True)
    got = subprocess.run([str(out)], capture_output=True, text=True)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
    pops = re.findall(rb"\x41\x5b\x4c\x8d\x15.{4}\x4d\x29\xd3", out.read_bytes(), re.S)
    assert pops, "no pop r11 return guard was emitted"
    assert subprocess.run([sys.executable, "-m", "cfiguard.cli", "verify", str(out)]).returncode == 0
