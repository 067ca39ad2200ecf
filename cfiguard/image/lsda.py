"""Parser for GCC Language-Specific Data Areas (``.gcc_except_table``), as read by libstdc++'s personality.

A relocated function that can throw or catch needs a new LSDA: its call-site table holds offsets into the
function's code, which change. Everything after the call-site table (action table, type table,
exception-specification lists) does not refer to code, so it is kept as an opaque ``tail`` that a writer
copies, except for type-table entries that are pc-relative (their offsets are recorded for re-encoding).

Layout (``eh_personality.cc: parse_lsda_header``)::

    u8   LPStart encoding      [encoded LPStart]        (omitted -> LPStart = function start)
    u8   TType encoding        [uleb128 TType offset]   (TType base = end of this uleb + offset)
    u8   call-site encoding    uleb128 call-site table length
    call-site records: start, length, landing pad (call-site encoding), action (uleb128)
    action table: (sleb128 filter, sleb128 self-relative displacement to the next record or 0) ...
    ... type table: entry i (i >= 1) at TType base - i * size ... TType base
    exception-spec lists at TType base + (-filter - 1): uleb128 type indexes, 0-terminated
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cfiguard.errors import UnwindError
from cfiguard.image.encoding import (
    DW_EH_PE_omit,
    encoded_size,
    read_encoded,
    read_raw,
    read_sleb128,
    read_uleb128,
)

__all__ = ["CallSite", "Lsda", "parse_lsda"]


@dataclass(frozen=True, slots=True)
class CallSite:
    """One call-site record, with values as stored (offsets, not addresses)."""

    start: int
    """Offset of the region from the function start."""
    length: int
    landing_pad: int
    """Offset from LPStart (the function start when LPStart is omitted); 0 = no landing pad."""
    action: int
    """0 = cleanup only (or nothing), else 1 + offset of the first action record in the action table."""


@dataclass(frozen=True, slots=True)
class Lsda:
    """A parsed LSDA: header, call sites, and the code-independent tail as raw bytes."""

    vaddr: int
    lpstart: int | None
    """Absolute LPStart, ``None`` when omitted (then it is the function start)."""
    ttype_encoding: int
    """``DW_EH_PE_omit`` (0xff) when there is no type table."""
    call_site_encoding: int
    call_sites: tuple[CallSite, ...]
    tail_vaddr: int
    """Address of the action table, i.e. of ``tail[0]``."""
    tail: bytes
    """Action table through the end of the last referenced type-table entry / exception-spec list."""
    ttype_base_in_tail: int | None
    """Offset of the TType base within ``tail``; ``None`` when there is no type table."""
    type_entry_offsets: tuple[int, ...]
    """``type_entry_offsets[i - 1]`` is the offset in ``tail`` of type-table entry ``i``, for every index
    referenced by an action filter or an exception-spec list."""


class _Source:
    """Cursor over the loaded image through the caller's ``read`` callback, fetched in chunks.

    LSDAs are variable-length with no size field, so we cannot ask for the exact size up front; reading
    in chunks keeps the number of callback calls low, and on a failed chunk read (near the end of the
    section) we retry with the exact size so only genuinely out-of-range reads fail.
    """

    _CHUNK = 256

    def __init__(self, read: Callable[[int, int], bytes], base: int) -> None:
        self._read = read
        self.base = base
        self.buf = b""

    def ensure(self, addr: int, size: int) -> None:
        """Make ``[addr, addr + size)`` available in ``buf`` (which always starts at ``base``)."""
        if addr < self.base:
            raise UnwindError(f"LSDA reference {addr:#x} lies before the LSDA at {self.base:#x}")
        need_end = addr + size - self.base
        have = len(self.buf)
        if need_end <= have:
            return
        at = self.base + have
        want = max(need_end - have, self._CHUNK)
        try:
            more = self._read(at, want)
        except Exception:  # the callback's error types are unknown; retry with the exact size
            try:
                more = self._read(at, need_end - have)
            except Exception as exc:
                raise UnwindError(f"cannot read LSDA bytes at {at:#x}: {exc}") from exc
        if len(more) < need_end - have:
            raise UnwindError(f"short read of LSDA bytes at {at:#x}")
        self.buf += bytes(more)

    def _leb_end(self, addr: int) -> None:
        """Make a whole LEB128 at ``addr`` available, without reading past its last byte."""
        q = addr
        while True:
            self.ensure(q, 1)
            if self.buf[q - self.base] < 0x80:
                return
            q += 1

    def uleb(self, addr: int) -> tuple[int, int]:
        self._leb_end(addr)
        value, pos = read_uleb128(self.buf, addr - self.base)
        return value, pos + self.base

    def sleb(self, addr: int) -> tuple[int, int]:
        self._leb_end(addr)
        value, pos = read_sleb128(self.buf, addr - self.base)
        return value, pos + self.base

    def u8(self, addr: int) -> int:
        self.ensure(addr, 1)
        return self.buf[addr - self.base]

    def _prepare(self, addr: int, encoding: int) -> None:
        size = encoded_size(encoding)
        if size is None:
            self._leb_end(addr)
        else:
            self.ensure(addr, size)

    def raw(self, addr: int, encoding: int) -> tuple[int, int]:
        self._prepare(addr, encoding)
        value, pos = read_raw(self.buf, addr - self.base, encoding)
        return value, pos + self.base

    def encoded(self, addr: int, encoding: int, func_start: int) -> tuple[int, int]:
        self._prepare(addr, encoding)
        value, pos = read_encoded(self.buf, addr - self.base, encoding, self.base, func_base=func_start)
        return value, pos + self.base


def parse_lsda(read: Callable[[int, int], bytes], vaddr: int, func_start: int) -> Lsda:
    """Parse the LSDA at ``vaddr`` belonging to the function (or FDE range) starting at ``func_start``.

    ``read(addr, n)`` must return ``n`` bytes of the loaded image; any exception it raises is wrapped into
    UnwindError. The call-site encoding must be a plain value format (GCC uses uleb128 or udata4);
    LPStart may use absptr, pcrel or funcrel. The extent of the tail is computed by walking every action
    chain reachable from the call sites and every exception-spec list they reference, because the LSDA
    has no overall size field and neighbouring LSDAs follow immediately.
    """
    src = _Source(read, vaddr)
    p = vaddr
    lpstart_enc = src.u8(p)
    p += 1
    lpstart: int | None = None
    if lpstart_enc != DW_EH_PE_omit:
        lpstart, p = src.encoded(p, lpstart_enc, func_start)
    ttype_enc = src.u8(p)
    p += 1
    ttype_base: int | None = None
    ttype_size = 0
    if ttype_enc != DW_EH_PE_omit:
        size = encoded_size(ttype_enc)
        if size is None:
            raise UnwindError(f"LSDA at {vaddr:#x}: variable-size type-table encoding {ttype_enc:#04x}")
        ttype_size = size
        off, p = src.uleb(p)
        ttype_base = p + off
    cs_enc = src.u8(p)
    p += 1
    if cs_enc == DW_EH_PE_omit or cs_enc & 0x70:
        raise UnwindError(f"LSDA at {vaddr:#x}: unsupported call-site encoding {cs_enc:#04x}")
    cs_len, p = src.uleb(p)
    action_table = p + cs_len
    call_sites: list[CallSite] = []
    while p < action_table:
        start, p = src.raw(p, cs_enc)
        length, p = src.raw(p, cs_enc)
        landing_pad, p = src.raw(p, cs_enc)
        action, p = src.uleb(p)
        call_sites.append(CallSite(start, length, landing_pad, action))
    if p != action_table:
        raise UnwindError(f"LSDA at {vaddr:#x}: call-site table overruns its length")

    # Walk the action chains to find how far the action table extends and which filters are used.
    tail_end = action_table
    max_index = 0
    spec_offsets: set[int] = set()
    visited: set[int] = set()
    for cs in call_sites:
        if not cs.action:
            continue
        rec = action_table + cs.action - 1
        while rec not in visited:
            if rec < action_table:
                raise UnwindError(f"LSDA at {vaddr:#x}: action record {rec:#x} before the action table")
            visited.add(rec)
            ar_filter, disp_at = src.sleb(rec)
            ar_disp, rec_end = src.sleb(disp_at)
            tail_end = max(tail_end, rec_end)
            if ar_filter > 0:
                max_index = max(max_index, ar_filter)
            elif ar_filter < 0:
                spec_offsets.add(-ar_filter - 1)
            if ar_disp == 0:
                break
            rec = disp_at + ar_disp

    if (max_index or spec_offsets) and ttype_base is None:
        raise UnwindError(f"LSDA at {vaddr:#x}: type filters used but no type table")
    if ttype_base is not None:
        for off in sorted(spec_offsets):
            q = ttype_base + off
            while True:
                index, q = src.uleb(q)
                if index == 0:
                    break
                max_index = max(max_index, index)
            tail_end = max(tail_end, q)
        lowest_entry = ttype_base - max_index * ttype_size
        if lowest_entry < action_table:
            raise UnwindError(f"LSDA at {vaddr:#x}: type table overlaps the call-site table")
        tail_end = max(tail_end, ttype_base)
    src.ensure(action_table, tail_end - action_table)
    tail = src.buf[action_table - vaddr : tail_end - vaddr]
    base_in_tail = None if ttype_base is None else ttype_base - action_table
    entries = (
        () if base_in_tail is None else tuple(base_in_tail - i * ttype_size for i in range(1, max_index + 1))
    )
    return Lsda(
        vaddr=vaddr,
        lpstart=lpstart,
        ttype_encoding=ttype_enc,
        call_site_encoding=cs_enc,
        call_sites=tuple(call_sites),
        tail_vaddr=action_table,
        tail=bytes(tail),
        ttype_base_in_tail=base_in_tail,
        type_entry_offsets=entries,
    )
