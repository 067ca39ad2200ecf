"""The verification itself: segment and layout checks, then a recursive-traversal disassembly with the invariant.

The manifest is only a hint: each claim is checked against the program headers and the bytes. Decoding starts
from every way into the module (ELF entry, exports, what ld.so calls, every labelled address) and follows direct
branches and fall-through. Each byte of code has a state (not decoded, instruction start, inside an
instruction, inside a guard unit) that only moves towards "instruction start", so the traversal ends on any
input. A guard is one unit: a label or branch landing inside it is a finding, and any ret / indirect call /
indirect jmp decoded on its own is unguarded. Capstone runs in lite mode on linear runs (docs/verifier.md).
"""

from __future__ import annotations

import json
import re
import struct
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

import capstone

from cfiguard.verify import elf as elfmod
from cfiguard.verify import guards as G
from cfiguard.verify.dispatch import prove
from cfiguard.verify.elf import PAGE, PF_W, PF_X, Elf, Malformed
from cfiguard.verify.guards import MASK, Unit, match_unit, near_miss, stub_problem
from cfiguard.verify.vexlen import vex_length

MANIFEST_SECTION, MANIFEST_MAGIC = ".cfiguard", b"CFIGUARD"
CHUNK = 1024  # bytes handed to capstone per call
FIRST_COUNT = 12  # instructions decoded by the first call of a run; most runs are short (joins, labels)
MAX_PER_CHECK = 1000  # findings kept per check; a corrupt file must not produce millions of lines
START, INSIDE, GUARDED = 1, 2, 3  # 0: not decoded
ZEROS = [bytes(n) for n in range(16)]
LEGACY_PREFIXES = frozenset(b"\xf0\xf2\xf3\x2e\x36\x3e\x26\x64\x65\x66\x67")
INSIDES = [bytes([INSIDE]) * n for n in range(16)]

# Instruction classes (by mnemonic, prefixes stripped). Anything else falls through to the next instruction.
COND, JUMP, CALL, RET, STOP, FAR, TRIGGER, SYS = range(8)
_CLASSES = {"jmp": JUMP, "call": CALL, "ret": RET, "hlt": STOP, "ud2": STOP, "ud0": STOP, "ud1": STOP}
_CLASSES |= {"int3": STOP, "xbegin": COND, "jrcxz": COND, "jecxz": COND}
_CLASSES |= dict.fromkeys(("retf", "retfq", "iret", "iretd", "iretq", "sysret", "sysretq", "sysexit"), FAR)
_CLASSES |= dict.fromkeys(("sysexitq", "ljmp", "lcall"), FAR)
_CLASSES |= dict.fromkeys(("syscall", "sysenter", "int", "int1", "into"), SYS)
# System call numbers that set rip and rsp from memory (rt_sigreturn), 64-bit and int 0x80 ABIs.
SIGRETURN = {"syscall": {15}, "int": {119, 173}}


class _ClassCache(dict):
    """mnemonic -> class, computed on first sight; `mov`, `lea` and `pop` may start a guard unit."""

    def __missing__(self, mnemonic: str) -> int | None:
        c = self[mnemonic] = TRIGGER if mnemonic in ("mov", "lea", "pop") else classify(mnemonic)
        return c


CHECKS = {
    "elf": "The ELF headers or tables are malformed or truncated.",
    "manifest": "The .cfiguard manifest is missing or invalid (the file is not hardened by cfiguard).",
    "layout": "The manifest's code range or label table does not match the segments.",
    "segment-wx": "A segment, or a page shared by two segments, is both writable and executable.",
    "code-writable": "Text relocations make code writable at load time.",
    "exec-stack": "The stack is executable (PT_GNU_STACK missing or with PF_X).",
    "table-writable": "The label table lies in writable memory.",
    "exec-tail": "Executable bytes outside the checked code range are not padding.",
    "unguarded": "A reachable ret, indirect call or indirect jmp is not the last instruction of a guard.",
    "guard-class": "A guard tests the wrong class mask for its branch.",
    "guard-range": "A guard's code range (lea target, cmp size) does not match the layout.",
    "guard-table": "A guard reads labels at a different table distance.",
    "guard-stub": "A guard's jz does not go to a well-formed violation stub that jumps to the handler.",
    "guard-xmod": "A guard's out-of-range jae does not go to its own well-formed cross-module stub.",
    "guard-operand": "A preserving jmp guard checks a different operand than the one it jumps through.",
    "guard-decode": "Capstone decodes a guard unit differently from its template.",
    "handler": "The violation handler is missing or contains a ret or an indirect branch.",
    "label": "A label is not on an instruction start of executable code, or has unknown class bits.",
    "inside-guard": "A label, entry or branch target lands strictly inside a guard unit.",
    "overlap": "Two decoded instructions overlap.",
    "undecodable": "Reachable bytes cannot be decoded, or decoding runs off the end of executable code.",
    "bad-target": "An entry or direct branch target lies outside executable code.",
    "unsupported": "A reachable far or privileged control transfer.",
    "loader": "ld.so would call code in this module that the verifier cannot determine.",
    "audit": "The binary is in audit mode (violations logged, not stopped); --allow-audit accepts it.",
    "syscall": "A system call that transfers control (rt_sigreturn) is reachable.",
    "internal": "The verifier failed unexpectedly (treated as a verification failure).",
}

