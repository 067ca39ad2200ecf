"""Function relocation: re-emit each understood function into new code with its guards inline.

Every emitted instruction has a size that does not depend on where it lands (branches always take their rel32
form, guards are fixed templates), so layout is a single pass: sizes first, addresses after. Only "special"
instructions (branches, rip-relative operands) are looked at; runs of plain instructions are copied as slices.

The map from an old instruction address X to its new address is `new_start + (X - old_start) + growth`, where
growth is the extra size of the special instructions before X; `bisect` over the special addresses finds it.
A guarded instruction's new address is the start of its guard, so branches to it still pass the check.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field

from cfiguard.analysis.facts import FunctionCode, ModuleFacts, strip_prefix
from cfiguard.disasm.decode import VEX_MNEMONIC, MemOperand, mem_operand, vex_rip_operand
from cfiguard.errors import RewriteError
from cfiguard.rewrite import encode
from cfiguard.rewrite.guards import (
    CALL_MASK,
    JMP_MASK,
    KIND_CODE,
    PRESERVE_STACK,
    PRESERVE_STACK_NF,
    RET_MASK,
    instantiate,
    template,
)

VIOL_STUB_SIZE = 27
AUDIT_STUB_SIZE = 76
_SAVE = b"\x48\x8d\xa4\x24\x00\xff\xff\xff\x9c\x50\x51\x52\x56\x57\x41\x50\x41\x51\x41\x52\x41\x53"
_RESTORE = b"\x41\x5b\x41\x5a\x41\x59\x41\x58\x5f\x5e\x5a\x59\x58\x9d\x48\x8d\xa4\x24\x00\x01\x00\x00"
_STACK = {"preserve": PRESERVE_STACK, "preserve_nf": PRESERVE_STACK_NF}


@dataclass(frozen=True)
class Layout:
    """Where the module's code range and label table are, as the guards see them."""

    lo: int  # start of the code range (link-time vaddr)
    size: int  # hi - lo
    table_distance: int  # D: label of T is at T + D


@dataclass
class Special:
    index: int
    old: int
    kind: str  # jmp, jcc, call, loop, rip, icall, tailjmp, preserve(_nf), ret(_scratch), switch
    size: int  # emitted size
    mem: MemOperand | None = None
    target: int | None = None  # direct branch target (old address)


@dataclass
class FunctionPlan:
    fc: FunctionCode
    specials: list[Special]
    spec_addrs: list[int]
    growth: list[int]  # growth[k] = extra bytes emitted by specials[0:k]
    size: int
    new_start: int = 0
    sites: list[tuple[int, str, str]] = field(default_factory=list)  # (old addr, kind, method)
    switch_at: dict[int, int] = field(default_factory=dict)  # new address -> old address of safe switches

    @property
    def start(self) -> int:
        return self.fc.func.start

    def new_addr(self, old: int) -> int:
        k = bisect_left(self.spec_addrs, old)
        return self.new_start + (old - self.start) + self.growth[k]


def plan_function(fc: FunctionCode, facts: ModuleFacts, race_free_returns: bool = False) -> FunctionPlan:
    """Classify the special instructions of `fc` and size their emission. Raises RewriteError if impossible."""
    d = fc.dec
    specials: list[Special] = []
    image = facts.image
    for i in fc.special:
        a, sz, op = d.addrs[i], d.sizes[i], d.ops[i]
        m = strip_prefix(d.mnems[i])
        raw = image.read(a, sz)
        if m == "ret":
            extra = 3 if op else 1
            name = "ret_scratch" if fc.func.start in facts.scratch_clobbered else "ret"
            if name == "ret_scratch" and race_free_returns and not op:
                specials.append(Special(i, a, "ret_pop", len(template("ret_pop").code)))
                continue
            specials.append(Special(i, a, name, len(template(name).code) + extra))
        elif m in ("call", "jmp") and op.startswith("0x"):
            specials.append(Special(i, a, m, 5, target=int(op, 16)))
        elif m == "call":
            mem = mem_operand(raw, a) if "ptr" in op else None
            mov = encode.mov_r11_from(raw, mem, 0, a)
            specials.append(Special(i, a, "icall", len(mov) + len(template("call").code), mem))
        elif m == "jmp":
            mem = mem_operand(raw, a) if "ptr" in op else None
            jt = facts.jump_tables.get(a)
            if jt is not None and jt.safe and (mem is None or mem.base != "rip"):
                # A bounded dispatch through a read-only table: it can only reach the table's targets.
                specials.append(Special(i, a, "switch", sz, mem))
            elif _is_tail_call(fc, facts, a, sz, op, mem):
                mov = encode.mov_r11_from(raw, mem, 0, a)
                specials.append(Special(i, a, "tailjmp", len(mov) + len(template("tailjmp").code), mem))
            else:
                kind = "preserve_nf" if a in facts.flags_dead_jmps else "preserve"
                mov = encode.mov_r11_from(raw, mem, 0, a, _STACK[kind])
                size = len(template(kind + "_head").code) + len(mov) + len(template(kind).code) + sz
                reg = op.strip() if mem is None else ""
                if reg in ("r10", "r11"):  # the template jumps through the checked value itself
                    size = len(template(kind + "_head").code) + len(mov) + len(template(f"{kind}_{reg}").code)
                    kind = f"{kind}_{reg}"
                specials.append(Special(i, a, kind, size, mem))
        elif m.startswith(("loop", "jrcxz", "jecxz")):
            specials.append(Special(i, a, "loop", encode.loop_expansion_size(raw), target=int(op, 16)))
        elif m.startswith("j"):
            if not op.startswith("0x"):
                raise RewriteError(f"unexpected branch form at {a:#x}: {m} {op}")
            specials.append(Special(i, a, "jcc", 6, target=int(op, 16)))
        else:  # rip-relative operand
            mem = rip_operand(raw, a, d.mnems[i], op)
            if mem is None or mem.base != "rip":
                raise RewriteError(f"cannot locate rip-relative displacement at {a:#x}")
            specials.append(Special(i, a, "rip", sz, mem))
    growth = [0]
    for s in specials:
        growth.append(growth[-1] + s.size - d.sizes[s.index])
    size = (fc.func.end - fc.func.start) + growth[-1]
    return FunctionPlan(fc, specials, [s.old for s in specials], growth, size)


