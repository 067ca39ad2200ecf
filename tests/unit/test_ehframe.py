"""Tests for the unwind-data parsers: DW_EH_PE encodings, .eh_frame, .eh_frame_hdr and LSDAs.

Real binaries are compiled at test time (C and C++, -O0/-O2, PIE and non-PIE) and the parse is compared
with pyelftools (the oracle for .eh_frame) and with the symbol table (for personality routines and
type-table entries, which pyelftools does not decode).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from cfiguard.errors import UnwindError
from cfiguard.image.ehframe import (
    Cie,
    cfa_program_without_trailing_nops,
    decode_cfa_program,
    parse_eh_frame,
    parse_eh_frame_hdr,
)
from cfiguard.image.encoding import (
    encode_sleb128,
    encode_uleb128,
    encoded_size,
    pack_fixed,
    read_encoded,
    read_sleb128,
    read_uleb128,
)
from cfiguard.image.lsda import parse_lsda

# ---------------------------------------------------------------------------------------------------------
# Test programs and helpers

CXX_SRC = r"""
#include <cstdio>
#include <stdexcept>

struct MyErr { int code; };
struct Base { virtual ~Base() {} };
struct Derived : Base {};

struct Guard {
    const char* name;
    explicit Guard(const char* n) : name(n) {}
    ~Guard() { std::printf("~%s\n", name); }
};

__attribute__((noinline)) void thrower(int kind) {
    Guard g("thrower");
    switch (kind) {
        case 0: throw 42;
        case 1: throw MyErr{7};
        case 2: throw std::runtime_error("boom");
        case 3: throw Derived();
        case 4: throw 3.5;
        default: break;
    }
}

__attribute__((noinline)) int middle(int kind) {
    Guard g("middle");
    volatile char buf[300];
    buf[0] = (char)kind;
    thrower(buf[0]);
    return buf[1];
}

// Dynamic exception specification (C++14): produces a negative filter and an exception-spec list.
__attribute__((noinline)) void spec_fn(int kind) throw(int, MyErr) { thrower(kind); }

__attribute__((noinline)) void run(int kind) {
    try {
        try {
            middle(kind);
        } catch (int v) {
            std::printf("int %d\n", v);
        } catch (const MyErr& e) {
            std::printf("MyErr %d\n", e.code);
            throw;
        }
    } catch (const std::exception& e) {
        std::printf("std %s\n", e.what());
    } catch (const Base&) {
        std::printf("Base\n");
    } catch (const MyErr& e) {
        std::printf("rethrown MyErr %d\n", e.code);
    } catch (...) {
        std::printf("other\n");
    }
}

// Free room in a loaded read-only segment, used by the runtime round-trip test to hold new unwind data.
extern "C" __attribute__((used, aligned(64))) const unsigned char cfgspare[65536] = {1};

int main() {
    for (int k = 0; k < 6; ++k) run(k);
    try { spec_fn(0); } catch (int v) { std::printf("spec int %d\n", v); }
    try { spec_fn(1); } catch (MyErr& e) { std::printf("spec MyErr %d\n", e.code); }
    std::puts("done");
    return 0;
}
"""

C_SRC = r"""
#include <execinfo.h>
#include <stdio.h>

static void cleanup_fn(int *p) { printf("cleanup %d\n", *p); }

__attribute__((noinline)) int depth(int n) {
    int guard __attribute__((cleanup(cleanup_fn))) = n;
    if (n == 0) {
        void *buf[64];
        return backtrace(buf, 64);
    }
    volatile char big[n * 100 + 1];   /* VLA: CFA moves to the frame pointer */
    big[0] = (char)n;
    return depth(n - 1) + big[0] - n;
}

__attribute__((used, aligned(64))) const unsigned char cfgspare[65536] = {1};

