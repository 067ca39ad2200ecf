"""Dynamic counts: how often each guard kind, each path through a guard and each forwarding jump executes.

Method (no hardware counters here: this VM reports `<not supported>` for `perf stat -e instructions`):

1. **Exact counts with callgrind.** `valgrind --tool=callgrind --dump-instr=yes` records how many times every
   instruction executed. callgrind prints addresses of a file as link-time addresses (it removes the load
   bias), so they can be matched directly against the hardened file. Guards are found in the new code by
   their fixed byte templates (`elfinfo.find_guards`), which tell the kind (ret, call, tail jmp, preserving
   jmp). Per guard, the execution count of its `lea r10` is the number of checks; that of its `test` is the
   number of label-table lookups (in-module targets); the difference took the `jae` out-of-module exit.
   Instructions executed inside a guard (its added instructions only) give the guards' share of all executed
   instructions. An executed address in the *old* code whose hardened bytes are a `jmp` that differs from the
   original bytes is a forwarding jump: each execution is one hop (a pointer to an old address, e.g. a
   function pointer, a vtable slot or an exported symbol, reached the relocated function through it). The
   original binary runs under callgrind too, for the instruction-count overhead.
2. **Time shares with perf sampling.** `perf record -e cpu-clock` (a software timer, available in this VM)
   samples the instruction pointer; samples are mapped to link-time addresses through the mmap events and
   attributed to guards (by kind), forwarding jumps, other new code, old code and other modules. This
   is time, not instruction counts: a `popfq` costs many cycles but is one instruction.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import capstone

from benchmarks import elfinfo
from benchmarks.elfinfo import GuardMap, Image

CALLGRIND_OPTS = [
    "--tool=callgrind",
    "--dump-instr=yes",
    "--dump-line=no",
    "--compress-strings=no",
    "--compress-pos=no",
    "--cache-sim=no",
    "--branch-sim=no",
]


@dataclass
class Classifier:
    """Maps link-time addresses of one hardened file to guard kinds, forwarding jumps and other code."""

    hardened: Image
    original: Image
    manifest: dict
    guards: GuardMap
    _starts: list[int] = field(default_factory=list)
    _symbols: elfinfo.Symbols | None = None

    @classmethod
    def load(cls, hardened: str, original: str) -> Classifier | None:
        manifest = elfinfo.read_manifest(hardened)
        if manifest is None:
            return None
        h = Image(hardened)
        c = cls(h, Image(original), manifest, elfinfo.find_guards(h, manifest))
        c._starts = [g.start for g in c.guards.guards]
        c._symbols = elfinfo.Symbols(original)
        return c

    def guard_at(self, addr: int) -> elfinfo.Guard | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            g = self.guards.guards[i]
            if g.start <= addr < g.end:
                return g
        return None

    def in_old_code(self, addr: int) -> bool:
        lo, hi = self.manifest["code"]
        return any(a <= addr < b for a, b in self.original.exec_ranges()) and not lo <= addr < hi

    def is_forwarding(self, addr: int) -> bool:
        """A jmp in old code that the rewriter put there (the original bytes were different)."""
        hb = self.hardened.read(addr, 5)
        return bool(hb) and hb[0] in (0xE9, 0xEB) and hb != self.original.read(addr, 5)

    def classify(self, addr: int) -> str:
        lo, hi = self.manifest["code"]
        if lo <= addr < hi:
            stubs = self.manifest.get("violation_stubs", [hi, hi])
            if stubs[0] <= addr < hi:
                return "violation stubs/handler"
            g = self.guard_at(addr)
            return f"guard:{g.kind}" if g else "relocated code (original instructions)"
        if self.in_old_code(addr):
            return "forwarding jmp" if self.is_forwarding(addr) else "code left in place"
        return "other (not code of this file)"

    def branch_after(self, g: elfinfo.Guard) -> str:
        """The guarded branch itself (the instruction the guard protects), disassembled: for a jmp guard its
        operand names the jump table, which ties the guard back to the original code."""
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        for _, _, mnem, op in md.disasm_lite(self.hardened.read(g.end, 16), g.end):
            if g.kind in ("call", "tailjmp"):
                mnem, op = ("call" if g.kind == "call" else "jmp"), "r11"
            return f"{mnem} {op}".strip()
        return "?"

    def name(self, addr: int) -> str:
        return self._symbols.name(addr) if self._symbols else f"0x{addr:x}"


# ------------------------------------------------------------------------------------------------- callgrind


def parse_callgrind(path: str, obj: str, bias: int, code: tuple[int, int]) -> tuple[dict[int, int], int]:
    """(per link-time address Ir of file `obj`, total Ir of the process) from an uncompressed callgrind.out.

    callgrind attributes to `obj` only the segments valgrind saw when it read the file's debug info (at its
    first executable mapping); the appended code segment is mapped later and shows up as object `???` at
    run-time addresses. Those are mapped back with the load bias and kept if they fall in the new code range.
    The line after `calls=` carries the inclusive cost of that call, not the call site's own Ir: skipped."""
    counts: Counter[int] = Counter()
    total = 0
    cur_is_obj = False
    skip_next = False
    real = os.path.realpath(obj)
    lo, hi = code
    with open(path, errors="replace") as f:
        for line in f:
            if skip_next:
                skip_next = False
                continue
            c = line[:1]
            if c == "0" or c.isdigit():
                parts = line.split()
                if len(parts) >= 2:
                    ir = int(parts[1])
                    total += ir
                    addr = int(parts[0], 0)
                    if cur_is_obj:
                        counts[addr] += ir
                    elif lo <= addr - bias < hi:
                        counts[addr - bias] += ir
            elif line.startswith("ob="):
                cur_is_obj = os.path.realpath(line[3:].strip().split(") ", 1)[-1]) == real
            elif line.startswith("calls="):
                skip_next = True
    return dict(counts), total


