"""Just enough ELF reading for the benchmarks: program headers, the `.cfiguard` manifest, guard locations.

Why not import cfiguard's own loader: the benchmarks measure cfiguard from the outside (as a user would, through
the CLI), and the dynamic counts must classify addresses independently of the rewriter's data structures, the
same way the verifier does. pyelftools (already a cfiguard dependency) reads symbols and sections.
"""

from __future__ import annotations

import bisect
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

PT_LOAD, PF_X = 1, 1
MAGIC = b"CFIGUARD"

# The fixed parts of the guard templates of docs/guards.md.
COMMON_CHECK = re.compile(rb"\x4c\x8d\x15....\x4d\x29\xd3\x49\x81\xfb", re.DOTALL)
COMMON_LEN = 38  # the common check of docs/guards.md (jae rel32 to the cross-module stub)
TEST_OFFSET = (
    19  # lea(7) + sub(3) + cmp(7) + jae(2): the label-table lookup, reached only for in-module targets
)
RET_LOAD = bytes.fromhex("4c8b1c24")  # mov r11, [rsp]
RET_PRE = bytes.fromhex("4c895c24f8 4c895424f0") + RET_LOAD  # save r10/r11 below rsp, load the return address
RET_POST = bytes.fromhex("4c8b5c24f8 4c8b5424f0")
CALL_POST = bytes.fromhex("4d01d3 41ffd3")
TAIL_POST = bytes.fromhex("4d01d3 41ffe3")
PRES_PRE = bytes.fromhex("488d642480 4153 4152 9c")
PRES_POST = bytes.fromhex("9d 415a 415b 488da42480000000")
PRES_NF_PRE = bytes.fromhex("488d642480 4153 4152")
PRES_NF_POST = bytes.fromhex("415a 415b 488da42480000000")

# Guard kinds, named as cfiguard/rewrite/guards.py names its templates.
KINDS = ("ret", "ret_scratch", "call", "tailjmp", "preserve", "preserve_nf")


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)


def load_segments(path: str | Path) -> list[Segment]:
    """PT_LOAD headers of an ELF64 little-endian file (raises ValueError for anything else)."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        if len(ehdr) < 64 or ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
            raise ValueError(f"{path}: not an ELF64 little-endian file")
        phoff, phentsize, phnum = struct.unpack_from("<Q", ehdr, 32)[0], *struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    segs = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == PT_LOAD:
            segs.append(Segment(p_vaddr, p_memsz, p_offset, p_filesz, p_flags))
    return segs


def code_bytes(path: str | Path) -> int:
    """Bytes of executable PT_LOAD segments: the 'code size' that MB/s figures are based on."""
    return sum(s.filesz for s in load_segments(path) if s.executable)


def text_bytes(path: str | Path) -> int:
    """Bytes of SHF_EXECINSTR sections (0 if the file has no section headers): code without rodata that some
    linkers put into the executable segment."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return sum(
            s["sh_size"] for s in elf.iter_sections() if s["sh_flags"] & 0x4 and s["sh_type"] != "SHT_NOBITS"
        )


def is_elf_with_code(path: str | Path) -> bool:
    """True for a readable ELF64 file with at least one executable segment."""
    try:
        return any(s.executable for s in load_segments(path))
    except (OSError, ValueError, struct.error):
        return False


def read_manifest(path: str | Path) -> dict | None:
    """The JSON manifest of the `.cfiguard` section (after the 8-byte magic), or None if absent."""
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".cfiguard")
        if sec is None:
            return None
        data = sec.data()
    return json.loads(data[len(MAGIC) :]) if data.startswith(MAGIC) else None


class Image:
    """Bytes of a file addressed by link-time virtual address."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.data = Path(path).read_bytes()
        self.segments = load_segments(path)

    def read(self, vaddr: int, size: int) -> bytes:
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                off = s.offset + vaddr - s.vaddr
                return self.data[off : off + size]
        return b""

    def exec_ranges(self) -> list[tuple[int, int]]:
        return [(s.vaddr, s.vaddr + s.memsz) for s in self.segments if s.executable]


@dataclass
class Guard:
    """One inline guard found in the new code. [start, end) covers only the instructions the guard adds (the
    operand load and the final branch replace the original instruction and are not counted as overhead)."""

    kind: str  # one of KINDS
    check: int  # address of the common check's `lea r10`
    start: int
    end: int

    @property
    def test(self) -> int:
        return self.check + TEST_OFFSET


@dataclass
class GuardMap:
    guards: list[Guard] = field(default_factory=list)
    unknown: int = 0  # common checks whose surrounding template was not recognised

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.guards:
            out[g.kind] = out.get(g.kind, 0) + 1
        return out


def find_guards(hardened: Image, manifest: dict) -> GuardMap:
    """Locate every guard in the new code by its fixed byte template (docs/guards.md)."""
    lo, hi = manifest["code"]
    code = hardened.read(lo, hi - lo)
    gm = GuardMap()
    for m in COMMON_CHECK.finditer(code):
        pos = m.start()
        after = pos + COMMON_LEN
        va = lo + pos

        def follows(b: bytes, at: int = after) -> bool:
            return code[at : at + len(b)] == b

        def precedes(b: bytes, at: int = pos) -> bool:
            return code[at - len(b) : at] == b

        if precedes(RET_PRE) and follows(RET_POST):
            gm.guards.append(Guard("ret", va, va - len(RET_PRE), va + COMMON_LEN + len(RET_POST)))
        elif precedes(RET_LOAD) and code[after : after + 1] in (b"\xc3", b"\xc2"):
            gm.guards.append(Guard("ret_scratch", va, va - len(RET_LOAD), va + COMMON_LEN))
        elif follows(CALL_POST):
            gm.guards.append(Guard("call", va, va, va + COMMON_LEN + 3))
        elif follows(TAIL_POST):
            gm.guards.append(Guard("tailjmp", va, va, va + COMMON_LEN + 3))
        elif follows(PRES_POST):
            pre = code.rfind(PRES_PRE, max(0, pos - 32), pos)
            start = lo + pre if pre >= 0 else va
            gm.guards.append(Guard("preserve", va, start, va + COMMON_LEN + len(PRES_POST)))
        elif follows(PRES_NF_POST):
            pre = code.rfind(PRES_NF_PRE, max(0, pos - 32), pos)
            start = lo + pre if pre >= 0 else va
            gm.guards.append(Guard("preserve_nf", va, start, va + COMMON_LEN + len(PRES_NF_POST)))
        else:
            gm.unknown += 1
    gm.guards.sort(key=lambda g: g.start)
    return gm


class Symbols:
    """Function symbols (symtab and dynsym) of the original file, to name hot forwarding jumps: an entry is
    named `f`, a jump-table target inside a function `f+0x1c`."""

    def __init__(self, path: str | Path) -> None:
        syms: dict[int, tuple[int, str]] = {}
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for secname in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(secname)
                if sec is None:
                    continue
                for sym in sec.iter_symbols():
                    if sym["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC") and sym["st_value"]:
                        syms.setdefault(sym["st_value"], (sym["st_size"], sym.name))
        self._addrs = sorted(syms)
        self._syms = syms

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i >= 0:
            start = self._addrs[i]
            size, name = self._syms[start]
            if addr == start:
                return name
            if addr < start + max(size, 1):
                return f"{name}+0x{addr - start:x}"
        return f"0x{addr:x}"
