"""Analysis pieces on programs compiled at test time: functions, jump tables, address-taken code, noreturn."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cfiguard.analysis.facts import analyze
from cfiguard.api import read_fdes
from cfiguard.image.elf import load_image
from cfiguard.policy.labels import CALL, JMP, RET, coarse_policy
from cfiguard.rewrite.stubs import Region, assign_slots, place_in_region, render_short_jumps

SRC = r"""
#include <stdio.h>
#include <stdlib.h>
volatile int sink;
int sw(int x) {
  switch (x) { case 0: sink = 11; break; case 1: sink += 23; break; case 2: sink ^= 37; break;
               case 3: sink -= 41; break; case 4: sink *= 53; break; case 5: sink |= 67; break;
               case 6: sink &= 71; break; default: sink = -1; }
  return sink;
}
static int twice(int x) { return 2 * x; }
int (*volatile fp)(int) = twice;
__attribute__((noinline)) void die(void) { abort(); }
int main(int argc, char **argv) { if (argc > 5) die(); printf("%d\n", sw(argc) + fp(argc)); return 0; }
"""


def build(tmp_path: Path, cc: str, *flags: str) -> Path:
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    src = tmp_path / "p.c"
    src.write_text(SRC)
    exe = tmp_path / f"p-{cc}"
    subprocess.run([cc, *flags, "-o", str(exe), str(src)], check=True)
    return exe


def symbol(exe: Path, name: str) -> int:
    out = subprocess.run(["nm", str(exe)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise KeyError(name)


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize(
    "flags", [("-O2", "-fPIE", "-pie"), ("-O2", "-fno-pie", "-no-pie"), ("-O0", "-fPIE", "-pie")]
)
def test_facts(tmp_path: Path, cc: str, flags: tuple[str, ...]) -> None:
    exe = build(tmp_path, cc, *flags)
    image = load_image(str(exe))
    facts = analyze(image, read_fdes(image))
    policy = coarse_policy(facts)
    sw, twice, main = symbol(exe, "sw"), symbol(exe, "twice"), symbol(exe, "main")

    # Functions: found with exact starts; every site belongs to a function (no gaps left).
    starts = {fc.func.start for fc in facts.functions}
    assert {sw, main} <= starts
    assert facts.gap_sites == []

    # The switch in sw: a jump table with 7 case targets, all inside sw, extent proven by its bound.
    tables = [jt for jt in facts.jump_tables.values() if facts.function_at(jt.site).func.start == sw]
    assert len(tables) == 1
    jt = tables[0]
    sw_fc = facts.function_at(sw)
    assert len(jt.targets) == 7 or (not jt.exact and len(jt.targets) >= 7)
    # Optimised code compares the index register itself: the extent is proven. -O0 compares a stack slot.
    assert jt.exact or flags[0] == "-O0"
    assert all(t in sw_fc.starts for t in jt.targets)
    assert all(policy.labels[t] & JMP for t in jt.targets)

    # Address-taken: twice (stored in fp) and main (given to __libc_start_main) are CALL targets.
    assert policy.labels[twice] & CALL
    assert policy.labels[main] & CALL
    # sw is only called directly: no label.
    assert not policy.labels.get(sw, 0) & CALL

    # Return sites: after each call that returns, but not after calls to abort().
    die_fc = facts.function_at(symbol(exe, "die"))
    d = die_fc.dec
    calls = [i for i in die_fc.special if d.mnems[i] == "call" or d.mnems[i] == "jmp"]
    for i in calls:
        after = d.addrs[i] + d.sizes[i]
        assert not policy.labels.get(after, 0) & RET
    assert facts.noreturn_calls or flags[0] == "-O2"  # -O2 may turn the abort call into a jmp


def test_stub_placement() -> None:
    # A 3-byte function (entry at 0x100) next to a freed 32-byte body: rel8 to a slot in the neighbour.
    tiny = Region(0x100, 0x103, 0x103)
    big = Region(0x110, 0x130, 0x130)
    assert place_in_region(tiny, [0x100]) is None
    assert place_in_region(big, [0x110]) is None
    assert tiny.short == [0x100] and big.long == [0x110]
    assert assign_slots([tiny, big]) == {}
    ((slot, entry),) = big.slots
    assert entry == 0x100 and 0x115 <= slot <= 0x130 - 5
    # Entries one byte apart: the first gets only the `eb` opcode, whose rel8 is the next entry's `e9`, so
    # its slot is fixed at 0x200 + 2 - 23 = 0x1eb. Without a freed body there, it fails ...
    alone = Region(0x200, 0x210, 0x210)
    assert place_in_region(alone, [0x200, 0x201]) is None and alone.punned == [0x200]
    assert alone.long == [0x201]
    assert "too close" in assign_slots([alone])[0x200]
    # ... and with the freed body of a relocated neighbour there, the slot is taken.
    before = Region(0x1C0, 0x1F0, 0x200)
    pun = Region(0x200, 0x210, 0x210)
    assert place_in_region(before, [0x1C0]) is None and place_in_region(pun, [0x200, 0x201]) is None
    assert assign_slots([before, pun]) == {}
    assert before.slots == [(0x1EB, 0x200)]
    assert render_short_jumps([before, pun]) == [(0x200, b"\xeb")]
