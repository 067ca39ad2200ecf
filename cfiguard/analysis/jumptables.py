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
_ABS_INDEXED = re.compile(r"qword ptr (?:ds:)?\[(\w+)\*8 \+ (0x[0-9a-f]+)\]$")
_ABS_REL_LOAD = re.compile(r"^(\w+), dword ptr \[(\w+)\*4 \+ (0x[0-9a-f]+)\]$")
_ADD_BASE = re.compile(r"^(\w+), (?:\[\1 \+ )?(0x[0-9a-f]+)\]?$")
_REL_LOAD = re.compile(r"^\w+, dword ptr \[(\w+) \+ (\w+)\*4\]$")


class UnresolvedTable(Exception):
    """An indirect jmp that loads its target from a table this module could not find."""


@dataclass(frozen=True)
class JumpTable:
    site: int
    table: int
    entry_size: int  # 4 (relative to the table) or 8 (absolute)
    targets: tuple[int, ...]
    exact: bool = False  # extent proven by a `cmp idx, N; ja` bound: the table may be rewritten in place
    safe: bool = False  # the dispatch provably reaches only these targets (no guard needed once rewritten)
    base: int = 0  # 4-byte entries are relative to this address (the table itself unless a label is added)
    united: bool = False  # targets of every table the dispatch may use (base loaded in another block)

    @property
    def relative_to(self) -> int:
        return self.base or self.table


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
        bound = _bound(mnems, ops, i, m.group(1))
        return _read_table(image, site, int(m.group(2), 16), 8, is_target, bound)
    if "[" in ops[i]:
        return None  # `jmp [reg + disp]`: a tail call through a vtable or a GOT slot, not a table dispatch
    if _loaded_pointer(mnems, ops, i, _family(ops[i])):
        return None  # `mov rax, [rax + 0x18]; ...; jmp rax`: the same tail call through a register
    base_reg = index_reg = None
    load_at = i
    for j in range(i - 1, max(-1, i - LOOKBACK), -1):
        mn = mnems[j]
        if mn in ("ret", "jmp") or mn.startswith("call"):
            break
        if mn == "movsxd":
            m = _ABS_REL_LOAD.match(ops[j])
            if m:
                # clang, non-PIE label differences: movsxd r, [idx*4 + T]; lea r, [r + BASE]; jmp r
                base = _added_constant(mnems[j + 1 : i], ops[j + 1 : i], m.group(1))
                if base is not None:
                    bound = _bound(mnems, ops, j, m.group(2))
                    return _read_table(image, site, int(m.group(3), 16), 4, is_target, bound, base)
        if mn == "movsxd" and base_reg is None:
            m = _REL_LOAD.match(ops[j])
            if m:
                base_reg, index_reg, load_at = m.group(1), m.group(2), j
        if mn == "mov":
            m = _ABS_INDEXED.search(ops[j])
            if m:
                bound = _bound(mnems, ops, j, m.group(1))
                return _read_table(image, site, int(m.group(2), 16), 8, is_target, bound)
        elif mn == "lea":
            table = _rip_target(addrs, sizes, ops, j)
            if table is not None:
                bound = _bound(mnems, ops, load_at, index_reg) if index_reg else None
                jt = _read_table(image, site, table, 4, is_target, bound)
                if jt is not None:
                    return jt
    if base_reg is not None:
        # The table base was loaded further away (hoisted out of a loop, in an earlier block: Rust and LLVM).
        # Which `lea base, [rip + T]` reaches this dispatch is not known without data flow, so every one in the
        # function is taken and their tables' targets united (a superset: the guard checks labels at run time,
        # so extra targets cost precision, a missing one would break the program). Never exact.
        bound = _bound(mnems, ops, load_at, index_reg)
        targets: set[int] = set()
        first = None
        for j in range(len(addrs)):
            if mnems[j] == "lea" and ops[j].startswith(base_reg + ", [rip"):
                table = _rip_target(addrs, sizes, ops, j)
                jt = None if table is None else _read_table(image, site, table, 4, is_target, bound)
                if jt is not None:
                    first = first or jt
                    targets.update(jt.targets)
        if first is None:
            raise UnresolvedTable(f"jump table of the jmp at {site:#x} not found (base {base_reg})")
        return JumpTable(site, first.table, 4, tuple(sorted(targets)), exact=False, united=True)
    return None


