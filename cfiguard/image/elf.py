"""ELF loading: the facts about an input binary that every later stage needs, as plain data.

lief does the parsing; everything it yields is copied into small frozen dataclasses here so that the rest of
the pipeline never touches lief objects (and tests can build an `Image` by hand). Errors from lief are wrapped
into `InputError` at this boundary.
"""

from __future__ import annotations

import os
import struct
import warnings
from bisect import bisect_right
from dataclasses import dataclass, field

from cfiguard.errors import AlreadyHardenedError, InputError

PF_X, PF_W, PF_R = 1, 2, 4
MANIFEST_SECTION = ".cfiguard"
MANIFEST_MAGIC = b"CFIGUARD"

R_X86_64_64 = 1
R_X86_64_GLOB_DAT = 6
R_X86_64_JUMP_SLOT = 7
R_X86_64_RELATIVE = 8
R_X86_64_IRELATIVE = 37


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int  # PF_* bits

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)

    @property
    def writable(self) -> bool:
        return bool(self.flags & PF_W)


@dataclass(frozen=True)
class Section:
    name: str
    vaddr: int
    size: int
    offset: int
    executable: bool
    allocated: bool

    @property
    def end(self) -> int:
        return self.vaddr + self.size


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int
    exported: bool  # a defined global/weak function in .dynsym: callable from other modules


@dataclass(frozen=True)
class Relocation:
    addr: int
    type: int
    addend: int
    symbol: str | None
    symbol_value: int  # 0 when the symbol is undefined (an import)


@dataclass(frozen=True)
class Image:
    """A loaded ELF file: its bytes, its layout and its symbolic facts. Addresses are link-time vaddrs."""

    path: str
    data: bytes
    kind: str  # "exec" (non-PIE), "pie" or "shared"
    entry: int
    segments: tuple[Segment, ...]
    sections: tuple[Section, ...]
    symbols: tuple[Symbol, ...]
    relocations: tuple[Relocation, ...]
    init_functions: tuple[int, ...]  # DT_INIT, DT_FINI, and the entries of the init/fini/preinit arrays
    eh_frame_hdr: int | None  # vaddr of PT_GNU_EH_FRAME
    mode: int  # st_mode permission bits of the input file
    _load_starts: tuple[int, ...] = field(default=(), repr=False)

    @property
    def is_pic(self) -> bool:
        return self.kind in ("pie", "shared")

    @property
    def code_segments(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.executable)

    def segment_at(self, addr: int) -> Segment | None:
        i = bisect_right(self._load_starts, addr) - 1
        if i >= 0:
            seg = self.segments[i]
            if seg.vaddr <= addr < seg.end:
                return seg
        return None

    def is_code(self, addr: int) -> bool:
        seg = self.segment_at(addr)
        return seg is not None and seg.executable

    def read(self, addr: int, size: int) -> bytes:
        """Bytes of the loaded image at `addr` (zero-filled .bss tails included). Raises InputError if unmapped."""
        seg = self.segment_at(addr)
        if seg is None or addr + size > seg.end:
            raise InputError(f"{self.path}: address {addr:#x}+{size} is not mapped")
        start = addr - seg.vaddr
        chunk = b""
        if start < seg.filesz:
            chunk = self.data[seg.offset + start : seg.offset + min(seg.filesz, start + size)]
        return chunk + bytes(size - len(chunk))

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None


def _check_header(path: str, data: bytes) -> None:
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise InputError(f"{path}: not an ELF file")
    if data[4] != 2:
        raise InputError(f"{path}: 32-bit ELF is not supported (only x86-64)")
    if data[5] != 1:
        raise InputError(f"{path}: big-endian ELF is not supported")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 62:
        raise InputError(f"{path}: not an x86-64 ELF (e_machine={e_machine})")
    if e_type == 1:
        raise InputError(f"{path}: relocatable object (.o): link it first")
    if e_type == 4:
        raise InputError(f"{path}: core file")
    if e_type not in (2, 3):
        raise InputError(f"{path}: unsupported ELF type {e_type}")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    if phentsize != 56 or phnum == 0 or phoff + phnum * 56 > len(data):
        raise InputError(f"{path}: corrupt program header table")
    if shoff and (shentsize != 64 or shoff + shnum * 64 > len(data) or (shnum and shstrndx >= shnum)):
        raise InputError(f"{path}: corrupt section header table")


