"""Language runtimes: what cfiguard hardens, and what it refuses up front with a reason a user can act on
(never an output that aborts later)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A ret to an address the program pushed itself (OCaml raises exceptions this way): `lea r11, [rip+handler];
# push r11`, and later a function returns with that slot on top of the stack.
PUSHED = """
        .text
        .globl main
        .type raiser, @function
raiser: mov 8(%rsp), %rax        # the handler slot just above our own return address
        add $8, %rsp             # drop our return address: the next ret goes to the pushed handler
        ret
        .size raiser, .-raiser
        .type main, @function
main:   push %rbx
        lea handler(%rip), %r11
        push %r11
        call raiser
        mov $1, %eax             # not reached: raiser "returns" to handler
        pop %rbx
        ret
handler:
        xor %eax, %eax
        pop %rbx
        ret
        .size main, .-main
        .section .note.GNU-stack,"",@progbits
"""


def cfiguard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfiguard.cli", *args], capture_output=True, text=True)


def test_ret_to_a_pushed_handler(tmp_path: Path) -> None:
    src = tmp_path / "p.s"
    src.write_text(PUSHED)
    exe, out = tmp_path / "p", tmp_path / "p.cfi"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0
    proc = cfiguard("harden", str(exe), "-o", str(out), "--strict")
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(out)], capture_output=True, text=True)
    assert run.returncode == 0 and "CFI violation" not in run.stderr, run.stderr


OCAML = """
exception Found of int
let rec build n = if n = 0 then [] else (string_of_int n, Array.make 10 n) :: build (n - 1)
let () =
  let acc = ref 0 in
  for r = 1 to 20 do
    let l = build (1000 + r) in
    Gc.full_major ();
    (try List.iter (fun (s, a) -> if String.length s > 3 then raise (Found a.(1))) l with Found k -> acc := !acc + k)
  done;
  Printf.printf "%d\\n" !acc
"""


@pytest.mark.skipif(shutil.which("ocamlopt") is None, reason="ocamlopt is not installed (Debian ocaml-nox)")
def test_ocaml_native_is_refused_up_front(tmp_path: Path) -> None:
    src = tmp_path / "gc.ml"
    src.write_text(OCAML)
    exe = tmp_path / "gc"
    subprocess.run(["ocamlopt", "-o", str(exe), str(src)], check=True, cwd=tmp_path)
    for target in (exe, tmp_path / "gc.stripped"):
        if target != exe:
            subprocess.run(["strip", "-o", str(target), str(exe)], check=True)
        proc = cfiguard("harden", str(target), "-o", str(tmp_path / "out"))
        assert proc.returncode == 2 and "OCaml native code is not supported" in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/usr/bin/ocamlrun").exists(), reason="ocamlrun is not installed")
def test_ocaml_bytecode_interpreter_hardens(tmp_path: Path) -> None:
    """ocamlrun is a C program: it hardens, and runs bytecode identically."""
    out = tmp_path / "ocamlrun"
    proc = cfiguard("harden", "/usr/bin/ocamlrun", "-o", str(out), "--strict")
    assert proc.returncode == 0, proc.stderr
    if shutil.which("ocamlc") is None:
        pytest.skip("ocamlc is not installed")
    src = tmp_path / "gc.ml"
    src.write_text(OCAML)
    byte = tmp_path / "gc.byte"
    subprocess.run(["ocamlc", "-o", str(byte), str(src)], check=True, cwd=tmp_path)
    want = subprocess.run(["/usr/bin/ocamlrun", str(byte)], capture_output=True, text=True)
    got = subprocess.run([str(out), str(byte)], capture_output=True, text=True)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout), got.stderr
