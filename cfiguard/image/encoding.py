"""DWARF / exception-handling pointer encodings (``DW_EH_PE_*``) and LEB128, shared by the unwind parsers.

`.eh_frame`, `.eh_frame_hdr` and `.gcc_except_table` all store pointers with the same one-byte encoding
scheme (LSB "Exception Frames", GCC ``unwind-pe.h``): the low nibble says how the value is stored, bits
0x70 say what it is relative to, and 0x80 says the stored address is a slot holding the real pointer.
Keeping the decoding in one place keeps the parsers and the writers agreeing on the edge cases that
libgcc has (e.g. a raw zero is never relocated).

Everything here is little-endian x86-64 (pointer size 8).
"""

from __future__ import annotations

import struct

from cfiguard.errors import UnwindError

# Value formats (low nibble).
DW_EH_PE_absptr = 0x00
DW_EH_PE_uleb128 = 0x01
DW_EH_PE_udata2 = 0x02
DW_EH_PE_udata4 = 0x03
DW_EH_PE_udata8 = 0x04
DW_EH_PE_signed = 0x08
DW_EH_PE_sleb128 = 0x09
DW_EH_PE_sdata2 = 0x0A
DW_EH_PE_sdata4 = 0x0B
DW_EH_PE_sdata8 = 0x0C

# Applications (bits 0x70).
DW_EH_PE_pcrel = 0x10
DW_EH_PE_textrel = 0x20
DW_EH_PE_datarel = 0x30
DW_EH_PE_funcrel = 0x40
DW_EH_PE_aligned = 0x50

DW_EH_PE_indirect = 0x80
DW_EH_PE_omit = 0xFF

#: What this tool writes everywhere: position independent and of fixed size, so that the size of the
#: output never depends on where it is placed.
PCREL_SDATA4 = DW_EH_PE_pcrel | DW_EH_PE_sdata4

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S16 = struct.Struct("<h")
_S32 = struct.Struct("<i")
_S64 = struct.Struct("<q")

#: Fixed-size formats -> struct used to read/write them. ``absptr`` and ``signed`` are pointer-sized.
_FIXED: dict[int, struct.Struct] = {
    DW_EH_PE_absptr: _U64,
    DW_EH_PE_udata2: _U16,
    DW_EH_PE_udata4: _U32,
    DW_EH_PE_udata8: _U64,
    DW_EH_PE_signed: _S64,
    DW_EH_PE_sdata2: _S16,
    DW_EH_PE_sdata4: _S32,
    DW_EH_PE_sdata8: _S64,
}

_MASK64 = (1 << 64) - 1


