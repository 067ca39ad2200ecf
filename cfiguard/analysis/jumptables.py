"""Jump-table recovery for indirect jumps.

Shapes handled (gcc and clang, -O0 to -O3):
- PIC: `lea rB, [rip + T]` ... `movsxd rX, dword ptr [rB + rI*4]` ... `add rX, rB` ... `jmp rX`
  (entries are int32 offsets from T; -O0 computes the address in steps, which the same rule covers because
  only the `lea` of the table base is looked for);
- absolute: `jmp qword ptr [rI*8 + T]` or `mov rX, qword ptr [rI*8 + T]` ... `jmp rX` (non-PIE).

The extent of a table is taken as the longest run of entries that all decode to instruction starts, which is a
superset of the real targets: every true entry is a valid target, so the run cannot stop before the real end.
Extra entries only add labels. Dispatches are guarded at run time, so the table bound does not need proof.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cfiguard.image.elf import Image

MAX_ENTRIES = 4096
LOOKBACK = 16

_RIP_LEA = re.compile(r"^(\w+), \[rip ([+-]) (0x[0-9a-f]+|\d+)\]$")
_ABS_INDEXED = re.compile(r"qword ptr \[(\w+)\*8 \+ (0x[0-9a-f]+)\]$")
_REL_LOAD = re.compile(r"^\w+, dword ptr \[(\w+) \+ \w+\*4\]$")


class UnresolvedTable(Exception):
    """An indirect jmp that loads its target from a table this module could not find."""


@dataclass(frozen=True)
class JumpTable:
    site: int
    table: int
    entry_size: int  # 4 (relative to the table) or 8 (absolute)
    targets: tuple[int, ...]


def find_jump_table(
    image: Image,
    addrs: list[int],
    sizes: list[int],
    mnems: list[str],
    ops: list[str],
    i: int,
    is_target: Callable[[int], bool],
) -> JumpTable | None:
    """The jump table dispatched by the indirect jmp at index `i`, if one is recognised."""
    site = addrs[i]
    m = _ABS_INDEXED.search(ops[i])
    if m:
        return _read_table(image, site, int(m.group(2), 16), 8, is_target)
    base_reg = None
    for j in range(i - 1, max(-1, i - LOOKBACK), -1):
        mn = mnems[j]
        if mn in ("ret", "jmp") or mn.startswith("call"):
            break
        if mn == "movsxd" and base_reg is None:
            m = _REL_LOAD.match(ops[j])
            if m:
                base_reg = m.group(1)
        if mn == "mov":
            m = _ABS_INDEXED.search(ops[j])
            if m:
                return _read_table(image, site, int(m.group(2), 16), 8, is_target)
        elif mn == "lea":
            m = _RIP_LEA.match(ops[j])
            if m:
                disp = int(m.group(3), 0) * (1 if m.group(2) == "+" else -1)
                table = addrs[j] + sizes[j] + disp
                jt = _read_table(image, site, table, 4, is_target)
                if jt is not None:
                    return jt
    if base_reg is not None:
        # The table base was loaded further away (hoisted out of a loop): take the nearest `lea base, [rip+T]`
        # before the jmp, then after it.
        order = list(range(i - 1, -1, -1)) + list(range(i + 1, len(addrs)))
        for j in order:
            if mnems[j] == "lea" and ops[j].startswith(base_reg + ", [rip"):
                m = _RIP_LEA.match(ops[j])
                if m:
                    disp = int(m.group(3), 0) * (1 if m.group(2) == "+" else -1)
                    jt = _read_table(image, site, addrs[j] + sizes[j] + disp, 4, is_target)
                    if jt is not None:
                        return jt
        raise UnresolvedTable(f"jump table of the jmp at {site:#x} not found (base {base_reg})")
    return None


def _read_table(
    image: Image, site: int, table: int, size: int, is_target: Callable[[int], bool]
) -> JumpTable | None:
    seg = image.segment_at(table)
    if seg is None or seg.executable:
        return None
    limit = min(seg.vaddr + seg.filesz, table + MAX_ENTRIES * size)
    targets: list[int] = []
    addr = table
    fmt = "<i" if size == 4 else "<Q"
    while addr + size <= limit:
        (v,) = struct.unpack_from(fmt, image.data, seg.offset + addr - seg.vaddr)
        t = table + v if size == 4 else v
        if not is_target(t):
            break
        targets.append(t)
        addr += size
    if not targets:
        return None
    return JumpTable(site, table, size, tuple(targets))
