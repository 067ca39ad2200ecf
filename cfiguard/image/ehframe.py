"""Parser for ``.eh_frame`` / ``.eh_frame_hdr`` as loaded in memory (bytes plus their virtual address).

Relocated functions need fresh unwind entries, and the rewriter needs to know, for every function, its CIE
(personality, encodings, initial CFA state), its CFA program and its LSDA. This module reads exactly that,
following what libgcc's unwinder accepts (``unwind-dw2.c`` / ``unwind-dw2-fde.c``) rather than the full
DWARF ``.debug_frame`` generality, since the output must be consumed by the same runtime.

It also provides a CFA-program decoder (:func:`decode_cfa_program`), which the rewriter needs to re-emit
the location advances of a program while copying everything else verbatim.

Speed matters (a large binary has ~10k FDEs and is parsed on every run), so the hot loop works with
``struct.unpack_from`` on the original ``bytes`` and only slices out the CFA programs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cfiguard.errors import UnwindError
from cfiguard.image.encoding import (
    DW_EH_PE_absptr,
    DW_EH_PE_omit,
    encoded_size,
    read_encoded,
    read_raw,
    read_sleb128,
    read_uleb128,
)

__all__ = [
    "Cie",
    "Fde",
    "CfaInsn",
    "parse_eh_frame",
    "parse_eh_frame_hdr",
    "decode_cfa_program",
    "cfa_program_without_trailing_nops",
    "scan_cfa_program",
    "CFA_NAMES",
]

_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")
_MASK64 = (1 << 64) - 1
_PCREL_SDATA4 = 0x1B
_DATAREL_SDATA4 = 0x3B


@dataclass(frozen=True, slots=True)
class Cie:
    """A Common Information Entry, with its augmentation data decoded.

    Frozen and hashable so that FDEs sharing a CIE share one object and writers can deduplicate.
    """

    vaddr: int
    """Address of the CIE record (its length field)."""
    version: int
    augmentation: str
    """E.g. ``"zR"``, ``"zPLR"``; letters after an unknown one (with ``z``) were skipped, as libgcc does."""
    code_align: int
    data_align: int
    ra_register: int
    fde_encoding: int
    """``DW_EH_PE_*`` of FDE ``pc_begin``/``pc_range`` ('R'); ``absptr`` when absent."""
    lsda_encoding: int | None
    """'L': encoding of the FDE's LSDA pointer; ``None`` when the CIE has no 'L'."""
    personality_encoding: int | None
    personality: int | None
    """Absolute address of the personality routine, or of its slot when the encoding has
    ``DW_EH_PE_indirect`` (the slot's contents are usually only written by the dynamic loader)."""
    signal_frame: bool
    initial_instructions: bytes


@dataclass(frozen=True, slots=True)
class Fde:
    """A Frame Description Entry: one contiguous code range and its CFA program."""

    vaddr: int
    """Address of the FDE record (its length field)."""
    cie: Cie
    pc_begin: int
    """Absolute start address (libgcc semantics: a stored 0 stays 0, marking a discarded entry)."""
    pc_range: int
    lsda: int | None
    """Absolute address of the LSDA; ``None`` when the CIE has no 'L' or the stored pointer is 0."""
    instructions: bytes
    """The CFA program, including any trailing ``DW_CFA_nop`` padding."""


@dataclass(frozen=True, slots=True)
class CfaInsn:
    """One decoded CFA instruction.

    ``opcode`` is the primary opcode: ``0x40`` (advance_loc), ``0x80`` (offset) and ``0xc0`` (restore) for
    the forms with an operand packed in the low six bits, the full byte otherwise. ``operands`` are ints,
    except DWARF expression blocks, which are ``bytes``. For ``DW_CFA_set_loc`` the operand is the value
    as stored (format applied, application not), since only the caller knows where the program lives.
    """

    offset: int
    end: int
    opcode: int
    operands: tuple[int | bytes, ...]

    @property
    def name(self) -> str:
        return CFA_NAMES.get(self.opcode, f"DW_CFA_{self.opcode:#04x}")


