"""The rewrite: decide which functions move, lay out the new code, and produce every byte of the output.

Declare, then apply: this module turns facts and policy into a `Rewritten` value (new segments, patches to old
code, per-site outcomes). `writer.py` is the only place that turns it into a file.

Order of work, chosen so that every address is known before any byte that depends on it is emitted:
1. plan each function with sites (sizes only) and choose the relocated set (forwarding jumps must fit);
2. lay out new code at `code_vaddr`: functions (16-byte aligned), then violation stubs, then the handler;
3. build LSDAs and `.eh_frame` for the moved functions (their sizes do not depend on their address);
4. place the label table after them: D = table - lo;
5. emit code, stubs and labels.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_right
from dataclasses import dataclass, field, replace

from cfiguard import __version__
from cfiguard.analysis.facts import ModuleFacts
from cfiguard.analysis.jumptables import JumpTable
from cfiguard.disasm.decode import decode_range
from cfiguard.errors import CfiguardError, RewriteError
from cfiguard.image.lsda import parse_lsda
from cfiguard.policy.labels import CALL, JMP, RET, Policy
from cfiguard.rewrite import xmod
from cfiguard.rewrite.encode import s32 as encode_s32
from cfiguard.rewrite.handler import audit_logger_code, handler_code
from cfiguard.rewrite.redirect import fast_redirects, redirect_patches, redirectable, relative_relocations
from cfiguard.rewrite.relocate import (
    AUDIT_STUB_SIZE,
    VIOL_STUB_SIZE,
    FunctionPlan,
    Layout,
    audit_stub,
    emit_function,
    plan_function,
    violation_stub,
)
from cfiguard.rewrite.stubs import Region, assign_slots, place_in_region, render_region, render_short_jumps
from cfiguard.rewrite.unwind import FdeOut, build_eh_frame, build_eh_frame_hdr, build_lsda, remap_cfa_program
from cfiguard.runtime import symtab_field

PAGE = 0x1000
FUNC_ALIGN = 16
PADDING_MNEMONICS = frozenset(("nop", "int3", "xchg"))


def _align(v: int, a: int) -> int:
    return (v + a - 1) & -a


@dataclass(frozen=True)
class SiteOutcome:
    addr: int
    kind: str
    outcome: str  # guarded, safe, unguarded
    method: str | None  # inline (relocated function), trampoline, switch
    reason: str | None
    precision: str | None = None  # where the analysis allowed more targets than it knows, and why


@dataclass
class Rewritten:
    code_vaddr: int
    code: bytes
    rodata_vaddr: int
    rodata: bytes
    table_vaddr: int
    table: bytes
    patches: list[tuple[int, bytes]]
    eh_frame_hdr: tuple[int, int] | None  # (vaddr, size) of the new header, None when nothing moved
    eh_frame: tuple[int, int] | None  # (vaddr, size) of the new, complete .eh_frame
    layout: Layout
    sites: list[SiteOutcome]
    not_relocated: list[tuple[int, str | None, str]]
    relocated: int
    manifest: dict = field(default_factory=dict)
    switch_sites: dict[int, int] = field(default_factory=dict)  # new address -> original site (safe switches)


def rewrite(
    facts: ModuleFacts,
    policy: Policy,
    code_vaddr: int,
    rodata_reserve: int = 0,
    race_free_returns: bool = False,
    audit: bool = False,
) -> Rewritten:
    image = facts.image
    choice = _choose(facts, policy, race_free_returns)
    plans = choice.plans
    # --- 2. layout
    cur = code_vaddr
    for p in plans.values():
        cur = _align(cur, FUNC_ALIGN)
        p.new_start = cur
        cur += p.size
    n_sites = sum(
        sum(
            1
            for s in p.specials
            if s.kind in ("ret", "ret_scratch", "ret_pop", "icall", "tailjmp")
            or s.kind.startswith("preserve")
        )
        for p in plans.values()
    )
    stubs_vaddr = _align(cur, FUNC_ALIGN)
    n_kind = {"ret": 0, "call": 0, "jmp": 0}
    for p in plans.values():
        for s in p.specials:
            if s.kind in ("ret", "ret_scratch", "ret_pop"):
                n_kind["ret"] += 1
            elif s.kind == "icall":
                n_kind["call"] += 1
            elif s.kind == "tailjmp" or s.kind.startswith("preserve"):
                n_kind["jmp"] += 1
    stub_size = AUDIT_STUB_SIZE if audit else VIOL_STUB_SIZE
    xstubs_vaddr = stubs_vaddr + n_sites * stub_size
    xstubs_size = sum(n * xmod.stub_size(k) for k, n in n_kind.items())
    handler_vaddr = xstubs_vaddr + xstubs_size
    handler = audit_logger_code() if audit else handler_code()
    code_end = handler_vaddr + len(handler)
    # From the page start: the kernel maps the whole first page executable, including any bytes of the file
    # before the segment (lld starts segments mid-page); inside [lo, hi) they carry no label.
    lo = min(s.vaddr for s in image.code_segments) & -PAGE
    size = code_end - lo

    # --- 3. unwind data
    rodata_vaddr = _align(code_end, PAGE)
    lsdas, fde_outs = _unwind(facts, plans, rodata_vaddr)
    lsda_blob = b"".join(b for _, b in lsdas)
    eh_vaddr = _align(rodata_vaddr + len(lsda_blob), 8)
    eh_frame, new_entries = build_eh_frame(fde_outs, eh_vaddr)
    hdr_vaddr = _align(eh_vaddr + len(eh_frame), 8)
    hdr = (
        build_eh_frame_hdr(sorted(new_entries), hdr_vaddr, eh_vaddr) if plans and image.eh_frame_hdr else b""
    )
    rodata = bytearray(lsda_blob)
    rodata += bytes(eh_vaddr - rodata_vaddr - len(rodata)) + eh_frame
    rodata += bytes(hdr_vaddr - rodata_vaddr - len(rodata)) + hdr
    # the function names the violation handler prints after a site ("(in f+0x1c)"), when the file has symbols
    symtab_vaddr = _align(rodata_vaddr + len(rodata), 8)
    rodata += bytes(symtab_vaddr - rodata_vaddr - len(rodata)) + _symtab(image)

    # --- 4. table
    table_vaddr = _align(rodata_vaddr + len(rodata) + rodata_reserve, PAGE)
    layout = Layout(lo, size, table_vaddr - lo)

    # --- 5. emit
    stubs: dict[int, tuple[int, str]] = {}  # site -> (slot among the violation stubs, kind)

    def viol_stub(site: int, kind: str, ok: int | None = None) -> int:
        slot, _, _ = stubs.setdefault(site, (len(stubs), kind, ok))
        return stubs_vaddr + slot * stub_size

    xstubs: list[tuple[int, str, int, int]] = []  # (address, kind, ok, violation stub)
    x_next = [xstubs_vaddr]

    def x_stub(site: int, kind: str, ok: int) -> int:
        at = x_next[0]
        x_next[0] += xmod.stub_size(kind)
        xstubs.append((at, kind, ok, viol_stub(site, kind)))
        return at

    resolve = _resolver(facts, plans)
    fast = fast_redirects(facts, set(plans), choice.relatives) - choice.redirected
    return_labels: list[int] = []
    code = bytearray()
    for p in plans.values():
        code += b"\xcc" * (p.new_start - code_vaddr - len(code))
        code += emit_function(
            p,
            facts,
            layout,
            resolve,
            viol_stub,
            return_labels,
            lambda a: resolve(a) if a in choice.redirected or a in fast else a,
            x_stub,
        )
    code += b"\xcc" * (stubs_vaddr - code_vaddr - len(code))
    for site, (slot, kind, ok) in stubs.items():
        at = stubs_vaddr + slot * stub_size
        if audit:
            code += audit_stub(at, site, kind, lo, handler_vaddr, ok)
        else:
            code += violation_stub(at, site, kind, lo, handler_vaddr)
    mod_lo = min(s.vaddr for s in image.segments) & -PAGE
    mod_size = table_vaddr + size - mod_lo  # everything this module maps, the new segments included
    for at, kind, ok, bad in xstubs:
        assert code_vaddr + len(code) == at
        code += xmod.xmod_stub(at, kind, lo, mod_lo, mod_size, ok, bad)
    if code_vaddr + len(code) != handler_vaddr:
        raise RewriteError("cross-module stubs do not fill their planned space")
    if len(stubs) != n_sites:
        raise RewriteError(f"planned {n_sites} guarded sites, emitted {len(stubs)}")
    field = handler_vaddr - code_vaddr + symtab_field(handler)
    code += handler
    code[field : field + 4] = encode_s32(symtab_vaddr - (code_vaddr + field + 4))
    assert code_vaddr + len(code) == code_end

    table = bytearray(size)
    for addr, bits in _labels(facts, policy, choice, resolve, fast):
        table[addr - lo] |= bits
    for addr in return_labels:
        table[addr - lo] |= RET

    patches = _old_code_patches(choice, resolve) + _table_patches(choice, resolve)
    patches += redirect_patches(facts, choice.redirected | fast, choice.relatives, resolve)
    patches += _cet_patch(image)
    sites, not_relocated = _outcomes(facts, plans, choice.rejected)
    return Rewritten(
        code_vaddr=code_vaddr,
        code=bytes(code),
        rodata_vaddr=rodata_vaddr,
        rodata=bytes(rodata),
        table_vaddr=table_vaddr,
        table=bytes(table),
        patches=patches,
        eh_frame_hdr=(hdr_vaddr, len(hdr)) if hdr else None,
        eh_frame=(eh_vaddr, len(eh_frame)) if hdr else None,
        layout=layout,
        sites=sites,
        not_relocated=not_relocated,
        relocated=len(plans),
        switch_sites={new: old for p in plans.values() for new, old in p.switch_at.items()},
        manifest={
            "format": 1,
            "lo": lo,
            "size": size,
            "table": table_vaddr,
            "table_distance": table_vaddr - lo,
            "code": [code_vaddr, code_end],
            "violation_stubs": [stubs_vaddr, xstubs_vaddr],
            "xmod_stubs": [xstubs_vaddr, handler_vaddr],
            "module": [mod_lo, mod_lo + mod_size],
            "handler": handler_vaddr,
            "mode": "audit" if audit else "enforce",
            "classes": {"ret": RET, "call": CALL, "jmp": JMP},
            # Provenance, for `cfiguard info` (the verifier does not read these). No wall-clock time: the
            # output must stay byte-identical; the date is SOURCE_DATE_EPOCH's (reproducible-builds.org).
            "tool": "cfiguard",
            "version": __version__,
            "policy": "coarse",
            "coverage": {
                "found": len(sites),
                **{k: sum(1 for s in sites if s.outcome == k) for k in ("guarded", "safe", "unguarded")},
            },
            "date": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(os.environ["SOURCE_DATE_EPOCH"])))
                if os.environ.get("SOURCE_DATE_EPOCH", "").strip().isdigit()
                else None
            ),
        },
    )


# --------------------------------------------------------------------------------------------- choosing


@dataclass
class _Choice:
    plans: dict[int, FunctionPlan]
    regions: list[Region]
    rejected: dict[int, str]
    tables: list[JumpTable]
    redirected: set[int]  # entries whose every reference is rewritten to the new address
    relatives: dict[int, list[int]]


def _choose(facts: ModuleFacts, policy: Policy, race_free_returns: bool = False) -> _Choice:
    """Plan every function that holds a site; drop those whose forwarding jumps cannot be placed, to a fixpoint."""
    with_sites = {s.function for s in facts.sites}
    plans: dict[int, FunctionPlan] = {}
    rejected: dict[int, str] = {}
    for fc in facts.functions:
        start = fc.func.start
        if start not in with_sites:
            continue
        if fc.problem:
            rejected[start] = fc.problem
            continue
        try:
            plans[start] = plan_function(fc, facts, race_free_returns)
        except CfiguardError as e:
            rejected[start] = str(e)
    limits = _old_limits(facts)
    refs = _References.index(facts, policy)
    widened: set[int] = set()
    redirected: set[int] = set()
    relatives = relative_relocations(facts)
    forced: dict[int, JumpTable] = {}  # tables of inexact extent rewritten anyway, for functions that need it
    while True:
        tables = _rewritable_tables(facts, plans, forced)
        entries = _entries(facts, refs, plans, tables)
        for start in plans:
            entries[start] -= redirected
        regions: list[Region] = []
        failed: dict[int, str] = {}
        for start, p in plans.items():
            ents = entries[start]
            reason = _entry_problem(p.fc, ents)
            region = Region(start, p.fc.func.end, limits[start])
            reason = reason or place_in_region(region, sorted(ents))
            if reason:
                failed[start] = reason
            regions.append(region)
        if not failed:
            failed = assign_slots(regions)
        # A tiny function (a 1-3 byte .cold fragment) may lack room only because its neighbours stay in place,
        # or because the function that branches to it does: relocating those too, even without sites, frees
        # bodies for slots and removes the need for a forwarding jump. Tried once per failing function.
        # Targets too close for forwarding jumps may need none: rewrite the function's own tables in place.
        more_tables = {t: jt for st in failed for t, jt in _own_tables(facts, st).items() if t not in forced}
        if more_tables:
            forced.update(more_tables)
            continue
        grow = [st for st in failed if st not in widened]
        if grow and _widen(facts, refs, plans, grow, widened, race_free_returns):
            plans = dict(sorted(plans.items()))
            continue
        # Still no room: rewrite every reference to a cramped entry instead (see redirect.py).
        more = {
            e
            for st in failed
            for e in entries[st]
            if e not in redirected and redirectable(facts, e, set(plans), relatives)
        }
        if more:
            redirected |= more
            continue
        for start, reason in failed.items():
            rejected[start] = reason
            del plans[start]
        if not failed:
            kept = {
                e for e in redirected if (fc := facts.function_at(e)) is not None and fc.func.start in plans
            }
            return _Choice(dict(sorted(plans.items())), regions, rejected, tables, kept, relatives)


def _widen(
    facts: ModuleFacts,
    refs: _References,
    plans: dict[int, FunctionPlan],
    grow: list[int],
    widened: set[int],
    race_free_returns: bool = False,
) -> bool:
    added = False
    for st in grow:
        widened.add(st)
        sources = refs.sources_into.get(st, set())
        for fc in facts.functions:
            a = fc.func.start
            if (abs(a - st) < 160 or a in sources) and a not in plans and not fc.problem:
                try:
                    plans[a] = plan_function(fc, facts, race_free_returns)
                    added = True
                except CfiguardError:
                    pass
    return added


def _entry_problem(fc, entries: set[int]) -> str | None:
    for e in entries:
        if e not in fc.starts:
            return f"entry {e:#x} is not an instruction start"
    return None


def _own_tables(facts: ModuleFacts, start: int) -> dict[int, JumpTable]:
    """Tables of relative offsets, dispatched from the function at `start`, that may be rewritten in place
    although their extent is not proven. Used only for a function that cannot be relocated otherwise.

    A table's run of entries (those that decode to instruction starts) is cut where the next known table
    begins: packed tables would otherwise run into each other. What is left must hold only targets in this
    function and overlap no other table: rewriting it then cannot touch another table's entries, and entries
    past it are no valid target anyway (the dispatch is still guarded)."""
    fc = facts.function_at(start)
    if fc is None:
        return {}
    end = fc.func.end
    starts = sorted({jt.table for jt in facts.jump_tables.values() if jt.table})
    out = {}
    for jt in facts.jump_tables.values():
        if (
            not jt.table
            or jt.exact
            or jt.united
            or jt.entry_size != 4
            or jt.base
            or not start <= jt.site < end
        ):
            continue
        k = bisect_right(starts, jt.table)
        stop = starts[k] if k < len(starts) else jt.table + 4 * len(jt.targets)
        targets = jt.targets[: max(0, (stop - jt.table) // 4)]
        if not targets or not all(start <= t < end for t in targets):
            continue
        out[jt.table] = replace(jt, targets=targets)
    return out


def _rewritable_tables(
    facts: ModuleFacts, plans: dict[int, FunctionPlan], forced: dict[int, JumpTable] | None = None
) -> list[JumpTable]:
    """Jump tables whose exact extent is proven and whose every target moves: they are rewritten in place
    to hold the new addresses, so their targets need no forwarding jump (and dispatch skips one jump). Tables
    in `forced` (see _own_tables) are rewritten though their extent is not proven."""
    forced = forced or {}
    out: dict[int, JumpTable] = {}
    for jt in facts.jump_tables.values():
        if not (jt.exact or jt.table in forced) or jt.table in out:
            continue
        jt = forced.get(jt.table, jt)
        seg = facts.image.segment_at(jt.table)
        if seg is None or seg.writable or jt.table + len(jt.targets) * jt.entry_size > seg.vaddr + seg.filesz:
            continue
        fcs = [facts.function_at(t) for t in jt.targets]
        if all(fc is not None and fc.func.start in plans for fc in fcs):
            out[jt.table] = jt
    return list(out.values())


def _pure_jmp_targets(facts: ModuleFacts, tables: list[JumpTable]) -> set[int]:
    """Targets reached only through rewritten tables: they need no JMP label at the old address."""
    kept = {
        t
        for jt in facts.jump_tables.values()
        if jt.table not in {x.table for x in tables}
        for t in jt.targets
    }
    return {t for jt in tables for t in jt.targets} - kept


@dataclass(frozen=True)
class _References:
    """Who names each old code address, indexed once per run (the fixpoint in _choose asks many times)."""

    forward: dict[
        int, list[tuple[int, int, bool]]
    ]  # function -> [(addr, label bits, is an instruction start)]
    branches: dict[int, list[tuple[int, frozenset, bool]]]  # function -> [(target, sources, is a start)]
    symbols: dict[int, list[int]]  # function -> symbol addresses inside it
    sources_into: dict[int, set[int]]  # function -> functions that branch into it

    @classmethod
    def index(cls, facts: ModuleFacts, policy: Policy) -> _References:
        forward: dict[int, list] = {}
        branches: dict[int, list] = {}
        symbols: dict[int, list] = {}
        sources_into: dict[int, set[int]] = {}
        for addr, bits in policy.labels.items():
            if bits & (CALL | JMP) and (fc := facts.function_at(addr)) is not None:
                forward.setdefault(fc.func.start, []).append((addr, bits, addr in fc.starts))
        for t, srcs in facts.direct_targets.items():
            if (fc := facts.function_at(t)) is not None:
                branches.setdefault(fc.func.start, []).append((t, frozenset(srcs), t in fc.starts))
                sources_into.setdefault(fc.func.start, set()).update(x for x in srcs if x is not None)
        for sym in facts.image.symbols:
            if (fc := facts.function_at(sym.addr)) is not None:
                symbols.setdefault(fc.func.start, []).append(sym.addr)
        return cls(forward, branches, symbols, sources_into)


def _entries(
    facts: ModuleFacts, refs: _References, plans: dict[int, FunctionPlan], tables: list[JumpTable]
) -> dict[int, set[int]]:
    """Old addresses inside each relocated function that something other than its own new code may reach.

    A function start needs a forwarding jump when something names it: a symbol, the PLT or init code, a
    pointer, or a branch from code that stays in place. A bare FDE start (a .cold fragment) reached only from
    relocated code needs none; if that were wrong it would trap on int3.
    """
    moved = _pure_jmp_targets(facts, tables)
    out: dict[int, set[int]] = {}
    for s, p in plans.items():
        ents = set(p.fc.func.extra_entries)
        if p.fc.func.source != "fde":
            ents.add(s)
        for addr, bits, is_start in refs.forward.get(s, ()):
            if is_start and (bits & CALL or addr not in moved):
                ents.add(addr)
        for t, sources, is_start in refs.branches.get(s, ()):
            if not is_start or any(src is None or src not in plans for src in sources):
                ents.add(t)
        ents.update(refs.symbols.get(s, ()))
        out[s] = ents
    return out


def _old_limits(facts: ModuleFacts) -> dict[int, int]:
    """How far forwarding jumps of each function may extend: its end, plus the nop/int3 padding after it."""
    limits = {}
    fcs = facts.functions
    image = facts.image
    for k, fc in enumerate(fcs):
        end = fc.func.end
        nxt = fcs[k + 1].func.start if k + 1 < len(fcs) else end
        seg = image.segment_at(fc.func.start)
        nxt = min(nxt, seg.vaddr + seg.filesz) if seg else end
        limit = end
        if end < nxt <= end + 64:
            pad = image.read(end, nxt - end)
            d = decode_range(pad, end)
            if not pad.strip(b"\0\xcc") or (d.complete and all(m in PADDING_MNEMONICS for m in d.mnems)):
                limit = nxt
        limits[fc.func.start] = limit
    return limits


def _resolver(facts: ModuleFacts, plans: dict[int, FunctionPlan]):
    def resolve(target: int) -> int:
        fc = facts.function_at(target)
        if fc is not None and fc.func.start in plans and target in fc.starts:
            return plans[fc.func.start].new_addr(target)
        return target

    return resolve


# --------------------------------------------------------------------------------------------- unwind


def _unwind(facts: ModuleFacts, plans: dict[int, FunctionPlan], rodata_vaddr: int):
    lsdas: list[tuple[int, bytes]] = []
    fde_outs: list[FdeOut] = []
    cur = rodata_vaddr
    for p in plans.values():
        fde = p.fc.func.fde
        if fde is None:
            continue
        cie = fde.cie
        instrs = remap_cfa_program(
            fde.instructions, p.start, p.new_start, p.new_addr, cie.code_align, cie.fde_encoding
        )
        lsda_addr = None
        if fde.lsda:
            lsda = parse_lsda(facts.image.read, fde.lsda, p.start)
            blob = build_lsda(lsda, p.start, p.new_start, p.new_addr, cur)
            lsdas.append((cur, blob))
            lsda_addr = cur
            cur = _align(cur + len(blob), 4)
            lsdas[-1] = (lsdas[-1][0], blob + bytes(cur - lsda_addr - len(blob)))
        fde_outs.append(FdeOut(cie, p.new_start, p.size, instrs, lsda_addr))
    # The FDEs of code that stays in place are copied too, so the new .eh_frame is complete on its own: the
    # runtime unwinder only needs .eh_frame_hdr, but gdb and perf read the `.eh_frame` section, and the
    # writer points that section at the new copy.
    moved = {p.start for p in plans.values() if p.fc.func.fde is not None}
    for fde in facts.fdes:
        if fde.pc_begin and fde.pc_begin not in moved:
            ident = remap_cfa_program(
                fde.instructions,
                fde.pc_begin,
                fde.pc_begin,
                lambda a: a,
                fde.cie.code_align,
                fde.cie.fde_encoding,
            )
            fde_outs.append(FdeOut(fde.cie, fde.pc_begin, fde.pc_range, ident, fde.lsda))
    fde_outs.sort(key=lambda f: f.pc_begin)
    return lsdas, fde_outs


# --------------------------------------------------------------------------------------------- labels, patches


def _labels(facts: ModuleFacts, policy: Policy, choice: _Choice, resolve, fast: set[int] = frozenset()):
    """Old-address labels: forward classes everywhere (RET only where the calling code stays in place);
    targets of rewritten jump tables are labelled JMP at their new address instead."""
    moved = _pure_jmp_targets(facts, choice.tables)
    for addr, bits in policy.labels.items():
        keep = addr in policy.pushed  # pushed by the program itself: a ret goes to the old address
        if bits & RET and policy.return_callers.get(addr) in choice.plans and not keep:
            bits &= ~RET  # the call now runs in new code; its return site is labelled there
        fc = facts.function_at(addr)
        if fc is not None and fc.func.start in choice.plans:
            if not keep:
                bits &= ~RET
            if addr in moved:
                bits &= ~JMP
            if addr in choice.redirected:
                yield resolve(addr), bits
                continue
            if addr in fast:  # pointers now hold the new address; the old one keeps its forwarding jump
                yield resolve(addr), bits & ~RET
        if bits:
            yield addr, bits
    for jt in choice.tables:
        for t in jt.targets:
            yield resolve(t), JMP


def _table_patches(choice: _Choice, resolve) -> list[tuple[int, bytes]]:
    import struct

    out = []
    for jt in choice.tables:
        if jt.entry_size == 8:
            data = struct.pack(f"<{len(jt.targets)}Q", *(resolve(t) for t in jt.targets))
        else:
            data = b"".join(encode_s32(resolve(t) - jt.relative_to) for t in jt.targets)
        out.append((jt.table, data))
    return out


def _symtab(image) -> bytes:
    """u64 count, then (u64 address, u64 name offset) per function symbol, sorted, then the names."""
    import struct

    names: dict[int, str] = {}
    for sym in sorted(image.symbols, key=lambda x: (x.addr, not x.exported, x.name)):
        if sym.addr and sym.name and image.is_code(sym.addr):
            names.setdefault(sym.addr, sym.name)
    blob, strings = bytearray(struct.pack("<Q", len(names))), bytearray()
    for addr, name in sorted(names.items()):
        blob += struct.pack("<QQ", addr, len(strings))
        strings += name.encode("utf-8", "replace")[:200] + b"\0"
    return bytes(blob + strings)


def _old_code_patches(choice: _Choice, resolve) -> list[tuple[int, bytes]]:
    patches = [render_region(r, resolve) for r in choice.regions]
    return patches + render_short_jumps(choice.regions)


def _cet_patch(image) -> list[tuple[int, bytes]]:
    """Clear the IBT bit of GNU_PROPERTY_X86_FEATURE_1_AND: forwarded targets carry no endbr64."""
    import struct

    sec = image.section(".note.gnu.property")
    if sec is None or not sec.allocated:
        return []
    data = bytearray(image.read(sec.vaddr, sec.size))
    pos = 0
    changed = False
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_end = pos + 12 + _align(namesz, 4)
        desc = name_end
        if ntype == 5 and data[pos + 12 : pos + 12 + namesz].rstrip(b"\0") == b"GNU":
            q = desc
            while q + 8 <= desc + descsz:
                pr_type, pr_size = struct.unpack_from("<II", data, q)
                if pr_type == 0xC0000002 and pr_size >= 4:
                    (bits,) = struct.unpack_from("<I", data, q + 8)
                    if bits & 1:
                        struct.pack_into("<I", data, q + 8, bits & ~1)
                        changed = True
                q += 8 + _align(pr_size, 8)
        pos = desc + _align(descsz, 8 if sec.size % 8 == 0 else 4)
    return [(sec.vaddr, bytes(data))] if changed else []


def _outcomes(facts: ModuleFacts, plans: dict[int, FunctionPlan], rejected: dict[int, str]):
    guarded = {}
    for p in plans.values():
        for addr, kind, method in p.sites:
            guarded[addr] = (kind, method)
    sites = []
    for s in facts.sites:
        if s.addr in guarded:
            method = guarded[s.addr][1]
            outcome = "safe" if method == "switch" else "guarded"
            jt = facts.jump_tables.get(s.addr)
            loss = None
            if jt is not None and jt.united:
                loss = "table base loaded in another block: targets of every table that register may hold"
            sites.append(SiteOutcome(s.addr, s.kind, outcome, method, None, loss))
        else:
            reason = rejected.get(s.function, "function not relocated")
            sites.append(
                SiteOutcome(s.addr, s.kind, "unguarded", None, f"in function {s.function:#x}: {reason}")
            )
    for s in facts.gap_sites:
        sites.append(SiteOutcome(s.addr, s.kind, "unguarded", None, "code outside any known function"))
    sites.sort(key=lambda s: s.addr)
    names = {fc.func.start: fc.func.name for fc in facts.functions}
    not_relocated = sorted((a, names.get(a), r) for a, r in rejected.items())
    return sites, not_relocated