int main(void) {
    printf("frames %d\n", depth(5));
    return 0;
}
"""

VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "c-O0-pie": ("gcc", C_SRC, ["-O0", "-fPIE", "-pie", "-fexceptions"]),
    "c-O2-nopie": ("gcc", C_SRC, ["-O2", "-fno-pie", "-no-pie", "-fexceptions"]),
    "cxx-O0-pie": ("g++", CXX_SRC, ["-O0", "-fPIE", "-pie"]),
    "cxx-O2-pie": ("g++", CXX_SRC, ["-O2", "-fPIE", "-pie"]),
    "cxx-O0-nopie": ("g++", CXX_SRC, ["-O0", "-fno-pie", "-no-pie"]),
    "cxx-O2-nopie": ("g++", CXX_SRC, ["-O2", "-fno-pie", "-no-pie"]),
}


def compile_variant(name: str, outdir: Path) -> Path:
    """Compile one test program variant into ``outdir``; skip the test when the compiler is missing."""
    compiler, src, flags = VARIANTS[name]
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not available")
    ext = ".c" if compiler == "gcc" else ".cpp"
    src_path = outdir / f"{name}{ext}"
    src_path.write_text(src)
    out = outdir / name
    std = ["-std=gnu++14", "-Wno-deprecated"] if compiler == "g++" else []
    subprocess.run([compiler, *std, *flags, str(src_path), "-o", str(out)], check=True, capture_output=True)
    return out


@dataclass
class Image:
    """A loaded-image view of an ELF file: sections by name, reads by virtual address, symbols."""

    path: Path
    raw: bytes = b""
    sections: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (addr, offset, size)
    loads: list[tuple[int, int, int]] = field(default_factory=list)  # (vaddr, offset, filesz)
    symbols: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> Image:
        img = cls(Path(path))
        img.raw = img.path.read_bytes()
        with open(img.path, "rb") as f:
            elf = ELFFile(f)
            for sec in elf.iter_sections():
                img.sections[sec.name] = (sec["sh_addr"], sec["sh_offset"], sec["sh_size"])
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    img.loads.append((seg["p_vaddr"], seg["p_offset"], seg["p_filesz"]))
            for name in (".symtab", ".dynsym"):
                symtab = elf.get_section_by_name(name)
                if symtab is None:
                    continue
                for sym in symtab.iter_symbols():
                    if sym["st_value"]:
                        img.symbols.setdefault(sym["st_value"], []).append(sym.name.split("@")[0])
        return img

    def section(self, name: str) -> tuple[bytes, int]:
        addr, off, size = self.sections[name]
        return self.raw[off : off + size], addr

    def file_offset(self, addr: int, n: int = 1) -> int:
        for vaddr, off, size in self.loads:
            if vaddr <= addr and addr + n <= vaddr + size:
                return off + addr - vaddr
        raise ValueError(f"{addr:#x}+{n} is not in a loaded file-backed range")

    def read(self, addr: int, n: int) -> bytes:
        off = self.file_offset(addr, n)
        return self.raw[off : off + n]

    def symbol_at(self, addr: int) -> set[str]:
        return set(self.symbols.get(addr, ()))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outdir = tmp_path_factory.mktemp("ehframe_bins")
    return {name: compile_variant(name, outdir) for name in VARIANTS}


def _pyelftools_fdes(path: Path) -> list:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        entries = elf.get_dwarf_info().EH_CFI_entries()
        return [e for e in entries if type(e).__name__ == "FDE"]


def _as_pyelftools_args(insn) -> tuple[int, list]:
    """Our decoded instruction in pyelftools' shape: (opcode, args) with blocks as lists of ints."""
    return insn.opcode, [list(a) if isinstance(a, bytes) else a for a in insn.operands]