_BIAS = re.compile(r"acquired as r[wx-]+, bias (0x[0-9a-f]+)")


def run_callgrind(
    argv: list[str], env: dict | None, out: Path, timeout: float, traced: str
) -> tuple[str | None, int, str]:
    """Run argv under callgrind; (profile path, load bias of file `traced`, '') or (None, 0, why not). The bias
    comes from valgrind's own symbol-table trace, restricted to that one file."""
    if shutil.which("valgrind") is None:
        return None, 0, "valgrind not installed"
    out.unlink(missing_ok=True)
    log = out.with_suffix(".log")
    cmd = [
        "valgrind", *CALLGRIND_OPTS, f"--callgrind-out-file={out}", f"--log-file={log}", "--trace-symtab=yes",
        f"--trace-symtab-patt=*{os.path.basename(traced)}", *argv,
    ]  # fmt: skip
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, 0, f"callgrind timed out after {timeout} s"
    if r.returncode != 0 or not out.exists():
        return None, 0, f"callgrind exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[-200:]}"
    bias = 0
    with open(log, errors="replace") as f:
        for line in f:
            m = _BIAS.search(line)
            if m:
                bias = int(m.group(1), 16)
                break
    log.unlink(missing_ok=True)
    return str(out), bias, ""


def summarise_counts(cls: Classifier, counts: dict[int, int], total_ir: int) -> dict:
    """Per guard kind: executions, label lookups, out-of-module exits, instructions; forwarding hops."""
    kinds: dict[str, dict[str, int]] = {}
    for g in cls.guards.guards:
        execs = counts.get(g.check, 0)
        if not execs:
            continue
        k = kinds.setdefault(
            g.kind, {"executions": 0, "table_lookups": 0, "out_of_module": 0, "instructions": 0}
        )
        k["executions"] += execs
        lookups = counts.get(g.test, 0)
        k["table_lookups"] += lookups
        k["out_of_module"] += execs - lookups
    hot = sorted(cls.guards.guards, key=lambda g: -counts.get(g.check, 0))[:10]
    by_class: Counter[str] = Counter()
    hops: Counter[int] = Counter()
    for addr, ir in counts.items():
        what = cls.classify(addr)
        by_class[what] += ir
        if what.startswith("guard:"):
            kinds[what[6:]]["instructions"] += ir
        elif what == "forwarding jmp":
            hops[addr] += ir
    guard_ir = sum(k["instructions"] for k in kinds.values())
    return {
        "total_instructions": total_ir,
        "file_instructions": sum(counts.values()),
        "guard_instructions": guard_ir,
        "guard_share_of_all": guard_ir / total_ir if total_ir else 0.0,
        "guard_kinds": kinds,
        "instructions_by_region": dict(by_class.most_common()),
        "forwarding_hops": sum(hops.values()),
        "top_forwarding_hops": [
            {"address": f"0x{a:x}", "name": cls.name(a), "count": c} for a, c in hops.most_common(12)
        ],
        "top_guards": [
            {
                "kind": g.kind,
                "address": f"0x{g.check:x}",
                "executions": counts.get(g.check, 0),
                "branch": cls.branch_after(g),
            }
            for g in hot
            if counts.get(g.check, 0)
        ],  # fmt: skip
        "static_guards": cls.guards.by_kind(),
        "unrecognised_guards": cls.guards.unknown,
    }


def callgrind_profile(
    name: str, orig_argv: list[str], hard_argv: list[str], env_orig: dict, env_hard: dict,
    original: str, hardened: str, work: Path, timeout: float,
) -> dict:  # fmt: skip
    """Callgrind both sides of one workload and summarise the hardened side's counts."""
    cls = Classifier.load(hardened, original)
    if cls is None:
        return {"name": name, "ok": False, "error": f"{hardened}: no .cfiguard manifest"}
    out_h, bias, err = run_callgrind(
        hard_argv, env_hard, work / f"callgrind-{name}-hard.out", timeout, hardened
    )
    if out_h is None:
        return {"name": name, "ok": False, "error": err}
    out_o, _, _ = run_callgrind(orig_argv, env_orig, work / f"callgrind-{name}-orig.out", timeout, original)
    counts, total = parse_callgrind(out_h, hardened, bias, tuple(cls.manifest["code"]))
    res = {
        "name": name,
        "ok": True,
        "file": os.path.basename(hardened),
        **summarise_counts(cls, counts, total),
    }
    if out_o is not None:
        _, total_o = parse_callgrind(out_o, original, 0, (0, 0))
        res["orig_total_instructions"] = total_o
        res["instruction_ratio"] = total / total_o if total_o else 0.0
    for p in (out_h, out_o):
        if p:
            Path(p).unlink(missing_ok=True)
    return res


