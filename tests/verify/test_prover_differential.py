"""Differential test of the two switch-dispatch provers against the CPU (an emulator).

Random dispatch shapes are assembled with keystone: a bound on an index (`cmp` + `ja`/`jae` of any width,
`and`, `movzx`), random instructions around it (copies of every width, partial and high-byte writes, implicit
writers such as `lock cmpxchg`, `xchg`, `cmov`, `setcc`, `push`/`pop`), then a table dispatch (absolute
`jmp [I*8 + T]`, `mov R, [I*8 + T]; jmp R`, or the PIC `lea`/`movsxd`/`add` form). Each prover says whether the
dispatch is bounded and how many entries the table has:

- the verifier's `cfiguard.verify.dispatch.prove` (on capstone's decoding of the window);
- the rewriter's `cfiguard.analysis.jumptables.dispatch_window` (which accepts a table only when its extent
  equals the bound it proves).

Whenever one of them claims "at most N entries", the shape is executed in unicorn with adversarial register
values (edge values in every byte, random 64-bit values), and every read of the table must fall inside its N
entries. A claim that some index value escapes is a soundness bug: the test fails with the shape.

CI runs a fixed seed set; CFIGUARD_PROVER_SHAPES=20000 runs a long mode (docs/testing.md).
"""

from __future__ import annotations

import os
import random

import capstone
import keystone
import pytest

unicorn = pytest.importorskip(
    "unicorn", reason="unicorn (the emulator) is a test dependency: pip install unicorn"
)
from unicorn import x86_const as X  # noqa: E402

from cfiguard.analysis.jumptables import JumpTable, dispatch_window  # noqa: E402
from cfiguard.verify.dispatch import prove  # noqa: E402

CODE, DATA, STACK = 0x100000, 0x400000, 0x800000
TABLE = 0x600000  # absolute tables; the PIC form finds its table through `lea rip`
SHAPES = int(os.environ.get("CFIGUARD_PROVER_SHAPES", "600"))
RUNS = 24  # register assignments per claimed-safe shape

R64 = ["rax", "rcx", "rdx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r12"]
NAMES = {
    "rax": ("eax", "ax", "al"),
    "rcx": ("ecx", "cx", "cl"),
    "rdx": ("edx", "dx", "dl"),
    "rbx": ("ebx", "bx", "bl"),
    "rsi": ("esi", "si", "sil"),
    "rdi": ("edi", "di", "dil"),
    "r8": ("r8d", "r8w", "r8b"),
    "r9": ("r9d", "r9w", "r9b"),
    "r10": ("r10d", "r10w", "r10b"),
    "r12": ("r12d", "r12w", "r12b"),
}
HIGH = {"rax": "ah", "rcx": "ch", "rdx": "dh", "rbx": "bh"}
UC_REG = {
    "rax": X.UC_X86_REG_RAX,
    "rcx": X.UC_X86_REG_RCX,
    "rdx": X.UC_X86_REG_RDX,
    "rbx": X.UC_X86_REG_RBX,
    "rsi": X.UC_X86_REG_RSI,
    "rdi": X.UC_X86_REG_RDI,
    "r8": X.UC_X86_REG_R8,
    "r9": X.UC_X86_REG_R9,
    "r10": X.UC_X86_REG_R10,
    "r12": X.UC_X86_REG_R12,
}
# Memory operands only ever use r13 (a scratch buffer) and rsp, so every read except the table's is mapped.
SCRATCH = "r13"


def name(reg: str, width: int) -> str:
    return reg if width == 64 else NAMES[reg][{32: 0, 16: 1, 8: 2}[width]]


