"""Exact lengths of VEX- and EVEX-encoded instructions that capstone cannot decode (AVX512-FP16, AMX, ...).

capstone 5 rejects some encodings the CPU runs (for example `62 f3 7c 48 66 08 81`, `vfpclassph k1, [rax],
0x81`). None of the VEX/EVEX opcode maps used here holds a branch, so for control flow it is enough to know
where such an instruction ends and whether it addresses memory rip-relatively (the rewriter must re-aim that
displacement when it moves the code). The layout is fixed by the encoding:

    [67 / segment prefixes] (c5 xx | c4 xx xx | 62 xx xx xx) opcode [modrm [sib] [disp]] [imm8]

- maps: VEX 1 (0F), 2 (0F38), 3 (0F3A); EVEX 1, 2, 3, 5 and 6 (AVX512-FP16). Other maps (APX map 4, ...) hold
  instructions with other immediate sizes: refused.
- ModRM is always present, except VEX map 1 opcode 77 (vzeroupper, vzeroall).
- imm8: every map-3 instruction; in map 1 opcodes 70-73 and c2, c4, c5, c6.
"""

from __future__ import annotations

from dataclasses import dataclass

_PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x67")
_MAP1_IMM = frozenset((0x70, 0x71, 0x72, 0x73, 0xC2, 0xC4, 0xC5, 0xC6))
MNEMONIC = "(vex)"  # what decode_range records for an instruction only this module could decode


@dataclass(frozen=True)
class VexInsn:
    size: int
    rip_disp_offset: int | None  # offset of the disp32 of a rip-relative operand, else None


def decode_vex(code: bytes, k: int) -> VexInsn | None:
    """The VEX/EVEX instruction at code[k:], or None if it is not one this decoder knows exactly."""
    i = k
    while i < len(code) and code[i] in _PREFIXES and i - k < 4:
        i += 1
    if i >= len(code):
        return None
    lead = code[i]
    if lead == 0xC5:
        head, vmap = 2, 1
    elif lead == 0xC4:
        if i + 1 >= len(code):
            return None
        head, vmap = 3, code[i + 1] & 0x1F
        if vmap not in (1, 2, 3):
            return None
    elif lead == 0x62:
        if i + 3 >= len(code) or not code[i + 2] & 0x04:  # EVEX.P1 bit 2 is always 1
            return None
        head, vmap = 4, code[i + 1] & 0x07
        if vmap not in (1, 2, 3, 5, 6):
            return None
    else:
        return None
    op_at = i + head
    if op_at >= len(code):
        return None
    opcode = code[op_at]
    n = op_at + 1
    rip = None
    if not (lead != 0x62 and vmap == 1 and opcode == 0x77):
        if n >= len(code):
            return None
        modrm = code[n]
        n += 1
        mod, rm = modrm >> 6, modrm & 7
        if mod != 3:
            if rm == 4:
                if n >= len(code):
                    return None
                base = code[n] & 7
                n += 1
                n += 4 if (mod == 0 and base == 5) else 0
            elif mod == 0 and rm == 5:
                rip = n - k
                n += 4
            n += (0, 1, 4)[mod]
    if vmap == 3 or (vmap == 1 and opcode in _MAP1_IMM):
        n += 1
    if n > len(code) or n - k > 15:
        return None
    return VexInsn(n - k, rip)