def _compare_with_pyelftools(path: Path) -> int:
    img = Image.load(path)
    data, addr = img.section(".eh_frame")
    ours = parse_eh_frame(data, addr)
    theirs = _pyelftools_fdes(path)
    assert len(ours) == len(theirs) > 0
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.vaddr == addr + ref.offset
        assert mine.pc_begin == ref.header["initial_location"]
        assert mine.pc_range == ref.header["address_range"]
        assert mine.lsda == ref.lsda_pointer
        cie_ref = ref.cie
        assert mine.cie.vaddr == addr + cie_ref.offset
        assert mine.cie.augmentation == cie_ref.header["augmentation"].decode()
        assert mine.cie.code_align == cie_ref.header["code_alignment_factor"]
        assert mine.cie.data_align == cie_ref.header["data_alignment_factor"]
        assert mine.cie.ra_register == cie_ref.header["return_address_register"]
        aug = cie_ref.augmentation_dict
        assert mine.cie.fde_encoding == aug.get("FDE_encoding", 0)
        assert mine.cie.lsda_encoding == aug.get("LSDA_encoding")
        if "personality" in aug:
            assert mine.cie.personality_encoding == aug["personality"]["encoding"]
        # The CFA programs: same instruction stream as pyelftools decodes it, and the bytes are exactly
        # the tail of the record.
        end = ref.offset + 4 + ref.header["length"]
        assert data[end - len(mine.instructions) : end] == mine.instructions
        decoded = [
            _as_pyelftools_args(i) for i in decode_cfa_program(mine.instructions, mine.cie.fde_encoding)
        ]
        expected = [(int(i.opcode), list(i.args)) for i in ref.instructions]
        assert decoded == expected
        init = [_as_pyelftools_args(i) for i in decode_cfa_program(mine.cie.initial_instructions)]
        assert init == [(int(i.opcode), list(i.args)) for i in cie_ref.instructions]
    return len(ours)


# ---------------------------------------------------------------------------------------------------------
# Encodings: byte-exact


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (2, b"\x02"),
        (127, b"\x7f"),  # largest one-byte value
        (128, b"\x80\x01"),  # low 7 bits 0 with continuation, then 1
        (300, b"\xac\x02"),  # 300 = 0b10_0101100 -> 0x2c|0x80, 0x02
        (624485, b"\xe5\x8e\x26"),  # the DWARF spec's example
    ],
)
def test_uleb128_byte_exact(value: int, encoded: bytes) -> None:
    assert encode_uleb128(value) == encoded
    assert read_uleb128(encoded + b"\xff", 0) == (value, len(encoded))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (2, b"\x02"),
        (-1, b"\x7f"),  # all ones, sign bit (0x40) set
        (63, b"\x3f"),
        (64, b"\xc0\x00"),  # 64 has bit 6 set, so it needs a second byte to stay positive
        (-64, b"\x40"),
        (-65, b"\xbf\x7f"),
        (-128, b"\x80\x7f"),
        (-123456, b"\xc0\xbb\x78"),  # the DWARF spec's example
    ],
)
def test_sleb128_byte_exact(value: int, encoded: bytes) -> None:
    assert encode_sleb128(value) == encoded
    assert read_sleb128(encoded + b"\x00", 0) == (value, len(encoded))


def test_leb128_truncated_raises() -> None:
    with pytest.raises(UnwindError):
        read_uleb128(b"\x80\x80", 0)
    with pytest.raises(UnwindError):
        read_sleb128(b"\xff", 0)