def _loaded_pointer(mnems: list[str], ops: list[str], i: int, reg: str) -> bool:
    """True if the jump register was last set by a plain 8-byte load that is not a table lookup."""
    for j in range(i - 1, max(-1, i - LOOKBACK), -1):
        if mnems[j].startswith(("call", "ret", "jmp")):
            return False
        if writes(mnems[j], ops[j], reg):
            dst, _, src = ops[j].partition(", ")
            return (
                mnems[j] == "mov"
                and src.startswith("qword ptr [")
                and "*" not in src
                and "rip" not in src
                and not _ABS_INDEXED.search(src)
            )
    return False


def _added_constant(mnems: list[str], ops: list[str], reg: str) -> int | None:
    """The constant added to `reg` by `lea reg, [reg + C]` or `add reg, C` among these instructions."""
    for mn, op in zip(mnems, ops, strict=True):
        if mn in ("lea", "add"):
            m = _ADD_BASE.match(op)
            if m and m.group(1) == reg:
                return int(m.group(2), 16)
    return None


def _family(reg: str) -> str:
    """Canonical 64-bit name of a general register (eax -> rax, r8d -> r8)."""
    reg = reg.strip()
    if reg.startswith("r") and reg[1:].rstrip("dwb").isdigit():
        return reg.rstrip("dwb")
    return _ALIASES.get(reg, reg)


