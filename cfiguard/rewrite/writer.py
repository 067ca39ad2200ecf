"""ELF writer: the only place where a `Rewritten` becomes a file.

Mechanics (measured, see DESIGN-NOTES section 7): the program header table is moved with
`relocate_phdr_table(SEGMENT_GAP)` (falling back to BSS_END) before segments are added, because lief's default
PIE_SHIFT breaks shared libraries. New PT_LOAD segments get explicit addresses after the highest existing one:
code (R+X), read-only data (LSDAs, .eh_frame, .eh_frame_hdr) and the label table (R). The output is written to
a temporary file in the destination directory, given the input's mode bits, and renamed into place, so an
interrupted run never leaves a partial file at the output path.
"""

from __future__ import annotations

import json
import os
import tempfile

from cfiguard.errors import OutputError, RewriteError
from cfiguard.image.elf import MANIFEST_MAGIC, MANIFEST_SECTION
from cfiguard.rewrite.rewriter import PAGE, Rewritten


class ElfWriter:
    def __init__(self, path: str) -> None:
        import lief

        lief.logging.disable()
        self._lief = lief
        self.binary = lief.ELF.parse(path)
        if self.binary is None:
            raise RewriteError(f"{path}: lief could not re-parse the input")
        reloc = lief.ELF.Binary.PHDR_RELOC
        if not self.binary.relocate_phdr_table(reloc.SEGMENT_GAP):
            if not self.binary.relocate_phdr_table(reloc.BSS_END):
                raise RewriteError(f"{path}: no room to grow the program header table")

    def first_free_vaddr(self) -> int:
        end = max(s.virtual_address + s.virtual_size for s in self.binary.segments)
        return (end + PAGE - 1) & -PAGE

    def _add_segment(self, vaddr: int, content: bytes, flags) -> None:
        seg_t = self._lief.ELF.Segment
        s = seg_t()
        s.type = seg_t.TYPE.LOAD
        s.flags = flags
        s.alignment = PAGE
        s.virtual_address = vaddr
        s.content = memoryview(content)
        added = self.binary.add(s)
        if added is None or added.virtual_address != vaddr:
            raise RewriteError(f"lief placed a new segment at an unexpected address (wanted {vaddr:#x})")

    def write(self, out_path: str, rw: Rewritten, mode: int) -> None:
        flags = self._lief.ELF.Segment.FLAGS
        self._add_segment(rw.code_vaddr, rw.code, flags.R | flags.X)
        if rw.rodata:
            self._add_segment(rw.rodata_vaddr, rw.rodata, flags.R)
        self._add_segment(rw.table_vaddr, rw.table, flags.R)
        for vaddr, data in rw.patches:
            self.binary.patch_address(vaddr, list(data))
        if rw.eh_frame_hdr is not None:
            vaddr, size = rw.eh_frame_hdr
            for seg in self.binary.segments:
                if seg.type == self._lief.ELF.Segment.TYPE.GNU_EH_FRAME:
                    seg.virtual_address = vaddr
                    seg.physical_address = vaddr
                    seg.file_offset = self.binary.virtual_address_to_offset(vaddr)
                    seg.physical_size = size
                    seg.virtual_size = size
        sec = self._lief.ELF.Section(MANIFEST_SECTION)
        sec.content = list(MANIFEST_MAGIC + json.dumps(rw.manifest, sort_keys=True).encode())
        self.binary.add(sec, loaded=False)
        write_atomically(out_path, self._build(), mode)

    def _build(self) -> bytes:
        builder = self._lief.ELF.Builder(self.binary)
        builder.build()
        return bytes(builder.get_build())


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
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, out_path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"{out_path}: {e.strerror}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
