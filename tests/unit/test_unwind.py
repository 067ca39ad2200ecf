"""Tests for unwind-data regeneration: CFA remapping, LSDA rebuilding, .eh_frame / .eh_frame_hdr writing.

Besides round trips through our own parsers, one test hands the regenerated data to the real runtime:
the .eh_frame, .eh_frame_hdr and LSDAs of compiled C/C++ programs are rebuilt at a new address (a spare
read-only array inside the program), the originals are wiped, and the programs must still unwind, catch
and clean up exactly as before.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cfiguard.errors import UnwindError
from cfiguard.image.ehframe import (
    Fde,
    cfa_program_without_trailing_nops,
    decode_cfa_program,
    parse_eh_frame,
    parse_eh_frame_hdr,
)
from cfiguard.image.lsda import CallSite, Lsda, parse_lsda
from cfiguard.rewrite.unwind import (
    FdeOut,
    build_eh_frame,
    build_eh_frame_hdr,
    build_lsda,
    encode_advance,
    remap_cfa_program,
)

try:  # the helpers (test programs, ELF image view) live next door; pytest's default mode puts us on sys.path
    from test_ehframe import VARIANTS, Image, compile_variant
except ImportError:  # e.g. --import-mode=importlib
    _spec = importlib.util.spec_from_file_location(
        "_cfiguard_test_ehframe", Path(__file__).with_name("test_ehframe.py")
    )
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _mod
    _spec.loader.exec_module(_mod)
    VARIANTS, Image, compile_variant = _mod.VARIANTS, _mod.Image, _mod.compile_variant


def identity(x: int) -> int:
    return x


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outdir = tmp_path_factory.mktemp("unwind_bins")
    return {name: compile_variant(name, outdir) for name in VARIANTS}


def _rows(program: bytes, start: int, code_align: int = 1, fde_encoding: int = 0) -> tuple[list[int], list]:
    """Row start locations after each advance, and the non-advance instructions (name, operands)."""
    loc = start
    locs: list[int] = []
    others: list = []
    for insn in decode_cfa_program(program, fde_encoding):
        if insn.opcode in (0x40, 0x02, 0x03, 0x04):
            loc += insn.operands[0] * code_align
            locs.append(loc)
        elif insn.opcode == 0x01:
            loc = insn.operands[0]
            locs.append(loc)
        elif insn.opcode != 0x00:
            others.append((insn.name, insn.operands))
    return locs, others


def insertion_map(old_start: int, new_start: int, inserts: dict[int, int]) -> Callable[[int], int]:
    """Map modelling guard insertion: ``inserts[a] = k`` puts k new bytes before old address ``a``."""
    points = sorted(inserts.items())

    def map_addr(x: int) -> int:
        return new_start + (x - old_start) + sum(k for a, k in points if a <= x)

    return map_addr


# ---------------------------------------------------------------------------------------------------------
# CFA programs


@pytest.mark.parametrize(
    ("units", "encoded"),
    [
        (0, b"\x40"),  # DW_CFA_advance_loc: delta in the low 6 bits
        (63, b"\x7f"),  # largest packed delta
        (64, b"\x02\x40"),  # DW_CFA_advance_loc1, u8 operand
        (255, b"\x02\xff"),
        (256, b"\x03\x00\x01"),  # DW_CFA_advance_loc2, little-endian u16
        (0xFFFF, b"\x03\xff\xff"),
        (0x10000, b"\x04\x00\x00\x01\x00"),  # DW_CFA_advance_loc4, little-endian u32
    ],
)
def test_encode_advance_byte_exact(units: int, encoded: bytes) -> None:
    assert encode_advance(units) == encoded


def test_encode_advance_limits() -> None:
    with pytest.raises(UnwindError):
        encode_advance(1 << 32)
    with pytest.raises(UnwindError):
        encode_advance(-1)


def test_remap_byte_exact() -> None:
    # push %rbp at +0..+1, mov %rsp,%rbp at +1..+4, body, leave at +0xe:
    program = bytes(
        [0x41]  # advance_loc 1          -> row at 0x1001
        + [0x0E, 0x10]  # def_cfa_offset 16
        + [0x86, 0x02]  # offset r6 (rbp) at cfa-16
        + [0x43]  # advance_loc 3          -> row at 0x1004
        + [0x0D, 0x06]  # def_cfa_register r6
        + [0x4A]  # advance_loc 10         -> row at 0x100e
        + [0x0C, 0x07, 0x08]  # def_cfa rsp+8
        + [0x00, 0x00]  # padding
    )
    # Function moves from 0x1000 to 0x2000; 100 guard bytes are inserted before old 0x1004.
    map_addr = insertion_map(0x1000, 0x2000, {0x1004: 100})
    out = remap_cfa_program(program, 0x1000, 0x2000, map_addr, 1, 0x1B)
    assert out == bytes(
        [0x41]  # 0x2001 - 0x2000 = 1: unchanged
        + [0x0E, 0x10, 0x86, 0x02]
        + [0x02, 0x67]  # 0x2068 - 0x2001 = 103 > 63: grows to advance_loc1
        + [0x0D, 0x06]
        + [0x4A]  # 0x2072 - 0x2068 = 10
        + [0x0C, 0x07, 0x08]
        # trailing DW_CFA_nop padding dropped
    )


@pytest.mark.parametrize(
    ("inserted", "form"),
    [(0, 0x40), (59, 0x40), (60, 0x02), (251, 0x02), (252, 0x03), (0xFFFB, 0x03), (0xFFFC, 0x04)],
)
def test_remap_advance_forms_grow(inserted: int, form: int) -> None:
    program = bytes([0x44, 0x0E, 0x10])  # advance 4, def_cfa_offset 16
    map_addr = insertion_map(0x1000, 0x5000, {0x1002: inserted})
    out = remap_cfa_program(program, 0x1000, 0x5000, map_addr, 1, 0x1B)
    (first, second) = decode_cfa_program(out)
    delta = 4 + inserted
    assert first.opcode == form
    assert first.operands == (delta,)
    assert out[first.end :] == b"\x0e\x10"
    # The form is the smallest one: it is exactly what encode_advance gives.
    assert out[: first.end] == encode_advance(delta)


def test_remap_respects_code_align() -> None:
    program = bytes([0x42, 0x0E, 0x10, 0x02, 0x50])  # advance 2*4, ..., advance1 0x50*4
    map_addr = insertion_map(0x1000, 0x1000, {0x1004: 8})
    out = remap_cfa_program(program, 0x1000, 0x1000, map_addr, 4, 0)
    locs, _ = _rows(out, 0x1000, code_align=4)
    assert locs == [map_addr(0x1008), map_addr(0x1008 + 0x140)]
    with pytest.raises(UnwindError, match="multiple of code alignment"):
        remap_cfa_program(program, 0x1000, 0x1000, insertion_map(0x1000, 0x1000, {0x1004: 3}), 4, 0)


def test_remap_set_loc_becomes_advance() -> None:
    # set_loc with an absolute udata8 operand (FDE encoding absptr), then an advance.
    program = b"\x01" + struct.pack("<Q", 0x1010) + b"\x0e\x10\x42\x0e\x08"
    map_addr = insertion_map(0x1000, 0x3000, {0x1008: 0x40})
    out = remap_cfa_program(program, 0x1000, 0x3000, map_addr, 1, 0x00)
    assert out == encode_advance(0x50) + b"\x0e\x10\x42\x0e\x08"
    # A pc-relative set_loc depends on where the program is stored: refuse.
    pcrel = b"\x01" + struct.pack("<i", 0x10) + b"\x0e\x10"
    with pytest.raises(UnwindError, match="set_loc"):
        remap_cfa_program(pcrel, 0x1000, 0x3000, identity, 1, 0x1B)
    backwards = b"\x41\x01" + struct.pack("<Q", 0x1000)
    with pytest.raises(UnwindError, match="backwards"):
        remap_cfa_program(backwards, 0x1000, 0x1000, identity, 1, 0x00)


def test_remap_rejects_non_monotonic_map() -> None:
    program = bytes([0x44, 0x0E, 0x10, 0x44, 0x0E, 0x08])
    with pytest.raises(UnwindError, match="monotonic"):
        remap_cfa_program(program, 0x1000, 0x2000, lambda x: 0x2000 + (8 if x == 0x1004 else 0), 1, 0)


def test_remap_copies_all_operand_kinds_verbatim() -> None:
    body = bytes(
        [0x0F, 0x03, 0x77, 0x08, 0x06]  # def_cfa_expression
        + [0x10, 0x06, 0x02, 0x76, 0x00]  # expression r6
        + [0x16, 0x03, 0x01, 0x9C]  # val_expression r3
        + [0x2E, 0x80, 0x01]  # GNU_args_size 128
        + [0x2F, 0x05, 0x01]  # GNU_negative_offset_extended
        + [0x11, 0x06, 0x7E]  # offset_extended_sf
        + [0x12, 0x07, 0x10]  # def_cfa_sf
        + [0x14, 0x03, 0x02, 0x15, 0x03, 0x7F]  # val_offset, val_offset_sf
        + [0x0A, 0x0B, 0xC6, 0x06, 0x05, 0x07, 0x01, 0x08, 0x02, 0x09, 0x01, 0x02]
    )
    program = b"\x48" + body + b"\x03\x00\x01" + body
    # One byte inserted inside the first row: the second advance grows from 256 to 257.
    map_addr = insertion_map(0x1000, 0x1000, {0x1009: 1})
    out = remap_cfa_program(program, 0x1000, 0x1000, map_addr, 1, 0)
    assert out == b"\x48" + body + b"\x03\x01\x01" + body


def test_remap_random_programs_rows_follow_map() -> None:
    """Property: every row's new start == map(old start); every other instruction is unchanged."""
    rng = random.Random(1234)
    fillers = [b"\x0e\x10", b"\x86\x02", b"\x0a", b"\x0b", b"\x0d\x06", b"\x0f\x02\x77\x08", b"\x2e\x10"]
    for _ in range(300):
        code_align = rng.choice([1, 1, 1, 4])
        old_start = 0x400000 + rng.randrange(0, 1 << 20) * code_align
        new_start = 0x800000 + rng.randrange(0, 1 << 20) * code_align
        program = bytearray()
        loc = old_start
        for _ in range(rng.randrange(0, 25)):
            units = rng.choice([0, 1, 5, 63, 64, 200, 255, 256, 1000, 70000])
            program += encode_advance(units)
            loc += units * code_align
            for _ in range(rng.randrange(0, 3)):
                program += rng.choice(fillers)
        program += b"\0" * rng.randrange(0, 4)
        end = loc + 16
        inserts = {
            old_start + rng.randrange(0, end - old_start) // code_align * code_align: rng.randrange(0, 300)
            * code_align
            for _ in range(rng.randrange(0, 10))
        }
        inserts.pop(old_start, None)  # the function entry itself must map to new_start
        map_addr = insertion_map(old_start, new_start, inserts)
        out = remap_cfa_program(bytes(program), old_start, new_start, map_addr, code_align, 0x1B)
        old_locs, old_others = _rows(bytes(program), old_start, code_align)
        new_locs, new_others = _rows(out, new_start, code_align)
        assert new_locs == [map_addr(x) for x in old_locs]
        assert new_others == old_others
        assert out == cfa_program_without_trailing_nops(out)