#: Opcode -> name, for messages and tests.
CFA_NAMES: dict[int, str] = {
    0x40: "DW_CFA_advance_loc",
    0x80: "DW_CFA_offset",
    0xC0: "DW_CFA_restore",
    0x00: "DW_CFA_nop",
    0x01: "DW_CFA_set_loc",
    0x02: "DW_CFA_advance_loc1",
    0x03: "DW_CFA_advance_loc2",
    0x04: "DW_CFA_advance_loc4",
    0x05: "DW_CFA_offset_extended",
    0x06: "DW_CFA_restore_extended",
    0x07: "DW_CFA_undefined",
    0x08: "DW_CFA_same_value",
    0x09: "DW_CFA_register",
    0x0A: "DW_CFA_remember_state",
    0x0B: "DW_CFA_restore_state",
    0x0C: "DW_CFA_def_cfa",
    0x0D: "DW_CFA_def_cfa_register",
    0x0E: "DW_CFA_def_cfa_offset",
    0x0F: "DW_CFA_def_cfa_expression",
    0x10: "DW_CFA_expression",
    0x11: "DW_CFA_offset_extended_sf",
    0x12: "DW_CFA_def_cfa_sf",
    0x13: "DW_CFA_def_cfa_offset_sf",
    0x14: "DW_CFA_val_offset",
    0x15: "DW_CFA_val_offset_sf",
    0x16: "DW_CFA_val_expression",
    0x1D: "DW_CFA_MIPS_advance_loc8",
    0x2D: "DW_CFA_GNU_window_save",
    0x2E: "DW_CFA_GNU_args_size",
    0x2F: "DW_CFA_GNU_negative_offset_extended",
}

# Operand layout of the non-packed opcodes: u = uleb128, s = sleb128, b = uleb128-length block,
# 1/2/4/8 = fixed little-endian unsigned. DW_CFA_set_loc (0x01) is handled separately.
_OPERANDS: dict[int, str] = {
    0x00: "",
    0x02: "1",
    0x03: "2",
    0x04: "4",
    0x05: "uu",
    0x06: "u",
    0x07: "u",
    0x08: "u",
    0x09: "uu",
    0x0A: "",
    0x0B: "",
    0x0C: "uu",
    0x0D: "u",
    0x0E: "u",
    0x0F: "b",
    0x10: "ub",
    0x11: "us",
    0x12: "us",
    0x13: "s",
    0x14: "uu",
    0x15: "us",
    0x16: "ub",
    0x1D: "8",
    0x2D: "",
    0x2E: "u",
    0x2F: "uu",
}
_FIXED_OPERAND = {
    "1": struct.Struct("<B"),
    "2": struct.Struct("<H"),
    "4": struct.Struct("<I"),
    "8": struct.Struct("<Q"),
}


def decode_cfa_program(program: bytes, fde_encoding: int = DW_EH_PE_absptr) -> list[CfaInsn]:
    """Decode a CFA program into instructions; UnwindError on unknown opcodes or truncation.

    ``fde_encoding`` is only needed to know the operand size of ``DW_CFA_set_loc`` (libgcc reads it with
    the CIE's FDE encoding). Unknown opcodes are an error rather than skipped because their operand
    length is unknown, so nothing after them could be trusted.
    """
    out: list[CfaInsn] = []
    pos = 0
    n = len(program)
    while pos < n:
        start = pos
        op = program[pos]
        pos += 1
        high = op & 0xC0
        if high:
            low = op & 0x3F
            if high == 0x80:
                off, pos = read_uleb128(program, pos)
                operands: tuple[int | bytes, ...] = (low, off)
            else:
                operands = (low,)
            out.append(CfaInsn(start, pos, high, operands))
            continue
        if op == 0x01:
            value, pos = read_raw(program, pos, fde_encoding)
            out.append(CfaInsn(start, pos, op, (value,)))
            continue
        layout = _OPERANDS.get(op)
        if layout is None:
            raise UnwindError(f"unknown CFA opcode {op:#04x} at offset {start:#x}")
        vals: list[int | bytes] = []
        for kind in layout:
            if kind == "u":
                v, pos = read_uleb128(program, pos)
                vals.append(v)
            elif kind == "s":
                v, pos = read_sleb128(program, pos)
                vals.append(v)
            elif kind == "b":
                size, pos = read_uleb128(program, pos)
                if pos + size > n:
                    raise UnwindError(f"truncated CFA expression block at offset {start:#x}")
                vals.append(program[pos : pos + size])
                pos += size
            else:
                st = _FIXED_OPERAND[kind]
                if pos + st.size > n:
                    raise UnwindError(f"truncated CFA instruction at offset {start:#x}")
                vals.append(st.unpack_from(program, pos)[0])
                pos += st.size
        out.append(CfaInsn(start, pos, op, tuple(vals)))
    return out