# ------------------------------------------------------------------------------------------------------ perf

# Instruction at each offset of a guard, relative to its common check (negative: before it), for naming
# where samples land. The operand `mov` of call/jmp guards has a variable length: it is "mov (operand)".
_CHECK_INSNS = {
    0: "lea r10",
    7: "sub r11, r10",
    10: "cmp r11, SIZE",
    17: "jae",
    23: "test byte [label]",
    32: "jz",
}
_AFTER = {
    "ret": {38: "mov r11, [rsp-8]", 43: "mov r10, [rsp-16]"},
    "call": {38: "add r11, r10"},
    "tailjmp": {38: "add r11, r10"},
    "preserve": {38: "popfq", 39: "pop r10", 41: "pop r11", 43: "lea rsp, [rsp+128]"},
    "preserve_nf": {38: "pop r10", 40: "pop r11", 42: "lea rsp, [rsp+128]"},
}
_BEFORE = {
    "ret": {0: "mov [rsp-8], r11", 5: "mov [rsp-16], r10", 10: "mov r11, [rsp]"},
    "ret_scratch": {0: "mov r11, [rsp]"},
    "preserve": {0: "lea rsp, [rsp-128]", 5: "push r11", 7: "push r10", 9: "pushfq"},
    "preserve_nf": {0: "lea rsp, [rsp-128]", 5: "push r11", 7: "push r10"},
}


def guard_instruction(g: elfinfo.Guard, addr: int) -> str:
    """Name of the guard instruction at addr (the one a timer sample interrupted)."""
    if addr >= g.check:
        off = addr - g.check
        return _CHECK_INSNS.get(off) or _AFTER.get(g.kind, {}).get(off, f"+{off}")
    return _BEFORE.get(g.kind, {}).get(addr - g.start, "mov (operand)")


_MMAP = re.compile(
    r"PERF_RECORD_MMAP2? .*?\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|0) .*?\]: \S+ (\S+)"
)


def perf_available() -> bool:
    if shutil.which("perf") is None:
        return False
    r = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "true"], capture_output=True
    )
    return r.returncode == 0


def perf_profile(
    name: str, argv: list[str], env: dict, original: str, hardened: str, work: Path, timeout: float
) -> dict:
    """Sample the hardened side with perf's cpu-clock and attribute samples to regions of the hardened file."""
    cls = Classifier.load(hardened, original)
    if cls is None:
        return {"name": name, "ok": False, "error": f"{hardened}: no .cfiguard manifest"}
    data = work / f"perf-{name}.data"
    rec = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-o", str(data), "--", *argv]
    try:
        r = subprocess.run(rec, env=env, capture_output=True, timeout=timeout)
        if r.returncode != 0:
            return {"name": name, "ok": False, "error": f"perf record exit {r.returncode}"}
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "--show-mmap-events", "-F", "ip,dso"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"name": name, "ok": False, "error": "perf timed out"}
    real = os.path.realpath(hardened)
    maps: list[tuple[int, int, int]] = []  # start, end, file offset at start
    regions: Counter[str] = Counter()
    guard_kinds: Counter[str] = Counter()
    insns: Counter[str] = Counter()
    for line in script.stdout.splitlines():
        m = _MMAP.search(line)
        if m:
            if os.path.realpath(m.group(4)) == real:
                start, length, pgoff = (int(m.group(i), 16) for i in (1, 2, 3))
                maps.append((start, start + length, pgoff))
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            ip = int(parts[0], 16)
        except ValueError:
            continue
        addr = _to_vaddr(cls.hardened, maps, ip)
        if addr is None:
            regions["other modules and kernel"] += 1
            continue
        what = cls.classify(addr)
        regions[what] += 1
        if what.startswith("guard:"):
            guard_kinds[what[6:]] += 1
            g = cls.guard_at(addr)
            if g is not None:
                insns[f"{g.kind}: {guard_instruction(g, addr)}"] += 1
    total = sum(regions.values())
    guards = sum(guard_kinds.values())
    return {
        "name": name,
        "ok": total > 0,
        "samples": total,
        "regions": dict(regions.most_common()),
        "guard_share": guards / total if total else 0.0,
        "guard_kinds": dict(guard_kinds.most_common()),
        "forwarding_share": regions.get("forwarding jmp", 0) / total if total else 0.0,
        "hot_guard_instructions": dict(insns.most_common(10)),
    }


def _to_vaddr(img: Image, maps: list[tuple[int, int, int]], ip: int) -> int | None:
    for start, end, pgoff in maps:
        if start <= ip < end:
            off = ip - start + pgoff
            for s in img.segments:
                if s.offset <= off < s.offset + s.filesz:
                    return s.vaddr + off - s.offset
    return None