def _real_fdes(path: Path) -> tuple[Image, list[Fde]]:
    img = Image.load(path)
    return img, parse_eh_frame(*img.section(".eh_frame"))


def _system_binaries() -> list[Path]:
    return [p for p in (Path("/usr/bin/python3.11"), Path("/bin/ls")) if p.exists()]


@pytest.mark.parametrize("path", _system_binaries(), ids=str)
def test_remap_real_programs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Identity map reproduces the assembler's (minimal) programs; a growing map moves every row."""
    _img, fdes = _real_fdes(path)
    t0 = time.perf_counter()
    for f in fdes:
        same = remap_cfa_program(f.instructions, f.pc_begin, f.pc_begin, identity, f.cie.code_align, 0x1B)
        assert same == cfa_program_without_trailing_nops(f.instructions)
    t_identity = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in fdes[::7]:
        new_start = f.pc_begin + 0x1000000

        # 5 bytes of guard before every 16-byte boundary of the old function (and at none before it).
        def grow(x: int, f: Fde = f, new_start: int = new_start) -> int:
            return new_start + (x - f.pc_begin) + 5 * ((x - f.pc_begin) // 16)

        out = remap_cfa_program(f.instructions, f.pc_begin, new_start, grow, f.cie.code_align, 0x1B)
        old_locs, old_others = _rows(f.instructions, f.pc_begin)
        new_locs, new_others = _rows(out, new_start)
        assert new_locs == [grow(x) for x in old_locs]
        assert new_others == old_others
    t_grow = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\n[{path}] remap of {len(fdes)} FDEs (identity) {t_identity * 1000:.0f} ms; growing map check {t_grow * 1000:.0f} ms"
        )