def scan_cfa_program(program: bytes, fde_encoding: int = DW_EH_PE_absptr) -> list[tuple[int, int, int, int]]:
    """Split a CFA program into ``(offset, end, opcode, value)`` without building operand objects.

    ``value`` is the advance in code-alignment units for the advance opcodes (``0x40``, ``0x02``-``0x04``,
    ``0x1d``), the stored operand for ``DW_CFA_set_loc``, and 0 otherwise. This is the fast path used when
    rewriting every FDE of a large binary, where only the advances change and everything else is copied
    as raw bytes; :func:`decode_cfa_program` is the full decoder. Same errors as the full decoder.
    """
    out: list[tuple[int, int, int, int]] = []
    append = out.append
    pos = 0
    n = len(program)
    try:
        while pos < n:
            start = pos
            op = program[pos]
            pos += 1
            high = op & 0xC0
            if high == 0x40:
                append((start, pos, 0x40, op & 0x3F))
                continue
            if high == 0xC0:
                append((start, pos, 0xC0, 0))
                continue
            if high == 0x80:
                while program[pos] & 0x80:
                    pos += 1
                pos += 1
                append((start, pos, 0x80, 0))
                continue
            if op == 0x01:
                value, pos = read_raw(program, pos, fde_encoding)
                append((start, pos, op, value))
                continue
            layout = _OPERANDS.get(op)
            if layout is None:
                raise UnwindError(f"unknown CFA opcode {op:#04x} at offset {start:#x}")
            value = 0
            for kind in layout:
                if kind == "u" or kind == "s":
                    while program[pos] & 0x80:
                        pos += 1
                    pos += 1
                elif kind == "b":
                    size, pos = read_uleb128(program, pos)
                    pos += size
                else:
                    st = _FIXED_OPERAND[kind]
                    value = st.unpack_from(program, pos)[0]
                    pos += st.size
            if pos > n:
                raise IndexError
            append((start, pos, op, value))
    except (IndexError, struct.error):
        raise UnwindError(f"truncated CFA instruction at offset {start:#x}") from None
    return out


def cfa_program_without_trailing_nops(program: bytes, fde_encoding: int = DW_EH_PE_absptr) -> bytes:
    """Return ``program`` minus its trailing ``DW_CFA_nop`` padding.

    Trailing zero bytes cannot simply be stripped: the last real instruction may end with a zero operand
    (``DW_CFA_def_cfa_offset 0``), so the program is scanned to find the boundary.
    """
    if not program or program[-1] != 0:
        return program
    end = 0
    for _start, insn_end, op, _value in scan_cfa_program(program, fde_encoding):
        if op != 0x00:
            end = insn_end
    return program[:end]


# Parsed CIE plus the few facts the FDE loop needs, to avoid re-deriving them for each FDE.
_CieInfo = tuple[Cie, int, int | None, bool]