def read_uleb128(data: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 at ``data[pos]``; return ``(value, next_pos)``.

    The one-byte case is by far the most common in CFA programs and LSDAs, so it is handled first.
    """
    try:
        byte = data[pos]
        if byte < 0x80:
            return byte, pos + 1
        result = byte & 0x7F
        shift = 7
        pos += 1
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
    except IndexError:
        raise UnwindError(f"truncated uleb128 at offset {pos:#x}") from None


def read_sleb128(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a signed LEB128 at ``data[pos]``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    try:
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
    except IndexError:
        raise UnwindError(f"truncated sleb128 at offset {pos:#x}") from None
    if byte & 0x40:
        result -= 1 << shift
    return result, pos


def encode_uleb128(value: int) -> bytes:
    """Encode ``value`` (>= 0) as the shortest unsigned LEB128."""
    if value < 0:
        raise UnwindError(f"cannot encode negative value {value} as uleb128")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_sleb128(value: int) -> bytes:
    """Encode ``value`` as the shortest signed LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7  # arithmetic shift: ends at 0 or -1
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def encoded_size(encoding: int) -> int | None:
    """Byte size of a value stored with ``encoding``; ``None`` for the variable-size LEB128 formats.

    Raises UnwindError for ``omit`` and unknown formats, because a caller asking for the size of such a
    field is about to misparse everything after it.
    """
    if encoding == DW_EH_PE_omit:
        raise UnwindError("size of an omitted (DW_EH_PE_omit) value requested")
    fmt = encoding & 0x0F
    st = _FIXED.get(fmt)
    if st is not None:
        return st.size
    if fmt in (DW_EH_PE_uleb128, DW_EH_PE_sleb128):
        return None
    raise UnwindError(f"unknown DW_EH_PE value format {encoding:#04x}")


def read_raw(data: bytes, pos: int, encoding: int) -> tuple[int, int]:
    """Read the stored value (format only, no base applied); return ``(value, next_pos)``.

    ``absptr``/``udata*`` are unsigned, ``signed``/``sdata*``/``sleb128`` are signed, as in GCC's
    ``read_encoded_value_with_base``.
    """
    fmt = encoding & 0x0F
    st = _FIXED.get(fmt)
    if st is not None:
        end = pos + st.size
        if end > len(data) or pos < 0:
            raise UnwindError(f"truncated encoded value ({encoding:#04x}) at offset {pos:#x}")
        return st.unpack_from(data, pos)[0], end
    if fmt == DW_EH_PE_uleb128:
        return read_uleb128(data, pos)
    if fmt == DW_EH_PE_sleb128:
        return read_sleb128(data, pos)
    raise UnwindError(f"unknown DW_EH_PE value format {encoding:#04x}")


def read_encoded(
    data: bytes,
    pos: int,
    encoding: int,
    vaddr: int,
    *,
    text_base: int | None = None,
    data_base: int | None = None,
    func_base: int | None = None,
) -> tuple[int, int]:
    """Read a ``DW_EH_PE``-encoded pointer at ``data[pos]`` where ``data[0]`` lives at ``vaddr``.

    Returns ``(value, next_pos)``. The value has its base applied (pc-relative = relative to the address of
    the field itself) but is *not* dereferenced when ``DW_EH_PE_indirect`` is set: we work on the file
    image, where the slot's contents may only be filled in by the dynamic loader, so the slot address is
    the meaningful thing to keep. Like libgcc, a stored zero stays zero whatever the application (this is
    how "no LSDA" is spelled in a pc-relative FDE field). Bases that the caller does not provide raise
    UnwindError rather than silently producing a wrong address.
    """
    if encoding == DW_EH_PE_omit:
        raise UnwindError("attempt to read an omitted (DW_EH_PE_omit) value")
    app = encoding & 0x70
    if app == DW_EH_PE_aligned:
        # The value is a pointer-sized absolute value at the next 8-byte boundary.
        addr = vaddr + pos
        pos += (-addr) & 7
        raw, pos = read_raw(data, pos, DW_EH_PE_absptr)
        return raw, pos
    field_addr = vaddr + pos
    raw, pos = read_raw(data, pos, encoding)
    if raw == 0:
        return 0, pos
    if app == 0:
        base = 0
    elif app == DW_EH_PE_pcrel:
        base = field_addr
    elif app == DW_EH_PE_textrel and text_base is not None:
        base = text_base
    elif app == DW_EH_PE_datarel and data_base is not None:
        base = data_base
    elif app == DW_EH_PE_funcrel and func_base is not None:
        base = func_base
    else:
        raise UnwindError(f"unsupported pointer encoding {encoding:#04x} (no base for application {app:#x})")
    return (raw + base) & _MASK64, pos


def pack_fixed(encoding: int, value: int) -> bytes:
    """Pack ``value`` with the fixed-size format of ``encoding``; UnwindError if it does not fit.

    Unsigned formats accept the two's-complement representation of small negative numbers only for
    pointer-sized fields (where wrap-around is how addresses below a base are expressed).
    """
    fmt = encoding & 0x0F
    st = _FIXED.get(fmt)
    if st is None:
        raise UnwindError(f"not a fixed-size DW_EH_PE format: {encoding:#04x}")
    bits = st.size * 8
    signed = st.format[-1].islower()
    if st.size == 8:
        value &= _MASK64
        if signed and value >= 1 << 63:
            value -= 1 << 64
    elif signed:
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise UnwindError(f"value {value:#x} does not fit in encoding {encoding:#04x}")
    elif not 0 <= value < 1 << bits:
        raise UnwindError(f"value {value:#x} does not fit in encoding {encoding:#04x}")
    return st.pack(value)


def encode_pcrel_sdata4(target: int, field_addr: int) -> bytes:
    """Encode ``target`` pc-relative to ``field_addr`` as sdata4 (``DW_EH_PE_pcrel | DW_EH_PE_sdata4``).

    The caller must not use this for a null pointer: a stored 0 means "none" to the reader.
    """
    delta = target - field_addr
    if not -(1 << 31) <= delta < 1 << 31:
        raise UnwindError(f"target {target:#x} is out of sdata4 pc-relative range from {field_addr:#x}")
    return _S32.pack(delta)
