"""Forwarding jumps in the old body of a relocated function.

Data never moves, so pointers, jump tables and calls from code that stays in place still hold old addresses.
Each such entry of a relocated function gets a `jmp rel32` to its new address; everything else in the old body
becomes int3 (which also removes its gadgets). Where two entries are closer than 5 bytes, the first gets a
2-byte `jmp rel8` to a free 5-byte slot elsewhere in the old body, which holds the `jmp rel32`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cfiguard.rewrite.encode import jmp_rel32


@dataclass(frozen=True)
class StubLayout:
    long: tuple[int, ...]  # entries with a jmp rel32 in place
    short: tuple[tuple[int, int], ...]  # (entry, slot): jmp rel8 at entry to a jmp rel32 at slot


def place_stubs(entries: list[int], start: int, limit: int) -> StubLayout | str:
    """Place forwarding jumps for sorted `entries` inside [start, limit). Returns a reason string on failure."""
    taken: list[tuple[int, int]] = []
    long: list[int] = []
    shorts: list[int] = []
    for k, e in enumerate(entries):
        nxt = entries[k + 1] if k + 1 < len(entries) else limit
        if nxt - e >= 5:
            long.append(e)
            taken.append((e, e + 5))
        elif nxt - e >= 2:
            shorts.append(e)
            taken.append((e, e + 2))
        else:
            return f"entries {e:#x} and {nxt:#x} too close for a forwarding jump"
    taken.sort()
    short: list[tuple[int, int]] = []
    for e in shorts:
        slot = _free_slot(taken, max(start, e + 2 - 128), min(limit, e + 2 + 127 + 5))
        if slot is None:
            return f"no room near {e:#x} for a forwarding jump"
        taken.append((slot, slot + 5))
        taken.sort()
        short.append((e, slot))
    return StubLayout(tuple(long), tuple(short))


def _free_slot(taken: list[tuple[int, int]], lo: int, hi: int) -> int | None:
    cur = lo
    for a, b in taken:
        if b <= cur:
            continue
        if a >= hi:
            break
        if a - cur >= 5:
            return cur
        cur = max(cur, b)
    return cur if hi - cur >= 5 else None


def render_stubs(layout: StubLayout, start: int, length: int, new_addr: Callable[[int], int]) -> bytearray:
    """The new content of [start, start+length): int3 with the forwarding jumps."""
    body = bytearray(b"\xcc" * length)
    for e in layout.long:
        body[e - start : e - start + 5] = jmp_rel32(e, new_addr(e))
    for e, slot in layout.short:
        rel = slot - (e + 2)
        body[e - start : e - start + 2] = bytes((0xEB, rel & 0xFF))
        body[slot - start : slot - start + 5] = jmp_rel32(slot, new_addr(e))
    return body
