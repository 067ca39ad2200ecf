"""Bounded switch dispatch: the one kind of unguarded indirect jmp the verifier accepts, after proving it itself.

The rewriter leaves a `jmp` unguarded when it dispatches through a read-only jump table with a proven bound. The
verifier re-proves that from the straight-line instructions before the jmp, with a small forward abstract
interpretation over register families, and accepts only these shapes:

    cmp I, N ; ja/jae ... jmp [I*8 + T]                         (absolute table)
    <bound on I> ... mov R, [I*8 + T] ... jmp R
    <bound on I> ... lea B, [rip + T] ... movsxd R, [B + I*4] ... add R, B ... jmp R   (or add B, R; jmp B)

where the bound on I is `cmp I, N; ja` (N+1 entries) or `jae` (N), `and I, M` (M+1) or `movzx I, byte` (256).
A bound on a 32-bit register counts for the 64-bit index only if the upper half is known to be zero (the last
write to it was a 32-bit write inside the window). Any instruction the interpretation does not know clobbers
every register. The caller then checks that the table is read-only, queues every table target, and that no
label or branch lands inside the window (so the bound cannot be skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_R64 = "rax rcx rdx rbx rsp rbp rsi rdi".split() + [f"r{i}" for i in range(8, 16)]
_R32 = "eax ecx edx ebx esp ebp esi edi".split() + [f"r{i}d" for i in range(8, 16)]
_R16 = "ax cx dx bx sp bp si di".split() + [f"r{i}w" for i in range(8, 16)]
_R8 = "al cl dl bl spl bpl sil dil".split() + [f"r{i}b" for i in range(8, 16)] + "ah ch dh bh".split()
REGS = {
    r: (_R64[i % 16], w)
    for w, names in ((64, _R64), (32, _R32), (16, _R16), (8, _R8))
    for i, r in enumerate(names)
}

# cs/ds/es/ss overrides (a CET `notrack` prefix shows as ds:) are ignored in 64-bit mode; fs/gs are not accepted.
ABS8 = re.compile(r"^qword ptr (?:[cdes]s:)?\[(\w+)\*8 \+ (0x[0-9a-f]+)\]$")
REL4 = re.compile(r"^dword ptr (?:[cdes]s:)?\[(\w+) \+ (\w+)\*4\]$")
RIP = re.compile(r"^\[rip ([+-]) (0x[0-9a-f]+|\d+)\]$")
IMM = re.compile(r"^(0x[0-9a-f]+|\d+)$")
# Instructions whose only register effect is writing their first operand (when it is a register).
SIMPLE = frozenset(
    "mov movabs movsx movsxd movzx lea add sub and or xor adc sbb shl shr sar rol ror inc dec neg not imul "
    "bsf bsr popcnt lzcnt tzcnt bswap".split()
)
NO_WRITE = frozenset("cmp test nop endbr64 bt".split())
# Instructions that write only the stack pointer (and memory) besides their register operand, if any:
# `push x` writes rsp; `pop r` writes r and rsp.
STACK_ONLY = frozenset(("push", "pushfq", "popfq"))
HIGH8 = frozenset("ah ch dh bh".split())  # bits 8..15 of their family: never a bound on the low bits
# cmovcc writes its destination whatever the condition (and a 32-bit one zero-extends it); setcc writes a byte.
WRITES_DST = re.compile(r"^(?:cmov|set)[a-z]+$")
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Dispatch:
    table: int
    entries: int
    size: int  # 8: absolute addresses; 4: signed offsets from the table
    origin: int  # first instruction the proof depends on: nothing may enter (origin, jmp]


def prove(window: list[tuple[int, int, str, str]]) -> Dispatch | None:
    """`window`: the straight-line (address, size, mnemonic, operands) ending with the indirect jmp."""
    # family -> ("zx", origin) | ("bound", origin, n, w, low_origin): the low w bits are < n, and when w is 64
    # because the upper half was known zero, low_origin is where the bound on the low half alone starts
    #         | ("copy", origin, F): equals the zero-extended low half of F | ("copy64", origin, F): equals F
    #         | ("base", origin, T) | ("abs", origin, T, n) | ("rel", origin, T, n) | ("target", origin, T, n)
    st: dict[str, tuple] = {}
    for k, (a, s, m, o) in enumerate(window[:-1]):
        m = m.rsplit(" ", 1)[-1]
        dst, _, src = o.partition(", ")
        d = REGS.get(dst)
        if m == "cmp" and d and dst not in HIGH8 and IMM.match(src) and k + 1 < len(window) - 1:
            nxt = window[k + 1][2].rsplit(" ", 1)[-1]
            n = int(src, 0) + (nxt == "ja")
            if nxt in ("ja", "jae") and n <= 1 << d[1]:
                prev = st.get(d[0], ())
                if d[1] == 32 and _upper_zero(prev):  # the bound on the low half bounds the register
                    st[d[0]] = ("bound", min(a, prev[1]), n, 64, a)
                else:
                    st[d[0]] = ("bound", a, n, d[1], a)
                for g, v in list(st.items()):  # registers copied from it before the cmp share the bound
                    # a copy holds the low 32 bits: a 32- or 64-bit compare bounds all of it; a narrower one
                    # bounds only the same low bits of the copy
                    if v[0] == "copy" and v[2] == d[0] and d[1] >= 32 and (d[1] == 32 or n <= 1 << 32):
                        st[g] = ("bound", min(a, v[1]), n, 64, min(a, v[1]))
                    elif v[0] == "copy" and v[2] == d[0] and d[1] < 32:
                        st[g] = ("bound", min(a, v[1]), n, d[1], min(a, v[1]))
                    elif v[0] == "copy64" and v[2] == d[0]:
                        b = st[d[0]]
                        st[g] = ("bound", min(b[1], v[1]), n, b[3], min(b[4], v[1]))
            continue
        if m in NO_WRITE or (m.startswith("j") and m != "jmp"):
            continue
        if m in STACK_ONLY or m == "pop":
            _write(st, "rsp")
            if m == "pop" and d is not None:
                _write(st, d[0])
            elif m == "pop" and "[" not in dst:
                st.clear()  # pop fs / gs: not modelled
            continue
        if WRITES_DST.match(m) and d is not None:
            _write(st, d[0])
            if d[1] == 32 and m.startswith("cmov"):
                st[d[0]] = ("zx", a)
            continue
        if m not in SIMPLE or (m == "imul" and not src):
            st.clear()  # unknown effects: forget everything
            continue
        if d is None:
            continue  # memory destination: no register written
        new = None if dst in HIGH8 else _effect(m, a, s, d, src, st)
        _write(st, d[0])
        if new is None and d[1] == 32:
            new = ("zx", a)  # any 32-bit write clears the upper half
        if new is not None:
            st[d[0]] = new
    a, s, m, o = window[-1]
    if (mm := ABS8.match(o)) is not None:
        n = _full(st, mm.group(1))
        return None if n is None else _make(int(mm.group(2), 16), n[0], 8, n[1])
    v = st.get(REGS.get(o, ("", 0))[0], ()) if REGS.get(o, ("", 0))[1] == 64 else ()
    if v[:1] in (("abs",), ("target",)):
        return _make(v[2], v[3], 8 if v[0] == "abs" else 4, v[1])
    return None


def _write(st: dict[str, tuple], fam: str) -> None:
    """Register family `fam` gets an unknown value: forget it, and what was a copy of it."""
    st.pop(fam, None)
    for g, v in list(st.items()):  # its source changed: no longer a copy (a 32-bit one stays zero-extended)
        if v[0] == "copy" and v[2] == fam:
            st[g] = ("zx", v[1])
        elif v[0] == "copy64" and v[2] == fam:
            del st[g]


def _make(table: int, n: int, size: int, origin: int) -> Dispatch | None:
    return Dispatch(table, n, size, origin) if 0 < n <= MAX_ENTRIES else None


def _upper_zero(v: tuple) -> bool:
    return v[:1] in (("zx",), ("copy",)) or (v[:1] == ("bound",) and v[3] == 64 and v[2] <= 1 << 32)


def _low(v: tuple | None, bits: int, a: int) -> tuple[int, int] | None:
    """(n, origin): a bound on the low `bits` bits (bits <= 32) of a register in state v, if one is known."""
    if v and v[0] == "bound" and v[3] >= bits:
        return min(v[2], 1 << bits), min(a, v[4])
    return None


def _full(st: dict[str, tuple], reg: str) -> tuple[int, int] | None:
    """(n, origin) when the 64-bit register `reg` is known to be < n."""
    r = REGS.get(reg)
    v = st.get(r[0]) if r and r[1] == 64 else None
    return (v[2], v[1]) if v and v[0] == "bound" and v[3] == 64 else None


def _effect(m: str, a: int, s: int, d: tuple[str, int], src: str, st: dict[str, tuple]) -> tuple | None:
    """The abstract value written to register `d` by `m d, src`, when it is one the proof can use."""
    fam, width = d
    sreg = REGS.get(src)
    sv = st.get(sreg[0]) if sreg and src not in HIGH8 else None
    if m == "mov" and sreg and sreg[1] == width == 64:
        return sv or (("copy64", a, sreg[0]) if sreg[0] != fam else None)
    if m == "mov" and sreg and sreg[1] == width == 32:  # zero-extends: a bounded low half bounds it all
        n = _low(sv, 32, a)
        if n is None:
            return ("copy", a, sreg[0]) if sreg[0] != fam else ("zx", a)
        return ("bound", n[1], n[0], 64, n[1])
    if m == "movzx" and width in (32, 64):
        bits = 8 if src.startswith("byte ptr") or (sreg and sreg[1] == 8) else 16
        if src.startswith(("byte ptr", "word ptr")) or sreg:
            n = _low(sv, bits, a) or (1 << bits, a)
            return ("bound", n[1], n[0], 64, n[1])
    if m == "movsxd" and width == 64 and sreg and sreg[1] == 32:
        n = _low(sv, 32, a)
        return ("bound", n[1], n[0], 64, n[1]) if n is not None and n[0] <= 1 << 31 else None
    if m == "and" and IMM.match(src) and int(src, 0) < (1 << 31 if width == 64 else 1 << width):
        return ("bound", a, int(src, 0) + 1, 64 if width >= 32 else width, a)
    if m == "lea" and width == 64 and (r := RIP.match(src)):
        return ("base", a, a + s + int(r.group(2), 0) * (1 if r.group(1) == "+" else -1))
    if m == "mov" and width == 64 and (t := ABS8.match(src)) and (n := _full(st, t.group(1))):
        return ("abs", min(a, n[1]), int(t.group(2), 16), n[0])
    if m == "movsxd" and width == 64 and (t := REL4.match(src)) and (n := _full(st, t.group(2))):
        base = st.get(REGS.get(t.group(1), ("",))[0], ())
        if base[:1] == ("base",) and REGS[t.group(1)][1] == 64:
            return ("rel", min(a, base[1], n[1]), base[2], n[0])
    if m == "add" and width == 64 and sreg and sreg[1] == 64:
        x, y = st.get(fam, ()), sv or ()
        for rel, base in ((x, y), (y, x)):
            if rel[:1] == ("rel",) and base[:1] == ("base",) and rel[2] == base[2]:
                return ("target", min(a, rel[1], base[1]), rel[2], rel[3])
    return None
