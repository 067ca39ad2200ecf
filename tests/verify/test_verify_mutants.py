"""The verifier accepts what the rewriter produces, and rejects each mutant with the specific finding.

Every mutant is built from a hardened binary that verifies, changing one thing: restoring a relocated function's
original bytes, a guard's class mask or table distance, a label byte, a segment's flags, a guard's jz, a stub's
handler jump, or the handler itself.
"""

from __future__ import annotations

import ast
import json
import struct
import subprocess
from pathlib import Path

import pytest
from mutants import PF_W, PF_X, Binary, Built, Guard, function, new_address, run_cli, switch_dispatch
from typer.testing import CliRunner

from cfiguard.cli import app

ROOT = Path(__file__).resolve().parents[2]


def verify_json(path: Path) -> tuple[int, dict]:
    """`cfiguard verify --format json` in-process (the CLI tests run it as a real process)."""
    r = CliRunner().invoke(app, ["verify", str(path), "--format", "json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, json.loads(r.stdout)


def findings(path: Path) -> list[dict]:
    code, doc = verify_json(path)
    assert code == 1, f"mutant verified: {doc}"
    assert doc["files"][0]["status"] == "failed"
    return doc["files"][0]["findings"]


def has(found: list[dict], check: str, address: int | None = None, text: str = "") -> bool:
    return any(
        f["check"] == check and (address is None or f["address"] == address) and text in f["reason"]
        for f in found
    )


def guard_in(b: Binary, built: Built, func: str, kind: str) -> Guard:
    start, size = function(built.plain, func)
    return next(g for g in b.guards() if g.kind == kind and start <= g.site < start + size)


# ---------------------------------------------------------------------------------------------- baseline


def test_hardened_program_runs_and_verifies(built: Built) -> None:
    run = subprocess.run([str(built.hardened)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == built.expected
    code, doc = verify_json(built.hardened)
    assert code == 0, doc
    f = doc["files"][0]
    assert f["status"] == "verified" and f["findings"] == []
    assert set(f["stats"]["guards"]) == {"ret", "call", "jmp"} and f["stats"]["labels"] > 0
    assert f["stats"]["switches"] >= 1  # pick(): a bounded dispatch the rewriter leaves unguarded


def test_unhardened_program_is_not_hardened(built: Built) -> None:
    p = run_cli("verify", built.plain)
    assert p.returncode == 1
    assert "not hardened" in p.stdout and "Traceback" not in p.stderr


# ---------------------------------------------------------------------------------------------- mutants


def test_restored_function_runs_unguarded(built: Built, tmp_path: Path) -> None:
    """(a) The original body of a relocated callback put back at its old address: its ret is unguarded again."""
    start, size = function(built.plain, "cmp_long")
    b = Binary(built.hardened)
    assert b.read(start, 1) in (b"\xe9", b"\xeb"), "cmp_long should have been relocated"
    b.write(start, Binary(built.plain).read(start, size))
    found = findings(b.save(tmp_path / "m"))
    assert any(f["check"] == "unguarded" and start <= f["address"] < start + size for f in found), found


@pytest.mark.parametrize("func,kind", [("main", "ret"), ("apply", "call")])
def test_wrong_class_mask(built: Built, tmp_path: Path, func: str, kind: str) -> None:
    """(b) A guard that tests another class: a ret guard accepting call targets, a call guard accepting returns."""
    b = Binary(built.hardened)
    g = guard_in(b, built, func, kind)
    b.write(g.check + 31, bytes([{"ret": 2, "call": 1}[kind]]))
    assert has(findings(b.save(tmp_path / "m")), "guard-class", g.branch)


def test_wrong_table_distance(built: Built, tmp_path: Path) -> None:
    """(b) A guard that reads its labels somewhere else than the table."""
    b = Binary(built.hardened)
    g = guard_in(b, built, "main", "ret")
    (d,) = struct.unpack("<i", b.read(g.check + 27, 4))
    b.write(g.check + 27, struct.pack("<i", d - 0x1000))
    assert has(findings(b.save(tmp_path / "m")), "guard-table", g.branch)


def test_label_inside_an_instruction(built: Built, tmp_path: Path) -> None:
    """(c) A label on the 4th byte of the 10-byte movabs of a (reachable) violation stub."""
    b = Binary(built.hardened)
    m = b.manifest()
    g = guard_in(b, built, "main", "ret")
    b.write(m["table"] + (g.stub + 3 - m["lo"]), b"\x02")
    assert has(findings(b.save(tmp_path / "m")), "label", g.stub + 3, "inside the instruction")


def test_label_inside_a_guard(built: Built, tmp_path: Path) -> None:
    """A label on the check of a guard would let an indirect branch skip the register setup."""
    b = Binary(built.hardened)
    m = b.manifest()
    g = guard_in(b, built, "apply", "call")
    b.write(m["table"] + (g.check - m["lo"]), b"\x02")
    assert has(findings(b.save(tmp_path / "m")), "inside-guard", g.check)


def test_writable_label_table(built: Built, tmp_path: Path) -> None:
    """(d) The table's segment made writable."""
    b = Binary(built.hardened)
    t = b.manifest()["table"]
    seg = next(p for p in b.phdrs if p.type == 1 and p.vaddr <= t < p.vaddr + p.memsz)
    b.set_flags(seg, seg.flags | PF_W)
    assert has(findings(b.save(tmp_path / "m")), "table-writable", t)


@pytest.mark.parametrize("which", ["original", "new"])
def test_writable_and_executable_code(built: Built, tmp_path: Path, which: str) -> None:
    """(e) A code segment (the original text, or the new code) made RWX."""
    b = Binary(built.hardened)
    code = [p for p in b.phdrs if p.type == 1 and p.flags & PF_X]
    seg = code[0] if which == "original" else code[-1]
    b.set_flags(seg, 7)
    assert has(findings(b.save(tmp_path / "m")), "segment-wx", seg.vaddr)


@pytest.mark.parametrize("func,kind", [("main", "ret"), ("apply", "call")])
def test_guard_without_jz(built: Built, tmp_path: Path, func: str, kind: str) -> None:
    """(f) The guard's jz replaced by NOPs: the check no longer stops anything, so the branch is unguarded."""
    b = Binary(built.hardened)
    g = guard_in(b, built, func, kind)
    b.write(g.check + 32, b"\x90" * 6)
    assert has(findings(b.save(tmp_path / "m")), "unguarded", g.branch, "expected jz")


def test_switch_without_its_bound(built: Built, tmp_path: Path) -> None:
    """An unguarded switch dispatch is accepted only with its bound: without the `ja`, it is unguarded."""
    b = Binary(built.hardened)
    ja, jmp = switch_dispatch(b, new_address(b, function(built.plain, "pick")[0]))
    b.write(ja, b"\x90" * 6)
    assert has(findings(b.save(tmp_path / "m")), "unguarded", jmp, "nor a proven bounded dispatch")


def test_switch_with_a_writable_table(built: Built, tmp_path: Path) -> None:
    b = Binary(built.hardened)
    _, jmp = switch_dispatch(b, new_address(b, function(built.plain, "pick")[0]))
    for p in b.phdrs:  # every read-only segment, so the one holding the jump table too
        if p.type == 1 and not p.flags & (PF_X | PF_W):
            b.set_flags(p, p.flags | PF_W)
    assert has(findings(b.save(tmp_path / "m")), "unguarded", jmp, "not read-only")


def test_label_inside_a_switch_dispatch(built: Built, tmp_path: Path) -> None:
    """A label between the bound and the jmp would let an indirect branch skip the bound."""
    b = Binary(built.hardened)
    m = b.manifest()
    _, jmp = switch_dispatch(b, new_address(b, function(built.plain, "pick")[0]))
    b.write(m["table"] + (jmp - m["lo"]), b"\x04")
    assert has(findings(b.save(tmp_path / "m")), "inside-guard", jmp, "bounded dispatch")


def test_stub_that_does_not_reach_the_handler(built: Built, tmp_path: Path) -> None:
    b = Binary(built.hardened)
    g = guard_in(b, built, "main", "ret")
    (rel,) = struct.unpack("<i", b.read(g.stub + 23, 4))
    b.write(g.stub + 23, struct.pack("<i", rel - 1))
    assert has(findings(b.save(tmp_path / "m")), "guard-stub", g.branch, "not to the handler")


def test_handler_with_a_ret(built: Built, tmp_path: Path) -> None:
    b = Binary(built.hardened)
    h = b.manifest()["handler"]
    b.write(h, b"\xc3")
    assert has(findings(b.save(tmp_path / "m")), "handler", h)


def test_manifest_that_leaves_code_uncovered(built: Built, tmp_path: Path) -> None:
    """A manifest whose range misses an executable segment: targets there would pass as 'outside'."""
    b = Binary(built.hardened)
    raw = b.data
    pos = raw.rfind(b"CFIGUARD")
    m, n = json.JSONDecoder().raw_decode(raw[pos + 8 :].decode("latin-1"))
    end = pos + 8 + n
    m["lo"] += 0x10
    m["table"] += 0x10
    new = b"CFIGUARD" + json.dumps(m, sort_keys=True).encode()
    assert len(new) == end - pos
    raw[pos:end] = new
    found = findings(b.save(tmp_path / "m"))
    assert has(found, "layout", None, "not inside the checked range") and has(found, "guard-range")


# ---------------------------------------------------------------------------------------------- independence


def test_verifier_imports_nothing_from_the_rewriter() -> None:
    """The import-linter contract, restated so that a plain pytest run enforces it too."""
    forbidden = (
        "cfiguard.image",
        "cfiguard.disasm",
        "cfiguard.analysis",
        "cfiguard.policy",
        "cfiguard.rewrite",
    )
    forbidden += ("cfiguard.errors", "cfiguard.api")
    for path in (ROOT / "cfiguard" / "verify").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for n in names:
                assert not n.startswith(forbidden), f"{path.name} imports {n}"


@pytest.mark.parametrize("func,kind", [("main", "ret"), ("apply", "call")])
def test_out_of_range_branch_skips_the_cross_module_stub(
    built: Built, tmp_path: Path, func: str, kind: str
) -> None:
    """(x) The guard's jae goes straight to its .ok: a target outside the module would pass unchecked."""
    b = Binary(built.hardened)
    g = guard_in(b, built, func, kind)
    ok = g.check + 38
    b.write(g.check + 19, struct.pack("<i", ok - (g.check + 23)))
    assert has(findings(b.save(tmp_path / "m")), "guard-xmod", g.branch)


@pytest.mark.parametrize("field", ["modsize", "ok"])
def test_cross_module_stub_fields(built: Built, tmp_path: Path, field: str) -> None:
    """(x) A stub that treats less of the module as its own, or that goes back to another place."""
    b = Binary(built.hardened)
    g = guard_in(b, built, "main", "ret")
    (rel,) = struct.unpack("<i", b.read(g.check + 19, 4))
    x = g.check + 23 + rel
    if field == "modsize":  # cmp r10, imm32 at offset 16..20 of the stub (after add, lea, neg, add)
        (n,) = struct.unpack("<I", b.read(x + 19, 4))
        b.write(x + 19, struct.pack("<I", n // 2))
    else:  # the jmp back to .ok is the last instruction of the ret stub (240 bytes): its rel32 at 236
        assert b.read(x + 235, 1) == b"\xe9"
        (rel2,) = struct.unpack("<i", b.read(x + 236, 4))
        assert x + 240 + rel2 == g.check + 38  # it does go back to the guard's .ok
        b.write(x + 236, struct.pack("<i", rel2 + 1))
    assert has(findings(b.save(tmp_path / "m")), "guard-xmod", g.branch)
