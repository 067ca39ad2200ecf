"""The guard "superinstructions" the verifier accepts, restated byte for byte (never imported from the rewriter).

A guard is recognised only as one exact unit that ends in the indirect branch it protects. Fixed bytes are
compared literally; the variable fields (lo, size, table distance, class mask, violation stub) are extracted
and checked by the caller against the layout, so that a wrong constant is reported as such instead of as a
missing guard. The only variable-length parts are the `mov r11, <operand>` that loads the target and, in the
preserving jmp guard, the final `jmp <operand>`; both are parsed here (ModRM/SIB) and, for the preserving
form, proven to name the same target.

Common check, 34 bytes, r11 = target T:

    4c 8d 15 LO32        lea  r10, [rip + LO]         LO resolves to lo
    4d 29 d3             sub  r11, r10
    49 81 fb SIZE32      cmp  r11, SIZE               SIZE = hi - lo
    0f 83 XMOD32         jae  cross-module stub       (a target outside [lo, hi): see below)
    43 f6 84 1a D32 M8   test byte ptr [r10 + r11 + D], M
    0f 84 VIOL32         jz   violation stub
  .ok:

The cross-module stub of a site (one per guard, after the violation stubs) is matched byte for byte as well
(XFWD for calls and jumps, XRET for returns); its fields must name lo, the module's loaded span (checked
against the PT_LOADs), this guard's `.ok` and this guard's violation stub. It only reads memory and jumps to
one of those two, so it needs no decoding of its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RET, CALL, JMP = 1, 2, 4
MASK = {"ret": RET, "call": CALL, "jmp": CALL | JMP}
KIND_CODE = {"call": 0, "jmp": 1, "ret": 2}  # edx of the violation stub

# The check, as (offset, fixed bytes); the gaps hold LO32 @3, SIZE32 @13, XMOD32 @19, D32 @27, M8 @31,
# VIOL32 @34.
CHECK = (
    (0, b"\x4c\x8d\x15"),
    (7, b"\x4d\x29\xd3\x49\x81\xfb"),
    (17, b"\x0f\x83"),
    (23, b"\x43\xf6\x84\x1a"),
    (32, b"\x0f\x84"),
)
CHECK_LEN = 38
CHECK_INSNS = (0, 7, 10, 17, 23, 32)  # instruction starts inside the check, for the capstone cross-check


def _stub_form(text: str) -> tuple[bytes, dict[str, list[int]]]:
    """Hex with named 4-byte fields (`<lo>`, ...): the fixed bytes (fields zeroed) and the field offsets."""
    out, fields = bytearray(), {}
    for tok in text.split():
        if tok.startswith("<"):
            fields.setdefault(tok[1:-1], []).append(len(out))
            out += bytes(4)
        else:
            out += bytes.fromhex(tok)
    return bytes(out), fields


# add r11, r10; lea r10, [rip + modlo]; neg r10; add r10, r11; cmp r10, <modsize>; jb bad;
# lea r10, [rip + lo]; sub r11, r10; jmp ok; bad: lea r10, [rip + lo]; sub r11, r10; jmp viol
XFWD = _stub_form(
    "4d01d3 4c8d15 <modlo> 49f7da 4d01da 4981fa <modsize> 720f 4c8d15 <lo> 4d29d3 e9 <ok> 4c8d15 <lo> 4d29d3 e9 <bad>"
)
# The same two first checks, then: a call ends at T (e8 rel32, or ff /2 of 2, 3, 4, 6, 7 bytes), or T is the
# signal restorer (48 c7 c0 0f 00 00 00 0f 05) or __start_context (48 89 dc 48 8b 3c 24); else bad.
XRET = _stub_form(
    "4d01d3 4c8d15 <modlo> 49f7da 4d01da 4981fa <modsize> 0f82b5000000 41807bfbe8 0f84b9000000 450fb753fe"
    " 4181e2ff380000 4181faff100000 0f84a0000000 450fb753fd 4181e2ff380000 4181faff100000 0f8487000000"
    " 450fb753fc 4181e2ff380000 4181faff100000 7472 450fb753fa 4181e2ff380000 4181faff100000 745d 450fb753f9"
    " 4181e2ff380000 4181faff100000 7448 458b13 4181fa48c7c00f 7511 41817b040000000f 7507 41807b0805 742b"
    " 458b13 4181fa4889dc48 7510 6641817b048b3c 7507 41807b0624 740f 4c8d15 <lo> 4d29d3 e9 <bad> 4c8d15 <lo>"
    " 4d29d3 e9 <ok>"
)


def xstub_problem(
    b: bytes, i: int, vaddr: int, kind: str, lo: int, module: tuple[int, int], ok: int, bad: int
) -> str | None:
    """Why the bytes at b[i] are not the cross-module stub of a `kind` guard whose .ok is `ok` and whose
    violation stub is `bad`, for code range start `lo` and loaded span `module`."""
    fixed, fields = XRET if kind == "ret" else XFWD
    raw = b[i : i + len(fixed)] if i >= 0 else b""
    if len(raw) != len(fixed):
        return "cross-module stub does not lie in executable code"
    masked = bytearray(raw)
    for offs in fields.values():
        for o in offs:
            masked[o : o + 4] = bytes(4)
    if bytes(masked) != fixed:
        return "jae target is not a cross-module stub of the expected form"

    def target(o: int) -> int:
        return vaddr + i + o + 4 + _s32(raw, o)

    if any(target(o) != lo for o in fields["lo"]):
        return "cross-module stub restores a different lo"
    if target(fields["modlo"][0]) != module[0]:
        return "cross-module stub uses a different module start"
    if struct.unpack_from("<I", raw, fields["modsize"][0])[0] != module[1] - module[0]:
        return "cross-module stub uses a different module size"
    if target(fields["ok"][0]) != ok:
        return "cross-module stub does not return to its guard's .ok"
    if target(fields["bad"][0]) != bad:
        return "cross-module stub does not fail to its guard's violation stub"
    return None


# mov [rsp-8], r11; mov [rsp-16], r10; mov r11, [rsp]
RET_HEAD = b"\x4c\x89\x5c\x24\xf8\x4c\x89\x54\x24\xf0\x4c\x8b\x1c\x24"
RET_LOAD = b"\x4c\x8b\x1c\x24"  # mov r11, [rsp]: the short ret guard is RET_LOAD + CHECK + ret
RET_TAIL = b"\x4c\x8b\x5c\x24\xf8\x4c\x8b\x54\x24\xf0"  # mov r11, [rsp-8]; mov r10, [rsp-16]
CALL_TAIL = b"\x4d\x01\xd3\x41\xff\xd3"  # add r11, r10; call r11
JMP_TAIL = b"\x4d\x01\xd3\x41\xff\xe3"  # add r11, r10; jmp r11
PRESERVE_HEAD = b"\x48\x8d\x64\x24\x80\x41\x53\x41\x52\x9c"  # lea rsp,[rsp-128]; push r11; push r10; pushfq
PRESERVE_TAIL = (
    b"\x9d\x41\x5a\x41\x5b\x48\x8d\xa4\x24\x80\x00\x00\x00"  # popfq; pop r10; pop r11; lea rsp,[rsp+128]
)

# Race-free tails for `jmp r11` / `jmp r10`: the jump uses the checked value (r11 = T after the add), never a
# copy reloaded from the stack. (tail bytes, instruction offsets in it, register the unit jumps through)
REG_TAILS = (
    (bytes.fromhex("4d01d39d415a488da4248800000041ffe3"), (0, 3, 4, 6, 14), 11),
    (bytes.fromhex("4d01d3415a488da4248800000041ffe3"), (0, 3, 5, 13), 11),
    (bytes.fromhex("4d01d34d89da9d488d642408415b488da4248000000041ffe2"), (0, 3, 6, 7, 12, 14, 22), 10),
    (bytes.fromhex("4d01d34d89da488d642408415b488da4248000000041ffe2"), (0, 3, 6, 11, 13, 21), 10),
)

STUB_LEN = 27  # movabs rdi, site; lea rsi, [r11 + lo]; mov edx, kind; jmp handler

MOV_PREFIXES = frozenset((0x64, 0x65, 0x67))
JMP_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67, 0xF2))


@dataclass(frozen=True)
class Operand:
    """A decoded ModRM operand: a register, or memory as (segment, addr32, base, index, scale, disp)."""

    reg: int | None
    seg: int = 0
    addr32: bool = False
    base: int | str | None = None  # register number, "rip", or None (absolute disp32)
    index: int | None = None
    scale: int = 1
    disp: int = 0


@dataclass(frozen=True)
class Unit:
    """One recognised guard: [start, end), with the raw values of its fields for the caller to check."""

    kind: str  # ret (full or short), call, jmp (tail jmp and preserving jmp)
    start: int
    end: int
    branch: int  # address of the protected ret / call / jmp
    check: int  # address of the common check
    lo: int  # absolute address the lea resolves to
    size: int
    distance: int
    mask: int
    stub: int  # absolute jz target
    insns: tuple[int, ...]  # every instruction start inside the unit (for the capstone cross-check)
    problem: str | None = None  # a structural defect found after the unit matched (operand mismatch)
    xmod: int = 0  # absolute jae target: the site's cross-module stub


def modrm_insn(b: bytes, i: int, prefixes: frozenset[int]) -> tuple[int, int, int, Operand, int] | None:
    """Parse `[prefixes] [REX] opcode modrm [sib] [disp]` at b[i:]. Returns (rex, opcode, reg, operand, len)."""
    start, seg, addr32 = i, 0, False
    try:
        while b[i] in prefixes:
            seg = b[i] if b[i] in (0x64, 0x65) else seg
            addr32 = addr32 or b[i] == 0x67
            i += 1
        rex = b[i] if 0x40 <= b[i] <= 0x4F else 0
        i += 1 if rex else 0
        opcode, modrm = b[i], b[i + 1]
        i += 2
        mod, reg, rm = modrm >> 6, ((modrm >> 3) & 7) | (rex & 4) << 1, modrm & 7
        if mod == 3:
            return rex, opcode, reg, Operand(rm | (rex & 1) << 3), i - start
        base: int | str | None = rm | (rex & 1) << 3
        index, scale, dsize = None, 1, (0, 1, 4)[mod]
        if rm == 4:
            sib = b[i]
            i += 1
            scale, idx, base = 1 << (sib >> 6), ((sib >> 3) & 7) | (rex & 2) << 2, (sib & 7) | (rex & 1) << 3
            index = None if idx == 4 else idx
            if mod == 0 and sib & 7 == 5:
                base, dsize = None, 4
        elif mod == 0 and rm == 5:
            base, dsize = "rip", 4
        if i + dsize > len(b):
            return None
        disp = int.from_bytes(b[i : i + dsize], "little", signed=True) if dsize else 0
        i += dsize
    except IndexError:
        return None
    return rex, opcode, reg, Operand(None, seg, addr32, base, index, scale, disp), i - start


def _fixed(b: bytes, i: int, pieces: tuple[tuple[int, bytes], ...]) -> bool:
    return all(b[i + o : i + o + len(p)] == p for o, p in pieces)


def _s32(b: bytes, i: int) -> int:
    return struct.unpack_from("<i", b, i)[0]


def _load_r11(b: bytes, i: int) -> tuple[Operand, int] | None:
    """`mov r11, <operand>`: REX.W+R, 8B /r, only the prefixes that matter to the address (fs, gs, addr32)."""
    p = modrm_insn(b, i, MOV_PREFIXES)
    if p is None or p[1] != 0x8B or p[0] & 0xC != 0xC or p[2] != 11:
        return None
    return p[3], p[4]


def _check_at(
    b: bytes, i: int, vaddr: int, kind: str, start: int, end: int, branch: int, insns: list[int]
) -> Unit:
    c = vaddr + i
    return Unit(
        kind,
        start,
        end,
        branch,
        c,
        lo=c + 7 + _s32(b, i + 3),
        size=struct.unpack_from("<I", b, i + 13)[0],
        distance=_s32(b, i + 27),
        mask=b[i + 31],
        stub=c + CHECK_LEN + _s32(b, i + 34),
        xmod=c + 23 + _s32(b, i + 19),
        insns=tuple(insns + [c + o for o in CHECK_INSNS]),
    )


def match_unit(b: bytes, i: int, vaddr: int) -> Unit | None:
    """The guard unit starting at b[i] (address vaddr + i), or None. `b` is the whole segment's bytes."""
    a = vaddr + i
    if b[i : i + 14] == RET_HEAD:
        c = i + 14
        t = c + CHECK_LEN
        if not (_fixed(b, c, CHECK) and b[t : t + 10] == RET_TAIL):
            return None
        r = t + 10
        end = (
            r + 1 if b[r : r + 1] == b"\xc3" else r + 3 if b[r : r + 1] == b"\xc2" and r + 3 <= len(b) else 0
        )
        if not end:
            return None
        return _check_at(
            b,
            c,
            vaddr,
            "ret",
            a,
            vaddr + end,
            vaddr + r,
            [a, a + 5, a + 10, vaddr + t, vaddr + t + 5, vaddr + r],
        )
    if b[i : i + 9] == PRESERVE_HEAD[:9]:  # with pushfq/popfq, or without where the flags are dead
        flags = b[i + 9] == 0x9C
        h = 10 if flags else 9
        head, tail = (PRESERVE_HEAD, PRESERVE_TAIL) if flags else (PRESERVE_HEAD[:9], PRESERVE_TAIL[1:])
        load = _load_r11(b, i + h)
        if load is None:
            return None
        op2, n = load
        c = i + h + n
        t = c + CHECK_LEN
        if not _fixed(b, c, CHECK):
            return None
        for rtail, offs, reg in REG_TAILS:
            if b[t : t + len(rtail)] == rtail and (rtail[6] == 0x9D or rtail[3] == 0x9D) == flags:
                rest = [a, a + 5, a + 7] + [a + 9] * flags + [vaddr + i + h] + [vaddr + t + o for o in offs]
                end = vaddr + t + len(rtail)
                unit = _check_at(b, c, vaddr, "jmp", a, end, end - 3, rest)
                if op2.reg != reg:
                    return Unit(**{**unit.__dict__, "problem": f"checks another operand than r{reg}"})
                return unit
        if b[t : t + len(tail)] != tail:
            return None
        j = t + len(tail)
        p = modrm_insn(b, j, JMP_PREFIXES)
        if p is None or p[1] != 0xFF or p[2] & 7 != 4:
            return None
        pops = [t, t + 1, t + 3, t + 5] if flags else [t + 0, t + 2, t + 4]
        rest = [a, a + 5, a + 7] + [a + 9] * flags + [vaddr + i + h] + [vaddr + x for x in pops] + [vaddr + j]
        unit = _check_at(b, c, vaddr, "jmp", a, vaddr + j + p[4], vaddr + j, rest)
        problem = _same_target(op2, vaddr + i + h + n, p[3], vaddr + j + p[4], 128 + 8 * (h - 7))
        if problem is None and p[3].reg in (10, 11):  # restored from the stack after the check: a race
            problem = f"jmp r{p[3].reg} uses the copy restored from the stack, not the checked value"
        return unit if problem is None else Unit(**{**unit.__dict__, "problem": problem})
    if b[i : i + 2] == b"\x41\x5b":  # pop r11 + check + add r11, r10; jmp r11: the race-free return
        c, t = i + 2, i + 2 + CHECK_LEN
        if not (_fixed(b, c, CHECK) and b[t : t + 6] == JMP_TAIL):
            return None
        return _check_at(b, c, vaddr, "ret", a, vaddr + t + 6, vaddr + t + 3, [a, vaddr + t, vaddr + t + 3])
    load = _load_r11(b, i)
    if load is None:
        return None
    c = i + load[1]
    t = c + CHECK_LEN
    if not _fixed(b, c, CHECK):
        return None
    tail = b[t : t + 6]
    if b[i : i + 4] == RET_LOAD and tail[:1] in (b"\xc3", b"\xc2"):  # ret guard without the r10/r11 saves
        end = t + (1 if tail[:1] == b"\xc3" else 3)
        return (
            None if end > len(b) else _check_at(b, c, vaddr, "ret", a, vaddr + end, vaddr + t, [a, vaddr + t])
        )
    if tail not in (CALL_TAIL, JMP_TAIL):
        return None
    kind = "call" if tail == CALL_TAIL else "jmp"
    return _check_at(b, c, vaddr, kind, a, vaddr + t + 6, vaddr + t + 3, [a, vaddr + t, vaddr + t + 3])