# ---------------------------------------------------------------------------------------------------------
# LSDAs


def _blob_reader(blobs: dict[int, bytes], fallback: Callable[[int, int], bytes] | None = None):
    def read(addr: int, n: int) -> bytes:
        for base, blob in blobs.items():
            if base <= addr and addr + n <= base + len(blob):
                return blob[addr - base : addr - base + n]
        if fallback is not None:
            return fallback(addr, n)
        raise ValueError(f"no bytes at {addr:#x}+{n}")

    return read


def _type_targets(lsda: Lsda) -> list[int]:
    if not lsda.type_entry_offsets:
        return []
    size = {0x03: 4, 0x0B: 4, 0x00: 8, 0x04: 8}[lsda.ttype_encoding & 0x0F]
    fmt = {0x03: "<I", 0x0B: "<i", 0x00: "<Q", 0x04: "<Q"}[lsda.ttype_encoding & 0x0F]
    out = []
    for off in lsda.type_entry_offsets:
        raw = struct.unpack_from(fmt, lsda.tail, off)[0]
        assert off + size <= len(lsda.tail)
        if raw and lsda.ttype_encoding & 0x70 == 0x10:
            raw += lsda.tail_vaddr + off
        out.append(raw)
    return out


def _mask_entries(lsda: Lsda) -> bytes:
    """The tail with type-table entries blanked: what must be copied byte for byte."""
    tail = bytearray(lsda.tail)
    size = 8 if lsda.ttype_encoding & 0x0F in (0x00, 0x04, 0x0C) else 4
    for off in lsda.type_entry_offsets:
        tail[off : off + size] = b"\0" * size
    return bytes(tail)