def test_read_encoded_applications() -> None:
    # pcrel|sdata4 = 0x1b: relative to the field's own address (vaddr + pos).
    data = b"\xaa" + struct.pack("<i", -0x10)
    assert read_encoded(data, 1, 0x1B, 0x1000) == (0x1001 - 0x10, 5)
    # A stored zero stays zero whatever the application (libgcc's "no LSDA").
    assert read_encoded(b"\0\0\0\0", 0, 0x1B, 0x1000) == (0, 4)
    # indirect is not dereferenced: the slot address is returned.
    assert read_encoded(struct.pack("<i", 8), 0, 0x9B, 0x2000) == (0x2008, 4)
    # absptr (8 bytes) and udata4.
    assert read_encoded(struct.pack("<Q", 0x401000), 0, 0x00, 0)[0] == 0x401000
    assert read_encoded(struct.pack("<I", 0x401000), 0, 0x03, 0)[0] == 0x401000
    # datarel needs a base; funcrel too.
    assert read_encoded(struct.pack("<i", 4), 0, 0x3B, 0, data_base=0x5000)[0] == 0x5004
    with pytest.raises(UnwindError):
        read_encoded(struct.pack("<i", 4), 0, 0x3B, 0)
    with pytest.raises(UnwindError):
        read_encoded(struct.pack("<i", 4), 0, 0x4B, 0)
    # uleb/sleb formats.
    assert read_encoded(b"\x7f", 0, 0x09, 0) == (-1 & (2**64 - 1), 1)
    assert read_encoded(b"\x80\x01", 0, 0x01, 0) == (128, 2)
    with pytest.raises(UnwindError):
        read_encoded(b"\0" * 8, 0, 0x05, 0)  # 0x05 is not a format
    assert encoded_size(0x9B) == 4 and encoded_size(0x00) == 8 and encoded_size(0x01) is None


def test_pack_fixed_range_checks() -> None:
    assert pack_fixed(0x0B, -1) == b"\xff\xff\xff\xff"
    assert pack_fixed(0x03, 0xFFFFFFFF) == b"\xff\xff\xff\xff"
    with pytest.raises(UnwindError):
        pack_fixed(0x0B, 1 << 31)
    with pytest.raises(UnwindError):
        pack_fixed(0x03, -1)
    with pytest.raises(UnwindError):
        pack_fixed(0x01, 1)


# ---------------------------------------------------------------------------------------------------------
# Hand-made .eh_frame records


def _cie_zplr(personality_field: bytes, initial: bytes) -> bytes:
    body = (
        b"\0\0\0\0"  # CIE id
        + b"\x01"  # version
        + b"zPLR\0"
        + b"\x01"  # code align
        + b"\x78"  # data align -8
        + b"\x10"  # return address column 16
        + encode_uleb128(1 + len(personality_field) + 2)
        + b"\x9b"  # personality: indirect|pcrel|sdata4
        + personality_field
        + b"\x1b"  # LSDA encoding
        + b"\x1b"  # FDE encoding
        + initial
    )
    return struct.pack("<I", len(body)) + body


def test_parse_handmade_cie_and_fde() -> None:
    vaddr = 0x10000
    initial = bytes([0x0C, 0x07, 0x08, 0x90, 0x01])  # def_cfa rsp+8; offset r16 at cfa-8
    # Personality field lives at offset 4+4+1+5+3+1+1 = 19 (after the 0x9b byte).
    cie = _cie_zplr(struct.pack("<i", 0x100 - 19), initial)
    cie_len = len(cie)
    fde_off = cie_len
    program = bytes([0x41, 0x0E, 0x10, 0x86, 0x02, 0x00, 0x00])
    pc_field = fde_off + 8
    lsda_field = pc_field + 8 + 1
    fde_body = (
        struct.pack("<I", fde_off + 4)  # CIE pointer: distance back to the CIE from this field
        + struct.pack("<i", 0x5000 - pc_field)
        + struct.pack("<i", 0x40)
        + b"\x04"
        + struct.pack("<i", 0x7000 - lsda_field)
        + program
    )
    fde = struct.pack("<I", len(fde_body)) + fde_body
    data = cie + fde + b"\0\0\0\0"
    (parsed,) = parse_eh_frame(data, vaddr)
    assert parsed.vaddr == vaddr + fde_off
    assert parsed.pc_begin == vaddr + 0x5000
    assert parsed.pc_range == 0x40
    assert parsed.lsda == vaddr + 0x7000
    assert parsed.instructions == program
    c: Cie = parsed.cie
    assert c.vaddr == vaddr and c.version == 1 and c.augmentation == "zPLR"
    assert (c.code_align, c.data_align, c.ra_register) == (1, -8, 16)
    assert (c.fde_encoding, c.lsda_encoding, c.personality_encoding) == (0x1B, 0x1B, 0x9B)
    assert c.personality == vaddr + 0x100
    assert c.initial_instructions == initial
    assert not c.signal_frame
    assert cfa_program_without_trailing_nops(program) == program[:5]
    # DW_CFA_def_cfa_offset 0 ends in a zero byte that is an operand, not padding.
    assert cfa_program_without_trailing_nops(b"\x0e\x00\x00\x00") == b"\x0e\x00"


