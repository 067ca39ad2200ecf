"""Flags liveness at indirect-jump targets.

The guard of an indirect jmp that may land inside a function must preserve everything live there. Saving
RFLAGS costs a pushfq/popfq pair (popfq is slow), so we prove where the status flags are dead instead: at every
legitimate target of the jump, some instruction writes all six status flags before any instruction reads one.
Only instructions whose flag behaviour is listed here are understood; anything else stops the scan as "live",
which keeps the (correct, slower) pushfq/popfq guard. The guard never touches DF, so only status flags matter.
"""

from __future__ import annotations

from collections.abc import Callable

# Write every status flag (CF, PF, AF, ZF, SF, OF) without reading any. A call or return ends the function's
# own use of its flags: no ABI passes flags into a callee or back to a caller.
_KILL = frozenset("add sub cmp test and or xor neg comisd comiss ucomisd ucomiss ptest call ret".split())
# Neither read nor write status flags ("mov" also covers movzx/movsx/movsd/movaps/...; "cmov" does not
# start with "mov").
_NEUTRAL_PREFIXES = ("mov", "lea", "nop", "cvt", "pxor", "xorp", "andp", "orp", "unpck", "shufp", "punpck")
_NEUTRAL = frozenset("push pop not xchg bswap cdqe cdq cqo cwde endbr64".split())
_MAX_STEPS = 32

Insn = tuple[str, str, int]  # mnemonic, operands, size


def flags_dead_at(addr: int, lookup: Callable[[int], Insn | None]) -> bool:
    """True if, from `addr`, every path writes all status flags before reading any."""
    seen: set[int] = set()
    a = addr
    for _ in range(_MAX_STEPS):
        if a in seen:
            return True  # a loop that neither reads nor writes: no read on this path
        seen.add(a)
        insn = lookup(a)
        if insn is None:
            return False
        mn, op, size = insn
        if mn in _KILL:
            return True
        if mn == "jmp" and op.startswith("0x"):
            a = int(op, 16)
            continue
        if mn in _NEUTRAL or mn.startswith(_NEUTRAL_PREFIXES):
            a += size
            continue
        return False  # a reader (jcc, setcc, cmovcc, adc, sbb, pushf, ...) or something we do not model
    return False