# System calls the violation handler may make: write, rt_sigaction, rt_sigprocmask, alarm, getpid, gettid,
# tgkill, exit_group. None of them can resume the program elsewhere (rt_sigreturn = 15 and execve could).
HANDLER_SYSCALLS = frozenset((1, 13, 14, 37, 39, 186, 234, 231))

# Imported functions whose contract is not to return (the verifier's own list, not the rewriter's). A call to
# one needs no decoding after it unless its return site carries a RET label.
NORETURN = frozenset(
    """abort exit _exit _Exit quick_exit __assert_fail __assert_perror_fail __stack_chk_fail __fortify_fail
    __chk_fail longjmp _longjmp siglongjmp __longjmp_chk pthread_exit __cxa_throw __cxa_rethrow
    __cxa_bad_cast __cxa_bad_typeid __cxa_throw_bad_array_new_length __cxa_pure_virtual __cxa_deleted_virtual
    _Unwind_Resume err errx verr verrx __libc_start_main _ZSt9terminatev __cxa_call_terminate""".split()
)


def classify(mnemonic: str) -> int | None:
    m = mnemonic.rsplit(" ", 1)[-1]  # bnd, notrack, repz, lock, ...
    c = _CLASSES.get(m)
    if c is None and (m.startswith("j") or m.startswith("loop")):
        return COND
    return c


@dataclass(frozen=True)
class Finding:
    check: str
    address: int | None
    reason: str


@dataclass
class Result:
    path: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    # addresses of the dispatch jmps it proved bounded; warnings: worth a look, but the file still verifies
    proven_switches: list[int] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    error: str | None = None  # set when the input is unusable (exit code 2)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.findings


class _Code:
    """One executable PT_LOAD: its file-backed bytes and a per-byte decoding state."""

    __slots__ = ("vaddr", "end", "data", "state")

    def __init__(self, vaddr: int, data: bytes) -> None:
        self.vaddr, self.end, self.data, self.state = vaddr, vaddr + len(data), data, bytearray(len(data))