def load_image(path: str) -> Image:
    """Parse `path` into an Image, refusing clearly what cfiguard does not support."""
    import lief

    try:
        with open(path, "rb") as f:
            data = f.read()
        mode = os.stat(path).st_mode & 0o7777
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None
    _check_header(path, data)
    lief.logging.disable()
    with warnings.catch_warnings():
        # lief warns (RuntimeWarning) on enum values it does not know, e.g. in corrupt headers.
        warnings.simplefilter("ignore")
        try:
            binary = lief.ELF.parse(path)
        except Exception as e:  # lief raises assorted errors on corrupt input
            raise InputError(f"{path}: corrupt ELF ({e})") from None
        if binary is None:
            raise InputError(f"{path}: corrupt ELF (unparsable headers)")
        return _image_from_lief(path, data, mode, binary)


def _image_from_lief(path: str, data: bytes, mode: int, binary) -> Image:
    import lief

    seg_t = lief.ELF.Segment.TYPE
    segments = []
    eh_frame_hdr = None
    for s in binary.segments:
        if s.type == seg_t.LOAD:
            flags = int(s.flags)
            if s.file_offset + s.physical_size > len(data):
                raise InputError(
                    f"{path}: truncated ELF (segment at {s.virtual_address:#x} extends past EOF)"
                )
            segments.append(Segment(s.virtual_address, s.virtual_size, s.file_offset, s.physical_size, flags))
        elif s.type == seg_t.GNU_EH_FRAME:
            eh_frame_hdr = s.virtual_address
    segments.sort(key=lambda s: s.vaddr)
    if not any(s.executable for s in segments):
        raise InputError(f"{path}: no executable segment")

    sections = tuple(
        Section(
            s.name,
            s.virtual_address,
            s.size,
            s.offset,
            bool(int(s.flags) & 0x4),
            bool(int(s.flags) & 0x2),
        )
        for s in binary.sections
    )
    if any(s.name == MANIFEST_SECTION for s in sections):
        raise AlreadyHardenedError(f"{path}: already hardened by cfiguard (has a {MANIFEST_SECTION} section)")
    _refuse_unsupported(path, sections)

    is_dyn = binary.header.file_type == lief.ELF.Header.FILE_TYPE.DYN
    has_interp = binary.has_interpreter
    if is_dyn:
        kind = "pie" if has_interp or _has_pie_flag(binary) else "shared"
    else:
        kind = "exec"
    if not binary.has_interpreter and not is_dyn:
        raise InputError(f"{path}: statically linked executables are not supported")

    symbols = _symbols(binary)
    _refuse_runtimes(path, symbols, data)
    relocations = tuple(
        Relocation(
            r.address,
            _reloc_type(r),
            r.addend,
            r.symbol.name if r.has_symbol else None,
            r.symbol.value if r.has_symbol else 0,
        )
        for r in binary.relocations
    )
    image = Image(
        path=path,
        data=data,
        kind=kind,
        entry=binary.entrypoint if kind != "shared" else 0,
        segments=tuple(segments),
        sections=sections,
        symbols=symbols,
        relocations=relocations,
        init_functions=(),
        eh_frame_hdr=eh_frame_hdr,
        mode=mode,
        _load_starts=tuple(s.vaddr for s in segments),
    )
    inits = _init_functions(binary, image)
    return Image(**{**image.__dict__, "init_functions": inits})


def _reloc_type(r) -> int:
    # lief 0.16+ encodes the architecture in the high bits of the enum value.
    return int(r.type) & 0xFFFF


def _has_pie_flag(binary) -> bool:
    import lief

    try:
        entry = binary.get(lief.ELF.DynamicEntry.TAG.FLAGS_1)
        return entry is not None and bool(entry.value & 0x08000000)
    except Exception:
        return False