def test_build_lsda_byte_exact() -> None:
    old = Lsda(
        vaddr=0x5000,
        lpstart=None,
        ttype_encoding=0x9B,  # indirect|pcrel|sdata4
        call_site_encoding=0x03,
        call_sites=(CallSite(0x10, 0x8, 0x30, 1), CallSite(0x20, 0x4, 0, 0)),
        tail_vaddr=0x5030,
        # action (filter 1, end); 2 bytes padding; entry 1 = +0x100 from its own address (0x5034)
        tail=bytes([0x01, 0x00, 0x00, 0x00]) + struct.pack("<i", 0x100),
        ttype_base_in_tail=8,
        type_entry_offsets=(4,),
    )
    map_addr = insertion_map(0x1000, 0x9000, {0x1018: 0x10})
    new = build_lsda(old, 0x1000, 0x9000, map_addr, 0x7000)
    cs = bytes(
        [0x10, 0x18, 0x40, 0x01]  # [0x1010,0x1018) -> [0x9010,0x9028): the range grows; lp 0x9040
        + [0x20 + 0x10, 0x04, 0x00, 0x00]  # start shifted by the insertion, no landing pad
    )
    expected = (
        bytes([0xFF, 0x9B])  # LPStart omitted; TType encoding kept
        + bytes([1 + 1 + len(cs) + 8])  # TType offset from after itself: cs enc + cs len + cs + 8
        + bytes([0x01, len(cs)])  # call-site encoding uleb128, table length
        + cs
        + bytes([0x01, 0x00, 0x00, 0x00])  # tail copied ...
        # ... except entry 1 (tail offset 4), re-encoded from its new address to the same target 0x5134
        + struct.pack("<i", 0x5034 + 0x100 - (0x7000 + 5 + len(cs) + 4))
    )
    assert new == expected


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("cxx")] + ["c-O0-pie"])
def test_build_lsda_round_trip(built: dict[str, Path], variant: str) -> None:
    img, fdes = _real_fdes(built[variant])
    count = 0
    place = 0x6000_0001  # deliberately unaligned: no alignment is needed by the readers
    for f in (f for f in fdes if f.lsda is not None):
        old = parse_lsda(img.read, f.lsda, f.pc_begin)
        new_start = 0x5000_0000 + count * 0x10000
        # Guards: 9 bytes before every 8-byte boundary, so ranges and landing pads all move differently.
        map_addr = insertion_map(
            f.pc_begin, new_start, {f.pc_begin + k: 9 for k in range(8, f.pc_range + 8, 8)}
        )
        blob = build_lsda(old, f.pc_begin, new_start, map_addr, place)
        new = parse_lsda(_blob_reader({place: blob}), place, new_start)
        assert new.lpstart is None
        assert new.call_site_encoding == 0x01
        assert len(new.call_sites) == len(old.call_sites)
        for a, b in zip(old.call_sites, new.call_sites, strict=True):
            s = f.pc_begin + a.start
            assert new_start + b.start == map_addr(s)
            assert new_start + b.start + b.length == map_addr(s + a.length)
            assert b.landing_pad == (map_addr(f.pc_begin + a.landing_pad) - new_start if a.landing_pad else 0)
            assert b.action == a.action
        assert new.ttype_encoding == old.ttype_encoding
        assert new.ttype_base_in_tail == old.ttype_base_in_tail
        assert new.type_entry_offsets == old.type_entry_offsets
        assert _mask_entries(new) == _mask_entries(old)  # actions, padding, spec lists: verbatim
        assert _type_targets(new) == _type_targets(old)  # same typeinfo (slots), wherever they are
        assert new.tail_vaddr + len(new.tail) == place + len(blob)  # nothing unreferenced is emitted
        if old.ttype_encoding & 0x70 == 0x10 and any(_type_targets(old)):
            assert new.tail != old.tail  # pc-relative entries were really re-encoded
        count += 1
        place += len(blob)
    assert count >= 1


