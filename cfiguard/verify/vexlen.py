"""The verifier's own length decoder for VEX/EVEX instructions capstone rejects (AVX512-FP16, ...).

Written apart from the rewriter's (the verifier imports nothing from it). Such an instruction is never a
branch: the verifier only needs where it ends. Accepted form, and nothing else:

    up to 4 of (26 2e 36 3e 64 65 67), then
    c5 P | c4 P P (map 1-3) | 62 P P P (EVEX.P1 bit 2 set; map 1, 2, 3, 5, 6),
    opcode, ModRM (absent only for VEX map 1 opcode 77), SIB and displacement as ModRM says,
    imm8 for map 3 and for map 1 opcodes 70-73, c2, c4-c6.
"""

from __future__ import annotations

SEGMENT_OR_ADDR32 = b"\x26\x2e\x36\x3e\x64\x65\x67"
HEADS = {0xC5: (2, {1}), 0xC4: (3, {1, 2, 3}), 0x62: (4, {1, 2, 3, 5, 6})}
MAP1_WITH_IMM8 = {0x70, 0x71, 0x72, 0x73, 0xC2, 0xC4, 0xC5, 0xC6}
DISP_BY_MOD = (0, 1, 4, 0)


def vex_length(b: bytes, at: int) -> int | None:
    """Length of the VEX/EVEX instruction at b[at:], or None when it is not exactly of the accepted form."""
    p = at
    while p - at < 4 and p < len(b) and b[p] in SEGMENT_OR_ADDR32:
        p += 1
    if p >= len(b) or b[p] not in HEADS:
        return None
    head, maps = HEADS[b[p]]
    if p + head >= len(b):
        return None
    if b[p] == 0xC5:
        vmap = 1
    elif b[p] == 0xC4:
        vmap = b[p + 1] & 31
    else:
        vmap = b[p + 1] & 7
        if not b[p + 2] & 4:
            return None
    if vmap not in maps:
        return None
    opcode = b[p + head]
    q = p + head + 1
    if b[p] == 0x62 or vmap != 1 or opcode != 0x77:
        if q >= len(b):
            return None
        mod, rm = b[q] >> 6, b[q] & 7
        q += 1
        if mod != 3 and rm == 4:
            if q >= len(b):
                return None
            q += 1 + (4 if mod == 0 and b[q] & 7 == 5 else 0)
        elif mod == 0 and rm == 5:
            q += 4
        q += DISP_BY_MOD[mod]
    if vmap == 3 or (vmap == 1 and opcode in MAP1_WITH_IMM8):
        q += 1
    return q - at if q <= len(b) and q - at <= 15 else None