_NUMBER = re.compile(r"0x[0-9a-f]+|\b\d+\b")
_RIP_DISP = re.compile(r"\[rip ([+-]) (0x[0-9a-f]+|\d+)\]")
_disp_offsets: dict[tuple[str, str, int], int] = {}


def rip_operand(raw: bytes, addr: int, mnem: str, op: str) -> MemOperand | None:
    """The rip-relative operand of `raw`, found without a detail decode when its shape was seen before.

    The displacement's offset in the encoding depends only on the instruction's form (mnemonic, operand shape,
    length); it is cached per form and confirmed against the displacement printed in the operand string, with a
    detail decode as the fallback. Decoding every rip-relative instruction in detail was the rewriter's
    largest single cost on big binaries.
    """
    if mnem == VEX_MNEMONIC:  # capstone cannot decode it; the exact length decoder knows the displacement
        return vex_rip_operand(raw)
    m = _RIP_DISP.search(op)
    if m is None:
        return mem_operand(raw, addr)
    disp = int(m.group(2), 0) * (1 if m.group(1) == "+" else -1)
    key = (mnem, _NUMBER.sub("#", op), len(raw))
    off = _disp_offsets.get(key)
    if off is not None and int.from_bytes(raw[off : off + 4], "little", signed=True) == disp:
        return MemOperand("rip", None, 1, disp, off, 4)
    mem = mem_operand(raw, addr)
    if mem is not None and mem.base == "rip":
        _disp_offsets[key] = mem.disp_offset
    return mem


def _is_tail_call(
    fc: FunctionCode, facts: ModuleFacts, a: int, sz: int, op: str, mem: MemOperand | None
) -> bool:
    """An indirect jmp whose every valid target is a function entry, where r10/r11/flags are dead by the ABI.

    True for PLT stubs (entered by call) and for `jmp [rip + GOT slot of an import]`. Every other indirect jmp
    may go to a label inside a function, so its guard preserves the registers it uses.
    """
    if fc.func.is_plt:
        return True
    if mem is not None and mem.base == "rip" and mem.index is None:
        return (a + sz + mem.disp) in facts.import_slots
    return False