def _parse_cie(data: bytes, pos: int, vaddr: int, text_base: int | None, data_base: int | None) -> _CieInfo:
    """Parse the CIE record starting at ``data[pos]`` (its length field)."""
    n = len(data)
    if pos < 0 or pos + 8 > n:
        raise UnwindError(f"CIE pointer {vaddr + pos:#x} outside .eh_frame")
    length = _U32.unpack_from(data, pos)[0]
    if length == 0xFFFFFFFF:
        raise UnwindError(f"64-bit DWARF CIE at {vaddr + pos:#x} is not supported")
    end = pos + 4 + length
    if length < 4 or end > n:
        raise UnwindError(f"CIE at {vaddr + pos:#x} has bad length {length:#x}")
    if _U32.unpack_from(data, pos + 4)[0] != 0:
        raise UnwindError(f"FDE points at {vaddr + pos:#x}, which is not a CIE")
    try:
        p = pos + 8
        version = data[p]
        p += 1
        if version not in (1, 3, 4):
            raise UnwindError(f"CIE at {vaddr + pos:#x} has unsupported version {version}")
        nul = data.index(b"\0", p, end)
        augmentation = data[p:nul].decode("ascii")
        p = nul + 1
        if augmentation.startswith("eh"):
            p += 8  # GCC 2.x "eh" augmentation: an eh_ptr follows the string
        code_align, p = read_uleb128(data, p)
        data_align, p = read_sleb128(data, p)
        if version == 1:
            ra_register = data[p]
            p += 1
        else:
            ra_register, p = read_uleb128(data, p)
        if version >= 4:
            if data[p] != 8 or data[p + 1] != 0:
                raise UnwindError(f"CIE at {vaddr + pos:#x}: unsupported address/segment size")
            p += 2
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise UnwindError(f"malformed CIE at {vaddr + pos:#x}: {exc}") from None

    fde_encoding = DW_EH_PE_absptr
    lsda_encoding: int | None = None
    personality_encoding: int | None = None
    personality: int | None = None
    signal_frame = False
    has_z = augmentation.startswith("z")
    if has_z:
        aug_len, p = read_uleb128(data, p)
        aug_end = p + aug_len
        if aug_end > end:
            raise UnwindError(f"CIE at {vaddr + pos:#x}: augmentation data overruns the record")
        try:
            for letter in augmentation[1:]:
                if letter == "R":
                    fde_encoding = data[p]
                    p += 1
                elif letter == "L":
                    lsda_encoding = data[p]
                    p += 1
                elif letter == "P":
                    personality_encoding = data[p]
                    personality, p = read_encoded(
                        data, p + 1, personality_encoding, vaddr, text_base=text_base, data_base=data_base
                    )
                elif letter == "S":
                    signal_frame = True
                elif letter in "BG":
                    pass  # AArch64 BTI / MTE markers, no data
                else:
                    break  # like libgcc: unknown letter after 'z', skip the rest of the data
        except IndexError:
            raise UnwindError(f"CIE at {vaddr + pos:#x}: truncated augmentation data") from None
        if p > aug_end:
            raise UnwindError(f"CIE at {vaddr + pos:#x}: augmentation data overruns its length")
        p = aug_end
    elif augmentation not in ("", "eh"):
        raise UnwindError(f"CIE at {vaddr + pos:#x}: unknown augmentation {augmentation!r} without 'z'")
    if fde_encoding == DW_EH_PE_omit:
        raise UnwindError(f"CIE at {vaddr + pos:#x}: FDE encoding is DW_EH_PE_omit")
    if lsda_encoding == DW_EH_PE_omit:
        lsda_encoding = None
    encoded_size(fde_encoding)  # validates the format early, with a clear error
    cie = Cie(
        vaddr=vaddr + pos,
        version=version,
        augmentation=augmentation,
        code_align=code_align,
        data_align=data_align,
        ra_register=ra_register,
        fde_encoding=fde_encoding,
        lsda_encoding=lsda_encoding,
        personality_encoding=personality_encoding,
        personality=personality,
        signal_frame=signal_frame,
        initial_instructions=data[p:end],
    )
    return cie, fde_encoding, lsda_encoding, has_z


