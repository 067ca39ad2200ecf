"""The verifier against files built to fool it: an attacker who may patch the hardened file, then write data
memory at run time, must not get a file that verifies and then reaches `win()`, a function whose address the
program never takes.

- A mutation engine edits the ELF header, program headers, dynamic entries, relocations, the manifest and code
  bytes of a hardened attack sample. Every mutant the verifier accepts is run with the attack input (a
  function pointer overwritten to point at win) and in normal mode: a mutant that verifies, does not reach win
  in normal mode, and reaches it under attack is a verifier hole, and fails the test.
- Hand-built instances of each class the verifier used to miss, each first shown to hijack at run time.

CI runs a fixed seed set; CFIGUARD_MUTANTS=3000 runs a long mode (docs/verifier.md has the numbers).
"""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cfiguard.verify import verify_bytes

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = int(os.environ.get("CFIGUARD_MUTANTS", "160"))
PT_LOAD, PT_DYNAMIC, PT_NOTE = 1, 2, 4
DT_RELA, DT_RELASZ, DT_JMPREL, DT_PLTRELSZ, DT_INIT_ARRAY = 7, 8, 23, 2, 25


class Sample:
    def __init__(self, tmp: Path) -> None:
        self.plain = tmp / "attack_fptr"
        subprocess.run(
            ["gcc", "-O2", "-fPIE", "-pie", "-o", str(self.plain), str(ROOT / "samples/attack_fptr.c")],
            check=True,
        )
        nm = subprocess.run(["nm", str(self.plain)], capture_output=True, text=True, check=True).stdout
        sym = {m.group(2): int(m.group(1), 16) for m in re.finditer(r"^([0-9a-f]+) [tT] (\w+)$", nm, re.M)}
        self.win, self.ref = sym["win"], sym["ref"]
        self.offset = f"{self.win - self.ref:x}" if self.win >= self.ref else f"-{self.ref - self.win:x}"
        self.hardened = tmp / "attack_fptr.cfi"
        proc = subprocess.run(
            [sys.executable, "-m", "cfiguard.cli", "harden", str(self.plain), "-o", str(self.hardened)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        self.data = self.hardened.read_bytes()
        self.tmp = tmp
        # Hardened, pointers to ref() may hold its new address (its old one forwards there): the attacker aims
        # from that one. The forwarding jump at ref's old address says where it is.
        at = offset_of(self.data, self.ref)
        assert self.data[at] == 0xE9, "ref() keeps a forwarding jump"
        new_ref = self.ref + 5 + int.from_bytes(self.data[at + 1 : at + 5], "little", signed=True)
        d = self.win - new_ref
        self.offset_hardened = f"{d:x}" if d >= 0 else f"-{-d:x}"

    def run(self, path: Path, attack: bool) -> subprocess.CompletedProcess:
        offsets = [self.offset] if path == self.plain else [self.offset, self.offset_hardened]
        if attack and len(offsets) > 1:  # try both: where the pointer holds the old or the new address of ref
            runs = [self._run([str(path), o]) for o in offsets]
            return next((r for r in runs if Sample.hijacked(r)), runs[-1])
        return self._run([str(path)] + (offsets[:1] if attack else []))

    @staticmethod
    def _run(args: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(args, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, -9, b"", b"timeout")
        except OSError as e:  # the kernel refused to load the mutant: it runs nothing
            return subprocess.CompletedProcess(args, -1, b"", str(e).encode())

    @staticmethod
    def hijacked(p: subprocess.CompletedProcess) -> bool:
        return p.returncode == 42 and b"HIJACKED" in p.stdout


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return Sample(tmp_path_factory.mktemp("adv"))


def phdrs(data: bytes) -> list[list[int]]:
    phoff, phnum = struct.unpack_from("<Q", data, 0x20)[0], struct.unpack_from("<H", data, 0x38)[0]
    return [
        list(struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i)) + [phoff + 56 * i] for i in range(phnum)
    ]


def offset_of(data: bytes, vaddr: int) -> int | None:
    for t, _, off, va, _, fs, _, _, _ in phdrs(data):
        if t == PT_LOAD and va <= vaddr < va + fs:
            return off + vaddr - va
    return None


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """File ranges an attacker would edit: headers, dynamic entries, relocations, manifest, code."""
    out = {"ehdr": (0, 64)}
    ph = phdrs(data)
    out["phdrs"] = (ph[0][8], ph[-1][8] + 56)
    dyn = next(p for p in ph if p[0] == PT_DYNAMIC)
    out["dynamic"] = (dyn[2], dyn[2] + dyn[5])
    tags = {}
    for k in range(dyn[5] // 16):
        tag, val = struct.unpack_from("<qQ", data, dyn[2] + 16 * k)
        tags.setdefault(tag, val)
    for name, (a, n) in {"rela": (DT_RELA, DT_RELASZ), "jmprel": (DT_JMPREL, DT_PLTRELSZ)}.items():
        if a in tags and n in tags and (o := offset_of(data, tags[a])) is not None:
            out[name] = (o, o + tags[n])
    m = data.find(b"CFIGUARD{")
    out["manifest"] = (m, data.index(b"}", data.index(b'"classes"', m)) + 2)
    loads = [p for p in ph if p[0] == PT_LOAD and p[1] & 1]
    old, new = loads[0], loads[-1]
    out["old code"] = (old[2], old[2] + old[5])
    out["new code"] = (new[2], new[2] + new[5])
    return out


def mutate(rng: random.Random, data: bytes, s: Sample) -> tuple[bytes, str]:
    b = bytearray(data)
    regs = regions(data)
    name = rng.choice(sorted(regs))
    lo, hi = regs[name]
    pos = rng.randrange(lo, max(lo + 1, hi - 8))
    op = rng.choice(("byte", "bit", "u32", "u64", "u64"))
    interesting = [0, 1, 0xFFFFFFFF, s.win, s.ref, s.win - s.ref, rng.getrandbits(32), 8, 37, 0x1000]
    if name in ("rela", "jmprel"):  # whole fields of a relocation: offset, info (type, symbol), addend
        pos = lo + (pos - lo) // 8 * 8
        op = "u64"
    if op == "byte":
        b[pos] = rng.randrange(256)
    elif op == "bit":
        b[pos] ^= 1 << rng.randrange(8)
    elif op == "u32":
        struct.pack_into("<I", b, pos, rng.choice(interesting) & 0xFFFFFFFF)
    else:
        struct.pack_into("<Q", b, pos, rng.choice(interesting) & (1 << 64) - 1)
    return bytes(b), f"{name} @ file offset {pos:#x}: {op}"


def test_the_attack_works_on_the_original_and_not_on_the_hardened(sample: Sample) -> None:
    assert Sample.hijacked(sample.run(sample.plain, attack=True))
    assert not Sample.hijacked(sample.run(sample.hardened, attack=True))
    assert verify_bytes(sample.data).ok


def test_no_accepted_mutant_reaches_win(sample: Sample) -> None:
    rng = random.Random(16)
    accepted = tried = 0
    path = sample.tmp / "mutant"
    for _ in range(MUTANTS):
        data, what = mutate(rng, sample.data, sample)
        if data == sample.data:
            continue
        tried += 1
        if not verify_bytes(data).ok:
            continue
        accepted += 1
        path.write_bytes(data)
        path.chmod(0o755)
        if Sample.hijacked(sample.run(path, attack=True)) and not Sample.hijacked(
            sample.run(path, attack=False)
        ):
            pytest.fail(f"a mutant verifies and is hijacked to win(): {what}")
    assert tried > MUTANTS // 2 and accepted < tried  # the engine ran, and most mutants are rejected


def test_a_later_load_segment_over_the_table_is_rejected(sample: Sample) -> None:
    """The kernel maps PT_LOADs in order, so a later segment over the label table's page decides its bytes.
    Built here: the PT_NOTE entry becomes a PT_LOAD, placed after the table's own, that maps a copy of the
    table with win() labelled CALL. The attack then hijacks the mutant; the verifier must reject it."""
    b = bytearray(sample.data)
    m = re.search(rb'"table": (\d+)', b[b.find(b"CFIGUARD{") :])
    lo = int(re.search(rb'"lo": (\d+)', b[b.find(b"CFIGUARD{") :]).group(1))
    table = int(m.group(1))
    ph = phdrs(bytes(b))
    tseg = next(p for p in ph if p[0] == PT_LOAD and p[3] <= table < p[3] + p[6])
    page = table & ~0xFFF
    copy = bytearray(b[tseg[2] + page - tseg[3] : tseg[2] + page - tseg[3] + 0x1000])
    copy += bytes(0x1000 - len(copy))
    if sample.win - lo >= 0x1000 - (table - page):
        pytest.skip("win's label is not on the table's first page in this build")
    copy[table - page + sample.win - lo] = 2  # CALL
    while len(b) % 0x1000:
        b.append(0)
    off = len(b)
    b += copy
    note = next(p for p in ph if p[0] == PT_NOTE)
    # Move the note entry after the table's segment (swap with the entry that follows it, repeatedly).
    entries = [bytes(b[p[8] : p[8] + 56]) for p in ph]
    ni, ti = ph.index(note), ph.index(tseg)
    new = struct.pack("<IIQQQQQQ", PT_LOAD, 4, off, page, page, 0x1000, 0x1000, 0x1000)
    order = [e for k, e in enumerate(entries) if k != ni]
    order.insert(ti, new) if ti > ni else order.insert(ti + 1, new)
    base = ph[0][8]
    for k, e in enumerate(order):
        b[base + 56 * k : base + 56 * k + 56] = e
    path = sample.tmp / "overlay"
    path.write_bytes(bytes(b))
    path.chmod(0o755)
    run = sample.run(path, attack=True)
    assert Sample.hijacked(run), (run.returncode, run.stderr[-300:])  # the overlay wins at run time
    result = verify_bytes(bytes(b))
    assert not result.ok
    assert any(f.check == "elf" and "share pages" in f.reason for f in result.findings), result.findings[:5]


def test_symbol_zero_relocation_into_an_init_array_is_an_entry(sample: Sample) -> None:
    """A R_X86_64_64 relocation against symbol 0 writes module base + addend: ld.so then calls that address.
    Aimed at the middle of a guard (just past its check), it must be decoded and rejected."""
    b = bytearray(sample.data)
    regs = regions(bytes(b))
    lo, hi = regs["rela"]
    # Find the RELATIVE relocation of the first .init_array slot and turn it into R_X86_64_64, symbol 0.
    ph = phdrs(bytes(b))
    dyn = next(p for p in ph if p[0] == PT_DYNAMIC)
    tags = dict(struct.unpack_from("<qQ", b, dyn[2] + 16 * k) for k in range(dyn[5] // 16))
    slot = tags[DT_INIT_ARRAY]
    new_lo, new_hi = regs["new code"]
    code = bytes(b[new_lo:new_hi])
    k = code.index(b"\x4d\x01\xd3\x41\xff\xd3")  # add r11, r10; call r11 (the tail of a call guard)
    vaddr_new = next(p for p in ph if p[0] == PT_LOAD and p[2] == new_lo)[3]
    target = vaddr_new + k + 3  # `call r11` itself: the check skipped
    for r in range(lo, hi, 24):
        off, info, addend = struct.unpack_from("<QQq", b, r)
        if off == slot:
            struct.pack_into("<QQq", b, r, off, 1, target)  # type 1 (R_X86_64_64), symbol 0
            break
    else:
        pytest.skip("the init_array slot has no RELA relocation in this build")
    result = verify_bytes(bytes(b))
    assert not result.ok
    assert any(f.address == target for f in result.findings), result.findings[:5]


def test_a_sigreturn_gadget_in_module_code_is_rejected(sample: Sample) -> None:
    """`mov eax, 15; syscall` reachable in module code is an rt_sigreturn gadget (rip and rsp from memory)."""
    b = bytearray(sample.data)
    regs = regions(bytes(b))
    ph = phdrs(bytes(b))
    old = next(p for p in ph if p[0] == PT_LOAD and p[2] == regs["old code"][0])
    # Overwrite ref()'s forwarding jump target area: put the gadget at ref's old entry (a labelled address).
    at = old[2] + sample.ref - old[3]
    b[at : at + 7] = b"\xb8\x0f\x00\x00\x00\x0f\x05"  # mov eax, 15; syscall
    result = verify_bytes(bytes(b))
    assert any(f.check == "syscall" and f.address == sample.ref + 5 for f in result.findings), (
        result.findings[:5]
    )