def test_parse_eh_frame_errors() -> None:
    with pytest.raises(UnwindError, match="64-bit"):
        parse_eh_frame(b"\xff\xff\xff\xff" + b"\0" * 12, 0)
    with pytest.raises(UnwindError):
        parse_eh_frame(struct.pack("<I", 100) + b"\0" * 8, 0)  # length overruns
    # FDE whose CIE pointer lands on another FDE.
    fde = struct.pack("<IIii", 12, 4, 0, 0)
    with pytest.raises(UnwindError):
        parse_eh_frame(fde + b"\0\0\0\0", 0)
    with pytest.raises(UnwindError):
        parse_eh_frame(b"\x01\x00", 0)  # stray bytes
    # Unknown augmentation without 'z' cannot be skipped.
    body = b"\0\0\0\0\x01xy\0\x01\x78\x10"
    with pytest.raises(UnwindError):
        parse_eh_frame(struct.pack("<I", len(body)) + body + b"\0\0\0\0", 0)


def test_decode_cfa_program_all_operand_kinds() -> None:
    program = bytes(
        [0x45]  # advance_loc 5
        + [0x02, 0xFF]  # advance_loc1 255
        + [0x03, 0x34, 0x12]  # advance_loc2 0x1234
        + [0x04, 0x78, 0x56, 0x34, 0x12]  # advance_loc4
        + [0x86, 0x02]  # offset r6, 2
        + [0xC6]  # restore r6
        + [0x05, 0x11, 0x03]  # offset_extended r17, 3
        + [0x09, 0x01, 0x02]  # register
        + [0x0A, 0x0B]  # remember/restore state
        + [0x0F, 0x02, 0x77, 0x08]  # def_cfa_expression {breg7 8}
        + [0x10, 0x06, 0x01, 0x9C]  # expression r6 {...}
        + [0x11, 0x06, 0x7E]  # offset_extended_sf r6, -2
        + [0x13, 0x7F]  # def_cfa_offset_sf -1
        + [0x16, 0x03, 0x00]  # val_expression r3 {}
        + [0x2E, 0x10]  # GNU_args_size 16
        + [0x2F, 0x05, 0x01]  # GNU_negative_offset_extended
        + [0x00]
    )
    insns = decode_cfa_program(program)
    got = [(i.name, i.operands) for i in insns]
    assert got == [
        ("DW_CFA_advance_loc", (5,)),
        ("DW_CFA_advance_loc1", (255,)),
        ("DW_CFA_advance_loc2", (0x1234,)),
        ("DW_CFA_advance_loc4", (0x12345678,)),
        ("DW_CFA_offset", (6, 2)),
        ("DW_CFA_restore", (6,)),
        ("DW_CFA_offset_extended", (17, 3)),
        ("DW_CFA_register", (1, 2)),
        ("DW_CFA_remember_state", ()),
        ("DW_CFA_restore_state", ()),
        ("DW_CFA_def_cfa_expression", (b"\x77\x08",)),
        ("DW_CFA_expression", (6, b"\x9c")),
        ("DW_CFA_offset_extended_sf", (6, -2)),
        ("DW_CFA_def_cfa_offset_sf", (-1,)),
        ("DW_CFA_val_expression", (3, b"")),
        ("DW_CFA_GNU_args_size", (16,)),
        ("DW_CFA_GNU_negative_offset_extended", (5, 1)),
        ("DW_CFA_nop", ()),
    ]
    assert b"".join(program[i.offset : i.end] for i in insns) == program
    # set_loc uses the FDE encoding for its operand size.
    assert decode_cfa_program(b"\x01" + struct.pack("<i", -4), 0x1B)[0].operands == (-4,)
    with pytest.raises(UnwindError):
        decode_cfa_program(b"\x3f")  # unknown opcode
    with pytest.raises(UnwindError):
        decode_cfa_program(b"\x0f\x05\x00")  # block longer than the program


