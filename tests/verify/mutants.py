"""Helpers for the verifier tests: running the CLI, and building mutants of hardened binaries byte by byte.

They restate the guard layout themselves (as the verifier does), so the tests depend on neither the rewriter's
nor the verifier's code: a mutant is built from the file format and the documented templates alone.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

PF_X, PF_W = 1, 2
CHECK = re.compile(
    rb"\x4c\x8d\x15.{4}\x4d\x29\xd3\x49\x81\xfb.{4}\x0f\x83.{4}\x43\xf6\x84\x1a.{4}.\x0f\x84.{4}", re.S
)
CHECK_LEN = 38
TAILS = {  # bytes right after the check -> (kind, offset of the branch after the check)
    bytes.fromhex("4d01d341ffd3"): ("call", 3),
    bytes.fromhex("4d01d341ffe3"): ("jmp", 3),
    bytes.fromhex("9d415a415b488da42480000000"): ("jmp", 13),
    bytes.fromhex("415a415b488da42480000000"): ("jmp", 12),  # preserving, without pushfq/popfq
    bytes.fromhex("4c8b5c24f84c8b5424f0"): ("ret", 10),
    b"\xc3": ("ret", 0),  # the short ret guard (no r10/r11 saves)
    b"\xc2": ("ret", 0),
}


@dataclass(frozen=True)
class Built:
    """A test program as compiled (`plain`) and as hardened by the real CLI."""

    flavour: str
    plain: Path
    hardened: Path
    expected: str  # stdout of the plain program


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@dataclass(frozen=True)
class Guard:
    check: int  # address of `lea r10, [rip + lo]`
    kind: str
    branch: int  # the protected ret / call / jmp
    stub: int  # violation stub (jz target)
    site: int  # original address of the site, as recorded in the stub


@dataclass(frozen=True)
class Phdr:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class Binary:
    """A mutable copy of an ELF file with vaddr <-> file offset mapping through its program headers."""

    def __init__(self, path: Path) -> None:
        self.data = bytearray(Path(path).read_bytes())
        phoff, phnum = (
            struct.unpack_from("<Q", self.data, 0x20)[0],
            struct.unpack_from("<H", self.data, 0x38)[0],
        )
        self.phoff = phoff
        self.phdrs = [
            Phdr(i, *struct.unpack_from("<IIQQ8xQQ", self.data, phoff + 56 * i)) for i in range(phnum)
        ]

    def offset(self, vaddr: int) -> int:
        for p in self.phdrs:
            if p.type == 1 and p.vaddr <= vaddr < p.vaddr + p.filesz:
                return p.offset + vaddr - p.vaddr
        raise KeyError(hex(vaddr))

    def read(self, vaddr: int, n: int) -> bytes:
        o = self.offset(vaddr)
        return bytes(self.data[o : o + n])

    def write(self, vaddr: int, blob: bytes) -> None:
        o = self.offset(vaddr)
        self.data[o : o + len(blob)] = blob

    def set_flags(self, p: Phdr, flags: int) -> None:
        struct.pack_into("<I", self.data, self.phoff + 56 * p.index + 4, flags)

    def save(self, path: Path) -> Path:
        path.write_bytes(bytes(self.data))
        path.chmod(0o755)
        return path

    def manifest(self) -> dict:
        elf = ELFFile(_Bytes(self.data))
        sec = elf.get_section_by_name(".cfiguard")
        raw = sec.data()
        assert raw.startswith(b"CFIGUARD")
        return json.loads(raw[8:])

    def guards(self) -> list[Guard]:
        """Every guard in the new code, found by its fixed check bytes."""
        start, end = self.manifest()["code"]
        code = self.read(start, end - start)
        out = []
        for m in CHECK.finditer(code):
            c = start + m.start()
            after = code[m.start() + CHECK_LEN :]
            tail = next((t for t in TAILS if after.startswith(t)), None)
            if tail is None:
                continue
            kind, branch = TAILS[tail]
            stub = c + CHECK_LEN + struct.unpack_from("<i", code, m.start() + 34)[0]
            site = struct.unpack("<Q", self.read(stub + 2, 8))[0]
            out.append(Guard(c, kind, c + CHECK_LEN + branch, stub, site))
        return out


class _Bytes:
    """A minimal file object over bytes for pyelftools."""

    def __init__(self, data: bytes) -> None:
        import io

        self._f = io.BytesIO(bytes(data))

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def function(path: Path, name: str) -> tuple[int, int]:
    """(address, size) of the function `name` (or a gcc clone such as name.constprop.0) in an unstripped file."""
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        for s in symtab.iter_symbols():
            if s.name.split(".")[0] == name and s["st_info"]["type"] == "STT_FUNC" and s["st_size"]:
                return s["st_value"], s["st_size"]
    raise KeyError(name)


def new_address(b: Binary, old: int) -> int:
    """Where a relocated function now starts: its old entry holds `jmp rel32` (or `jmp rel8` to one)."""
    op = b.read(old, 1)
    if op == b"\xeb":
        return new_address(b, old + 2 + struct.unpack("<b", b.read(old + 1, 1))[0])
    assert op == b"\xe9", f"{old:#x} does not forward"
    return old + 5 + struct.unpack("<i", b.read(old + 1, 4))[0]


def switch_dispatch(b: Binary, start: int) -> tuple[int, int]:
    """(address of the bound's `ja`, address of the indirect jmp) of the first switch in the code at `start`."""
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    ja = None
    for a, _, m, o in md.disasm_lite(b.read(start, 64), start):
        if m == "ja":
            ja = a
        if m == "jmp" and not o.startswith("0x"):
            assert ja is not None
            return ja, a
    raise AssertionError(f"no switch dispatch at {start:#x}")