def parse_eh_frame(
    data: bytes, vaddr: int, *, text_base: int | None = None, data_base: int | None = None
) -> list[Fde]:
    """Parse all FDEs of an ``.eh_frame`` whose first byte is at ``vaddr``, in section order.

    Stops at the zero terminator (or the end of ``data``). 64-bit DWARF records, unknown pointer formats
    and records that overrun the section raise UnwindError. ``text_base``/``data_base`` are only needed
    for the (on x86-64 unused) textrel/datarel encodings; without them such encodings raise.
    """
    cies: dict[int, _CieInfo] = {}
    fdes: list[Fde] = []
    append = fdes.append
    u32 = _U32.unpack_from
    s32 = _S32.unpack_from
    n = len(data)
    pos = 0
    while pos + 4 <= n:
        length = u32(data, pos)[0]
        if length == 0:
            break
        if length == 0xFFFFFFFF:
            raise UnwindError(f"64-bit DWARF record at {vaddr + pos:#x} is not supported")
        body = pos + 4
        end = body + length
        if length < 4 or end > n:
            raise UnwindError(f"record at {vaddr + pos:#x} has bad length {length:#x}")
        cie_id = u32(data, body)[0]
        if cie_id == 0:
            if pos not in cies:
                cies[pos] = _parse_cie(data, pos, vaddr, text_base, data_base)
            pos = end
            continue
        cie_off = body - cie_id
        info = cies.get(cie_off)
        if info is None:
            info = cies[cie_off] = _parse_cie(data, cie_off, vaddr, text_base, data_base)
        cie, fde_enc, lsda_enc, has_z = info
        try:
            p = body + 4
            if fde_enc == _PCREL_SDATA4 and p + 8 <= end:
                raw = s32(data, p)[0]
                pc_begin = (vaddr + p + raw) & _MASK64 if raw else 0
                pc_range = s32(data, p + 4)[0]
                p += 8
            else:
                pc_begin, p = read_encoded(data, p, fde_enc, vaddr, text_base=text_base, data_base=data_base)
                pc_range, p = read_raw(data, p, fde_enc & 0x0F)
            lsda = None
            if has_z:
                aug_len = data[p]
                if aug_len < 0x80:
                    p += 1
                else:
                    aug_len, p = read_uleb128(data, p)
                aug_end = p + aug_len
                if lsda_enc is not None:
                    if lsda_enc == _PCREL_SDATA4 and p + 4 <= aug_end:
                        raw = s32(data, p)[0]
                        lsda = (vaddr + p + raw) & _MASK64 if raw else None
                    else:
                        value, _ = read_encoded(
                            data, p, lsda_enc, vaddr, text_base=text_base, data_base=data_base
                        )
                        lsda = value or None
                p = aug_end
            if p > end:
                raise UnwindError(f"FDE at {vaddr + pos:#x}: header overruns the record")
        except IndexError:
            raise UnwindError(f"FDE at {vaddr + pos:#x} is truncated") from None
        append(Fde(vaddr + pos, cie, pc_begin, pc_range, lsda, data[p:end]))
        pos = end
    else:
        if pos != n:
            raise UnwindError(f".eh_frame ends with {n - pos} stray bytes at {vaddr + pos:#x}")
    return fdes


def parse_eh_frame_hdr(data: bytes, vaddr: int) -> tuple[int, list[tuple[int, int]]]:
    """Parse ``.eh_frame_hdr`` at ``vaddr``: return ``(eh_frame_ptr, [(initial_loc, fde_addr), ...])``.

    Table entries are returned in stored order (the linker sorts them; we do not re-check). Data-relative
    values are relative to the start of the header, as libgcc computes them. A header without a search
    table (count or table encoding omitted) yields an empty list.
    """
    if len(data) < 4:
        raise UnwindError(".eh_frame_hdr is truncated")
    version, ptr_enc, count_enc, table_enc = data[0], data[1], data[2], data[3]
    if version != 1:
        raise UnwindError(f".eh_frame_hdr has unsupported version {version}")
    if ptr_enc == DW_EH_PE_omit:
        raise UnwindError(".eh_frame_hdr omits eh_frame_ptr")
    eh_frame_ptr, p = read_encoded(data, 4, ptr_enc, vaddr, data_base=vaddr)
    if count_enc == DW_EH_PE_omit or table_enc == DW_EH_PE_omit:
        return eh_frame_ptr, []
    count, p = read_encoded(data, p, count_enc, vaddr, data_base=vaddr)
    if table_enc == _DATAREL_SDATA4:
        if p + 8 * count > len(data):
            raise UnwindError(".eh_frame_hdr search table is truncated")
        flat = struct.unpack_from(f"<{2 * count}i", data, p)
        return eh_frame_ptr, [
            ((vaddr + a) & _MASK64, (vaddr + b) & _MASK64)
            for a, b in zip(flat[0::2], flat[1::2], strict=True)
        ]
    table: list[tuple[int, int]] = []
    for _ in range(count):
        loc, p = read_encoded(data, p, table_enc, vaddr, data_base=vaddr)
        fde, p = read_encoded(data, p, table_enc, vaddr, data_base=vaddr)
        table.append((loc, fde))
    return eh_frame_ptr, table