def test_build_lsda_refusals() -> None:
    base = dict(
        vaddr=0x5000,
        call_site_encoding=0x01,
        call_sites=(CallSite(0x10, 0x8, 0x30, 1),),
        tail_vaddr=0x5010,
        tail=bytes([0x01, 0x00]) + b"\0\0" + struct.pack("<i", 0x40),
        ttype_base_in_tail=8,
        type_entry_offsets=(4,),
    )
    ok = Lsda(lpstart=None, ttype_encoding=0x9B, **base)
    build_lsda(ok, 0x1000, 0x2000, lambda x: x + 0x1000, 0x9000)
    # LPStart equal to the function start is fine; anything else cannot be expressed without LPStart.
    build_lsda(
        Lsda(lpstart=0x1000, ttype_encoding=0x9B, **base), 0x1000, 0x2000, lambda x: x + 0x1000, 0x9000
    )
    with pytest.raises(UnwindError, match="LPStart"):
        build_lsda(
            Lsda(lpstart=0x800, ttype_encoding=0x9B, **base), 0x1000, 0x2000, lambda x: x + 0x1000, 0x9000
        )
    for enc in (0x3B, 0x2B, 0x4B, 0xBB):  # datarel, textrel, funcrel, indirect|datarel
        with pytest.raises(UnwindError, match="cannot be relocated"):
            build_lsda(
                Lsda(lpstart=None, ttype_encoding=enc, **base), 0x1000, 0x2000, lambda x: x + 0x1000, 0x9000
            )
    # A landing pad mapped onto the function start would read as "no landing pad".
    with pytest.raises(UnwindError, match="landing pad"):
        build_lsda(ok, 0x1000, 0x2000, lambda x: 0x2000 if x == 0x1030 else x + 0x1000, 0x9000)
    # The pc-relative entry must still reach its target from the new place.
    with pytest.raises(UnwindError):
        build_lsda(ok, 0x1000, 0x2000, lambda x: x + 0x1000, 0x5000 + (1 << 32))