_REGS64 = frozenset(
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{n}" for n in range(8, 16)]
)
_ALIASES = {f"e{x}": f"r{x}" for x in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp")}
_ALIASES.update({x: f"r{x}" for x in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp")})
_ALIASES.update({f"{x}l": f"r{x}x" for x in "abcd"} | {f"{x}h": f"r{x}x" for x in "abcd"})
_ALIASES.update({"sil": "rsi", "dil": "rdi", "bpl": "rbp", "spl": "rsp"})


def strip_prefixes(mnem: str) -> str:
    """`lock cmpxchg` -> `cmpxchg`, `notrack jmp` -> `jmp`."""
    return mnem.rsplit(" ", 1)[-1]


def _copied_before(mnems: list[str], ops: list[str], k: int, reg: str, fam: set[str]) -> str | None:
    """True if, just before the compare at `k`, a register of `fam` was made a copy of `reg` and neither was
    written again before the compare (gcc: `mov ebp, edi; cmp edi, N; ja; ... jmp [rbp*8 + T]`)."""
    for j in range(k - 1, max(-1, k - 6), -1):
        mn = mnems[j]
        if mn.startswith(("j", "call", "ret")) or mn not in _EXPLICIT_ONLY:
            return None
        dst, _, src = ops[j].partition(", ")
        if mn == "mov" and _family(dst) in fam and _family(src) == reg:
            return dst
        if _family(dst) in fam or _family(dst) == reg:
            return None
    return None


_NON_WRITING = frozenset(("cmp", "test", "push", "bt", "nop", "prefetcht0", "prefetcht1", "prefetchnta"))
_IMPLICIT_RAX_RDX = frozenset(("cdqe", "cwde", "cdq", "cqo", "cwd", "mul", "div", "idiv"))
_COPIES = frozenset(("mov", "movsxd", "movzx"))
_BYTE_REGS = frozenset(
    "al bl cl dl ah bh ch dh sil dil bpl spl r8b r9b r10b r11b r12b r13b r14b r15b".split()
)


def _bound(mnems: list[str], ops: list[str], i: int, index: str) -> int | None:
    found = _bound_at(mnems, ops, i, index)
    return None if found is None else found[0]


def _is32(reg: str) -> bool:
    reg = reg.strip()
    return (reg.startswith("e") and len(reg) == 3) or (
        reg.startswith("r") and reg.endswith("d") and reg[1:-1].isdigit()
    )


def _is64(reg: str) -> bool:
    """A 64-bit general register (rax..rsp, r8..r15)."""
    return reg.strip() in _REGS64


def _width(reg: str) -> int:
    """Width in bits of a general register name (0 for anything else, including ah/bh/ch/dh)."""
    reg = reg.strip()
    if _is64(reg):
        return 64
    if _is32(reg):
        return 32
    if reg in _BYTE_REGS and reg not in _HIGH8:
        return 8
    if reg in _ALIASES or (reg.startswith("r") and reg.endswith("w") and reg[1:-1].isdigit()):
        return 16
    return 0


_HIGH8 = frozenset("ah bh ch dh".split())
# In strict mode, the only instructions taken to leave the carrier alone when it is not their first operand:
# their sole register effect is writing the first operand (or nothing). Anything else may write the index
# implicitly (cmpxchg, xchg, string instructions, cpuid, ...), so the proof gives up on it.
_EXPLICIT_ONLY = frozenset(
    "mov movabs movsx movsxd movzx lea add sub and or xor adc sbb shl shr sar rol ror inc dec neg not imul "
    "bsf bsr popcnt lzcnt tzcnt bswap cmp test nop endbr64 bt push".split()
)


def _bound_at(
    mnems: list[str], ops: list[str], i: int, index: str, strict: bool = False
) -> tuple[int, int] | None:
    """Number of table entries from a dominating `cmp idx, N; ja/jae` in the same straight-line code.

    Walks back from the dispatch, following the index value through register copies (`mov`, `movsxd`,
    `movzx`); any other write to the register that carries it, and any call, return or jump, gives up.
    Accepted only when the compared register carries the index, so an unrelated comparison can never
    shorten or lengthen the table. An exact extent lets the table be rewritten in place, so this must be
    conservative: None means "unknown".

    strict (a proof against an attacker, not just the compiler's own invariant) tracks how many low bits of
    the carrier the index depends on (`bits`): a copy through a 32-bit register keeps 32, a movzx 8 or 16. A
    compare bounds the index only if it covers at least those bits; a narrower one says nothing about the rest.
    Every instruction on the way must be one whose register effects are all explicit.
    """
    carrier = _family(index)
    bits = _width(index) or 64
    signed_copy = False  # a movsxd on the way: the bound must also keep the sign bit clear
    for j in range(i - 1, max(-1, i - LOOKBACK), -1):
        mn = strip_prefixes(mnems[j])
        if mn in ("ret", "jmp") or mn.startswith(("call", "loop", "jrcxz")):
            return None
        if mn in ("ja", "jae") and j > 0 and mnems[j - 1] == "cmp":
            reg, _, imm = ops[j - 1].partition(", ")
            if not (imm.startswith("0x") or imm.isdigit()):
                return None
            n = int(imm, 0)
            width = _width(reg)
            if _family(reg) != carrier:
                copy = _copied_before(mnems, ops, j - 1, _family(reg), {carrier})
                if not copy:
                    return None
                if strict and _width(copy) not in (32, 64):
                    return None
                bits = min(bits, _width(copy))
            if strict and (width < bits or reg.strip() in _HIGH8 or width == 0):
                return None
            if strict and (n >= 1 << 31 or (signed_copy and n > 1 << 31)):
                return None
            return (n + 1 if mn == "ja" else n), j - 1
        if mn.startswith("j"):
            continue  # a conditional branch writes nothing
        dst, _, src = ops[j].partition(", ")
        if strict and mn not in _EXPLICIT_ONLY:
            if mn == "pop" and _family(dst) != carrier and carrier != "rsp":
                continue
            return None
        if mn in _IMPLICIT_RAX_RDX or (mn == "imul" and not src):
            if carrier in ("rax", "rdx"):
                return None
            continue
        if mn in ("xchg", "xadd", "cmpxchg") and _family(src) == carrier:
            return None
        if mn == "push" and carrier == "rsp":
            return None
        if _family(dst) != carrier or mn in _NON_WRITING:
            continue
        dw = _width(dst)
        if strict and (dw not in (32, 64) or dst.strip() in _HIGH8):
            return None  # a partial write (8 or 16 bits) leaves the upper bits as they were
        if mn == "and" and (src.startswith("0x") or src.isdigit()):
            return int(src, 0) + 1, j  # idx & mask: at most mask + 1 entries (Duff's device)
        if mn == "movzx" and (src.startswith("byte ptr") or src in _BYTE_REGS):
            if src in _BYTE_REGS and src not in _HIGH8:
                # a compare on the byte before it may bound it tighter (sqlite's VDBE: cmp r15b, 0xb5; ja;
                # movzx edx, r15b): at most 256 entries either way
                tighter = _bound_at(mnems, ops, j, src, strict)
                if tighter is not None and tighter[0] <= 256:
                    return tighter
            return 256, j  # a zero-extended byte (an interpreter's opcode): at most 256 entries
        if mn in _COPIES and "[" not in src and src:
            sw = _width(src)
            if strict:
                if src.strip() in _HIGH8 or sw == 0:
                    return None
                if mn == "mov" and sw != dw:
                    return None
                if mn == "movsxd":
                    signed_copy = True
                bits = min(bits, sw, dw)
            carrier = _family(src)
            continue
        return None  # the index is computed by something we do not follow
    return None


def _read_table(
    image: Image,
    site: int,
    table: int,
    size: int,
    is_target: Callable[[int], bool],
    bound: int | None = None,
    base: int = 0,
) -> JumpTable | None:
    seg = image.segment_at(table)
    if seg is None or (seg.executable and is_target(table)):
        return None  # a table inside code; .rodata in an R+X segment (-z noseparate-code) is fine
    limit = min(seg.vaddr + seg.filesz, table + (bound or MAX_ENTRIES) * size)
    targets: list[int] = []
    addr = table
    fmt = "<i" if size == 4 else "<Q"
    while addr + size <= limit:
        (v,) = struct.unpack_from(fmt, image.data, seg.offset + addr - seg.vaddr)
        t = (base or table) + v if size == 4 else v
        if not is_target(t):
            break
        targets.append(t)
        addr += size
    if not targets:
        return None
    exact = bound is not None and len(targets) == bound
    return JumpTable(site, table, size, tuple(targets), exact=exact, base=base)


def label_offset_targets(image: Image, labels: set[int], starts: set[int]) -> set[int]:
    """Targets of `goto *(&&base + offsets[i])` tables (GNU label differences), found by scanning read-only data.

    The offsets live in .rodata as int32 values relative to an address-taken label of the same function; at
    -O0 they travel through the stack, so no instruction pattern finds them. Every run of at least two
    consecutive int32 values that each turn some internal label into an instruction start of the function is
    taken. Extra matches only add JMP labels inside this one function.
    """
    from array import array

    found: set[int] = set()
    for seg in image.segments:
        if seg.executable or seg.writable or seg.filesz < 8:
            continue
        start = (seg.vaddr + 3) & ~3
        off = seg.offset + start - seg.vaddr
        n = (seg.vaddr + seg.filesz - start) // 4
        values = array("i", image.data[off : off + 4 * n])
        for base in labels:
            wanted = {s - base for s in starts}
            wanted.discard(0)
            hits = [v in wanted for v in values]
            for k, v in enumerate(values):
                if hits[k] and ((k > 0 and hits[k - 1]) or (k + 1 < n and hits[k + 1])):
                    found.add(base + v)
    return found


def writes(mnem: str, op: str, reg: str, strict: bool = False) -> bool:
    """Conservatively: may this instruction write the general register family `reg`? `strict`: any
    instruction outside the short list whose register effects are all explicit may write anything."""
    mnem = strip_prefixes(mnem)
    if mnem.startswith(("call", "ret", "jmp", "loop", "jrcxz")):
        return True
    if strict and mnem not in _EXPLICIT_ONLY and not mnem.startswith("j"):
        return mnem != "pop" or _family(op) == reg or reg == "rsp"
    if mnem == "push":
        return reg == "rsp"
    dst, _, src = op.partition(", ")
    if (
        mnem in _IMPLICIT_RAX_RDX
        or (mnem == "imul" and not src)
        or mnem.startswith(("rep", "lods", "stos", "movs"))
    ):
        return reg in ("rax", "rdx", "rcx", "rsi", "rdi")
    if mnem in ("xchg", "xadd", "cmpxchg") and _family(src) == reg:
        return True
    if mnem.startswith("j") or mnem in _NON_WRITING:
        return False
    return _family(dst) == reg


def dispatch_window(
    addrs: list[int], sizes: list[int], mnems: list[str], ops: list[str], i: int, jt: JumpTable
) -> int | None:
    """Index where the proof that the jmp at `i` can only reach `jt`'s targets begins, or None.

    Proven shapes, all straight-line (no call, return or jump in between):
      jmp [I*8 + T]                                   with a bound on I
      mov R, [I*8 + T] ... jmp R                      R not written in between
      lea B, [rip + T] ... movsxd R, [B + I*4] ... add R, B ... jmp R   (or add B, R; jmp B)
    The caller must also check that no branch or label enters the window after its start, and that the
    table is read-only.
    """
    if not jt.exact:
        return None
    m = _ABS_INDEXED.search(ops[i])
    if m:
        b = _bound_at(mnems, ops, i, m.group(1), strict=True)
        return b[1] if b and b[0] == len(jt.targets) else None
    target = _family(ops[i])
    if ops[i].count(" ") or not target:
        return None
    add_at = None
    for j in range(i - 1, max(-1, i - LOOKBACK), -1):
        mn, op = mnems[j], ops[j]
        if mn.startswith(("call", "ret", "jmp", "loop", "jrcxz")):
            return None
        if mn == "mov" and _family(op.partition(", ")[0]) == target:
            m = _ABS_INDEXED.search(op)
            if not m or jt.entry_size != 8:
                return None
            b = _bound_at(mnems, ops, j, m.group(1), strict=True)
            return b[1] if b and b[0] == len(jt.targets) else None
        if mn == "add" and add_at is None and _family(op.partition(", ")[0]) == target:
            if not (_is64(op.partition(", ")[0]) and _is64(op.partition(", ")[2])):
                return None  # a 32-bit add truncates the target
            add_at = j
            other = _family(op.partition(", ")[2])
            continue
        if mn == "movsxd" and add_at is not None:
            m = _REL_LOAD.match(op)
            dst = _family(op.partition(", ")[0])
            if (
                m
                and _is64(op.partition(", ")[0])
                and {dst, _family(m.group(1))} == {target, other}
                and jt.entry_size == 4
            ):
                base, index = _family(m.group(1)), m.group(2)
                b = _bound_at(mnems, ops, j, index, strict=True)
                if not b or b[0] != len(jt.targets):
                    return None
                lea = _base_lea(mnems, ops, j, base)
                if lea is None or dst == base or _rip_target(addrs, sizes, ops, lea) != jt.table:
                    return None
                # The base holds T from its lea to the add; the loaded entry is untouched until the add.
                if any(writes(mnems[k], ops[k], base, True) for k in range(lea + 1, add_at) if k != j):
                    return None
                if any(writes(mnems[k], ops[k], dst, True) for k in range(j + 1, add_at)):
                    return None
                return min(lea, b[1])
        if writes(mn, op, target, True):
            return None
    return None


def _base_lea(mnems: list[str], ops: list[str], j: int, base: str) -> int | None:
    for k in range(j - 1, max(-1, j - LOOKBACK), -1):
        if mnems[k].startswith(("call", "ret", "jmp", "loop", "jrcxz")):
            return None
        if mnems[k] == "lea" and _family(ops[k].partition(", ")[0]) == base:
            return k if _RIP_LEA.match(ops[k]) else None
        if writes(mnems[k], ops[k], base, True):
            return None
    return None


def _rip_target(addrs: list[int], sizes: list[int], ops: list[str], k: int) -> int | None:
    m = _RIP_LEA.match(ops[k])
    if not m:
        return None
    disp = int(m.group(3), 0) * (1 if m.group(2) == "+" else -1)
    return addrs[k] + sizes[k] + disp