def noise(rng: random.Random, regs: list[str]) -> str:
    a, b = rng.choice(regs), rng.choice(regs)
    w = rng.choice((64, 32, 32, 16, 8))
    forms = [
        lambda: f"mov {name(a, w)}, {name(b, w)}",
        lambda: f"mov {name(a, 32)}, {name(b, 32)}",
        lambda: f"mov {a}, {b}",
        lambda: f"movzx {name(a, 32)}, {name(b, 8)}",
        lambda: f"movzx {name(a, 32)}, {name(b, 16)}",
        lambda: f"movsxd {a}, {name(b, 32)}",
        lambda: f"add {name(a, w)}, {rng.choice((1, 7, 0x80, 0x7FFFFFFF))}",
        lambda: f"sub {name(a, 32)}, {rng.randint(0, 9)}",
        lambda: f"xor {name(a, 32)}, {name(a, 32)}",
        lambda: f"and {name(a, w)}, {rng.choice((3, 7, 0xF, 0xFF))}",
        lambda: f"mov {name(a, 8)}, byte ptr [{SCRATCH}]",
        lambda: (
            f"mov {name(a, w)}, {'qword' if w == 64 else 'dword' if w == 32 else 'word' if w == 16 else 'byte'} ptr [{SCRATCH} + 8]"
        ),
        lambda: f"set{rng.choice(('e', 'ne', 'b'))} {name(a, 8)}",
        lambda: (
            f"cmov{rng.choice(('e', 'ne'))} {name(a, 64 if w == 64 else 32)}, {name(b, 64 if w == 64 else 32)}"
        ),
        lambda: f"xchg {a}, {b}",
        lambda: f"lock cmpxchg qword ptr [{SCRATCH}], {b}",
        lambda: "push rbx",
        lambda: f"pop {a}",
        lambda: f"push {a}",
        lambda: f"mov {HIGH.get(a, 'ah')}, {rng.randint(0, 255)}",
        lambda: f"inc {name(a, w)}",
        lambda: f"neg {name(a, w)}",
        lambda: f"shr {name(a, w)}, {rng.randint(1, 9)}",
        lambda: f"test {name(a, w)}, {name(b, w)}",
        lambda: "cdqe",
        lambda: "cqo",
        lambda: f"bswap {name(a, 32)}",
    ]
    return rng.choice(forms)()


def bound(rng: random.Random, idx: str, regs: list[str]) -> tuple[list[str], list[int]]:
    """Instructions that bound `idx` (or try to), and the entry counts they might prove."""
    kind = rng.choice(("cmp", "cmp", "cmp", "and", "movzx"))
    if kind == "cmp":
        w = rng.choice((64, 32, 32, 16, 8))
        reg = rng.choice([idx] * 3 + regs)
        r = name(reg, w) if not (w == 8 and rng.random() < 0.2 and reg in HIGH) else HIGH[reg]
        n = rng.choice((3, 7, 12, 200, 255))
        jcc = rng.choice(("ja", "jae", "ja", "jb", "jg"))
        return [f"cmp {r}, {n}", f"{jcc} out"], [n, n + 1]
    if kind == "and":
        w = rng.choice((64, 32, 16, 8))
        m = rng.choice((3, 7, 15, 255))
        r = name(idx, w) if rng.random() < 0.85 or idx not in HIGH else HIGH[idx]
        return [f"and {r}, {m}"], [m + 1]
    w = rng.choice((8, 16))
    src = name(rng.choice(regs), w) if rng.random() < 0.8 else f"byte ptr [{SCRATCH}]"
    if src.startswith("byte") and w == 16:
        src = f"word ptr [{SCRATCH}]"
    return [f"movzx {name(idx, 32)}, {src}"], [256, 65536]


def shape(rng: random.Random) -> tuple[list[str], list[int], str]:
    regs = rng.sample(R64, 4)
    idx = regs[0]
    lines: list[str] = []
    for _ in range(rng.randint(0, 2)):
        lines.append(noise(rng, regs))
    if rng.random() < 0.3:  # the index is a copy of another register, and the bound is on that one
        src = regs[1]
        w = rng.choice((64, 32))
        lines.append(f"mov {name(idx, w)}, {name(src, w)}")
        b, counts = bound(rng, src, regs)
        if rng.random() < 0.3:
            b.append(noise(rng, regs))
    else:
        b, counts = bound(rng, idx, regs)
    lines += b
    for _ in range(rng.randint(0, 3)):
        lines.append(noise(rng, regs))
    if rng.random() < 0.3:
        lines.append(f"mov {name(idx, 32)}, {name(idx, 32)}")
    form = rng.choice(("abs", "load", "pic"))
    target = rng.choice([r for r in R64 if r != idx and r not in ("r10",)])
    if form == "abs":
        lines.append(f"jmp qword ptr [{idx}*8 + {TABLE:#x}]")
    elif form == "load":
        lines += [f"mov {target}, qword ptr [{idx}*8 + {TABLE:#x}]"]
        if rng.random() < 0.3:
            lines.append(noise(rng, regs))
        lines.append(f"jmp {target}")
    else:
        base = rng.choice([r for r in R64 if r not in (idx, target)])
        pre = [f"lea {base}, [rip + table]"]
        lines = lines[:-1] + pre + lines[-1:] if rng.random() < 0.3 and lines else lines + pre
        lines += [f"movsxd {target}, dword ptr [{base} + {idx}*4]"]
        if rng.random() < 0.2:
            lines.append(noise(rng, regs))
        lines += [f"add {target}, {base}", f"jmp {target}"]
    return lines, counts, form


_ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
_md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def assemble(lines: list[str]) -> tuple[bytes, int, int] | None:
    """Code at CODE: the window, then `out: hlt`, then (PIC) a 4 KiB-aligned table label. Returns (code, end
    of the window, table address)."""
    src = "\n".join(lines) + "\nout:\nhlt\n.align 4096\ntable:\n"
    try:
        enc, _ = _ks.asm(src, CODE)
    except keystone.KsError:
        return None
    code = bytes(enc or b"")
    insns = list(_md.disasm_lite(code, CODE))
    hlt = next((k for k, x in enumerate(insns) if x[2] == "hlt"), None)
    if hlt is None or hlt != len(lines):
        return None
    end = insns[hlt][0]
    table = (end + 1 + 4095) & ~4095
    return code, end, table


def emulate(code: bytes, end: int, regs: dict[str, int], table: int, size: int) -> list[int] | None:
    """Run the window once; the table offsets it reads (None when the run takes the `out` exit or faults)."""
    mu = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    mu.mem_map(CODE, 0x10000)
    mu.mem_write(CODE, code)
    mu.mem_map(DATA, 0x10000)
    mu.mem_write(DATA, bytes(random.Random(len(code)).randrange(256) for _ in range(64)))
    mu.mem_map(STACK, 0x10000)
    reads: list[int] = []

    def on_unmapped(uc, access, address, size_, value, user):
        reads.append(address)
        return False

    def on_read(uc, access, address, size_, value, user):
        if table - 0x100000 <= address < table + 0x100000 and not CODE <= address < CODE + 0x10000:
            reads.append(address)

    mu.hook_add(unicorn.UC_HOOK_MEM_READ_UNMAPPED, on_unmapped)
    mu.hook_add(unicorn.UC_HOOK_MEM_READ, on_read)
    for r, v in regs.items():
        mu.reg_write(UC_REG[r], v)
    mu.reg_write(X.UC_X86_REG_R13, DATA + 0x100)
    mu.reg_write(X.UC_X86_REG_RSP, STACK + 0x8000)
    # Stop at the jmp (the last instruction of the window); an `out` exit ends at hlt.
    insns = list(_md.disasm_lite(code[: end - CODE], CODE))
    jmp = insns[-1]
    try:
        mu.emu_start(CODE, jmp[0], count=200)
    except unicorn.UcError:
        pass
    pc = mu.reg_read(X.UC_X86_REG_RIP)
    if pc != jmp[0]:
        return None  # left through `out` (or faulted before the dispatch)
    if "[" in jmp[3]:  # jmp qword ptr [I*8 + T]: the read the jmp itself makes
        idx = jmp[3].split("[")[1].split("*")[0]
        reads.append((mu.reg_read(UC_REG[idx]) * 8 + TABLE) % (1 << 64))
    return [r - table for r in reads]


def claims(window, code: bytes, counts: list[int], form: str, table: int) -> list[tuple[str, int, int]]:
    """(prover, entries, entry size) for each prover that proves this dispatch bounded."""
    out = []
    d = prove(window)
    if d is not None:
        out.append(("verifier", d.entries, d.size))
    addrs = [x[0] for x in window]
    sizes = [x[1] for x in window]
    mnems = [x[2] for x in window]
    ops = [x[3] for x in window]
    size = 8 if form != "pic" else 4
    base = TABLE if form != "pic" else table
    for n in sorted(set(counts) | ({d.entries} if d else set())):
        if not 0 < n <= 4096:
            continue
        jt = JumpTable(addrs[-1], base, size, tuple(range(n)), exact=True)
        if dispatch_window(addrs, sizes, mnems, ops, len(addrs) - 1, jt) is not None:
            out.append(("rewriter", n, size))
    return out


EDGES = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
EDGES += [1 << 32, (1 << 32) + 3, 0xFF00, 0xFFFFFFFF00000003, (1 << 64) - 1, 0x8000000000000000, 0x0300]


def test_no_proven_dispatch_escapes_its_table() -> None:
    rng = random.Random(20261201)
    checked = proven = 0
    for _ in range(SHAPES):
        lines, counts, form = shape(rng)
        asm = assemble(lines)
        if asm is None:
            continue
        code, end, table = asm
        window = list(_md.disasm_lite(code[: end - CODE], CODE))
        result = claims(window, code, counts, form, table)
        checked += 1
        if not result:
            continue
        proven += 1
        for run in range(RUNS):
            regs = {r: (rng.choice(EDGES) if run % 2 else rng.getrandbits(64)) for r in R64}
            offsets = emulate(code, end, regs, table if form == "pic" else TABLE, 8)
            if offsets is None:
                continue
            for who, n, size in result:
                bad = [o for o in offsets if not 0 <= o < n * size]
                assert not bad, (
                    f"the {who} proves at most {n} entries, but the dispatch reads table offset {bad[0]:#x}:\n"
                    + "\n".join(lines)
                    + f"\nregisters: { {k: hex(v) for k, v in regs.items()} }"
                )
    assert checked > SHAPES // 2 and proven > 20, (checked, proven)
