"""Forwarding jumps in the old bodies of relocated functions.

Data never moves, so pointers, jump tables and calls from code that stays in place still hold old addresses.
Each such entry of a relocated function gets a `jmp rel32` to its new address; everything else in the old body
becomes int3 (which also removes its gadgets). Where two entries are closer than 5 bytes (tiny `.cold`
fragments, adjacent labels), the first gets a 2-byte `jmp rel8` to a free 5-byte slot within reach, which holds
the `jmp rel32`. The slot may lie in the freed body of any relocated function, not only its own.

Entries only 1 byte apart (a 1-byte `ret` function packed against its neighbour) use instruction punning, as
e9patch does: the first entry gets only the opcode byte `eb` of a `jmp rel8`; its displacement byte is the
first byte of the next entry's own forwarding jump (`e9` or `eb`), so the jump goes to a fixed address 21 or
19 bytes back, which must be a free 5-byte slot.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Region:
    """The old bytes of one relocated function that may be rewritten: [start, limit)."""

    start: int
    end: int  # the function's own end; [end, limit) is padding
    limit: int
    taken: list[tuple[int, int]] = field(default_factory=list)
    long: list[int] = field(default_factory=list)  # entry with its jmp rel32 in place
    short: list[int] = field(default_factory=list)  # entry with a jmp rel8 to a slot
    slots: list[tuple[int, int]] = field(default_factory=list)  # (slot address, entry it forwards)
    # entries with only the `eb` byte of a jmp rel8: its rel8 is the next entry's opcode
    punned: list[int] = field(default_factory=list)


def place_in_region(region: Region, entries: list[int]) -> str | None:
    """Put a jmp rel32 (or a jmp rel8 awaiting a slot) at each sorted entry. Returns a reason on failure."""
    for k, e in enumerate(entries):
        nxt = entries[k + 1] if k + 1 < len(entries) else region.limit
        if nxt - e >= 5:
            region.long.append(e)
            region.taken.append((e, e + 5))
        elif nxt - e >= 2:
            region.short.append(e)
            region.taken.append((e, e + 2))
        elif nxt - e == 1:
            region.punned.append(e)  # resolved by assign_slots once every entry's form is known
            region.taken.append((e, e + 1))
        else:
            return f"entries {e:#x} and {nxt:#x} too close for a forwarding jump"
    region.taken.sort()
    return None


def assign_slots(regions: list[Region]) -> dict[int, str]:
    """Find a slot for every short jump, in any region within rel8 reach. Returns {region start: reason}."""
    starts = [r.start for r in regions]
    failed: dict[int, str] = {}
    # Punned entries first: their slot address is fixed by the next entry's opcode.
    owner = {e: r for r in regions for e in r.long + r.short + r.punned}  # punned entries start with eb too

    def fixed_slot(e: int, opcode: int) -> Region | None:
        slot = e + 2 + opcode - 256
        k = bisect_right(starts, slot) - 1
        cand = regions[k] if k >= 0 else None
        if cand is None or slot + 5 > cand.limit or _free_slot(cand, slot, slot + 5) != slot:
            return None
        return cand

    for r in regions:
        for e in r.punned:
            nxt = owner.get(e + 1)
            opcode = None if nxt is None else 0xE9 if e + 1 in nxt.long else 0xEB
            cand = None if opcode is None else fixed_slot(e, opcode)
            if cand is None and opcode == 0xE9 and fixed_slot(e, 0xEB) is not None:
                # The e9 slot is taken: the next entry's jump becomes a short one (its own slot is found
                # below), which moves this entry's slot 2 bytes on.
                nxt.long.remove(e + 1)
                nxt.taken.remove((e + 1, e + 6))
                nxt.short.append(e + 1)
                nxt.taken.append((e + 1, e + 3))
                nxt.taken.sort()
                opcode, cand = 0xEB, fixed_slot(e, 0xEB)
            if cand is None:
                failed.setdefault(r.start, f"entries {e:#x} and {e + 1:#x} too close for a forwarding jump")
                continue
            slot = e + 2 + opcode - 256
            cand.taken.append((slot, slot + 5))
            cand.taken.sort()
            cand.slots.append((slot, e))
    for r in regions:
        for e in r.short:
            lo, hi = e + 2 - 128, e + 2 + 127
            slot = None
            k = max(0, bisect_right(starts, lo) - 1)
            while k < len(regions) and regions[k].start <= hi:
                cand = regions[k]
                slot = _free_slot(cand, max(lo, cand.start), min(hi + 5, cand.limit))
                if slot is not None:
                    cand.taken.append((slot, slot + 5))
                    cand.taken.sort()
                    cand.slots.append((slot, e))
                    break
                k += 1
            if slot is None:
                failed.setdefault(r.start, f"no room near {e:#x} for a forwarding jump")
    return failed


def _free_slot(region: Region, lo: int, hi: int) -> int | None:
    cur = lo
    for a, b in region.taken:
        if b <= cur:
            continue
        if a >= hi:
            break
        if a - cur >= 5:
            return cur
        cur = max(cur, b)
    return cur if hi - cur >= 5 else None


def render_region(region: Region, new_addr: Callable[[int], int]) -> tuple[int, bytes]:
    """(address, bytes) replacing the region's old code: int3 plus the forwarding jumps."""
    from cfiguard.rewrite.encode import jmp_rel32

    end = max([region.end] + [b for _, b in region.taken])
    body = bytearray(b"\xcc" * (end - region.start))
    base = region.start
    for e in region.long:
        body[e - base : e - base + 5] = jmp_rel32(e, new_addr(e))
    for slot, e in region.slots:
        body[slot - base : slot - base + 5] = jmp_rel32(slot, new_addr(e))
    return base, bytes(body)


def render_short_jumps(regions: list[Region]) -> list[tuple[int, bytes]]:
    """The jmp rel8 at each short entry, aimed at its slot (which may be in another region)."""
    slot_of = {e: slot for r in regions for slot, e in r.slots}
    out = []
    for r in regions:
        for e in r.short:
            out.append((e, bytes((0xEB, (slot_of[e] - (e + 2)) & 0xFF))))
        for e in r.punned:
            out.append((e, b"\xeb"))  # its rel8 is the opcode of the jump at e + 1
    return out
