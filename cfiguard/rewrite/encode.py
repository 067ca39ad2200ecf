"""Byte-level re-encoding of single instructions for relocated code.

Everything here works on the original instruction bytes instead of re-assembling text, so that an instruction
keeps its exact semantics (prefixes, operand size, segment override) and only the fields that depend on its
position change.
"""

from __future__ import annotations

from cfiguard.disasm.decode import MemOperand
from cfiguard.errors import RewriteError

LEGACY_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))
# Prefixes that matter to an address computation and must be kept on the `mov r11, <operand>`.
KEEP_PREFIXES = frozenset((0x64, 0x65, 0x67))

JCC_SHORT = range(0x70, 0x80)


def s32(v: int) -> bytes:
    if not -(1 << 31) <= v < (1 << 31):
        raise RewriteError(f"displacement {v:#x} out of rel32 range")
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def jmp_rel32(at: int, target: int) -> bytes:
    return b"\xe9" + s32(target - (at + 5))


def call_rel32(at: int, target: int) -> bytes:
    return b"\xe8" + s32(target - (at + 5))


def jcc_rel32(cc: int, at: int, target: int) -> bytes:
    return bytes((0x0F, 0x80 | cc)) + s32(target - (at + 6))


def jcc_condition(raw: bytes) -> int:
    """Condition code (0-15) of a jcc, short (7x) or near (0F 8x), ignoring prefixes."""
    i = _skip_prefixes(raw)
    if raw[i] in JCC_SHORT:
        return raw[i] & 0xF
    if raw[i] == 0x0F and 0x80 <= raw[i + 1] <= 0x8F:
        return raw[i + 1] & 0xF
    raise RewriteError(f"not a jcc: {raw.hex()}")


def _skip_prefixes(raw: bytes) -> int:
    i = 0
    while i < len(raw) and raw[i] in LEGACY_PREFIXES:
        i += 1
    return i


def loop_expansion(raw: bytes, at: int, target: int) -> bytes:
    """jrcxz/jecxz/loop/loope/loopne have only a rel8 form: `op +2; jmp +5; jmp rel32 target`."""
    i = _skip_prefixes(raw)
    head = raw[: i + 1] + b"\x02"  # same opcode (and address-size prefix), branch over the short jmp
    short = b"\xeb\x05"
    return head + short + jmp_rel32(at + len(head) + 2, target)


def loop_expansion_size(raw: bytes) -> int:
    return _skip_prefixes(raw) + 2 + 2 + 5


def mov_r11_from(raw: bytes, mem: MemOperand | None, at: int, old_addr: int, extra_rsp: int = 0) -> bytes:
    """`mov r11, <operand>` for the FF /2 or FF /4 instruction `raw` (indirect call or jmp), placed at `at`.

    The ModRM/SIB/displacement of the operand are reused with the reg field set to r11 (REX.R) and opcode 8B.
    A rip-relative displacement is re-aimed at the same absolute address. `extra_rsp` is added to the
    displacement of an rsp-based operand (the preserving guard has pushed that much before the load).
    """
    i = 0
    keep = bytearray()
    while raw[i] in LEGACY_PREFIXES:
        if raw[i] in KEEP_PREFIXES:
            keep.append(raw[i])
        i += 1
    rex = 0
    if 0x40 <= raw[i] <= 0x4F:
        rex = raw[i]
        i += 1
    if raw[i] != 0xFF:
        raise RewriteError(f"indirect branch with unexpected opcode at {old_addr:#x}: {raw.hex()}")
    modrm = raw[i + 1]
    mod, rm = modrm >> 6, modrm & 7
    rest = bytearray(raw[i + 2 :])
    new_rex = 0x48 | 0x04 | (rex & 0x03)  # W, R (r11), keep X and B
    if mod != 3 and rm == 4 and mem is not None and mem.base == "rsp" and extra_rsp:
        # Base rsp: move to a disp32 form with the extra displacement.
        sib = rest[0]
        disp = mem.disp + extra_rsp
        body = bytes((0x80 | (3 << 3) | 4, sib)) + s32(disp)
        return bytes(keep) + bytes((new_rex, 0x8B)) + body
    new_modrm = (mod << 6) | (3 << 3) | rm
    out = bytearray(keep) + bytes((new_rex, 0x8B, new_modrm)) + rest
    if mod == 0 and rm == 5:  # rip-relative
        target = old_addr + len(raw) + int.from_bytes(raw[i + 2 : i + 6], "little", signed=True)
        pos = len(keep) + 3
        out[pos : pos + 4] = s32(target - (at + len(out)))
    return bytes(out)


def redisplace_rip(raw: bytes, mem: MemOperand, old_addr: int, at: int, target: int | None = None) -> bytes:
    """Instruction `raw` moved from `old_addr` to `at`, its rip-relative operand aimed at the same address
    (or at `target` when given)."""
    # rip-relative displacements are always 32-bit (capstone under-reports disp_size for some SSE forms).
    off = mem.disp_offset
    if off <= 0 or off + 4 > len(raw):
        raise RewriteError(f"rip-relative operand without disp32 at {old_addr:#x}")
    if target is None:
        target = old_addr + len(raw) + mem.disp
    out = bytearray(raw)
    out[off : off + 4] = s32(target - (at + len(raw)))
    return bytes(out)