# ---------------------------------------------------------------------------------------------------------
# .eh_frame and .eh_frame_hdr


def _outs(fdes: list[Fde], lsda_map: dict[int, int] | None = None) -> list[FdeOut]:
    return [
        FdeOut(
            f.cie,
            f.pc_begin,
            f.pc_range,
            remap_cfa_program(
                f.instructions, f.pc_begin, f.pc_begin, identity, f.cie.code_align, f.cie.fde_encoding
            ),
            f.lsda if lsda_map is None else lsda_map.get(f.vaddr),
        )
        for f in fdes
    ]


def _round_trip_eh_frame(fdes: list[Fde], vaddr: int) -> None:
    outs = _outs(fdes)
    data, table = build_eh_frame(outs, vaddr)
    other, _ = build_eh_frame(outs, vaddr + 0x123458)
    assert len(other) == len(data)  # size does not depend on the address
    assert len(data) % 8 == 4  # 8-byte records + 4-byte terminator
    back = parse_eh_frame(data, vaddr)
    assert len(back) == len(fdes)
    assert table == [(b.pc_begin, b.vaddr) for b in back]
    for a, b in zip(fdes, back, strict=True):
        assert (b.pc_begin, b.pc_range, b.lsda) == (a.pc_begin, a.pc_range, a.lsda)
        program = cfa_program_without_trailing_nops(a.instructions)
        assert b.instructions[: len(program)] == program
        assert not any(b.instructions[len(program) :])  # only DW_CFA_nop padding after it
        ca, cb = a.cie, b.cie
        assert (cb.code_align, cb.data_align, cb.ra_register, cb.signal_frame) == (
            ca.code_align,
            ca.data_align,
            ca.ra_register,
            ca.signal_frame,
        )
        assert cb.personality == ca.personality
        assert (cb.personality_encoding is None) == (ca.personality_encoding is None)
        if ca.personality_encoding is not None:
            assert cb.personality_encoding == 0x1B | (ca.personality_encoding & 0x80)
        assert (cb.lsda_encoding is None) == (ca.lsda_encoding is None)
        assert cb.fde_encoding == 0x1B
        assert cfa_program_without_trailing_nops(
            cb.initial_instructions
        ) == cfa_program_without_trailing_nops(ca.initial_instructions)
    # One CIE per distinct CIE content.
    assert len({b.cie.vaddr for b in back}) <= len({a.cie for a in fdes})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_build_eh_frame_round_trip_compiled(built: dict[str, Path], variant: str) -> None:
    img, fdes = _real_fdes(built[variant])
    _round_trip_eh_frame(fdes, img.sections[".eh_frame"][0] + 0x200000)


