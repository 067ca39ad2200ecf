"""Regenerate unwind data (CFA programs, LSDAs, ``.eh_frame``, ``.eh_frame_hdr``) for relocated code.

Relocated functions move and grow (guards are inserted), so every code address in their unwind data must
be translated with the relocation's address map: the row boundaries of each CFA program, the call-site
ranges and landing pads of each LSDA, and the FDE ranges. Everything else (register rules, DWARF
expressions, action/type tables) is copied verbatim.

All writers use fixed-width pc-relative encodings (``DW_EH_PE_pcrel | DW_EH_PE_sdata4``), so the size of
the output never depends on where it is placed: a caller can size the new segment first and pick the
address afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cfiguard.errors import UnwindError
from cfiguard.image.ehframe import Cie, cfa_program_without_trailing_nops, scan_cfa_program
from cfiguard.image.encoding import (
    PCREL_SDATA4,
    DW_EH_PE_indirect,
    DW_EH_PE_omit,
    DW_EH_PE_pcrel,
    DW_EH_PE_uleb128,
    encode_pcrel_sdata4,
    encode_sleb128,
    encode_uleb128,
    pack_fixed,
    read_raw,
)
from cfiguard.image.lsda import Lsda

__all__ = [
    "FdeOut",
    "remap_cfa_program",
    "encode_advance",
    "build_lsda",
    "build_eh_frame",
    "build_eh_frame_hdr",
]

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")

_ADVANCE_OPS = frozenset((0x40, 0x02, 0x03, 0x04, 0x1D))  # advance_loc, advance_loc1/2/4, MIPS_advance_loc8
_SET_LOC = 0x01
_NOP = 0x00


def encode_advance(units: int) -> bytes:
    """Encode a location advance of ``units`` code-alignment units in the smallest DW_CFA form.

    ``DW_CFA_advance_loc`` packs 0..63 into the opcode byte; larger deltas need advance_loc1/2/4.
    """
    if units < 0:
        raise UnwindError(f"negative CFA advance ({units})")
    if units < 0x40:
        return _U8.pack(0x40 | units)
    if units <= 0xFF:
        return b"\x02" + _U8.pack(units)
    if units <= 0xFFFF:
        return b"\x03" + _U16.pack(units)
    if units <= 0xFFFFFFFF:
        return b"\x04" + _U32.pack(units)
    raise UnwindError(f"CFA advance of {units} units does not fit in DW_CFA_advance_loc4")


def remap_cfa_program(
    instructions: bytes,
    old_start: int,
    new_start: int,
    map_addr: Callable[[int], int],
    code_align: int,
    fde_encoding: int,
) -> bytes:
    """Re-emit a CFA program for code moved by ``map_addr`` (monotonic, ``old_start -> new_start``).

    Each location advance (advance_loc*, and an absolute ``DW_CFA_set_loc``) is re-encoded so that the
    row that started at old address X starts at ``map_addr(X)``, in the smallest form that fits. Advances
    are translated one by one against the running new location (not by scaling deltas), so rounding can
    never accumulate. ``DW_CFA_set_loc`` is turned into an advance: its pc-relative forms depend on where
    the program is stored and would be wrong after the move, and advances are position independent.
    All other instructions are copied byte for byte; trailing ``DW_CFA_nop`` padding is dropped (the
    writer re-pads). ``fde_encoding`` is the CIE's, needed to size/decode ``DW_CFA_set_loc``.
    """
    if code_align <= 0:
        raise UnwindError(f"invalid code alignment factor {code_align}")
    insns = scan_cfa_program(instructions, fde_encoding)
    last = len(insns)
    while last and insns[last - 1][2] == _NOP:
        last -= 1
    out = bytearray()
    old_loc = old_start
    new_loc = new_start
    for start, end, op, value in insns[:last]:
        if op in _ADVANCE_OPS:
            old_target = old_loc + value * code_align
        elif op == _SET_LOC:
            if fde_encoding & 0x70:
                raise UnwindError(
                    f"DW_CFA_set_loc with position-dependent encoding {fde_encoding:#04x} cannot be remapped"
                )
            old_target = value
            if old_target < old_loc:
                raise UnwindError(f"DW_CFA_set_loc moves backwards ({old_target:#x} < {old_loc:#x})")
        else:
            out += instructions[start:end]
            continue
        new_target = map_addr(old_target)
        delta = new_target - new_loc
        if delta < 0:
            raise UnwindError(
                f"address map is not monotonic: {old_target:#x} -> {new_target:#x} precedes {new_loc:#x}"
            )
        if delta % code_align:
            raise UnwindError(f"mapped CFA advance {delta} is not a multiple of code alignment {code_align}")
        out += encode_advance(delta // code_align)
        old_loc, new_loc = old_target, new_target
    return bytes(out)


def build_lsda(
    lsda: Lsda,
    old_func_start: int,
    new_func_start: int,
    map_addr: Callable[[int], int],
    vaddr: int,
) -> bytes:
    """Build the LSDA for the relocated function, to be stored at ``vaddr``.

    LPStart is omitted (landing pads become offsets from ``new_func_start``) and the call-site table is
    written in uleb128, the most compact encoding, which needs no alignment. The tail is copied verbatim:
    action records are self-relative and filters index from the TType base, so moving the whole tail by
    a constant keeps them valid as long as the TType offset is recomputed (it is measured from just after
    its own uleb128). Only pc-relative type-table entries are re-encoded for their new address (a stored
    0, the catch-all, stays 0).

    No padding is inserted to re-align the type table: the action table must follow the call-site table
    immediately, and libgcc/libstdc++ read LSDA values with unaligned loads, so GCC's alignment of the
    type table is a nicety we do not need to reproduce.
    """
    if lsda.lpstart is not None and lsda.lpstart != old_func_start:
        raise UnwindError(
            f"LSDA at {lsda.vaddr:#x}: explicit LPStart {lsda.lpstart:#x} differs from the function start"
            f" {old_func_start:#x}; cannot relocate"
        )
    cs = bytearray()
    uleb = encode_uleb128
    for site in lsda.call_sites:
        old_s = old_func_start + site.start
        new_s = map_addr(old_s)
        new_e = map_addr(old_s + site.length)
        if new_s < new_func_start or new_e < new_s:
            raise UnwindError(f"LSDA at {lsda.vaddr:#x}: call site {old_s:#x} maps outside/backwards")
        lp = 0
        if site.landing_pad:
            lp = map_addr(old_func_start + site.landing_pad) - new_func_start
            if lp <= 0:
                raise UnwindError(
                    f"LSDA at {lsda.vaddr:#x}: landing pad {old_func_start + site.landing_pad:#x} maps to"
                    " or before the function start"
                )
        cs += uleb(new_s - new_func_start)
        cs += uleb(new_e - new_s)
        cs += uleb(lp)
        cs += uleb(site.action)

    after_ttype = bytes((DW_EH_PE_uleb128,)) + uleb(len(cs)) + cs
    out = bytearray((DW_EH_PE_omit, lsda.ttype_encoding))
    if lsda.ttype_encoding != DW_EH_PE_omit:
        if lsda.ttype_base_in_tail is None:
            raise UnwindError(f"LSDA at {lsda.vaddr:#x}: type-table encoding without a TType base")
        out += uleb(len(after_ttype) + lsda.ttype_base_in_tail)
    out += after_ttype
    new_tail_vaddr = vaddr + len(out)
    tail = bytearray(lsda.tail)
    if lsda.type_entry_offsets:
        app = lsda.ttype_encoding & 0x70
        if app == DW_EH_PE_pcrel:
            for off in lsda.type_entry_offsets:
                raw, _ = read_raw(tail, off, lsda.ttype_encoding)
                if raw == 0:
                    continue
                target = lsda.tail_vaddr + off + raw
                packed = pack_fixed(lsda.ttype_encoding, target - (new_tail_vaddr + off))
                tail[off : off + len(packed)] = packed
        elif app != 0:
            raise UnwindError(
                f"LSDA at {lsda.vaddr:#x}: type-table encoding {lsda.ttype_encoding:#04x} cannot be relocated"
            )
    out += tail
    return bytes(out)


@dataclass(frozen=True, slots=True)
class FdeOut:
    """An FDE to emit: absolute addresses, CFA program already remapped (no ``DW_CFA_set_loc``)."""

    cie: Cie
    pc_begin: int
    pc_range: int
    instructions: bytes
    lsda: int | None


_KNOWN_DATALESS_LETTERS = "SBG"


def _cie_letters(cie: Cie, needs_lsda: bool) -> str:
    """Augmentation letters (after 'z') for the re-encoded CIE, in the original order where possible."""
    aug = cie.augmentation
    letters: list[str] = []
    if aug.startswith("z"):
        for ch in aug[1:]:
            if ch in "PLR" or ch in _KNOWN_DATALESS_LETTERS:
                if ch not in letters:
                    letters.append(ch)
            else:
                raise UnwindError(f"CIE at {cie.vaddr:#x}: cannot re-encode augmentation letter {ch!r}")
    elif aug not in ("", "eh"):
        raise UnwindError(f"CIE at {cie.vaddr:#x}: cannot re-encode augmentation {aug!r}")
    if cie.personality_encoding is None and "P" in letters:
        letters.remove("P")
    if cie.personality_encoding is not None and "P" not in letters:
        letters.insert(0, "P")
    if needs_lsda and "L" not in letters:
        letters.insert(letters.index("P") + 1 if "P" in letters else 0, "L")
    if not needs_lsda and "L" in letters:
        letters.remove("L")
    if "R" not in letters:
        letters.append("R")
    if cie.signal_frame and "S" not in letters:
        letters.append("S")
    return "".join(letters)


def _pad8(out: bytearray, start: int) -> None:
    """Pad the record that began at ``start`` with DW_CFA_nop so its total size is a multiple of 8.

    ld aligns .eh_frame records to the pointer size; libgcc's record structs are declared pointer-aligned.
    """
    out += bytes((-(len(out) - start)) & 7)


def _emit_cie(out: bytearray, vaddr: int, cie: Cie, needs_lsda: bool) -> None:
    start = len(out)
    letters = _cie_letters(cie, needs_lsda)
    version = cie.version if cie.version in (1, 3, 4) else 1
    out += b"\0\0\0\0"  # length, patched below
    out += b"\0\0\0\0"  # CIE id
    out.append(version)
    out += b"z" + letters.encode("ascii") + b"\0"
    out += encode_uleb128(cie.code_align)
    out += encode_sleb128(cie.data_align)
    if version == 1:
        if cie.ra_register > 0xFF:
            raise UnwindError(f"CIE at {cie.vaddr:#x}: return register {cie.ra_register} needs CIE version 3")
        out.append(cie.ra_register)
    else:
        out += encode_uleb128(cie.ra_register)
    if version >= 4:
        out += b"\x08\x00"  # address size, segment selector size
    aug_len = sum(5 if ch == "P" else 1 if ch in "LR" else 0 for ch in letters)
    out += encode_uleb128(aug_len)
    for ch in letters:
        if ch == "P":
            assert cie.personality_encoding is not None
            indirect = cie.personality_encoding & DW_EH_PE_indirect
            out.append(PCREL_SDATA4 | indirect)
            if cie.personality:
                out += encode_pcrel_sdata4(cie.personality, vaddr + len(out))
            else:
                out += b"\0\0\0\0"
        elif ch in "LR":
            out.append(PCREL_SDATA4)
    out += cfa_program_without_trailing_nops(cie.initial_instructions, cie.fde_encoding)
    _pad8(out, start)
    _U32.pack_into(out, start, len(out) - start - 4)


def _cie_key(cie: Cie, needs_lsda: bool) -> tuple[object, ...]:
    """Identity of an emitted CIE: everything that reaches the output, nothing about its old location."""
    indirect = None if cie.personality_encoding is None else cie.personality_encoding & DW_EH_PE_indirect
    return (
        cie.version,
        _cie_letters(cie, needs_lsda),
        cie.code_align,
        cie.data_align,
        cie.ra_register,
        indirect,
        cie.personality,
        cie.signal_frame,
        cfa_program_without_trailing_nops(cie.initial_instructions, cie.fde_encoding),
    )


def build_eh_frame(fdes: Sequence[FdeOut], vaddr: int) -> tuple[bytes, list[tuple[int, int]]]:
    """Emit a self-contained ``.eh_frame`` at ``vaddr``: the CIEs used, then the FDEs, then a terminator.

    Each distinct CIE is written once, re-encoded for its new location (personality pc-relative sdata4,
    keeping the indirect flag; FDE and LSDA encodings pcrel|sdata4). A CIE keeps its 'L', and gains one
    when an FDE using it has an LSDA; FDEs without an LSDA then store 0 in the field. Records are
    padded to 8 bytes, so ``vaddr`` should be 8-aligned as ld does it. The size depends only on the
    input, never on ``vaddr``. Returns the bytes and ``[(pc_begin, fde_vaddr)]`` in input order, for
    :func:`build_eh_frame_hdr`.
    """
    needs_lsda: dict[Cie, bool] = {}
    for f in fdes:
        if f.lsda or f.cie.lsda_encoding is not None:
            needs_lsda[f.cie] = True
        else:
            needs_lsda.setdefault(f.cie, False)
    out = bytearray()
    emitted: dict[tuple[object, ...], int] = {}
    cie_offset: dict[Cie, int] = {}
    for cie, lsda_flag in needs_lsda.items():
        key = _cie_key(cie, lsda_flag)
        off = emitted.get(key)
        if off is None:
            off = emitted[key] = len(out)
            _emit_cie(out, vaddr, cie, lsda_flag)
        cie_offset[cie] = off

    table: list[tuple[int, int]] = []
    pack_s32 = _S32.pack
    for f in fdes:
        if not f.pc_begin:
            raise UnwindError("FDE with pc_begin 0 cannot be emitted (0 means 'discarded' to libgcc)")
        if not 0 <= f.pc_range < 1 << 31:
            raise UnwindError(f"FDE at {f.pc_begin:#x}: pc_range {f.pc_range:#x} does not fit in sdata4")
        start = len(out)
        out += b"\0\0\0\0"
        out += _U32.pack(len(out) - cie_offset[f.cie])
        out += encode_pcrel_sdata4(f.pc_begin, vaddr + len(out))
        out += pack_s32(f.pc_range)
        if needs_lsda[f.cie]:
            out.append(4)
            if f.lsda:
                out += encode_pcrel_sdata4(f.lsda, vaddr + len(out))
            else:
                out += b"\0\0\0\0"
        else:
            out.append(0)
        out += cfa_program_without_trailing_nops(f.instructions, PCREL_SDATA4)
        _pad8(out, start)
        _U32.pack_into(out, start, len(out) - start - 4)
        table.append((f.pc_begin, vaddr + start))
    out += b"\0\0\0\0"
    return bytes(out), table


def build_eh_frame_hdr(table: Sequence[tuple[int, int]], vaddr: int, eh_frame_vaddr: int) -> bytes:
    """Build ``.eh_frame_hdr`` at ``vaddr`` with a binary-search table over all FDEs of the module.

    Encodings are the ones libgcc's fast path requires for its binary search (``datarel|sdata4`` table,
    relative to the header start). The table is sorted here; duplicate pcs would make the search
    ambiguous, so they are rejected, as are offsets that do not fit in 32 bits.
    """
    entries = sorted(table)
    for (pc_a, _), (pc_b, _) in zip(entries, entries[1:], strict=False):
        if pc_a == pc_b:
            raise UnwindError(f".eh_frame_hdr: two FDEs start at {pc_a:#x}")
    if len(entries) >= 1 << 32:
        raise UnwindError(".eh_frame_hdr: too many FDEs")
    flat: list[int] = []
    lo, hi = -(1 << 31), 1 << 31
    for pc, fde in entries:
        a, b = pc - vaddr, fde - vaddr
        if not (lo <= a < hi and lo <= b < hi):
            raise UnwindError(
                f".eh_frame_hdr: entry ({pc:#x}, {fde:#x}) is out of sdata4 range of {vaddr:#x}"
            )
        flat.append(a)
        flat.append(b)
    header = bytes((1, PCREL_SDATA4, 0x03, 0x3B))
    ptr = encode_pcrel_sdata4(eh_frame_vaddr, vaddr + 4)
    count = _U32.pack(len(entries))
    return header + ptr + count + struct.pack(f"<{len(flat)}i", *flat)
