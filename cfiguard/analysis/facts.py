"""Control-flow facts of a whole module: sites, direct targets, address-taken code, jump tables, return sites.

One linear pass per function over `disasm_lite` output. Only branch instructions and instructions with a
rip-relative or absolute operand are looked at twice; everything else is counted and passed by.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from dataclasses import dataclass, field, replace

from cfiguard.analysis.jumptables import (
    JumpTable,
    UnresolvedTable,
    dispatch_window,
    find_jump_table,
    label_offset_targets,
)
from cfiguard.analysis.liveness import flags_dead_at
from cfiguard.disasm.decode import Decoded, decode_range
from cfiguard.disasm.functions import Function, code_gaps, discover_by_traversal, discover_functions
from cfiguard.image.ehframe import Fde
from cfiguard.image.elf import (
    R_X86_64_64,
    R_X86_64_GLOB_DAT,
    R_X86_64_IRELATIVE,
    R_X86_64_JUMP_SLOT,
    R_X86_64_RELATIVE,
    Image,
)

# Functions that never return. Return sites after calls to them get no RET label. Only names whose
# contract is "does not return" in every libc/libstdc++ we know; a wrong entry would break programs.
NORETURN = frozenset(
    """abort exit _exit _Exit quick_exit __assert_fail __assert_perror_fail __stack_chk_fail __fortify_fail
    __chk_fail longjmp _longjmp siglongjmp __longjmp_chk pthread_exit __cxa_throw __cxa_rethrow
    __cxa_bad_cast __cxa_bad_typeid __cxa_throw_bad_array_new_length __cxa_pure_virtual
    __cxa_deleted_virtual _Unwind_Resume err errx verr verrx __libc_start_main _ZSt9terminatev
    __cxa_call_terminate __cxa_call_unexpected""".split()
)

# Far and privileged control transfers. No guard template covers them: their function stays in place and the
# site is reported (harden's own verification then refuses the output).
FAR_TRANSFERS = frozenset("iret iretd iretq retf retfq lret lretq sysret sysretq sysexit sysexitq".split())

RIP_REF = re.compile(r"\[rip ([+-]) (0x[0-9a-f]+|\d+)\]")
HEX = re.compile(r"0x[0-9a-f]+")

BRANCH_PREFIXES = ("notrack ", "bnd ", "repz ", "rep ")


@dataclass(frozen=True)
class Site:
    """An indirect call, indirect jump or return in the original binary."""

    addr: int
    size: int
    kind: str  # "call", "jmp", "ret"
    function: int | None  # start of the containing function, None outside any function


@dataclass
class FunctionCode:
    """A function with its linear decoding. `problem` says why it cannot be relocated (None: it can)."""

    func: Function
    dec: Decoded
    starts: set[int]
    problem: str | None = None
    special: list[int] = field(default_factory=list)  # indices of branches and rip-relative instructions
    code_refs: set[int] = field(default_factory=set)  # code addresses its instructions materialise


@dataclass
class ModuleFacts:
    image: Image
    fdes: list[Fde]
    functions: list[FunctionCode]
    sites: list[Site]
    gap_sites: list[Site]
    direct_targets: dict[int, set[int | None]] = field(
        default_factory=dict
    )  # target -> source function starts
    address_taken: set[int] = field(default_factory=set)
    call_entries: set[int] = field(default_factory=set)  # exported, entry, init/fini, IRELATIVE resolvers
    jump_tables: dict[int, JumpTable] = field(default_factory=dict)
    noreturn_calls: set[int] = field(default_factory=set)
    # code addresses loaded with `lea r, [rip + X]` and pushed (`push r`): a later `ret` may go there (OCaml's
    # exception handlers: `lea r11, [rip + handler]; push r11`, raised with `mov rsp, ...; pop; ret`)
    pushed_code: set[int] = field(default_factory=set)
    import_slots: dict[int, str] = field(default_factory=dict)  # GOT slot -> imported symbol name
    data_words: dict[int, list[int]] = field(default_factory=dict)  # code value -> data words holding it
    scratch_clobbered: set[int] = field(
        default_factory=set
    )  # functions whose callers treat r10, r11 as clobbered
    flags_dead_jmps: set[int] = field(default_factory=set)  # indirect jmps whose every target has dead flags
    plt_names: dict[int, str] = field(default_factory=dict)  # PLT stub address -> symbol name

    def function_at(self, addr: int) -> FunctionCode | None:
        fc = self._by_start.get(addr)
        if fc is not None:
            return fc
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            fc = self.functions[i]
            if fc.func.start <= addr < fc.func.end:
                return fc
        return None

    def is_insn_start(self, addr: int) -> bool:
        fc = self.function_at(addr)
        return fc is not None and addr in fc.starts

    def __post_init__(self) -> None:
        self._starts = [fc.func.start for fc in self.functions]
        self._by_start = {fc.func.start: fc for fc in self.functions}


def strip_prefix(mnem: str) -> str:
    if " " not in mnem:
        return mnem
    for p in BRANCH_PREFIXES:
        if mnem.startswith(p) and mnem != "rep" and mnem != "repz":
            return mnem[len(p) :]
    return mnem


def rip_target(addr: int, size: int, op: str) -> int | None:
    m = RIP_REF.search(op)
    if not m:
        return None
    disp = int(m.group(2), 0)
    return addr + size + (disp if m.group(1) == "+" else -disp)


def _decode_function(image: Image, f: Function) -> FunctionCode:
    dec = decode_range(image.read(f.start, f.end - f.start), f.start)
    problem = f.problem
    if problem is None and not dec.complete:
        stop = dec.addrs[-1] + dec.sizes[-1] if dec.addrs else f.start
        problem = f"undecodable bytes at {stop:#x}"
    return FunctionCode(f, dec, set(dec.addrs), problem)


def analyze(image: Image, fdes: list[Fde]) -> ModuleFacts:
    functions = discover_functions(image, fdes)
    fcs = [_decode_function(image, f) for f in functions]
    facts = ModuleFacts(image, fdes, fcs, [], [])
    _imports(image, facts)
    for fc in fcs:
        _scan_function(image, facts, fc)
    _data_references(image, facts)
    _entries(image, facts)

    # Code that no FDE or sized symbol describes: find functions in it from every known way in.
    strong = sorted(set(facts.direct_targets) | facts.call_entries | {s.addr for s in image.symbols})
    seeds = sorted(set(strong) | facts.address_taken | set(facts.data_words))
    found = []
    for gap in _exec_gaps(image, functions):
        # A data word that only looks like a pointer must not spoil the traversal: retry without them.
        found += discover_by_traversal(image, gap, seeds) or discover_by_traversal(image, gap, strong)
    if found:
        extra = [_decode_function(image, f) for f in found]
        for fc in extra:
            _scan_function(image, facts, fc)
        functions = sorted(functions + found, key=lambda f: f.start)
        facts.functions = sorted(fcs + extra, key=lambda fc: fc.func.start)
        facts.__post_init__()
    _noreturn_calls(image, facts)
    windows: list[tuple[int, list[int]]] = []
    for fc in facts.functions:
        _find_tables(image, facts, fc, windows)
    _prove_dispatches(image, facts, windows)
    _unrefer_table_words(facts)
    _gap_sites(image, facts, functions)
    _scratch_clobbers(facts)
    _flags_at_jump_targets(facts)
    return facts


def _exec_gaps(image: Image, functions: list[Function]) -> list[tuple[int, int]]:
    """Gaps clipped to executable sections (when the file has section headers), so headers are not swept."""
    exec_sections = [s for s in image.sections if s.executable and s.allocated and s.size]
    out = []
    for lo, hi in code_gaps(image, functions):
        if not exec_sections:
            out.append((lo, hi))
        for sec in exec_sections:
            a, b = max(lo, sec.vaddr), min(hi, sec.end)
            if a < b:
                out.append((a, b))
    return out


def _imports(image: Image, facts: ModuleFacts) -> None:
    for r in image.relocations:
        if r.type in (R_X86_64_JUMP_SLOT, R_X86_64_GLOB_DAT) and r.symbol:
            facts.import_slots[r.addr] = r.symbol


def _scan_function(image: Image, facts: ModuleFacts, fc: FunctionCode) -> None:
    d = fc.dec
    fstart = fc.func.start
    pic = image.is_pic
    direct = facts.direct_targets
    taken = facts.address_taken
    for i, mnem in enumerate(d.mnems):
        op = d.ops[i]
        first = mnem[0]
        if mnem in FAR_TRANSFERS:  # iretq, lretq, sysret: the target comes from memory or registers
            a = d.addrs[i]
            facts.sites.append(Site(a, d.sizes[i], "ret", fstart))
            fc.problem = fc.problem or f"`{mnem}` at {a:#x} takes its target from memory (not guardable)"
            continue
        if first in "jcrlnb" and (
            first == "j" or mnem.startswith(("call", "ret", "loop", "notrack", "bnd", "repz ret", "rep ret"))
        ):
            m = strip_prefix(mnem)
            a, s = d.addrs[i], d.sizes[i]
            fc.special.append(i)
            if m == "ret":
                facts.sites.append(Site(a, s, "ret", fstart))
            elif m in ("call", "jmp"):
                if op.startswith("0x"):
                    direct.setdefault(int(op, 16), set()).add(fstart)
                else:
                    facts.sites.append(Site(a, s, m, fstart))
                    if m == "jmp" and fc.func.is_plt and "rip" in op:
                        t = rip_target(a, s, op)
                        if t is not None and t in facts.import_slots:
                            facts.plt_names.setdefault(_plt_entry(fc, a), facts.import_slots[t])
            elif op.startswith("0x"):  # jcc, jrcxz, loop
                direct.setdefault(int(op, 16), set()).add(fstart)
            elif m.startswith(("ljmp", "lcall")):
                fc.problem = fc.problem or f"far branch at {a:#x}"
            continue
        if "rip" in op:
            fc.special.append(i)
            t = rip_target(d.addrs[i], d.sizes[i], op)
            if t is not None and image.is_code(t):
                taken.add(t)
                fc.code_refs.add(t)
                if mnem == "lea" and _pushed(d.mnems, d.ops, i):
                    facts.pushed_code.add(t)
        elif not pic and "0x" in op:
            for h in HEX.findall(op):
                v = int(h, 16)
                if v >= 0x1000 and image.is_code(v):
                    taken.add(v)
                    fc.code_refs.add(v)
        if mnem == "xbegin":
            fc.problem = fc.problem or f"xbegin at {d.addrs[i]:#x}"


def _pushed(mnems: list[str], ops: list[str], i: int) -> bool:
    """The register that the lea at `i` loads is pushed by one of the next 3 instructions, unchanged."""
    reg = ops[i].partition(",")[0]
    for j in range(i + 1, min(i + 4, len(mnems))):
        if mnems[j] == "push" and ops[j] == reg:
            return True
        if ops[j].partition(",")[0] == reg or mnems[j].startswith(("j", "call", "ret")):
            return False
    return False


def _plt_entry(fc: FunctionCode, addr: int) -> int:
    """The start of the PLT entry holding `addr` (entries are 16 bytes; .plt.got may use 8)."""
    size = 8 if fc.func.name == ".plt.got" and (fc.func.end - fc.func.start) % 16 else 16
    return fc.func.start + (addr - fc.func.start) // size * size


def _find_tables(image: Image, facts: ModuleFacts, fc: FunctionCode, windows: list) -> None:
    """Jump tables of every indirect jmp; label-difference tables when the function takes internal labels."""
    if fc.func.is_plt:
        return
    d = fc.dec
    unresolved: list[int] = []
    missing: str | None = None
    for i in fc.special:
        if strip_prefix(d.mnems[i]) != "jmp" or d.ops[i].startswith("0x"):
            continue
        try:
            jt = find_jump_table(image, d.addrs, d.sizes, d.mnems, d.ops, i, facts.is_insn_start)
        except UnresolvedTable as e:
            jt, missing = None, missing or str(e)
        if jt is not None:
            start = dispatch_window(d.addrs, d.sizes, d.mnems, d.ops, i, jt)
            if start is not None:
                windows.append((jt.site, d.addrs[start + 1 : i + 1]))
            facts.jump_tables[jt.site] = jt
        else:
            unresolved.append(i)
    if not unresolved:
        return
    # Label-difference tables need a base label that the function itself materialises (&&label).
    labels = {a for a in fc.code_refs if a in fc.starts and a != fc.func.start}
    targets = label_offset_targets(image, labels, fc.starts) if labels else set()
    if targets:
        for i in unresolved:
            site = d.addrs[i]
            facts.jump_tables[site] = JumpTable(site, 0, 4, tuple(sorted(targets)))
    elif missing:
        fc.problem = fc.problem or missing


def _prove_dispatches(image: Image, facts: ModuleFacts, windows: list[tuple[int, list[int]]]) -> None:
    """Mark a dispatch safe when its table is read-only and nothing but fall-through enters its window.

    Decided after every table is known: a target of ANY table, a branch target, a label or a return site
    inside the window would let control arrive after the bound check with an unchecked index.
    """
    entered = set(facts.direct_targets) | facts.address_taken | set(facts.data_words)
    for jt in facts.jump_tables.values():
        entered.update(jt.targets)
    for fc in facts.functions:
        d = fc.dec
        for i in fc.special:
            if strip_prefix(d.mnems[i]) == "call":
                entered.add(d.addrs[i] + d.sizes[i])
    for site, addrs in windows:
        jt = facts.jump_tables[site]
        seg = image.segment_at(jt.table)
        if seg is not None and not seg.writable and not any(a in entered for a in addrs):
            facts.jump_tables[site] = replace(jt, safe=True)


def _flags_at_jump_targets(facts: ModuleFacts) -> None:
    """Indirect jmps whose legitimate targets all have dead status flags (their guard may skip pushfq)."""
    index: dict[int, dict[int, int]] = {}

    def lookup(addr: int):
        fc = facts.function_at(addr)
        if fc is None:
            return None
        idx = index.get(fc.func.start)
        if idx is None:
            idx = index[fc.func.start] = {a: k for k, a in enumerate(fc.dec.addrs)}
        k = idx.get(addr)
        if k is None:
            return None
        d = fc.dec
        return d.mnems[k], d.ops[k], d.sizes[k]

    for fc in facts.functions:
        if fc.func.is_plt:
            continue
        d = fc.dec
        labels = [a for a in fc.code_refs if fc.func.start < a < fc.func.end]
        for i in fc.special:
            if strip_prefix(d.mnems[i]) != "jmp" or d.ops[i].startswith("0x"):
                continue
            jt = facts.jump_tables.get(d.addrs[i])
            # Without a table the jump is a tail call (flags are dead at a function entry by the ABI) or a
            # computed goto to one of the labels this function materialises.
            targets = jt.targets if jt is not None else labels
            if all(flags_dead_at(t, lookup) for t in targets):
                facts.flags_dead_jmps.add(d.addrs[i])


_SCRATCH = ("r10", "r11")
_READ_ONLY_FIRST = frozenset(("cmp", "test", "push", "bt", "nop"))


def _scratch_clobbers(facts: ModuleFacts) -> None:
    """Functions after whose return r10 and r11 may be assumed dead even by a caller that knows them.

    gcc's -fipa-ra lets a caller keep values in call-clobbered registers across a call to a local function
    that does not actually clobber them, so a return guard may only clobber r10/r11 when the function itself
    (or something it calls or tail-calls) already does. A write we see implies gcc saw it too; an unknown
    call (indirect, through the PLT, out of the module) clobbers everything. Anything we are unsure of counts
    as "not clobbered", which only costs the guard two stores and two loads.
    """
    own: dict[int, set[str]] = {}
    edges: dict[int, set[int]] = {}
    starts = {fc.func.start for fc in facts.functions}
    for fc in facts.functions:
        d = fc.dec
        regs: set[str] = set()
        out: set[int] = set()
        if fc.func.is_plt:
            regs.update(_SCRATCH)
        for i, op in enumerate(d.ops):
            if op.startswith(_SCRATCH):
                mn = d.mnems[i]
                if mn not in _READ_ONLY_FIRST and not mn.startswith("j"):
                    regs.add(op[:3])
            elif d.mnems[i] == "syscall":
                regs.add("r11")
        for i in fc.special:
            mn, op = strip_prefix(d.mnems[i]), d.ops[i]
            if mn == "call" or (mn == "jmp" and op.startswith("0x")):
                if not op.startswith("0x"):
                    regs.update(_SCRATCH)  # indirect call: unknown callee
                    continue
                t = int(op, 16)
                if t in starts:
                    out.add(t)
                elif mn == "call" or not (fc.func.start <= t < fc.func.end):
                    callee = facts.function_at(t)
                    if callee is None or callee.func.is_plt:
                        regs.update(_SCRATCH)
            elif mn == "jmp" and not op.startswith("0x") and d.addrs[i] not in facts.jump_tables:
                if not any(fc.func.start < a < fc.func.end for a in fc.code_refs):
                    regs.update(_SCRATCH)  # a tail call through a pointer (not a switch, not a computed goto)
        own[fc.func.start] = regs
        edges[fc.func.start] = out
    changed = True
    while changed:
        changed = False
        for f, callees in edges.items():
            regs = own[f]
            if len(regs) == 2:
                continue
            for g in callees:
                extra = own.get(g, set()) - regs
                if extra:
                    regs |= extra
                    changed = True
    facts.scratch_clobbered = {f for f, regs in own.items() if len(regs) == 2}


def _unrefer_table_words(facts: ModuleFacts) -> None:
    """A word of a jump table with a proven extent is a case target, not a function pointer: only words
    outside such tables make a code address address-taken (absolute tables of non-PIE files live in .rodata)."""
    spans = sorted(
        (jt.table, jt.table + 8 * len(jt.targets))
        for jt in facts.jump_tables.values()
        if jt.exact and jt.entry_size == 8
    )
    starts = [a for a, _ in spans]
    for v, words in facts.data_words.items():
        for w in words:
            k = bisect_right(starts, w) - 1
            if k < 0 or not (spans[k][0] <= w < spans[k][1]):
                facts.address_taken.add(v)
                break


def _gap_sites(image: Image, facts: ModuleFacts, functions: list[Function]) -> None:
    """Sweep code outside known functions only to report the sites it may hold."""
    for a, b in _exec_gaps(image, functions):
        d = decode_range(image.read(a, b - a), a)
        for i, mnem in enumerate(d.mnems):
            m = strip_prefix(mnem)
            op = d.ops[i]
            if m == "ret" or (m in ("call", "jmp") and not op.startswith("0x")):
                facts.gap_sites.append(Site(d.addrs[i], d.sizes[i], "ret" if m == "ret" else m, None))
            elif m in ("call", "jmp") or (m.startswith("j") and op.startswith("0x")):
                facts.direct_targets.setdefault(int(op, 16), set()).add(None)


def _data_references(image: Image, facts: ModuleFacts) -> None:
    """Code pointers stored in data.

    Position-dependent files: every aligned 8-byte word of a non-executable segment whose value is a code
    address (BinCFI's rule). Position-independent files store pointers through relocations, so only relocation
    targets count, plus the lazy-binding values already present in JUMP_SLOT slots; scanning raw words there
    would take every small integer for a code address.
    """
    taken = facts.address_taken
    code = [(s.vaddr, s.vaddr + s.filesz) for s in image.code_segments]
    lo = min(a for a, _ in code)
    hi = max(b for _, b in code)
    if not image.is_pic:
        for seg in image.segments:
            if seg.executable or seg.filesz < 8:
                continue
            start = (seg.vaddr + 7) & ~7
            off = seg.offset + (start - seg.vaddr)
            n = (seg.vaddr + seg.filesz - start) // 8
            for k, v in enumerate(struct.unpack_from(f"<{n}Q", image.data, off)):
                if lo <= v < hi and any(a <= v < b for a, b in code):
                    facts.data_words.setdefault(v, []).append(start + 8 * k)
    for slot in _relr_slots(image):
        # DT_RELR (packed relative relocations): the addend is the slot's own content.
        v = image.read_u64(slot)
        if image.is_code(v):
            taken.add(v)
    for r in image.relocations:
        if r.type in (R_X86_64_RELATIVE, R_X86_64_IRELATIVE):
            if image.is_code(r.addend):
                taken.add(r.addend)
                if r.type == R_X86_64_IRELATIVE:
                    facts.call_entries.add(r.addend)
        elif r.type in (R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT) and r.symbol_value:
            if image.is_code(r.symbol_value):
                taken.add(r.symbol_value + (r.addend if r.type == R_X86_64_64 else 0))
        if r.type == R_X86_64_JUMP_SLOT and image.segment_at(r.addr) is not None:
            v = image.read_u64(r.addr)
            if image.is_code(v):
                taken.add(v)


def _relr_slots(image: Image) -> list[int]:
    """Addresses relocated by .relr.dyn (glibc 2.36+ `-z pack-relative-relocs`): an even word is an address,
    an odd word a bitmap of the 63 words that follow the last address."""
    sec = image.section(".relr.dyn")
    if sec is None or not sec.allocated or sec.size % 8:
        return []
    out: list[int] = []
    base = 0
    for (w,) in struct.iter_unpack("<Q", image.read(sec.vaddr, sec.size)):
        if w & 1 == 0:
            out.append(w)
            base = w + 8
        else:
            bits = w >> 1
            k = 0
            while bits:
                if bits & 1:
                    out.append(base + 8 * k)
                bits >>= 1
                k += 1
            base += 63 * 8
    return [a for a in out if image.segment_at(a) is not None]


def _entries(image: Image, facts: ModuleFacts) -> None:
    """Addresses named from outside the module's code: the entry point, init/fini functions, exports."""
    ce = facts.call_entries
    if image.entry:
        ce.add(image.entry)
    ce.update(image.init_functions)
    for s in image.symbols:
        if s.exported and image.is_code(s.addr):
            ce.add(s.addr)


def _noreturn_calls(image: Image, facts: ModuleFacts) -> None:
    """Calls to functions that never return: no return site after them."""
    names = dict(facts.plt_names)
    for s in image.symbols:
        names.setdefault(s.addr, s.name)
    for fc in facts.functions:
        d = fc.dec
        for i in fc.special:
            if strip_prefix(d.mnems[i]) != "call":
                continue
            op = d.ops[i]
            name = None
            if op.startswith("0x"):
                name = names.get(int(op, 16))
            elif "rip" in op:
                t = rip_target(d.addrs[i], d.sizes[i], op)
                name = facts.import_slots.get(t) if t is not None else None
            if name is not None and (name in NORETURN or name.startswith("_ZSt") and "__throw_" in name):
                facts.noreturn_calls.add(d.addrs[i])
