"""Label assignment: which original addresses are valid targets of which kind of indirect transfer.

Coarse classes, as in BinCFI and CCFIR. A label is a bit set, so one address can be valid for several kinds:
- CALL: exported functions, the entry point, init/fini functions, IFUNC resolvers;
- CALL|JMP: every address-taken code address (pointers in data, relocations, code references), since a
  pointer can be called or tail-jumped through;
- JMP: jump-table targets;
- RET: the instruction after each call, except calls to functions that never return; and code addresses the
  program pushes itself (`lea r, [rip + X]; push r`: OCaml's exception handlers, reached by `ret`).
Return sites of relocated code get their RET labels from the rewriter, at their new addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from cfiguard.analysis.facts import ModuleFacts, strip_prefix

RET, CALL, JMP = 1, 2, 4


@dataclass(frozen=True)
class Policy:
    labels: dict[int, int]  # original address -> class bits
    return_sites: frozenset[int]  # original addresses after calls that return
    return_callers: dict[int, int | None]  # return site -> start of the function holding the call
    pushed: frozenset[int] = frozenset()  # pushed code addresses: RET targets at their old address


def coarse_policy(facts: ModuleFacts) -> Policy:
    labels: dict[int, int] = {}

    def add(addr: int, bits: int) -> None:
        labels[addr] = labels.get(addr, 0) | bits

    for a in facts.call_entries:
        add(a, CALL)
    for a in facts.address_taken:
        # Only instruction starts of decoded code: a "pointer" into a gap is data in .text or a constant that
        # looks like an address (a label there would sit on no instruction).
        fc = facts.function_at(a)
        if fc is not None and a in fc.starts:
            add(a, CALL | JMP)
    for jt in facts.jump_tables.values():
        for t in jt.targets:
            add(t, JMP)
    callers: dict[int, int | None] = {}
    for fc in facts.functions:
        d = fc.dec
        for i in fc.special:
            if strip_prefix(d.mnems[i]) == "call" and d.addrs[i] not in facts.noreturn_calls:
                callers[d.addrs[i] + d.sizes[i]] = fc.func.start
    for s in facts.gap_sites:
        if s.kind == "call":
            callers[s.addr + s.size] = None
    for a in callers:
        add(a, RET)
    pushed = set()
    for a in facts.pushed_code:  # a `ret` to a pushed address (OCaml raise): valid for returns too
        fc = facts.function_at(a)
        if fc is not None and a in fc.starts:
            add(a, RET)
            pushed.add(a)
    return Policy(labels, frozenset(callers), callers, frozenset(pushed))