def _refuse_unsupported(path: str, sections: tuple[Section, ...]) -> None:
    names = {s.name for s in sections}
    if ".gopclntab" in names or ".go.buildinfo" in names or ".note.go.buildid" in names:
        raise InputError(f"{path}: Go binaries are not supported (own runtime, stack switching and unwinder)")
    if any(n.startswith("UPX") for n in names):
        raise InputError(f"{path}: packed binary (UPX): its code only exists at run time")


def _refuse_runtimes(path: str, symbols: tuple[Symbol, ...], data: bytes) -> None:
    """Language runtimes that find frames by return address, or keep data right before code: relocating their
    functions would break them at run time (where verification cannot see it), so they are refused up front.
    - OCaml native code: the GC walks the stack and looks each return address up in `caml_frametable`
      (a hardened GC-heavy program segfaulted); detected by the runtime's symbols, or in a stripped file by
      the name of Std_exit's code (`camlStd_exit__...`), which every native program links.
    - GHC: info tables sit right before each closure's entry code (tables-next-to-code); detected by the RTS's
      `stg_` symbols or its option-parsing messages (pandoc is stripped)."""
    names = {s.name for s in symbols}
    if "caml_frametable" in names or "caml_start_program" in names or b"camlStd_exit__" in data:
        raise InputError(
            f"{path}: OCaml native code is not supported (its GC finds frames by return address in "
            "caml_frametable; moved code would not be found)"
        )
    if any(n.startswith("stg_") for n in names) or b"Most RTS options are disabled" in data:
        raise InputError(
            f"{path}: GHC-compiled (Haskell) code is not supported (info tables next to code, own calling "
            "convention)"
        )


def _symbols(binary) -> tuple[Symbol, ...]:
    import lief

    func = lief.ELF.Symbol.TYPE.FUNC
    gnu_ifunc = lief.ELF.Symbol.TYPE.GNU_IFUNC
    local = lief.ELF.Symbol.BINDING.LOCAL
    out: dict[tuple[str, int], Symbol] = {}
    for sym in binary.dynamic_symbols:
        if sym.type in (func, gnu_ifunc) and sym.value and sym.shndx != 0:
            exported = sym.binding != local
            out[(sym.name, sym.value)] = Symbol(sym.name, sym.value, sym.size, exported)
    for sym in binary.symtab_symbols:
        if (
            sym.type in (func, gnu_ifunc)
            and sym.value
            and sym.shndx != 0
            and (sym.name, sym.value) not in out
        ):
            out[(sym.name, sym.value)] = Symbol(sym.name, sym.value, sym.size, False)
    return tuple(sorted(out.values(), key=lambda s: (s.addr, s.name)))


def _init_functions(binary, image: Image) -> tuple[int, ...]:
    """DT_INIT/DT_FINI and every init/fini/preinit array entry, resolving RELATIVE relocations for PIC files."""
    import lief

    tag = lief.ELF.DynamicEntry.TAG
    relative = {r.addr: r.addend for r in image.relocations if r.type in (R_X86_64_RELATIVE,)}
    out: list[int] = []
    entries = {e.tag: e.value for e in binary.dynamic_entries}
    for t in (tag.INIT, tag.FINI):
        if entries.get(t):
            out.append(entries[t])
    for arr, size in (
        (tag.INIT_ARRAY, tag.INIT_ARRAYSZ),
        (tag.FINI_ARRAY, tag.FINI_ARRAYSZ),
        (tag.PREINIT_ARRAY, tag.PREINIT_ARRAYSZ),
    ):
        base, n = entries.get(arr), entries.get(size, 0)
        if not base:
            continue
        for slot in range(base, base + n, 8):
            try:
                value = relative.get(slot) or image.read_u64(slot)
            except InputError:
                continue
            if value not in (0, 0xFFFFFFFFFFFFFFFF) and image.is_code(value):
                out.append(value)
    return tuple(sorted(set(out)))