def emit_function(
    plan: FunctionPlan,
    facts: ModuleFacts,
    layout: Layout,
    resolve: callable,
    viol_stub: callable,
    return_labels: list[int],
    pointer: callable = lambda a: a,
    x_stub: callable = lambda site, kind, ok: None,
) -> bytes:
    """Bytes of the relocated function at plan.new_start.

    resolve(old_target) gives the address a direct branch must now go to; viol_stub(old_site, kind) gives the
    address of the site's violation stub; x_stub(old_site, kind, ok) that of its cross-module stub, which
    returns to `ok` (the guard's .ok) when the target outside the module may be taken; return sites of calls are appended to return_labels (new addresses);
    pointer(address) gives what a rip-relative operand must now reach (new address of a redirected entry).
    """
    fc = plan.fc
    d = fc.dec
    image = facts.image
    code = image.read(fc.func.start, fc.func.end - fc.func.start)
    base = fc.func.start
    out = bytearray()
    prev = base
    for s in plan.specials:
        out += code[prev - base : s.old - base]
        at = plan.new_start + len(out)
        raw = code[s.old - base : s.old - base + d.sizes[s.index]]
        k = s.kind
        if k == "jmp":
            out += encode.jmp_rel32(at, resolve(s.target))
        elif k == "call":
            out += encode.call_rel32(at, resolve(s.target))
            if s.old not in facts.noreturn_calls:
                return_labels.append(at + 5)
        elif k == "jcc":
            out += encode.jcc_rel32(encode.jcc_condition(raw), at, resolve(s.target))
        elif k == "loop":
            out += encode.loop_expansion(raw, at, resolve(s.target))
        elif k == "rip":
            target = s.old + len(raw) + s.mem.disp
            out += encode.redisplace_rip(raw, s.mem, s.old, at, pointer(target))
        elif k == "switch":
            out += raw
            plan.sites.append((s.old, "jmp", "switch"))
            plan.switch_at[at] = s.old
        elif k == "ret_pop":
            t = template(k)
            v = viol_stub(s.old, "ret", at + template(k).ok)
            out += instantiate(
                t,
                at,
                layout.lo,
                layout.size,
                layout.table_distance,
                RET_MASK,
                v,
                x_stub(s.old, "ret", at + t.ok),
            )
            plan.sites.append((s.old, "ret", "inline"))
        elif k in ("ret", "ret_scratch"):
            t = template(k)
            v = viol_stub(s.old, "ret", at + template(k).ok)
            out += instantiate(
                t,
                at,
                layout.lo,
                layout.size,
                layout.table_distance,
                RET_MASK,
                v,
                x_stub(s.old, "ret", at + t.ok),
            )
            out += raw[-3:] if len(raw) >= 3 and raw[-3] == 0xC2 else b"\xc3"
            plan.sites.append((s.old, "ret", "inline"))
        elif k in ("icall", "tailjmp"):
            mov = encode.mov_r11_from(raw, s.mem, at, s.old)
            t = template("call" if k == "icall" else "tailjmp")
            kind = "call" if k == "icall" else "jmp"
            mask = CALL_MASK if k == "icall" else JMP_MASK
            out += mov
            g = at + len(mov)
            v = viol_stub(s.old, kind, at + len(mov) + t.ok)
            out += instantiate(
                t, g, layout.lo, layout.size, layout.table_distance, mask, v, x_stub(s.old, kind, g + t.ok)
            )
            if k == "icall" and s.old not in facts.noreturn_calls:
                return_labels.append(plan.new_start + len(out))
            plan.sites.append((s.old, kind, "inline"))
        elif k.startswith("preserve"):
            base_kind = k.removesuffix("_r10").removesuffix("_r11")
            head = template(base_kind + "_head").code
            mov = encode.mov_r11_from(raw, s.mem, at + len(head), s.old, _STACK[base_kind])
            t = template(k)
            guard_at = at + len(head) + len(mov)
            out += head + mov
            v = viol_stub(s.old, "jmp", guard_at + t.ok)
            x = x_stub(s.old, "jmp", guard_at + t.ok)
            out += instantiate(t, guard_at, layout.lo, layout.size, layout.table_distance, JMP_MASK, v, x)
            jmp_at = plan.new_start + len(out)
            if k != base_kind:
                pass  # the template ends in the jmp through the checked register
            elif s.mem is not None and s.mem.base == "rip":
                out += encode.redisplace_rip(raw, s.mem, s.old, jmp_at)
            else:
                out += raw
            plan.sites.append((s.old, "jmp", "inline"))
        else:  # pragma: no cover
            raise RewriteError(f"unknown special kind {k}")
        expected = plan.new_addr(s.old) + s.size
        if plan.new_start + len(out) != expected:
            raise RewriteError(f"size mismatch emitting {k} at {s.old:#x}")
        prev = s.old + d.sizes[s.index]
    out += code[prev - base :]
    if len(out) != plan.size:
        raise RewriteError(f"function at {base:#x}: emitted {len(out)} bytes, planned {plan.size}")
    return bytes(out)


def violation_stub(at: int, site: int, kind: str, link_lo: int, handler: int) -> bytes:
    """movabs rdi, site; lea rsi, [r11 + lo]; mov edx, kind; jmp handler  (27 bytes)."""
    b = b"\x48\xbf" + site.to_bytes(8, "little")
    b += b"\x49\x8d\xb3" + encode.s32(link_lo)
    b += b"\xba" + KIND_CODE[kind].to_bytes(4, "little")
    b += encode.jmp_rel32(at + len(b), handler)
    assert len(b) == VIOL_STUB_SIZE
    return b


def audit_stub(at: int, site: int, kind: str, link_lo: int, logger: int, ok: int) -> bytes:
    """The violation stub of `harden --audit`: log through the audit logger, then go on to the guard's .ok.

    lea rsp, [rsp-256]; pushfq; push rax, rcx, rdx, rsi, rdi, r8-r11; movabs rdi, site; lea rsi, [r11 + lo];
    mov edx, kind; call logger; pop them back; popfq; lea rsp, [rsp+256]; jmp ok  (76 bytes)."""
    b = _SAVE + b"\x48\xbf" + site.to_bytes(8, "little")
    b += b"\x49\x8d\xb3" + encode.s32(link_lo)
    b += b"\xba" + KIND_CODE[kind].to_bytes(4, "little")
    b += b"\xe8" + encode.s32(logger - (at + len(b) + 5))
    b += _RESTORE
    b += encode.jmp_rel32(at + len(b), ok)
    assert len(b) == AUDIT_STUB_SIZE
    return b
