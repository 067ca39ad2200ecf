"""A deliberately small ELF64 little-endian reader for the verifier.

The verifier must not share code with the rewriter (a bug there would otherwise be repeated here and hidden),
and it should trust as little as possible, so it reads the file with `struct` instead of lief or pyelftools.
It reads what the loader reads: program headers (segments, PT_DYNAMIC), the dynamic table, the dynamic symbol
table located through DT_SYMTAB and sized through DT_GNU_HASH / DT_HASH, and RELA relocations. Section headers
are used only to find the non-loaded `.cfiguard` manifest and, for files without PT_DYNAMIC, init arrays.

Two exception types: `UnusableInput` (not a file, not ELF, not x86-64: exit code 2) and `Malformed` (an ELF
x86-64 file whose tables are inconsistent or truncated: the file fails verification, exit code 1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_LOAD, PT_DYNAMIC, PT_GNU_STACK = 1, 2, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
PAGE = 0x1000

DT_NULL, DT_HASH, DT_SYMTAB, DT_RELA, DT_RELASZ, DT_RELAENT = 0, 4, 6, 7, 8, 9
DT_INIT, DT_FINI, DT_TEXTREL, DT_FLAGS = 12, 13, 22, 30
DT_INIT_ARRAY, DT_FINI_ARRAY, DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ = 25, 26, 27, 28
DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, DT_GNU_HASH = 32, 33, 0x6FFFFEF5
DF_TEXTREL = 4
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_RELATIVE = 1, 6, 7, 8
R_X86_64_IRELATIVE = 37
DT_STRTAB, DT_STRSZ, DT_PLTRELSZ, DT_PLTREL, DT_JMPREL = 5, 10, 2, 20, 23
DT_RELRSZ, DT_RELR = 35, 36
STT_FUNC, STT_GNU_IFUNC = 2, 10
EXPORTED_BINDS = (1, 2, 10)  # GLOBAL, WEAK, GNU_UNIQUE


class UnusableInput(Exception):
    """The input cannot be examined at all (missing, unreadable, not ELF, not x86-64)."""


class Malformed(Exception):
    """The input is an x86-64 ELF file, but its headers or tables are inconsistent: it cannot verify."""


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    def pages(self) -> tuple[int, int]:
        """The page-rounded virtual range the kernel maps: protections apply to whole pages."""
        return self.vaddr & -PAGE, (self.vaddr + self.memsz + PAGE - 1) & -PAGE


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int


class Elf:
    """Parsed headers plus the raw bytes. Every read is bounds-checked and raises `Malformed` when it fails."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 64 or data[:4] != b"\x7fELF":
            raise UnusableInput("not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise UnusableInput("not a 64-bit little-endian ELF file (not x86-64)")
        self.data = data
        (
            self.type,
            machine,
            _,
            self.entry,
            phoff,
            shoff,
            _,
            _,
            phentsize,
            phnum,
            shentsize,
            shnum,
            shstrndx,
        ) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
        if machine != 62:
            raise UnusableInput(f"not x86-64 (e_machine {machine})")
        if self.type not in (2, 3):
            raise Malformed(f"ELF type {self.type} is neither an executable nor a shared object")
        if phnum and phentsize != 56:
            raise Malformed(f"unexpected program header size {phentsize}")
        self.segments = [
            Segment(*struct.unpack_from("<IIQQ8xQQ", self._slice(phoff + 56 * i, 56), 0))
            for i in range(phnum)
        ]
        self.loads = [s for s in self.segments if s.type == PT_LOAD]
        for s in self.loads:
            if s.filesz > s.memsz or s.offset + s.filesz > len(data):
                raise Malformed(f"segment at {s.vaddr:#x} extends past the end of the file")
        self.sections = self._sections(shoff, shentsize, shnum, shstrndx)
        self.dynamic = self._dynamic()
        self._relocs: dict[int, tuple[int, int, int]] | None = None

    # ------------------------------------------------------------------------------------------ raw access

    def _slice(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > len(self.data):
            raise Malformed(f"file offset {off:#x}+{n:#x} lies outside the file")
        return self.data[off : off + n]

    def segment_at(self, vaddr: int) -> Segment | None:
        """The PT_LOAD whose file-backed bytes contain `vaddr`."""
        for s in self.loads:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                return s
        return None

    def read(self, vaddr: int, n: int) -> bytes:
        """`n` bytes at `vaddr`, which must lie in the file-backed part of one PT_LOAD."""
        s = self.segment_at(vaddr)
        if s is None or vaddr + n > s.vaddr + s.filesz:
            raise Malformed(f"address {vaddr:#x}+{n:#x} is not backed by a loaded segment")
        return self._slice(s.offset + vaddr - s.vaddr, n)

    def u64(self, vaddr: int) -> int:
        return struct.unpack("<Q", self.read(vaddr, 8))[0]

    # ------------------------------------------------------------------------------------------ sections

    def _sections(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[Section]:
        if shoff == 0:
            return []
        if shentsize != 64:
            raise Malformed(f"unexpected section header size {shentsize}")
        if shnum == 0:  # more than 0xff00 sections: the count is in section 0
            shnum = struct.unpack_from("<Q", self._slice(shoff + 32, 8))[0]
        if shstrndx == 0xFFFF:
            shstrndx = struct.unpack_from("<I", self._slice(shoff + 40, 4))[0]
        if shnum > len(self.data) // 64 or shstrndx >= shnum:
            raise Malformed("section header table is inconsistent")
        raw = [struct.unpack_from("<IIQQQQ", self._slice(shoff + 64 * i, 40)) for i in range(shnum)]
        _, _, _, _, str_off, str_size = raw[shstrndx]
        names = self._slice(str_off, str_size)
        out = []
        for name_off, stype, _, addr, off, size in raw:
            end = names.find(b"\0", name_off)
            name = names[name_off:end].decode("latin-1") if 0 <= name_off < len(names) and end >= 0 else ""
            out.append(Section(name, stype, addr, off, size))
        return out

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def section_bytes(self, sec: Section) -> bytes:
        return self._slice(sec.offset, sec.size)

    # ------------------------------------------------------------------------------------------ dynamic

    def _dynamic(self) -> dict[int, list[int]]:
        dyn = [s for s in self.segments if s.type == PT_DYNAMIC]
        if not dyn:
            return {}
        raw = self._slice(dyn[0].offset, dyn[0].filesz - dyn[0].filesz % 16)
        out: dict[int, list[int]] = {}
        for tag, val in struct.iter_unpack("<qQ", raw):
            if tag == DT_NULL:
                break
            out.setdefault(tag, []).append(val)
        return out

    def dyn(self, tag: int) -> int | None:
        v = self.dynamic.get(tag)
        return v[0] if v else None

    def relocations(self) -> dict[int, tuple[int, int, int]]:
        """{slot address: (type, symbol index, addend)} of every RELA table ld.so applies: DT_RELA and
        DT_JMPREL (.rela.plt). A slot named twice keeps the later entry, as ld.so applies them in order."""
        if self._relocs is not None:
            return self._relocs
        out: dict[int, tuple[int, int, int]] = {}
        if (self.dyn(DT_RELAENT) or 24) != 24:
            raise Malformed("unexpected DT_RELAENT")
        tables = [(self.dyn(DT_RELA), self.dyn(DT_RELASZ))]
        if self.dyn(DT_JMPREL) is not None:
            if self.dyn(DT_PLTREL) not in (None, DT_RELA):
                raise Malformed("DT_PLTREL is not DT_RELA")
            tables.append((self.dyn(DT_JMPREL), self.dyn(DT_PLTRELSZ)))
        for addr, size in tables:
            if addr is None or not size:
                continue
            for off, info, addend in struct.iter_unpack("<QQq", self.read(addr, size - size % 24)):
                out[off] = (info & 0xFFFFFFFF, info >> 32, addend)
        self._relocs = out
        return out

    def relr_slots(self) -> list[int]:
        """Slots relocated by DT_RELR (each gets the load bias added to the value in the file)."""
        addr, size = self.dyn(DT_RELR), self.dyn(DT_RELRSZ)
        if addr is None or not size:
            return []
        out, where = [], 0
        for (w,) in struct.iter_unpack("<Q", self.read(addr, size - size % 8)):
            if not w & 1:
                out.append(w)
                where = w + 8
            else:
                out += [where + 8 * k for k in range(63) if w >> (k + 1) & 1]
                where += 63 * 8
        return out

    def symbol_name(self, index: int) -> str | None:
        """Name of .dynsym entry `index`, through DT_SYMTAB and DT_STRTAB."""
        tab, strtab, strsz = self.dyn(DT_SYMTAB), self.dyn(DT_STRTAB), self.dyn(DT_STRSZ) or 0
        if tab is None or strtab is None or not 0 < index < max(self._symbol_count(), 1):
            return None
        (name,) = struct.unpack("<I", self.read(tab + 24 * index, 4))
        if name >= strsz:
            return None
        raw = self.read(strtab + name, min(256, strsz - name))
        return raw.split(b"\0", 1)[0].decode("latin-1")

    def _symbol_count(self) -> int:
        """Number of .dynsym entries, as the dynamic linker can see them (hash tables; sections may lie)."""
        h = self.dyn(DT_HASH)
        if h is not None:
            return struct.unpack("<I", self.read(h + 4, 4))[0]
        g = self.dyn(DT_GNU_HASH)
        if g is None:
            sec = next((s for s in self.sections if s.type == 11), None)  # SHT_DYNSYM
            return sec.size // 24 if sec else 0
        nbuckets, symoffset, bloom_size, _ = struct.unpack("<IIII", self.read(g, 16))
        buckets_at = g + 16 + 8 * bloom_size
        buckets = struct.unpack(f"<{nbuckets}I", self.read(buckets_at, 4 * nbuckets))
        top = max(buckets, default=0)
        if top < symoffset:
            return symoffset
        chain_at = buckets_at + 4 * nbuckets
        while not struct.unpack("<I", self.read(chain_at + 4 * (top - symoffset), 4))[0] & 1:
            top += 1
        return top + 1

    def dynsyms(self) -> list[tuple[int, int, int, int]]:
        """(value, info, other, shndx) of every dynamic symbol."""
        tab = self.dyn(DT_SYMTAB)
        if tab is None:
            return []
        n = self._symbol_count()
        raw = self.read(tab, 24 * n)
        return [(v, info, other, shndx) for _, info, other, shndx, v, _ in struct.iter_unpack("<IBBHQQ", raw)]

    def exported_functions(self) -> list[int]:
        """Addresses of defined, visible FUNC/IFUNC symbols: other modules may call them without a label."""
        out = []
        for value, info, other, shndx in self.dynsyms():
            if (info & 15) in (STT_FUNC, STT_GNU_IFUNC) and info >> 4 in EXPORTED_BINDS:
                if shndx != 0 and (other & 3) in (0, 3) and value:
                    out.append(value)
        return out

    def init_functions(self) -> tuple[list[tuple[str, int]], list[tuple[int, str]]]:
        """(entries, problems). Entries: (what, address) of everything ld.so calls in this module: DT_INIT,
        DT_FINI, every init/fini/preinit array slot, as the relocations leave it, and every IRELATIVE
        resolver. Problems: (slot, reason) for an array slot whose run-time value the model cannot know."""
        out = [(n, v) for n, t in (("DT_INIT", DT_INIT), ("DT_FINI", DT_FINI)) if (v := self.dyn(t))]
        problems: list[tuple[int, str]] = []
        tags = {
            "DT_INIT_ARRAY": (DT_INIT_ARRAY, DT_INIT_ARRAYSZ),
            "DT_FINI_ARRAY": (DT_FINI_ARRAY, DT_FINI_ARRAYSZ),
        }
        tags["DT_PREINIT_ARRAY"] = (DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ)
        arrays = [(name, self.dyn(a), self.dyn(sz)) for name, (a, sz) in tags.items()]
        if not self.dynamic:  # static executable: the sections are all there is
            for name in (".init_array", ".fini_array", ".preinit_array"):
                if (sec := self.section(name)) is not None:
                    arrays.append((name, sec.addr, sec.size))
        relocs = self.relocations()
        for slot, (rtype, _, addend) in sorted(relocs.items()):
            if rtype == R_X86_64_IRELATIVE:  # ld.so calls the resolver while relocating
                out.append((f"IRELATIVE resolver for {slot:#x}", addend))
        syms: list | None = None
        for name, addr, size in arrays:
            if addr is None or not size:
                continue
            for k in range(size // 8):
                slot = addr + 8 * k
                value = self.u64(slot)
                if slot in relocs:
                    rtype, sym, addend = relocs[slot]
                    if rtype == R_X86_64_RELATIVE or (sym == 0 and rtype in (R_X86_64_64, R_X86_64_GLOB_DAT)):
                        value = addend  # module base + addend (symbol 0 is no import)
                    elif rtype in (R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT):
                        syms = self.dynsyms() if syms is None else syms
                        if sym >= len(syms):
                            problems.append((slot, f"{name}[{k}] is relocated against a missing symbol"))
                            continue
                        if syms[sym][3] == 0:
                            continue  # an imported function: not this module's code
                        value = syms[sym][0] + (addend if rtype != R_X86_64_JUMP_SLOT else 0)
                    else:
                        problems.append((slot, f"{name}[{k}] is set by relocation type {rtype} at load time"))
                        continue
                if value not in (0, 0xFFFFFFFFFFFFFFFF):
                    out.append((f"{name}[{k}]", value))
        return out, problems


def load(path: str) -> Elf:
    """Read and parse `path`. Raises UnusableInput for anything that is not a readable x86-64 ELF file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UnusableInput(f"cannot read: {e.strerror or e}") from None
    return Elf(data)
