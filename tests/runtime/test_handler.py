"""The violation handler (cfiguard/runtime/handler.s): its shape, and that a program cannot abandon it."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import capstone

from cfiguard.runtime import source, violation_handler

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    1,
    13,
    14,
    37,
    39,
    186,
    234,
    231,
}  # write rt_sigaction rt_sigprocmask alarm getpid gettid tgkill exit_group


def test_handler_has_no_way_out() -> None:
    code = violation_handler()
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    insns = list(md.disasm(code, 0))
    end = next(k for k, i in enumerate(insns) if i.mnemonic == "hlt")
    body = insns[: end + 1]
    assert body, "the handler decodes"
    numbers = []
    for k, i in enumerate(body):
        assert i.mnemonic not in ("ret", "iretq", "retf", "int", "sysenter"), i
        if i.mnemonic in ("call", "jmp") or i.mnemonic.startswith("j"):
            assert i.op_str.startswith("0x"), f"indirect branch {i}"
        if i.mnemonic == "syscall":
            prev = body[k - 1]
            assert prev.mnemonic == "mov" and prev.op_str.startswith("eax, "), prev
            numbers.append(int(prev.op_str[5:], 0))
    assert set(numbers) <= ALLOWED
    # Signals are blocked (rt_sigprocmask) before anything else, and the write comes after.
    assert numbers[0] == 14 and numbers.index(1) > 0 and numbers[-1] == 231


def test_handler_source_is_readable_assembly() -> None:
    src = source("handler.s")
    assert "rt_sigprocmask" in src and re.search(r"^\s+syscall\s*$", src, re.M)


def _build(tmp_path: Path) -> tuple[Path, str]:
    exe = tmp_path / "attack_retry"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "samples/attack_retry.c")], check=True)
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    sym = {m.group(2): int(m.group(1), 16) for m in re.finditer(r"^([0-9a-f]+) [tT] (\w+)$", nm, re.M)}
    return exe, f"{sym['win'] - sym['ref']:x}"


def _run_with_stalled_stderr(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run with stderr a pipe that is full and never read: a write to it blocks."""
    r, w = os.pipe()
    fl = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    fcntl.fcntl(w, fcntl.F_SETFL, fl)
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=w, text=True, timeout=60)
    finally:
        os.close(w)
        os.close(r)


def test_handler_cannot_be_abandoned(tmp_path: Path) -> None:
    exe, off = _build(tmp_path)
    # The attack works on the original.
    orig = subprocess.run([str(exe), off], capture_output=True, text=True, timeout=30)
    assert orig.returncode == 42 and "HIJACKED" in orig.stdout
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == "ok 41\n"
    out = tmp_path / "attack_retry.cfi"
    subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", str(exe), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    assert subprocess.run([str(out)], capture_output=True, text=True).stdout == "ok 41\n"
    # Hardened, with stderr stalled and the program's SIGALRM handler ready to siglongjmp: the first violation
    # ends the process (the alarm of the handler, since the message cannot be written), never a retry.
    proc = _run_with_stalled_stderr([str(out), off])
    assert "survived" not in proc.stdout and "HIJACKED" not in proc.stdout, proc.stdout
    assert proc.returncode in (-signal.SIGALRM, -signal.SIGABRT), proc.returncode
    # With a working stderr the message is printed and the process dies by SIGABRT.
    proc = subprocess.run([str(out), off], capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGABRT and "cfiguard: CFI violation: call at 0x" in proc.stderr
    assert "survived" not in proc.stdout


def test_violation_message_names_the_function(tmp_path: Path) -> None:
    """With symbols, the message ends with the function that holds the site: `(in f+0x<offset>)`."""
    exe = tmp_path / "attack_fptr"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "samples/attack_fptr.c")], check=True)
    stripped = tmp_path / "attack_fptr.stripped"
    subprocess.run(["strip", "-o", str(stripped), str(exe)], check=True)
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    funcs = sorted(
        (int(m.group(1), 16), m.group(2)) for m in re.finditer(r"^([0-9a-f]+) [tTwW] (\S+)$", nm, re.M)
    )
    sym = dict((n, a) for a, n in funcs)
    off = f"{sym['win'] - sym['ref']:x}"
    for src, named in ((exe, True), (stripped, False)):
        out = tmp_path / (src.name + ".cfi")
        subprocess.run([sys.executable, "-m", "cfiguard.cli", "harden", str(src), "-o", str(out)], check=True)
        err = subprocess.run([str(out), off], capture_output=True, text=True).stderr
        m = re.search(
            r"CFI violation: \w+ at 0x([0-9a-f]+) -> 0x[0-9a-f]+(?: \(in (\S+)\+0x([0-9a-f]+)\))?$", err, re.M
        )
        assert m, err
        if not named:
            assert m.group(2) is None
            continue
        site = int(m.group(1), 16)
        start, name = max((a, n) for a, n in funcs if a <= site)
        assert (m.group(2), int(m.group(3), 16)) == (name, site - start)