@pytest.mark.parametrize("path", _system_binaries(), ids=str)
def test_build_eh_frame_round_trip_system(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img, fdes = _real_fdes(path)
    t0 = time.perf_counter()
    _round_trip_eh_frame(fdes, img.sections[".eh_frame"][0] + 0x1000000)
    with capsys.disabled():
        print(f"\n[{path}] build+reparse of {len(fdes)} FDEs: {(time.perf_counter() - t0) * 1000:.0f} ms")


def test_build_eh_frame_byte_exact_small() -> None:
    from cfiguard.image.ehframe import Cie

    cie = Cie(
        vaddr=0,
        version=1,
        augmentation="zR",
        code_align=1,
        data_align=-8,
        ra_register=16,
        fde_encoding=0x1B,
        lsda_encoding=None,
        personality_encoding=None,
        personality=None,
        signal_frame=False,
        initial_instructions=bytes([0x0C, 0x07, 0x08, 0x90, 0x01, 0x00, 0x00]),
    )
    data, table = build_eh_frame([FdeOut(cie, 0x401000, 0x20, b"\x41\x0e\x10", None)], 0x500000)
    expected_cie = (
        struct.pack("<I", 20)  # length: 24-byte record
        + b"\0\0\0\0"  # CIE id
        + b"\x01zR\0"  # version, augmentation
        + b"\x01\x78\x10"  # code align 1, data align -8, RA column 16
        + b"\x01\x1b"  # augmentation data: FDE encoding pcrel|sdata4
        + b"\x0c\x07\x08\x90\x01"  # initial instructions, old padding dropped...
        + b"\0\0"  # ...and new padding to a 24-byte record
    )
    expected_fde = (
        struct.pack("<I", 20)
        + struct.pack("<I", 28)  # CIE pointer: from this field (offset 28) back to offset 0
        + struct.pack("<i", 0x401000 - (0x500000 + 32))  # pc_begin, pc-relative to its own field
        + struct.pack("<i", 0x20)
        + b"\x00"  # no augmentation data
        + b"\x41\x0e\x10"
        + b"\0\0\0\0"  # 20 -> 24 bytes
    )
    assert data == expected_cie + expected_fde + b"\0\0\0\0"
    assert table == [(0x401000, 0x500000 + 24)]


def test_build_eh_frame_personality_and_lsda_reencoding() -> None:
    from cfiguard.image.ehframe import Cie

    cie = Cie(0x100, 1, "zPLR", 1, -8, 16, 0x03, 0x03, 0x03, 0x4010F0, False, b"")
    cie_indirect = Cie(0x200, 1, "zPLR", 1, -8, 16, 0x1B, 0x1B, 0x9B, 0x404000, False, b"")
    plain = Cie(0x300, 1, "zR", 1, -8, 16, 0x1B, None, None, None, False, b"")
    outs = [
        FdeOut(cie, 0x401000, 0x10, b"", 0x402000),
        FdeOut(cie, 0x401010, 0x10, b"", None),  # 'L' CIE without an LSDA: stored 0
        FdeOut(cie_indirect, 0x401020, 0x10, b"", 0x402100),
        FdeOut(plain, 0x401030, 0x10, b"", 0x402200),  # LSDA on a CIE without 'L': 'L' is added
        FdeOut(plain, 0x401040, 0x10, b"", None),
    ]
    data, _ = build_eh_frame(outs, 0x600000)
    back = parse_eh_frame(data, 0x600000)
    assert [(b.pc_begin, b.lsda) for b in back] == [(o.pc_begin, o.lsda) for o in outs]
    assert back[0].cie.personality == 0x4010F0 and back[0].cie.personality_encoding == 0x1B
    assert back[2].cie.personality == 0x404000 and back[2].cie.personality_encoding == 0x9B
    assert back[3].cie.augmentation == "zLR" and back[4].cie.augmentation == "zLR"
    assert back[0].cie is back[1].cie
    # Duplicate CIEs at different old addresses are emitted once.
    twin = Cie(0x999, 1, "zR", 1, -8, 16, 0x03, None, None, None, False, b"\0\0")
    data2, _ = build_eh_frame(
        [FdeOut(plain, 0x401000, 1, b"", None), FdeOut(twin, 0x401001, 1, b"", None)], 0
    )
    back2 = parse_eh_frame(data2, 0)
    assert back2[0].cie.vaddr == back2[1].cie.vaddr
    with pytest.raises(UnwindError):
        build_eh_frame([FdeOut(plain, 0x401000 + (1 << 32), 1, b"", None)], 0x1000)  # pc_begin out of reach
    with pytest.raises(UnwindError):
        build_eh_frame(
            [FdeOut(Cie(0, 1, "zXR", 1, -8, 16, 0x1B, None, None, None, False, b""), 1, 1, b"", None)], 0
        )


def test_build_eh_frame_hdr_round_trip_and_byte_exact() -> None:
    table = [(0x401100, 0x400140), (0x3FF000, 0x400118), (0x401080, 0x400130)]
    hdr = build_eh_frame_hdr(table, 0x400000, 0x400100)
    assert hdr == (
        bytes([1, 0x1B, 0x03, 0x3B])  # version, eh_frame_ptr pcrel|sdata4, count udata4, table datarel|sdata4
        + struct.pack("<i", 0x400100 - 0x400004)  # eh_frame_ptr relative to its own field
        + struct.pack("<I", 3)
        # sorted by pc; both values relative to the header start (the first pc lies below it)
        + struct.pack("<6i", -0x1000, 0x118, 0x1080, 0x130, 0x1100, 0x140)
    )
    assert parse_eh_frame_hdr(hdr, 0x400000) == (0x400100, sorted(table))
    with pytest.raises(UnwindError, match="two FDEs"):
        build_eh_frame_hdr([(0x401000, 0x400118), (0x401000, 0x400130)], 0x400000, 0x400100)
    with pytest.raises(UnwindError, match="sdata4"):
        build_eh_frame_hdr([(0x400000 + (1 << 31), 0x400118)], 0x400000, 0x400100)
    with pytest.raises(UnwindError):
        build_eh_frame_hdr([], 0x400000, 0x400004 + (1 << 31))  # eh_frame_ptr one past sdata4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_build_eh_frame_hdr_real(built: dict[str, Path], variant: str) -> None:
    img, fdes = _real_fdes(built[variant])
    hdr, hdr_addr = img.section(".eh_frame_hdr")
    eh_addr = img.sections[".eh_frame"][0]
    ours = build_eh_frame_hdr([(f.pc_begin, f.vaddr) for f in fdes], hdr_addr, eh_addr)
    assert ours == hdr  # ld writes exactly this layout


# ---------------------------------------------------------------------------------------------------------
# The real runtime consumes what we write


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path)], capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"}
    )