def _same_target(load: Operand, load_end: int, jmp: Operand, jmp_end: int, pushed: int) -> str | None:
    """The preserving guard checks `load` (read with rsp lowered by `pushed`) but jumps through `jmp`: same?"""
    if load.reg is not None or jmp.reg is not None:
        if load.reg == jmp.reg and load.reg != 4:
            return None
        return "checked operand and jmp operand differ (register)"
    if (load.seg, load.addr32, load.base, load.index, load.scale) != (
        jmp.seg,
        jmp.addr32,
        jmp.base,
        jmp.index,
        jmp.scale,
    ):
        return "checked operand and jmp operand differ (addressing)"
    if load.base == "rip":
        same = load_end + load.disp == jmp_end + jmp.disp
    else:
        same = load.disp == jmp.disp + (pushed if load.base == 4 else 0)
    return None if same else "checked operand and jmp operand differ (displacement)"


def stub_problem(b: bytes, i: int, vaddr: int, lo: int, handler: int, kind: str) -> str | None:
    """Why the 27 bytes at b[i] are not a violation stub for a `kind` guard that reports to `handler`."""
    if i < 0 or i + STUB_LEN > len(b):
        return "violation stub does not lie in executable code"
    s = b[i : i + STUB_LEN]
    if s[0:2] != b"\x48\xbf" or s[10:13] != b"\x49\x8d\xb3" or s[17] != 0xBA or s[22] != 0xE9:
        return f"jz target is not a violation stub: {s.hex()}"
    if _s32(s, 13) != lo - (1 << 32 if lo >= 1 << 31 else 0):
        return "violation stub reports a different lo"
    if _s32(s, 18) != KIND_CODE[kind]:
        return f"violation stub reports kind {_s32(s, 18)}, expected {KIND_CODE[kind]} ({kind})"
    target = vaddr + i + STUB_LEN + _s32(s, 23)
    if target != handler:
        return f"violation stub jumps to {target:#x}, not to the handler {handler:#x}"
    return None


