"""Function discovery: where functions start and end.

Sources, most trusted first: `.eh_frame` FDEs (exact extents, present even in stripped binaries), symbol
table and `.dynsym` entries with a size, PLT sections (each one relocatable unit), and `.init`/`.fini`
(DT_INIT/DT_FINI, whose extent is their section). Addresses that are entries but fall inside another
function (aliases, a symbol in the middle of a hand-written routine) are kept as extra entries of the
enclosing function, because they must keep working after it moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cfiguard.image.ehframe import Fde
from cfiguard.image.elf import Image

PLT_SECTIONS = (".plt", ".plt.sec", ".plt.got")


@dataclass(frozen=True)
class Function:
    start: int
    end: int
    name: str | None
    source: str  # "fde", "symbol", "plt", "init"
    fde: Fde | None = None
    extra_entries: tuple[int, ...] = field(default=())
    problem: str | None = None  # why it cannot be relocated, decided at discovery time

    @property
    def is_plt(self) -> bool:
        return self.source == "plt"


def discover_functions(image: Image, fdes: list[Fde]) -> list[Function]:
    """Non-overlapping functions sorted by start, covering all known code."""
    names: dict[int, str] = {}
    for s in image.symbols:
        names.setdefault(s.addr, s.name)

    cands: list[Function] = []
    for fde in fdes:
        if fde.pc_range > 0 and image.is_code(fde.pc_begin):
            cands.append(
                Function(fde.pc_begin, fde.pc_begin + fde.pc_range, names.get(fde.pc_begin), "fde", fde)
            )
    fde_starts = {f.start for f in cands}
    for s in image.symbols:
        if s.size > 0 and s.addr not in fde_starts and image.is_code(s.addr):
            cands.append(Function(s.addr, s.addr + s.size, s.name, "symbol"))
    for name in PLT_SECTIONS:
        sec = image.section(name)
        if sec is not None and sec.size > 0:
            cands = [f for f in cands if not (sec.vaddr <= f.start < sec.end)]  # its FDE is a CFA expression
            cands.append(Function(sec.vaddr, sec.end, name, "plt"))
    for addr in image.init_functions:
        for sec_name in (".init", ".fini"):
            sec = image.section(sec_name)
            if sec is not None and sec.vaddr == addr:
                cands.append(Function(addr, sec.end, sec_name, "init"))

    cands.sort(key=lambda f: (f.start, -(f.end - f.start), f.source != "fde"))
    out: list[Function] = []
    for f in cands:
        if out and f.start < out[-1].end:
            prev = out[-1]
            if f.end <= prev.end:
                # Nested or alias: an extra entry of the enclosing function.
                if f.start != prev.start:
                    out[-1] = _with_entry(prev, f.start)
                continue
            # Partial overlap: neither extent can be trusted.
            reason = f"overlaps function at {prev.start:#x}"
            out[-1] = _with_problem(prev, reason)
            f = _with_problem(f, f"overlaps function at {prev.start:#x}")
        out.append(f)
    return out


def _with_entry(f: Function, addr: int) -> Function:
    return Function(
        f.start, f.end, f.name, f.source, f.fde, tuple(sorted({*f.extra_entries, addr})), f.problem
    )


def _with_problem(f: Function, problem: str) -> Function:
    return Function(f.start, f.end, f.name, f.source, f.fde, f.extra_entries, f.problem or problem)


def code_gaps(image: Image, functions: list[Function]) -> list[tuple[int, int]]:
    """Executable byte ranges that no function covers: they are swept only to report what they contain."""
    gaps = []
    starts = sorted((f.start, f.end) for f in functions)
    for seg in image.code_segments:
        cur = seg.vaddr
        for s, e in starts:
            if e <= seg.vaddr or s >= seg.vaddr + seg.filesz:
                continue
            if s > cur:
                gaps.append((cur, s))
            cur = max(cur, e)
        if cur < seg.vaddr + seg.filesz:
            gaps.append((cur, seg.vaddr + seg.filesz))
    return gaps


_STOP = ("ret", "jmp", "hlt", "ud2", "int3")


def discover_by_traversal(image: Image, gap: tuple[int, int], seeds: list[int]) -> list[Function]:
    """Functions in a gap (code no FDE or sized symbol describes), found by recursive descent from seeds.

    Typical case: crtstuff's register_tm_clones / frame_dummy, which have no FDE and, once stripped, no
    symbol, but are reached from .init_array or by direct calls. The region spanned by what the traversal
    reaches becomes one function with every seed as an entry, provided a linear sweep of that region agrees
    with the traversal (same instruction starts); otherwise it stays a gap and its sites are reported.
    """
    from bisect import bisect_left

    from cfiguard.disasm.decode import decode_range

    lo, hi = gap
    todo = seeds[bisect_left(seeds, lo) : bisect_left(seeds, hi)]
    if not todo:
        return []
    code = image.read(lo, hi - lo)
    seen: dict[int, int] = {}
    entries = set(todo)
    while todo:
        a = todo.pop()
        while lo <= a < hi and a not in seen:
            d = decode_range(code[a - lo : a - lo + 16], a)
            if not d.addrs or d.addrs[0] != a:
                return []
            size, mnem, op = d.sizes[0], d.mnems[0].split(" ")[-1], d.ops[0]
            seen[a] = size
            if op.startswith("0x") and (mnem.startswith("j") or mnem == "call"):
                t = int(op, 16)
                if lo <= t < hi:
                    todo.append(t)
                    if mnem == "call":
                        entries.add(t)
            if mnem in _STOP:
                break
            a += size
    if not seen:
        return []
    start = min(seen)
    end = max(a + s for a, s in seen.items())
    d = decode_range(code[start - lo : end - lo], start)
    if not d.complete or not set(seen) <= set(d.addrs):
        return []
    extra = tuple(sorted(e for e in entries if e != start))
    return [Function(start, end, None, "traversal", None, extra)]