def _regenerate_into_spare(img: Image, out: Path, *, write_new: bool = True) -> None:
    """Rebuild all LSDAs, .eh_frame and .eh_frame_hdr into the program's `cfgspare` array; wipe the old."""
    data, eh_addr = img.section(".eh_frame")
    hdr, hdr_addr = img.section(".eh_frame_hdr")
    fdes = parse_eh_frame(data, eh_addr)
    (spare,) = [a for a, names in img.symbols.items() if "cfgspare" in names]
    blob = bytearray(b"\xcc")  # start LSDAs at an odd address
    new_lsda: dict[int, int] = {}
    for f in fdes:
        if f.lsda is None:
            continue
        lsda = parse_lsda(img.read, f.lsda, f.pc_begin)
        at = spare + len(blob)
        blob += build_lsda(lsda, f.pc_begin, f.pc_begin, identity, at)
        new_lsda[f.vaddr] = at
    blob += bytes(-len(blob) % 8)
    eh_vaddr = spare + len(blob)
    eh, table = build_eh_frame(_outs(fdes, new_lsda), eh_vaddr)
    blob += eh
    assert len(blob) <= 65536
    new_hdr = build_eh_frame_hdr(table, hdr_addr, eh_vaddr)
    assert len(new_hdr) <= len(hdr)
    raw = bytearray(img.raw)

    def patch(addr: int, content: bytes) -> None:
        off = img.file_offset(addr, len(content))
        raw[off : off + len(content)] = content

    if write_new:
        patch(spare, bytes(blob))
        patch(hdr_addr, new_hdr + bytes(len(hdr) - len(new_hdr)))
    for name in (".eh_frame", ".gcc_except_table"):
        if name in img.sections:
            addr, _, size = img.sections[name]
            patch(addr, b"\0" * size)
    out.write_bytes(bytes(raw))
    out.chmod(0o755)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_regenerated_unwind_data_works_at_runtime(
    built: dict[str, Path], variant: str, tmp_path: Path
) -> None:
    original = built[variant]
    expected = _run(original)
    assert expected.returncode == 0, expected.stderr
    img = Image.load(original)
    patched = tmp_path / f"{variant}.regen"
    _regenerate_into_spare(img, patched)
    got = _run(patched)
    assert (got.returncode, got.stdout) == (0, expected.stdout), got.stderr
    # Negative control: with the old data wiped and nothing written, the same program must misbehave,
    # which shows the runtime really used the regenerated tables above.
    broken = tmp_path / f"{variant}.broken"
    _regenerate_into_spare(img, broken, write_new=False)
    bad = _run(broken)
    assert (bad.returncode, bad.stdout) != (0, expected.stdout)