AUDIT_SAVE = bytes.fromhex("488da42400ffffff9c505152565741504151415241 53".replace(" ", ""))
AUDIT_RESTORE = bytes.fromhex("415b415a41594158 5f5e5a5958 9d 488da42400010000".replace(" ", ""))


def audit_stub_problem(b: bytes, i: int, vaddr: int, lo: int, logger: int, kind: str, ok: int) -> str | None:
    """Why b[i:] is not the audit-mode stub of a `kind` guard: save, movabs rdi, site; lea rsi, [r11 + lo];
    mov edx, kind; call logger; restore; jmp ok (the guard's .ok: the transfer goes on after the log)."""
    s = b[i : i + 76] if i >= 0 else b""
    if len(s) != 76 or s[:22] != AUDIT_SAVE or s[22:24] != b"\x48\xbf" or s[32:35] != b"\x49\x8d\xb3":
        return "jz target is not an audit stub"
    if s[39] != 0xBA or s[44] != 0xE8 or s[49:71] != AUDIT_RESTORE or s[71] != 0xE9:
        return "jz target is not an audit stub"
    if _s32(s, 35) != lo - (1 << 32 if lo >= 1 << 31 else 0) or _s32(s, 40) != KIND_CODE[kind]:
        return "audit stub reports a different lo or kind"
    if vaddr + i + 49 + _s32(s, 45) != logger:
        return "audit stub does not call the audit logger"
    if vaddr + i + 76 + _s32(s, 72) != ok:
        return "audit stub does not go on to its guard's .ok"
    return None


def near_miss(b: bytes, i: int, vaddr: int, kind: str) -> str:
    """For an unguarded branch at b[i]: if a guard template almost precedes it, which part differs (diagnostic)."""
    tails = {
        "call": [CALL_TAIL[:3]],
        "jmp": [JMP_TAIL[:3], PRESERVE_TAIL, PRESERVE_TAIL[1:]],
        "ret": [RET_TAIL, b""],
    }[kind]
    names = {0: "lea r10", 7: "sub/cmp", 17: "jae", 23: "test", 32: "jz"}
    for tail in tails:
        c = i - len(tail) - CHECK_LEN
        if c < 0 or b[i - len(tail) : i] != tail:
            continue
        bad = [(off, p) for off, p in CHECK if b[c + off : c + off + len(p)] != p]
        if 0 < len(bad) <= 2:
            off, p = bad[0]
            return f" (guard template broken at {vaddr + c + off:#x}: expected {names[off]} {p.hex()})"
    return ""
