"""ELF writer: the only place where a `Rewritten` becomes a file.

Append-only layout, written by hand instead of through lief's builder. lief's `relocate_phdr_table` placed
the new program header table on top of `.strtab` in unstripped files (a corrupt output), and its builder is
slow on large inputs. Appending keeps every original byte at its original offset:

    [original file, patched in place][zero padding][new code][rodata + new PHDR table][label table]
    [.cfiguard manifest][.shstrtab copy][section header table]

Every new PT_LOAD has `p_vaddr - p_offset == base` (the first PT_LOAD's difference), so whether a kernel
derives AT_PHDR from the first segment (old kernels) or from the segment holding `e_phoff` (newer ones), it
finds the new table. PT_LOAD entries stay sorted by address; PT_PHDR stays first. The output is written to a
temporary file in the destination directory, given the input's mode bits and renamed into place, so an
interrupted run never leaves a partial file at the output path.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

from cfiguard.errors import OutputError, RewriteError
from cfiguard.image.elf import MANIFEST_MAGIC, MANIFEST_SECTION, PF_R, PF_X, Image
from cfiguard.rewrite.rewriter import PAGE, Rewritten

PT_LOAD, PT_PHDR, PT_GNU_EH_FRAME = 1, 6, 0x6474E550
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
SHT_PROGBITS = 1
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4


def _align(v: int, a: int) -> int:
    return (v + a - 1) & -a


class ElfWriter:
    def __init__(self, image: Image) -> None:
        self.image = image
        data = image.data
        (self.phoff,) = struct.unpack_from("<Q", data, 0x20)
        (self.shoff,) = struct.unpack_from("<Q", data, 0x28)
        self.phentsize, self.phnum, self.shentsize, self.shnum, self.shstrndx = struct.unpack_from(
            "<HHHHH", data, 0x36
        )
        if self.phentsize != PHDR.size:
            raise RewriteError(f"{image.path}: unexpected program header size {self.phentsize}")
        self.phdrs = [list(PHDR.unpack_from(data, self.phoff + k * PHDR.size)) for k in range(self.phnum)]
        loads = [p for p in self.phdrs if p[0] == PT_LOAD]
        self.base = loads[0][3] - loads[0][2]  # p_vaddr - p_offset of the first PT_LOAD

    def first_free_vaddr(self) -> int:
        """Where new segments start: above every existing segment and above the end of the file."""
        end = max(p[3] + p[6] for p in self.phdrs if p[0] == PT_LOAD)
        end = max(end, self.base + len(self.image.data))
        return _align(end, PAGE)

    def rodata_reserve(self) -> int:
        """Bytes the writer appends to the read-only data segment: the new program header table."""
        return 8 + (self.phnum + 3) * PHDR.size

    def write(self, out_path: str, rw: Rewritten, mode: int) -> None:
        write_atomically(out_path, self.build(rw), mode)

    def build(self, rw: Rewritten) -> bytes:
        image = self.image
        out = bytearray(image.data)
        for vaddr, patch in rw.patches:
            off = self._offset(vaddr, len(patch))
            out[off : off + len(patch)] = patch

        def place(vaddr: int, blob: bytes) -> int:
            off = vaddr - self.base
            if off < len(out):
                raise RewriteError(f"new segment at {vaddr:#x} would overlap the input file")
            out.extend(bytes(off - len(out)))
            out.extend(blob)
            return off

        new_loads = [(rw.code_vaddr, place(rw.code_vaddr, rw.code), len(rw.code), PF_R | PF_X)]
        # Read-only data segment: LSDAs, .eh_frame, .eh_frame_hdr, then the new program header table.
        phdr_vaddr = _align(rw.rodata_vaddr + len(rw.rodata), 8)
        n_new = len(new_loads) + 2
        phdr_size = (self.phnum + n_new) * PHDR.size
        ro_size = phdr_vaddr - rw.rodata_vaddr + phdr_size
        if _align(rw.rodata_vaddr + ro_size, PAGE) > rw.table_vaddr:
            raise RewriteError("read-only data overlaps the label table")
        ro_off = place(rw.rodata_vaddr, rw.rodata + bytes(ro_size - len(rw.rodata)))
        new_loads.append((rw.rodata_vaddr, ro_off, ro_size, PF_R))
        new_loads.append((rw.table_vaddr, place(rw.table_vaddr, rw.table), len(rw.table), PF_R))

        phdrs = [list(p) for p in self.phdrs]
        for p in phdrs:
            if p[0] == PT_PHDR:
                p[2], p[3], p[4], p[5], p[6] = (
                    phdr_vaddr - self.base,
                    phdr_vaddr,
                    phdr_vaddr,
                    phdr_size,
                    phdr_size,
                )
            elif p[0] == PT_GNU_EH_FRAME and rw.eh_frame_hdr is not None:
                vaddr, size = rw.eh_frame_hdr
                p[2], p[3], p[4], p[5], p[6] = vaddr - self.base, vaddr, vaddr, size, size
        last_load = max(k for k, p in enumerate(phdrs) if p[0] == PT_LOAD)
        for k, (vaddr, off, size, flags) in enumerate(new_loads):
            phdrs.insert(last_load + 1 + k, [PT_LOAD, flags, off, vaddr, vaddr, size, size, PAGE])
        table = b"".join(PHDR.pack(*p) for p in phdrs)
        assert len(table) == phdr_size
        ph_off = phdr_vaddr - self.base
        out[ph_off : ph_off + phdr_size] = table
        struct.pack_into("<Q", out, 0x20, ph_off)
        struct.pack_into("<H", out, 0x38, len(phdrs))

        self._append_sections(out, rw)
        return bytes(out)

    def _offset(self, vaddr: int, size: int) -> int:
        for p in self.phdrs:
            if p[0] == PT_LOAD and p[3] <= vaddr and vaddr + size <= p[3] + p[5]:
                return p[2] + vaddr - p[3]
        raise RewriteError(f"patch at {vaddr:#x} is outside the file-backed part of a segment")

    def _append_sections(self, out: bytearray, rw: Rewritten) -> None:
        """Copy the section headers and .shstrtab to the end of the file and describe what was added.

        Sections matter to tools, not to the loader: `.cfiguard` carries the manifest; `.cfiguard.text` and
        `.cfiguard.labels` name the new code and the label table for objdump and gdb; `.eh_frame` and
        `.eh_frame_hdr` are pointed at the new, complete copies (the old ones are renamed `*.orig`), so gdb and
        perf unwind through relocated frames.
        """
        data = self.image.data
        manifest = MANIFEST_MAGIC + json.dumps(rw.manifest, sort_keys=True).encode()
        shdrs = []
        if self.shoff and self.shnum and self.shentsize == SHDR.size and self.shstrndx < self.shnum:
            shdrs = [list(SHDR.unpack_from(data, self.shoff + k * SHDR.size)) for k in range(self.shnum)]
        if shdrs:
            shstrndx = self.shstrndx
            s = shdrs[shstrndx]
            strtab = bytearray(data[s[4] : s[4] + s[5]])
        else:  # no section headers (sstrip'ed input): a null entry and .shstrtab
            shdrs = [[0] * 10, [1, 3, 0, 0, 0, 0, 0, 0, 1, 0]]
            strtab = bytearray(b"\0.shstrtab\0")
            shstrndx = 1

        def name(text: str) -> int:
            strtab.extend(text.encode() + b"\0")
            return len(strtab) - len(text) - 1

        def section_name(sh: list[int]) -> bytes:
            end = strtab.find(b"\0", sh[0])
            return bytes(strtab[sh[0] : end])

        if rw.eh_frame is not None:
            for sh in shdrs:
                if section_name(sh) in (b".eh_frame", b".eh_frame_hdr"):
                    sh[0] = name(section_name(sh).decode() + ".orig")
        man_off = len(out)
        out.extend(manifest)
        shdrs.append([name(MANIFEST_SECTION), SHT_PROGBITS, 0, 0, man_off, len(manifest), 0, 0, 1, 0])
        alloc = [(".cfiguard.text", rw.code_vaddr, len(rw.code), SHF_ALLOC | SHF_EXECINSTR, 16)]
        alloc.append((".cfiguard.labels", rw.table_vaddr, len(rw.table), SHF_ALLOC, 1))
        if rw.eh_frame is not None and rw.eh_frame_hdr is not None:
            alloc.append((".eh_frame", *rw.eh_frame, SHF_ALLOC, 8))
            alloc.append((".eh_frame_hdr", *rw.eh_frame_hdr, SHF_ALLOC, 4))
        for sec_name, vaddr, size, flags, align in alloc:
            shdrs.append(
                [name(sec_name), SHT_PROGBITS, flags, vaddr, vaddr - self.base, size, 0, 0, align, 0]
            )
        str_off = len(out)
        out.extend(strtab)
        shdrs[shstrndx][4], shdrs[shstrndx][5] = str_off, len(strtab)
        sh_off = _align(len(out), 8)
        out.extend(bytes(sh_off - len(out)))
        out.extend(b"".join(SHDR.pack(*s) for s in shdrs))
        struct.pack_into("<Q", out, 0x28, sh_off)
        struct.pack_into("<HHH", out, 0x3A, SHDR.size, len(shdrs), shstrndx)


def write_atomically(out_path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise OutputError(f"{out_path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cfiguard-", dir=directory)
    except OSError as e:
        raise OutputError(f"{out_path}: cannot write in {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"{out_path}: {e.strerror}") from None
        raise