class Verifier:
    """All checks of one file. Findings accumulate in `self.findings`; nothing stops at the first one."""

    def __init__(self, elf: Elf, allow_audit: bool = False) -> None:
        self.elf = elf
        self.allow_audit = allow_audit
        self.audit = False  # the manifest says mode "audit" (violations logged, not stopped)
        self.findings: list[Finding] = []
        self._per_check: Counter[str] = Counter()
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.code: list[_Code] = []
        self.units: dict[int, Unit] = {}
        self.guards: Counter[str] = Counter()
        self.run_src: dict[int, int | str] = {}
        self.landed: set[int] = set()  # every entry, label and branch target
        self.windows: list[tuple[int, int]] = []  # (origin, jmp) of proven switch dispatches
        self.switches = 0
        self.proven: list[int] = []
        self.warnings: list[Finding] = []  # reported, not failing
        self.numbered: list[int] = []  # syscalls whose number the instruction before sets
        self.pending: list[tuple[_Code, int, str]] = []  # unguarded jmps: (code, offset, text)
        self.work: list[tuple[int, int | str]] = []
        self.insns = 0
        self.vex = 0  # instructions only the VEX/EVEX length decoder knew
        self.xstubs = 0
        self.module: tuple[int, int] | None = None  # the module's loaded span, from the manifest, checked
        self.labels = 0
        self.table: bytes | None = None
        self.lo = self.size = self.distance = self.handler = 0
        self._classes = _ClassCache()
        self._stubs: dict[tuple[int, str], str | None] = {}
        self._relocs: dict[int, tuple[int, int, int]] | None = None

    def add(self, check: str, address: int | None, reason: str) -> None:
        self._per_check[check] += 1
        n = self._per_check[check]
        if n <= MAX_PER_CHECK:
            self.findings.append(Finding(check, address, reason))
        elif n == MAX_PER_CHECK + 1:
            self.findings.append(Finding(check, None, f"more {check} findings omitted"))

    # ------------------------------------------------------------------------------------------ driver

    def run(self) -> None:
        """Segment checks first (they need no manifest), then the manifest, layout, handler and traversal."""
        elf = self.elf
        self._segments()
        manifest = self._manifest()
        if manifest is None:
            return
        self.lo, self.size, self.distance = manifest["lo"], manifest["size"], manifest["table_distance"]
        self.handler = manifest["handler"]
        self.audit = manifest.get("mode") == "audit"
        if self.audit and not self.allow_audit:
            self.add("audit", None, "audit-mode binary: violations are logged and the program goes on")
        self._module(manifest.get("module"))
        self._layout(manifest["table"])
        self.code = [
            _Code(s.vaddr, elf.data[s.offset : s.offset + s.filesz]) for s in elf.loads if s.flags & PF_X
        ]
        self._check_handler()
        if self.table is not None:
            self._push_labels()
        for tag, name in ((17, "DT_REL"), (0x6000000F, "DT_ANDROID_REL"), (0x60000011, "DT_ANDROID_RELA")):
            if elf.dyn(tag) is not None:  # relocation formats ld.so may apply that the model does not read
                self.add("loader", None, f"{name} relocations are not modelled by the verifier")
        entries, problems = elf.init_functions()
        self.work += [(addr, what) for what, addr in entries]
        for slot, reason in problems:
            self.add("loader", slot, reason + ": what ld.so would call there is unknown")
        self._relocated_slots()
        self.work += [(addr, "exported function") for addr in elf.exported_functions()]
        self.work += [(elf.entry, "ELF entry point")] if elf.entry else []
        self._traverse()
        self._check_windows()
        for a in self.numbered:
            if a in self.landed:
                self.warn(
                    "syscall", a, f"a branch lands on the syscall at {a:#x}: its number is not known there"
                )
        units = sum(len(u.insns) - 1 for u in self.units.values())
        self.insns = sum(c.state.count(START) for c in self.code) + units

    # ------------------------------------------------------------------------------------------ segments, manifest

    def _segments(self) -> None:
        elf = self.elf
        xs = [s for s in elf.loads if s.flags & PF_X]
        if not xs:
            self.add("elf", None, "no executable segment")
        for s in elf.loads:
            if s.flags & PF_X and s.flags & PF_W:
                self.add("segment-wx", s.vaddr, f"segment at {s.vaddr:#x} is writable and executable")
        for x in xs:
            for w in elf.loads:
                if w is x or not _overlap(x.pages(), w.pages()):
                    continue
                if w.flags & PF_W and not w.flags & PF_X:
                    self.add(
                        "segment-wx",
                        x.vaddr,
                        f"executable segment at {x.vaddr:#x} shares pages with writable segment at {w.vaddr:#x}",
                    )
                else:  # which bytes the page holds depends on mapping order: the decoding would be a guess
                    self.add("elf", x.vaddr, f"executable segment shares pages with segment at {w.vaddr:#x}")
        loads = elf.loads
        for i, a in enumerate(
            loads
        ):  # the kernel maps PT_LOADs in order: on a shared page the later one wins
            for b in loads[i + 1 :]:
                if _overlap(a.pages(), b.pages()) and not (a.flags & PF_X or b.flags & PF_X):
                    self.add(
                        "elf",
                        b.vaddr,
                        f"segments at {a.vaddr:#x} and {b.vaddr:#x} share pages (order decides)",
                    )
        if elf.dyn(elfmod.DT_TEXTREL) is not None or (elf.dyn(elfmod.DT_FLAGS) or 0) & elfmod.DF_TEXTREL:
            self.add("code-writable", None, "DT_TEXTREL: the loader makes code writable to relocate it")
        stack = [s for s in elf.segments if s.type == elfmod.PT_GNU_STACK]
        if not stack or stack[0].flags & PF_X:
            self.add("exec-stack", None, "PT_GNU_STACK is missing or executable")

    def _module(self, m: object) -> None:
        """The module's loaded span, which cross-module stubs treat as "this module, not code": it must cover
        every PT_LOAD, or an address of the module's own data would pass as another module's."""
        lo, hi = m if isinstance(m, list) and len(m) == 2 and all(type(v) is int for v in m) else (1, 0)
        loads = self.elf.loads
        if lo <= min(s.vaddr for s in loads) & -PAGE and max(s.end for s in loads) <= hi < lo + (1 << 32):
            self.module = (lo, hi)
        else:
            self.add("manifest", None, f"module span {m!r} does not cover every PT_LOAD")

    def _relocated_slots(self) -> None:
        """ld.so writes every relocation slot: none may lie in the pages of code or of the label table."""
        guarded = [(x.pages(), "code") for x in self.elf.loads if x.flags & PF_X]
        if self.table is not None:
            t = self.lo + self.distance
            guarded.append(((t & -PAGE, t + self.size), "label table"))
        slots = list(self.elf.relocations()) + self.elf.relr_slots()
        for slot in slots:
            for (p0, p1), what in guarded:
                if p0 <= slot + 7 and slot < p1:
                    check = "code-writable" if what == "code" else "table-writable"
                    self.add(check, slot, f"a relocation writes {slot:#x}, in the pages of the {what}")

    def _noreturn(self, target: int) -> bool:
        """The verifier's own judgement that a direct call to `target` never returns: it reaches, through at
        most 4 direct jumps (forwarding jumps of relocated PLT stubs), a jump or a guard load through the GOT
        slot of an imported function whose contract is not to return."""
        for _ in range(5):
            code = self._code_at(target)
            if code is None:
                return False
            k = target - code.vaddr
            raw = code.data[k : k + 16]
            if raw[:4] == b"\xf3\x0f\x1e\xfa":  # endbr64
                raw, target = raw[4:], target + 4
            if raw[:1] == b"\xf2":  # bnd
                raw, target = raw[1:], target + 1
            if raw[:1] == b"\xe9" and len(raw) >= 5:
                target = target + 5 + int.from_bytes(raw[1:5], "little", signed=True)
                continue
            if raw[:1] == b"\xeb" and len(raw) >= 2:
                target = target + 2 + int.from_bytes(raw[1:2], "little", signed=True)
                continue
            if raw[:2] == b"\xff\x25" or raw[:3] == b"\x4c\x8b\x1d":  # jmp [rip+d] / mov r11, [rip+d]
                n = 2 if raw[0] == 0xFF else 3
                slot = target + n + 4 + int.from_bytes(raw[n : n + 4], "little", signed=True)
                r = self.elf.relocations().get(slot)
                if r is None or r[0] not in (elfmod.R_X86_64_JUMP_SLOT, elfmod.R_X86_64_GLOB_DAT) or not r[1]:
                    return False
                syms = self.elf.dynsyms()
                return r[1] < len(syms) and syms[r[1]][3] == 0 and self.elf.symbol_name(r[1]) in NORETURN
            return False
        return False

    def _manifest(self) -> dict | None:
        sec = self.elf.section(MANIFEST_SECTION)
        if sec is None:
            self.add("manifest", None, "not hardened by cfiguard: no .cfiguard section")
            return None
        raw = self.elf.section_bytes(sec)
        if not raw.startswith(MANIFEST_MAGIC):
            self.add("manifest", None, "not hardened by cfiguard: .cfiguard does not start with CFIGUARD")
            return None
        try:
            m = json.loads(raw[len(MANIFEST_MAGIC) :].decode())
        except (UnicodeDecodeError, ValueError) as e:
            self.add("manifest", None, f"manifest is not valid JSON: {e}")
            return None

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        problems = []
        if not isinstance(m, dict) or m.get("format") != 1:
            problems.append("unsupported manifest format")
        elif not all(is_int(m.get(k)) for k in ("lo", "size", "table", "table_distance", "handler")):
            problems.append("lo, size, table, table_distance and handler must be integers")
        else:
            if m.get("classes") != {"ret": 1, "call": 2, "jmp": 4}:
                problems.append(f"class bits {m.get('classes')} differ from ret=1, call=2, jmp=4")
            if not 0 < m["size"] < 1 << 31 or not 0 <= m["lo"] < 1 << 63:
                problems.append("size must be in (0, 2**31) and lo non-negative")
            if m["table"] != m["lo"] + m["table_distance"] or not -(1 << 31) <= m["table_distance"] < 1 << 31:
                problems.append("table != lo + table_distance, or the distance does not fit 32 bits")
        for p in problems:
            self.add("manifest", None, p)
        return None if problems else m

    def _layout(self, table: int) -> None:
        elf, lo, hi = self.elf, self.lo, self.lo + self.size
        for x in elf.loads:
            if x.flags & PF_X and not (lo <= x.vaddr and x.end <= hi):
                self.add(
                    "layout",
                    x.vaddr,
                    f"executable segment [{x.vaddr:#x}, {x.end:#x}) is not inside the checked range "
                    f"[{lo:#x}, {hi:#x}): its targets would pass as outside the module",
                )
        seg = next(
            (s for s in elf.loads if s.vaddr <= table and table + self.size <= s.vaddr + s.filesz), None
        )
        if seg is None:
            self.add("layout", table, f"label table [{table:#x}, {table + self.size:#x}) is not file-backed")
        else:
            if seg.flags & PF_X:
                self.add("layout", table, "label table segment is executable")
            tpages = (table & -PAGE, (table + self.size + PAGE - 1) & -PAGE)
            for w in elf.loads:
                if w.flags & PF_W and _overlap(tpages, w.pages()):
                    self.add("table-writable", table, f"label table lies in writable segment at {w.vaddr:#x}")
            self.table = elf.read(table, self.size)
        self._exec_tail()

    def _exec_tail(self) -> None:
        """Executable page bytes outside [lo, hi) pass every guard as 'outside the module': they must be padding."""
        lo, hi = self.lo, self.lo + self.size
        for x in self.elf.loads:
            if not x.flags & PF_X:
                continue
            p0, p1 = x.pages()
            for a, b, ok in ((p0, min(lo, p1), b"\xcc"), (max(hi, p0), p1, b"\xcc\x00")):
                if a >= b:
                    continue
                start = x.offset - (x.vaddr - p0) + (a - p0)
                raw = self.elf.data[max(start, 0) : start + (b - a)]
                if x.memsz > x.filesz:  # the kernel zero-fills past filesz
                    raw = raw[: max(0, x.vaddr + x.filesz - a)]
                if raw.translate(None, ok):
                    self.add("exec-tail", a, f"executable bytes [{a:#x}, {b:#x}) outside [{lo:#x}, {hi:#x})")

    def _push_labels(self) -> None:
        table, lo = self.table, self.lo
        assert table is not None
        for m in re.finditer(rb"[^\x00-\x07]", table):
            self.add("label", lo + m.start(), f"label byte {table[m.start()]:#x} has unknown class bits")
        for m in re.finditer(rb"[^\x00]", table):
            self.work.append((lo + m.start(), "label"))
            self.labels += 1
        self.work.reverse()  # lowest address first

    def _ret_label(self, addr: int) -> bool:
        return (
            self.table is not None and 0 <= addr - self.lo < self.size and self.table[addr - self.lo] & 1 != 0
        )

    def _is_label(self, addr: int) -> bool:
        return self.table is not None and 0 <= addr - self.lo < self.size and self.table[addr - self.lo] != 0

    # ------------------------------------------------------------------------------------------ traversal

    def _code_at(self, addr: int) -> _Code | None:
        for c in self.code:
            if c.vaddr <= addr < c.end:
                return c
        return None

    def _traverse(self) -> None:
        """Drain the work list; then try to prove the unguarded jmps met on the way as switch dispatches. A
        proof queues new targets, whose code may complete another jmp's window, so repeat to a fixpoint."""
        unproven: list[tuple[_Code, int, str]] = []
        while True:
            self._drain()
            todo, self.pending = unproven + self.pending, []
            unproven = [p for p in todo if not self._dispatch(p[0], p[1])]
            if not self.work and not self.pending:
                break
        for code, k, text in unproven:
            self.add(
                "unguarded",
                code.vaddr + k,
                f"indirect jmp `{text}` is not the last instruction of a recognised jmp guard"
                " nor a proven bounded dispatch" + near_miss(code.data, k, code.vaddr, "jmp"),
            )

    def _drain(self) -> None:
        work, code = self.work, self.code
        last = code[0] if code else None
        landed = self.landed
        while work:
            addr, src = work.pop()
            landed.add(addr)
            if last is None or not last.vaddr <= addr < last.end:
                last = self._code_at(addr)
                if last is None:
                    if src == "label":
                        self.add("label", addr, f"label at {addr:#x} is not in executable code")
                    elif addr == 0 and isinstance(src, int):
                        pass  # `call 0`: an undefined weak function, guarded by a null test; it can only fault
                    else:
                        self.add("bad-target", addr, f"{_describe(src)} targets non-code {addr:#x}")
                    continue
            if last.state[addr - last.vaddr] != START:
                self._run(last, addr, src)

    def _run(self, code: _Code, addr: int, src: int | str) -> None:
        """Decode from `addr` along fall-through, queueing direct targets, until the path ends or joins."""
        st, data, base = code.state, code.data, code.vaddr
        off = addr - base
        self.run_src[addr] = src
        quiet = False
        if st[off]:
            quiet = self._landed_inside(code, off, src)  # one finding per desynchronised run
        md, classes, work = self.md, self._classes, self.work
        n_data, count = len(data), FIRST_COUNT
        prev = ("", "")  # the instruction before, in this run (the one that sets a syscall's number)
        while True:
            restart, a, s = -1, -1, 0
            for a, s, m, o in md.disasm_lite(data[off : off + CHUNK], base + off, count):
                k = a - base
                c = st[k]
                if c == START:
                    return
                conflict = c or st[k + 1 : k + s] != ZEROS[s - 1]
                if conflict and not quiet:
                    quiet = self._overlap(code, k, s)
                cls = classes[m]
                if cls == SYS:
                    self._syscall(a, m, o, prev)
                prev = (m, o)
                if cls is TRIGGER:
                    if o[:5] == "r11, " or o in ("qword ptr [rsp - 8], r11", "rsp, [rsp - 0x80]", "r11"):
                        unit = match_unit(data, k, base)
                        if unit is not None:
                            self._unit(code, unit)
                            if unit.kind != "call":
                                return
                            restart = unit.end - base
                            break
                    cls = None
                if conflict:
                    for p in range(k + 1, k + s):
                        if not st[p]:
                            st[p] = INSIDE
                else:
                    st[k + 1 : k + s] = INSIDES[s - 1]
                st[k] = START
                if cls is None:
                    continue
                if o.isdigit():  # capstone prints small direct targets in decimal (`call 0`, a weak symbol)
                    o = hex(int(o))
                if cls == COND:
                    if o[:2] == "0x":
                        work.append((int(o, 16), a))
                    else:
                        self.add("unsupported", a, f"`{_text(m, o)}` has no direct target")
                    continue
                if cls == CALL or cls == JUMP:
                    if o[:2] == "0x":
                        work.append((int(o, 16), a))
                        if cls == CALL:
                            # the return site is reached by a return: guarded ones need a RET label, and
                            # a callee judged noreturn returns nowhere
                            if not self._ret_label(a + s) and self._noreturn(int(o, 16)):
                                return
                            continue
                        return
                    if cls == JUMP:  # perhaps a switch: proven once everything before it is decoded
                        self.pending.append((code, k, _text(m, o)))
                        return
                    self.add(
                        "unguarded",
                        a,
                        f"indirect call `{_text(m, o)}` is not the last instruction of a recognised call guard"
                        + near_miss(data, k, base, "call"),
                    )
                    continue
                if cls == RET:
                    self.add(
                        "unguarded",
                        a,
                        f"`{_text(m, o)}` is not the last instruction of a recognised ret guard"
                        + near_miss(data, k, base, "ret"),
                    )
                elif cls == FAR:
                    self.add("unsupported", a, f"far or privileged control transfer `{_text(m, o)}`")
                return  # RET, STOP or FAR
            if restart >= 0:
                off = restart
            elif a < 0:  # capstone decoded nothing at `off`
                if off < n_data:
                    n = vex_length(data, off)  # a VEX/EVEX instruction capstone does not know: never a branch
                    if n is not None and not st[off] and st[off + 1 : off + n] == ZEROS[n - 1]:
                        st[off] = START
                        st[off + 1 : off + n] = INSIDES[n - 1]
                        self.vex += 1
                        off, count = off + n, FIRST_COUNT
                        if off < n_data and st[off] == START:
                            return
                        continue
                    raw = data[off : off + 15].hex()
                    self.add("undecodable", base + off, f"cannot decode the bytes at {base + off:#x}: {raw}")
                    return
            else:  # the run goes on past this batch: decode more at a time
                off, count = a + s - base, min(count * 4, CHUNK // 4)
            if off >= n_data:
                self.add("undecodable", base + off, "decoding runs past the end of the executable segment")
                return

    def _syscall(self, a: int, m: str, o: str, prev: tuple[str, str]) -> None:
        """A system call is a control transfer when it is rt_sigreturn (rip and rsp come from memory). Its
        number must be a constant set by the instruction right before it (and nothing may branch to the call
        itself: checked at the end); a provable rt_sigreturn fails, an unknown number is a warning."""
        if m == "int" and o not in ("0x80", "128"):
            return  # other vectors fault or are the kernel's business
        pm, po = prev
        n = None
        if pm == "mov" and po[:5] in ("eax, ", "rax, ") and IMM_RE.match(po[5:]):
            n = int(po[5:], 0)
        kind = "syscall" if m == "syscall" else "int"
        if n is not None and n in SIGRETURN.get(kind, ()):
            self.add("syscall", a, f"`{_text(m, o)}` with number {n} is rt_sigreturn (rip, rsp from memory)")
        elif n is None:
            self.warn("syscall", a, f"`{_text(m, o)}` with a number the verifier cannot determine")
        else:
            self.numbered.append(a)

    def warn(self, check: str, address: int | None, reason: str) -> None:
        if len(self.warnings) < MAX_PER_CHECK:
            self.warnings.append(Finding(check, address, reason))

    def _start_before(self, code: _Code, off: int) -> int:
        """Address of the nearest instruction or unit start at or before `off` (for messages)."""
        for p in range(off, max(-1, off - 128), -1):
            if code.state[p] == START:
                return code.vaddr + p
        return code.vaddr + off

    def _prefix_skip(self, code: _Code, outer: int, inner: int) -> bool:
        """True when the instruction at `inner` is the one at `outer` minus leading legacy prefixes (the
        `je 1f; lock; 1: cmpxchg` idiom of glibc): both decodings end together, so nothing is hidden."""
        data = code.data
        if not 0 < inner - outer < 15 or any(b not in LEGACY_PREFIXES for b in data[outer:inner]):
            return False
        ends = []
        for at in (outer, inner):
            dec = list(self.md.disasm_lite(data[at : at + 15], code.vaddr + at, 1))
            ends.append(at + dec[0][1] if dec else -1)
        return ends[0] == ends[1] != -1

    def _landed_inside(self, code: _Code, off: int, src: int | str) -> bool:
        """Report a run that starts inside an instruction or guard. False if it is a benign prefix skip."""
        addr = code.vaddr + off
        owner = self._start_before(code, off - 1)
        if code.state[off] == GUARDED:
            self.add("inside-guard", addr, f"{_describe(src)} lands inside the guard unit at {owner:#x}")
        elif _pun(code.data, owner - code.vaddr, off):
            return False
        elif src == "label":
            self.add("label", addr, f"label at {addr:#x} lies inside the instruction at {owner:#x}")
        elif self._prefix_skip(code, owner - code.vaddr, off):
            return False
        else:
            self.add("overlap", addr, f"{_describe(src)} lands inside the instruction at {owner:#x}")
        return True

    def _overlap(self, code: _Code, k: int, s: int) -> bool:
        """Report the instruction at k (s bytes) that overlaps earlier decoding. False if benign."""
        st, a = code.state, code.vaddr + k
        if st[k]:
            owner = self._start_before(code, k - 1)
            if self._prefix_skip(code, owner - code.vaddr, k) or _pun(code.data, owner - code.vaddr, k):
                return False
            self.add("overlap", a, f"instruction at {a:#x} starts inside the instruction at {owner:#x}")
            return True
        p = next(p for p in range(k + 1, k + s) if st[p])
        other = code.vaddr + p
        if st[p] == START and _pun(code.data, k, p):
            return False
        if st[p] == START and self._is_label(other):
            self.add("label", other, f"label at {other:#x} lies inside the instruction at {a:#x}")
        elif st[p] == START and other in self.units:
            self.add("inside-guard", a, f"instruction at {a:#x} overlaps the guard unit at {other:#x}")
        elif st[p] == START and self._prefix_skip(code, k, p):
            return False
        else:
            self.add("overlap", a, f"instruction at {a:#x} overlaps the instruction at {other:#x}")
        return True

    def _unit(self, code: _Code, u: Unit) -> None:
        """Account for a matched guard: claim its bytes as one unit, then check every field against the layout."""
        st, base = code.state, code.vaddr
        k0, k1 = u.start - base, u.end - base
        for p in range(k0 + 1, k1):
            c = st[p]
            if c == START:
                x = base + p
                src = self.run_src.get(x)
                what = "label" if self._is_label(x) else _describe(src) if src is not None else "decoding"
                self.add("inside-guard", x, f"{what} lands at {x:#x}, inside the guard unit at {u.start:#x}")
            elif not c:
                st[p] = GUARDED
        st[k0] = START
        self.units[u.start] = u
        self.guards[u.kind] += 1
        dec = list(self.md.disasm_lite(code.data[k0:k1], u.start))
        if not dec or [a for a, _, _, _ in dec] != sorted(u.insns) or dec[-1][0] + dec[-1][1] != u.end:
            self.add("guard-decode", u.branch, f"capstone decodes the guard at {u.start:#x} differently")
        where = f"the {u.kind} guard at {u.start:#x}"
        if u.problem:
            self.add("guard-operand", u.branch, f"{where}: {u.problem}")
        if u.lo != self.lo:
            self.add("guard-range", u.branch, f"{where}: lea r10 resolves to {u.lo:#x}, not lo {self.lo:#x}")
        if u.size != self.size:
            self.add("guard-range", u.branch, f"{where}: cmp uses size {u.size:#x}, not {self.size:#x}")
        if u.distance != self.distance:
            self.add(
                "guard-table", u.branch, f"{where}: table distance {u.distance:#x} != {self.distance:#x}"
            )
        if u.mask != MASK[u.kind]:
            self.add("guard-class", u.branch, f"{where}: class mask {u.mask:#x}, expected {MASK[u.kind]:#x}")
        ok = u.check + G.CHECK_LEN
        key = (u.stub, u.kind, ok if self.audit else 0)
        if key not in self._stubs:
            sc = self._code_at(u.stub)
            problem = "jz target is not in executable code"
            if sc is not None:
                k = u.stub - sc.vaddr
                if self.audit:  # log, then go on to this guard's .ok
                    problem = G.audit_stub_problem(sc.data, k, sc.vaddr, self.lo, self.handler, u.kind, ok)
                else:
                    problem = stub_problem(sc.data, k, sc.vaddr, self.lo, self.handler, u.kind)
            self._stubs[key] = problem
        if self._stubs[key]:
            self.add("guard-stub", u.branch, f"{where}: {self._stubs[key]}")
        if not self.audit:  # an audit stub is matched exactly above; its only exits are the logger and .ok
            self.work.append((u.stub, u.check + 32))
        self._xstub(u)

    def _xstub(self, u: Unit) -> None:
        """The guard's out-of-range branch must reach its own cross-module stub (exact form), which goes back
        only to this guard's .ok or to its violation stub. Its bytes then belong to no other decoding."""
        sc = self._code_at(u.xmod)
        where = f"the {u.kind} guard at {u.start:#x}"
        if sc is None or self.module is None:
            return self.add("guard-xmod", u.branch, f"{where}: jae target {u.xmod:#x} is no stub in code")
        k = u.xmod - sc.vaddr
        ok = u.check + G.CHECK_LEN
        problem = G.xstub_problem(sc.data, k, sc.vaddr, u.kind, self.lo, self.module, ok, u.stub)
        if problem:
            return self.add("guard-xmod", u.branch, f"{where}: {problem}")
        n = len((G.XRET if u.kind == "ret" else G.XFWD)[0])
        st = sc.state
        if any(st[k : k + n]) and st[k : k + n] != bytes([GUARDED]) * n:
            self.add("inside-guard", u.xmod, f"the cross-module stub at {u.xmod:#x} overlaps decoded code")
        st[k : k + n] = bytes([GUARDED]) * n
        self.xstubs += 1

    def _dispatch(self, code: _Code, k: int) -> bool:
        """An unguarded jmp that is a switch dispatch: prove the bound, check the table, queue its targets."""
        window = self._window(code, k)
        if any(_ambiguous_prefixes(code.data, x[0] - code.vaddr) for x in window):
            return False  # the printed operands may not be what the CPU computes: no proof from text
        d = prove(window)
        if d is None:
            return False
        a, size = code.vaddr + k, d.entries * d.size
        seg = next(
            (s for s in self.elf.loads if s.vaddr <= d.table and d.table + size <= s.vaddr + s.filesz), None
        )
        pages = (d.table & -PAGE, (d.table + size + PAGE - 1) & -PAGE)
        if seg is None or any(w.flags & PF_W and _overlap(pages, w.pages()) for w in self.elf.loads):
            self.add("unguarded", a, f"switch dispatch at {a:#x}: its table at {d.table:#x} is not read-only")
            return True
        raw = self.elf.read(d.table, size)
        if d.size == 8:  # what the loader leaves in each slot: a RELA relocation overrides the file's bytes
            if self._relocs is None:
                self._relocs = self.elf.relocations()
            values = list(struct.unpack(f"<{d.entries}Q", raw))
            for k in range(d.entries):
                r = self._relocs.get(d.table + 8 * k)
                if r is not None and r[0] != elfmod.R_X86_64_RELATIVE:
                    self.add("unguarded", a, f"switch dispatch at {a:#x}: its table entry {k} is relocated")
                    return True
                values[k] = values[k] if r is None else r[2]
            targets = set(values)
        else:
            targets = {d.table + v for v in struct.unpack(f"<{d.entries}i", raw)}
        if any(self._code_at(t) is None for t in targets):
            return False  # the bound allows entries that are no code: not a proven dispatch
        self.work.extend((t, a) for t in sorted(targets, reverse=True))
        self.windows.append((d.origin, a))
        self.switches += 1
        self.proven.append(a)
        return True

    def _window(self, code: _Code, k: int) -> list[tuple[int, int, str, str]]:
        """The decoded straight-line instructions that fall through into the jmp at k (the jmp last)."""
        st, base = code.state, code.vaddr
        for q in range(max(0, k - 96), k + 1):
            if st[q] != START:
                continue
            out = []
            for x in self.md.disasm_lite(code.data[q : k + 16], base + q, 48):
                if st[x[0] - base] != START or x[0] > base + k:
                    break
                out.append(x)
            if out and out[-1][0] == base + k:
                ends = [i + 1 for i, x in enumerate(out[:-1]) if classify(x[2]) in (JUMP, RET, STOP, FAR)]
                return out[max(ends, default=0) :]
        return []

    def _check_windows(self) -> None:
        """No branch, label or entry may land after the start of a dispatch proof: it could skip the bound."""
        if not self.windows:
            return
        landed = sorted(self.landed)
        for origin, j in self.windows:
            i = bisect_right(landed, origin)
            if i < len(landed) and landed[i] <= j:
                x = landed[i]
                self.add(
                    "inside-guard", x, f"{x:#x} is a target inside the bounded dispatch {origin:#x}..{j:#x}"
                )

    def _check_handler(self) -> None:
        """The handler runs on a violation: it must end the process without a ret or an indirect branch, and
        its only system calls are ones that cannot transfer control (each number a constant set right before
        it, from HANDLER_SYSCALLS): `rt_sigreturn` or `execve` there would be a way out."""
        todo, seen = [self.handler], set()
        prev: tuple[str, str] = ("", "")
        syscalls: list[int] = []
        targets: set[int] = set()
        while todo and len(seen) < 10000:
            a = todo.pop()
            code = self._code_at(a)
            if code is None:
                self.add("handler", a, f"violation handler code at {a:#x} is not in executable code")
                continue
            off, ended = a - code.vaddr, False
            for addr, _, m, o in self.md.disasm_lite(code.data[off : off + 4096], a):
                ended = addr in seen
                if ended:
                    break
                seen.add(addr)
                cls = classify(m)
                if cls == RET and self.audit:  # the audit logger returns to its stub (audit mode only)
                    ended = True
                    break
                if cls in (RET, FAR) or (cls in (CALL, JUMP, COND) and o[:2] != "0x"):
                    self.add("handler", addr, f"violation handler contains `{_text(m, o)}`")
                    ended = True
                    break
                if m in ("int", "int1", "into", "sysenter", "syscall"):
                    n = int(prev[1][5:], 0) if prev[0] == "mov" and prev[1][:5] == "eax, " else None
                    if m != "syscall" or n not in HANDLER_SYSCALLS:
                        what = "an unknown number" if n is None else f"number {n}"
                        self.add("handler", addr, f"violation handler makes `{_text(m, o)}` with {what}")
                    syscalls.append(addr)
                prev = (m, o)
                if cls in (CALL, JUMP, COND):
                    targets.add(int(o, 16))
                    todo.append(int(o, 16))
                if cls in (JUMP, STOP):
                    ended = True
                    break
            if not ended:
                self.add("handler", a, f"violation handler code from {a:#x} does not decode to a stop")
        if todo:
            self.add(
                "handler", self.handler, "violation handler too large to check (over 10000 instructions)"
            )
        for a in sorted(targets.intersection(syscalls)):
            self.add("handler", a, f"a branch in the handler skips the number set for the syscall at {a:#x}")


IMM_RE = re.compile(r"^(0x[0-9a-f]+|\d+)$")
SEGMENT_PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65")


def _ambiguous_prefixes(data: bytes, off: int) -> bool:
    """More than one segment override, or an address-size override, before the opcode. Capstone prints one
    segment of several (not always the one the CPU applies), so the proof, which reads printed operands,
    must not rely on such an instruction."""
    segs = 0
    for b in data[off : off + 15]:
        if b not in LEGACY_PREFIXES:
            return segs > 1
        if b == 0x67:
            return True
        segs += b in SEGMENT_PREFIXES
    return True


def _pun(data: bytes, outer: int, inner: int) -> bool:
    """A `jmp rel8` whose displacement byte is the first byte of the next instruction (the rewriter's
    forwarding jump for entries 1 byte apart). The jmp has no fall-through and the instruction at `inner` is
    decoded and checked on its own run, so the overlap hides nothing."""
    return inner == outer + 1 and data[outer] == 0xEB


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _text(mnemonic: str, op: str) -> str:
    return f"{mnemonic} {op}" if op else mnemonic


def _describe(src: int | str | None) -> str:
    return f"branch at {src:#x}" if isinstance(src, int) else str(src)


def verify_file(path: str, allow_audit: bool = False) -> Result:
    """Verify one file. Never raises for a bad input: unusable inputs set `error`, the rest become findings."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        result = Result(path)
        result.error = f"cannot read: {e.strerror or e}"
        return result
    return verify_bytes(data, path, allow_audit)


def verify_bytes(data: bytes, path: str = "<memory>", allow_audit: bool = False) -> Result:
    """Verify an image held in memory (`path` only names it in the result). Same contract as verify_file."""
    t0 = time.monotonic()
    result = Result(path)
    try:
        elf = elfmod.Elf(data)
    except elfmod.UnusableInput as e:
        result.error = str(e)
        return result
    except (Malformed, struct.error) as e:
        result.findings.append(Finding("elf", None, f"malformed ELF: {e}"))
        return result
    v = Verifier(elf, allow_audit)
    try:
        v.run()
    except (Malformed, struct.error) as e:
        v.add("elf", None, f"malformed ELF: {e}")
    except Exception as e:  # noqa: BLE001 - fail closed: an internal error must fail the file, not pass it
        v.add("internal", None, f"verifier error: {type(e).__name__}: {e}")
    result.findings = v.findings
    result.proven_switches = sorted(v.proven)
    result.warnings = v.warnings
    result.stats = {
        "instructions": v.insns,
        "guards": dict(sorted(v.guards.items())),
        "switches": v.switches,
        "vex_decoded": v.vex,
        "xmod_stubs": v.xstubs,
        "labels": v.labels,
        "seconds": round(time.monotonic() - t0, 3),
    }
    return result