# ---------------------------------------------------------------------------------------------------------
# Real binaries


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parse_matches_pyelftools(built: dict[str, Path], variant: str) -> None:
    _compare_with_pyelftools(built[variant])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parse_eh_frame_hdr_matches_fdes(built: dict[str, Path], variant: str) -> None:
    img = Image.load(built[variant])
    data, addr = img.section(".eh_frame")
    hdr, hdr_addr = img.section(".eh_frame_hdr")
    fdes = parse_eh_frame(data, addr)
    eh_ptr, table = parse_eh_frame_hdr(hdr, hdr_addr)
    assert eh_ptr == addr
    assert table == sorted((f.pc_begin, f.vaddr) for f in fdes)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_personality_and_lsda_pointers(built: dict[str, Path], variant: str) -> None:
    img = Image.load(built[variant])
    fdes = parse_eh_frame(*img.section(".eh_frame"))
    lsda_start, _, lsda_size = img.sections[".gcc_except_table"]
    personality = "__gcc_personality_v0" if variant.startswith("c-") else "__gxx_personality_v0"
    with_lsda = [f for f in fdes if f.lsda is not None]
    assert with_lsda
    for f in with_lsda:
        assert lsda_start <= f.lsda < lsda_start + lsda_size
        assert f.cie.personality is not None
        names = img.symbol_at(f.cie.personality)
        if f.cie.personality_encoding & 0x80:
            assert "DW.ref." + personality in names
        else:
            assert personality in names


def _type_targets(img: Image, lsda) -> list[int]:
    """Decode every referenced type-table entry into the absolute address it designates."""
    fmt = {0x03: "<I", 0x0B: "<i", 0x00: "<Q", 0x04: "<Q", 0x0C: "<q"}[lsda.ttype_encoding & 0x0F]
    out = []
    for off in lsda.type_entry_offsets:
        raw = struct.unpack_from(fmt, lsda.tail, off)[0]
        if raw and lsda.ttype_encoding & 0x70 == 0x10:
            raw += lsda.tail_vaddr + off
        out.append(raw)
    return out


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("cxx")])
def test_parse_lsda_cxx(built: dict[str, Path], variant: str) -> None:
    img = Image.load(built[variant])
    fdes = parse_eh_frame(*img.section(".eh_frame"))
    pie = "nopie" not in variant
    seen_types: set[str] = set()
    saw_spec = False
    for f in fdes:
        if f.lsda is None:
            continue
        lsda = parse_lsda(img.read, f.lsda, f.pc_begin)
        assert lsda.lpstart is None
        assert lsda.call_site_encoding == 0x01  # GCC's uleb128 call-site table
        assert lsda.tail_vaddr >= f.lsda
        prev_end = 0
        for cs in lsda.call_sites:
            assert cs.start >= prev_end  # sorted, non-overlapping
            prev_end = cs.start + cs.length
            assert prev_end <= f.pc_range
            assert 0 <= cs.landing_pad < f.pc_range
        if lsda.ttype_base_in_tail is None:
            assert lsda.type_entry_offsets == ()
            continue
        assert lsda.ttype_encoding == (0x9B if pie else 0x03)
        for target in _type_targets(img, lsda):
            if target == 0:
                seen_types.add("catch(...)")
                continue
            names = img.symbol_at(target)
            assert names, f"type entry {target:#x} designates no symbol"
            seen_types.update(n.removeprefix("DW.ref.") for n in names)
        # Exception-spec lists (negative filters) live at and after the TType base.
        if len(lsda.tail) > lsda.ttype_base_in_tail:
            saw_spec = True
            assert lsda.tail[-1] == 0  # each list is 0-terminated
    assert {"_ZTIi", "_ZTI5MyErr", "_ZTI4Base", "_ZTISt9exception", "catch(...)"} <= seen_types
    assert saw_spec


