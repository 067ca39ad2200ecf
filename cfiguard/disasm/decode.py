"""Bulk decoding with capstone's `disasm_lite`.

Decoding is the hottest loop of the tool, so instructions are kept as four parallel lists (address, size,
mnemonic, operand string) instead of objects, and only the few instructions that matter to control flow or
that reference memory rip-relatively are looked at again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import capstone

from cfiguard.disasm.vex import MNEMONIC as VEX_MNEMONIC
from cfiguard.disasm.vex import decode_vex


@lru_cache(maxsize=1)
def _lite() -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@lru_cache(maxsize=1)
def _detailed() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


@dataclass(frozen=True)
class Decoded:
    """A linear decoding of one byte range. `complete` is False when capstone stopped before `end`."""

    start: int
    end: int
    addrs: list[int]
    sizes: list[int]
    mnems: list[str]
    ops: list[str]

    @property
    def complete(self) -> bool:
        return bool(self.addrs) and self.addrs[-1] + self.sizes[-1] == self.end


def decode_range(code: bytes, start: int) -> Decoded:
    """Linear sweep of `code` loaded at `start`. Where capstone stops at a VEX/EVEX instruction it does not
    know (AVX512-FP16, ...), the exact length decoder of `vex.py` steps over it (mnemonic `(vex)`, operands
    `[rip + X]` when it is rip-relative) and capstone goes on after it."""
    addrs: list[int] = []
    sizes: list[int] = []
    mnems: list[str] = []
    ops: list[str] = []
    off = 0
    while off < len(code):
        for a, s, m, o in _lite().disasm_lite(code[off:], start + off):
            if o.isdigit() and m[0] in "jcl":
                o = hex(int(o))  # capstone prints small branch targets in decimal ("call 0" to a weak symbol)
            addrs.append(a)
            sizes.append(s)
            mnems.append(m)
            ops.append(o)
        off = addrs[-1] + sizes[-1] - start if addrs else 0
        if off >= len(code):
            break
        v = decode_vex(code, off)
        if v is None:
            break
        a = start + off
        addrs.append(a)
        sizes.append(v.size)
        mnems.append(VEX_MNEMONIC)
        if v.rip_disp_offset is None:
            ops.append("")
        else:
            disp = int.from_bytes(
                code[off + v.rip_disp_offset : off + v.rip_disp_offset + 4], "little", signed=True
            )
            ops.append(f"[rip {'-' if disp < 0 else '+'} {abs(disp):#x}]")
        off += v.size
    return Decoded(start, start + len(code), addrs, sizes, mnems, ops)


def vex_rip_operand(raw: bytes) -> MemOperand | None:
    """The rip-relative operand of a VEX/EVEX instruction that only vex.py decodes."""
    v = decode_vex(raw, 0)
    if v is None or v.rip_disp_offset is None:
        return None
    o = v.rip_disp_offset
    return MemOperand("rip", None, 1, int.from_bytes(raw[o : o + 4], "little", signed=True), o, 4)


@dataclass(frozen=True)
class MemOperand:
    """The memory operand of an instruction, with where its displacement sits in the encoding."""

    base: str | None
    index: str | None
    scale: int
    disp: int
    disp_offset: int  # byte offset of the displacement inside the instruction, 0 when it has none
    disp_size: int


def mem_operand(raw: bytes, addr: int) -> MemOperand | None:
    """Detail-decode one instruction and return its (single) memory operand, if any."""
    insn = next(_detailed().disasm(raw, addr, 1), None)
    if insn is None:
        return None
    for op in insn.operands:
        if op.type == capstone.x86.X86_OP_MEM:
            m = op.mem
            base = insn.reg_name(m.base) if m.base else None
            index = insn.reg_name(m.index) if m.index else None
            return MemOperand(base, index, m.scale, m.disp, insn.disp_offset, insn.disp_size)
    return None
