"""Bulk decoding with capstone's `disasm_lite`.

Decoding is the hottest loop of the tool, so instructions are kept as four parallel lists (address, size,
mnemonic, operand string) instead of objects, and only the few instructions that matter to control flow or
that reference memory rip-relatively are looked at again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import capstone


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
    """Linear sweep of `code` loaded at `start`."""
    addrs: list[int] = []
    sizes: list[int] = []
    mnems: list[str] = []
    ops: list[str] = []
    for a, s, m, o in _lite().disasm_lite(code, start):
        if o.isdigit() and m[0] in "jcl":
            o = hex(int(o))  # capstone prints small branch targets in decimal ("call 0" to a weak symbol)
        addrs.append(a)
        sizes.append(s)
        mnems.append(m)
        ops.append(o)
    return Decoded(start, start + len(code), addrs, sizes, mnems, ops)


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