def test_parse_lsda_handmade_and_read_errors() -> None:
    # LPStart omitted, TType udata4 with offset, call sites udata4, one catch of type 1, a spec list.
    action = bytes([0x01, 0x00, 0x7F, 0x7D])  # (filter 1, end), (filter -1, disp -3 -> first record)
    cs = struct.pack("<IIIB", 0x10, 0x8, 0x30, 1) + struct.pack("<IIIB", 0x20, 0x4, 0x0, 3)
    types = struct.pack("<I", 0xABCDEF)  # entry 1
    spec = bytes([0x01, 0x00])  # list [1]
    after_ttype_uleb = bytes([0x03]) + encode_uleb128(len(cs)) + cs + action + types
    blob = bytes([0xFF, 0x03]) + encode_uleb128(len(after_ttype_uleb)) + after_ttype_uleb + spec + b"\xee" * 4
    base = 0x9000

    def read(addr: int, n: int) -> bytes:
        off = addr - base
        if off < 0 or off + n > len(blob):
            raise IndexError("out of range")
        return blob[off : off + n]

    lsda = parse_lsda(read, base, 0x400000)
    assert lsda.lpstart is None and lsda.ttype_encoding == 0x03 and lsda.call_site_encoding == 0x03
    assert [(c.start, c.length, c.landing_pad, c.action) for c in lsda.call_sites] == [
        (0x10, 8, 0x30, 1),
        (0x20, 4, 0, 3),
    ]
    assert lsda.tail == action + types + spec  # the trailing 0xee bytes are not referenced
    assert lsda.ttype_base_in_tail == len(action) + 4
    assert lsda.type_entry_offsets == (len(action),)
    assert lsda.tail_vaddr == base + len(blob) - 4 - len(lsda.tail)

    # Truncated image: the callback's error becomes UnwindError.
    short = blob[:10]

    def read_short(addr: int, n: int) -> bytes:
        off = addr - base
        if off + n > len(short):
            raise IndexError("out of range")
        return short[off : off + n]

    with pytest.raises(UnwindError):
        parse_lsda(read_short, base, 0x400000)


def test_parse_bin_ls_matches_pyelftools() -> None:
    if not Path("/bin/ls").exists():
        pytest.skip("/bin/ls not present")
    assert _compare_with_pyelftools(Path("/bin/ls")) > 10


def test_parse_python311_all_fdes(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path("/usr/bin/python3.11")
    if not path.exists():
        pytest.skip("/usr/bin/python3.11 not present")
    img = Image.load(path)
    data, addr = img.section(".eh_frame")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fdes = parse_eh_frame(data, addr)
        best = min(best, time.perf_counter() - t0)
    hdr, hdr_addr = img.section(".eh_frame_hdr")
    t0 = time.perf_counter()
    eh_ptr, table = parse_eh_frame_hdr(hdr, hdr_addr)
    hdr_time = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\n[python3.11] {len(fdes)} FDEs parsed in {best * 1000:.1f} ms; hdr in {hdr_time * 1000:.1f} ms"
        )
    assert eh_ptr == addr
    assert table == sorted((f.pc_begin, f.vaddr) for f in fdes)
    # Cross-check a sample with pyelftools (all of them is slow in pyelftools itself).
    ref = _pyelftools_fdes(path)
    assert len(ref) == len(fdes)
    for mine, theirs in list(zip(fdes, ref, strict=True))[::97]:
        assert (mine.pc_begin, mine.pc_range) == (
            theirs.header["initial_location"],
            theirs.header["address_range"],
        )
        decoded = [_as_pyelftools_args(i) for i in decode_cfa_program(mine.instructions)]
        assert decoded == [(int(i.opcode), list(i.args)) for i in theirs.instructions]
