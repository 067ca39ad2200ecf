"""Cross-module stubs: where a guard goes when its target lies outside the module's code range.

One stub per guarded site, after the violation stubs, from the runtime sources `cfiguard/runtime/xmod_ret.s`
(returns) and `xmod_fwd.s` (indirect calls and jumps). Each is assembled once; its fields are found by their
placeholder values and patched per site, so every stub of a kind is the same bytes but for those fields,
which the verifier matches exactly (cfiguard/verify/guards.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

import capstone

from cfiguard.errors import RewriteError
from cfiguard.runtime import AssemblyError, assemble

LO_PH, MODLO_PH, MODSIZE_PH, OK_PH, BAD_PH = 0x11223344, 0x13243546, 0x22334455, 0x50000000, 0x40000000
SOURCES = {"ret": "xmod_ret.s", "call": "xmod_fwd.s", "jmp": "xmod_fwd.s"}


@dataclass(frozen=True)
class XTemplate:
    code: bytes
    lo: tuple[int, ...]  # offsets of the rel32 of each `lea r10, [rip + LO]`
    modlo: int  # offset of the rel32 of `lea r10, [rip + MODLO]`
    modsize: int  # offset of the imm32 of `cmp r10, MODSIZE`
    ok: int  # offset of the rel32 of `jmp OK`
    bad: int  # offset of the rel32 of `jmp BAD`


@cache
def xtemplate(kind: str) -> XTemplate:
    try:
        code = assemble(SOURCES[kind])
    except AssemblyError as e:  # pragma: no cover
        raise RewriteError(str(e)) from None
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    lo, fields = [], {}
    for a, s, m, o in md.disasm_lite(code, 0):
        if m == "lea" and o == f"r10, [rip + {LO_PH:#x}]":
            lo.append(a + s - 4)
        elif m == "lea" and o == f"r10, [rip + {MODLO_PH:#x}]":
            fields["modlo"] = a + s - 4
        elif m == "cmp" and o == f"r10, {MODSIZE_PH:#x}":
            fields["modsize"] = a + s - 4
        elif m == "jmp" and o == f"{OK_PH:#x}" and s == 5:
            fields["ok"] = a + 1
        elif m == "jmp" and o == f"{BAD_PH:#x}" and s == 5:
            fields["bad"] = a + 1
    if len(lo) != 2 or set(fields) != {"modlo", "modsize", "ok", "bad"}:
        raise RewriteError(f"cross-module stub {SOURCES[kind]}: fields not found")
    return XTemplate(code, tuple(lo), fields["modlo"], fields["modsize"], fields["ok"], fields["bad"])


def xmod_stub(at: int, kind: str, lo: int, mod_lo: int, mod_size: int, ok: int, bad: int) -> bytes:
    """The cross-module stub of a `kind` site placed at `at`: back to `ok` (the guard's .ok) if the target
    may be taken, else to `bad` (the site's violation stub)."""
    t = xtemplate(kind)
    b = bytearray(t.code)

    def rel(field: int, target: int) -> None:
        struct.pack_into("<i", b, field, target - (at + field + 4))

    for f in t.lo:
        rel(f, lo)
    rel(t.modlo, mod_lo)
    struct.pack_into("<I", b, t.modsize, mod_size)
    rel(t.ok, ok)
    rel(t.bad, bad)
    return bytes(b)


def stub_size(kind: str) -> int:
    return len(xtemplate(kind).code)
