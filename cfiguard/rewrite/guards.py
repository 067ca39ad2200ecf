"""Inline guard templates.

Each template is assembled ONCE by keystone (at first use) with placeholder field values; capstone then finds
the instruction offsets of its fields, and every site is produced by copying the template and patching those
fields. That keeps per-site cost to a few slice assignments, and keeps the encodings fixed, so the verifier can
match each guard as one unit. docs/guards.md lists the bytes and the safety argument of each.

Common check, with `r11` holding the branch target T:

    lea   r10, [rip + LO]          ; runtime start of the module's code range
    sub   r11, r10                 ; r11 = T - lo
    cmp   r11, SIZE                ; outside [lo, hi)?
    jae   .outside                 ; cross-module target: the site's cross-module stub (xmod.py)
    test  byte [r10 + r11 + D], MASK
    jz    .violation               ; rel32 to this site's violation stub
  .ok:
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import capstone

from cfiguard.errors import RewriteError

RET, CALL, JMP = 1, 2, 4
CALL_MASK = CALL
JMP_MASK = CALL | JMP
RET_MASK = RET

KIND_CODE = {"call": 0, "jmp": 1, "ret": 2}

_CHECK = """
lea r10, [rip + 0x11223344]
sub r11, r10
cmp r11, 0x22334455
jae 0x50000000
test byte ptr [r10 + r11 + 0x33445566], 0x77
jz 0x40000000
ok:
"""

_TEMPLATES = {
    # r10 and r11 are saved below rsp: a caller that knows this function (gcc -fipa-ra) may keep values in
    # them across the call. The 16 bytes below rsp are free at a return: they lie in the caller's red zone,
    # which its call instruction already clobbered. The ret itself is appended by the emitter.
    "ret": "mov qword ptr [rsp - 8], r11\nmov qword ptr [rsp - 16], r10\nmov r11, qword ptr [rsp]\n"
    + _CHECK
    + "mov r11, qword ptr [rsp - 8]\nmov r10, qword ptr [rsp - 16]\n",
    # The caller-supplied `mov r11, <operand>` precedes these.
    # For a function that already clobbers r10 and r11 itself (so no caller can rely on them, see
    # analysis.facts._scratch_clobbers), the return guard need not save them.
    "ret_scratch": "mov r11, qword ptr [rsp]\n" + _CHECK,
    # Race-free return (--race-free-returns), for a function that clobbers r10 and r11 itself: the return
    # address is popped once and the jump goes through the checked register, so no other thread can swap the
    # stack slot between check and use. The cost: `jmp r11` does not pop the return-stack buffer.
    "ret_pop": "pop r11\n" + _CHECK + "add r11, r10\njmp r11\n",
    "call": _CHECK + "add r11, r10\ncall r11\n",
    "tailjmp": _CHECK + "add r11, r10\njmp r11\n",
    "preserve_head": "lea rsp, [rsp - 128]\npush r11\npush r10\npushfq\n",
    "preserve": _CHECK + "popfq\npop r10\npop r11\nlea rsp, [rsp + 0x80]\n",
    # Same, where the status flags are proven dead at every target (analysis/liveness.py): no pushfq/popfq.
    "preserve_nf_head": "lea rsp, [rsp - 128]\npush r11\npush r10\n",
    "preserve_nf": _CHECK + "pop r10\npop r11\nlea rsp, [rsp + 0x80]\n",
}

# `jmp r11` / `jmp r10` (variadic tail calls through a pointer): the jump must use the checked value, never
# the copy saved on the stack (another thread could rewrite that slot after the check). r11 = T again after the
# add; for r10 it is copied there, and only the other register and the flags are restored from the stack.
_R11_TAIL = "add r11, r10\n{popf}pop r10\nlea rsp, [rsp + 0x88]\njmp r11\n"
_R10_TAIL = "add r11, r10\nmov r10, r11\n{popf}lea rsp, [rsp + 8]\npop r11\nlea rsp, [rsp + 0x80]\njmp r10\n"
_TEMPLATES |= {
    "preserve_r11": _CHECK + _R11_TAIL.format(popf="popfq\n"),
    "preserve_nf_r11": _CHECK + _R11_TAIL.format(popf=""),
    "preserve_r10": _CHECK + _R10_TAIL.format(popf="popfq\n"),
    "preserve_nf_r10": _CHECK + _R10_TAIL.format(popf=""),
}

PRESERVE_STACK = 128 + 24  # red zone + r11, r10, rflags
PRESERVE_STACK_NF = 128 + 16  # red zone + r11, r10


@dataclass(frozen=True)
class Template:
    code: bytes
    lo_field: int  # disp32 of lea r10, [rip + LO]; rip = offset lo_field + 4
    size_field: int  # imm32 of cmp
    d_field: int  # disp32 of test
    mask_field: int  # imm8 of test
    viol_field: int  # rel32 of jz; rip = offset viol_field + 4
    xmod_field: int = -1  # rel32 of jae (out of range: the cross-module stub); rip = offset + 4

    @property
    def ok(self) -> int:
        """Offset of `.ok`, just after the check (where the cross-module stub comes back to)."""
        return self.viol_field + 4


@cache
def template(name: str) -> Template:
    import keystone

    try:
        ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
        encoding, _ = ks.asm(_TEMPLATES[name], 0)
    except keystone.KsError as e:  # pragma: no cover - a broken keystone install
        raise RewriteError(f"keystone failed on guard template {name}: {e}") from None
    code = bytes(encoding)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    fields = {}
    for addr, size, mnem, op in md.disasm_lite(code, 0):
        if mnem == "lea" and op.startswith("r10, [rip"):
            fields["lo"] = addr + size - 4
        elif mnem == "cmp":
            fields["size"] = addr + size - 4
        elif mnem == "test":
            fields["d"] = addr + size - 5
            fields["mask"] = addr + size - 1
        elif mnem == "je":
            if size != 6:
                raise RewriteError("guard template: jz is not rel32")
            fields["viol"] = addr + size - 4
        elif mnem == "jae":
            if size != 6:
                raise RewriteError("guard template: jae is not rel32")
            fields["xmod"] = addr + size - 4
    if name.endswith("_head"):
        return Template(code, -1, -1, -1, -1, -1)
    return Template(
        code, fields["lo"], fields["size"], fields["d"], fields["mask"], fields["viol"], fields["xmod"]
    )


def instantiate(
    t: Template, at: int, lo: int, size: int, d: int, mask: int, viol: int, xmod: int | None = None
) -> bytearray:
    """Template `t` placed at address `at`, checking against [lo, lo+size), table distance d, violation stub
    viol; a target outside [lo, lo+size) goes to the site's cross-module stub xmod."""
    b = bytearray(t.code)
    b[t.lo_field : t.lo_field + 4] = _s32(lo - (at + t.lo_field + 4))
    if xmod is not None:
        b[t.xmod_field : t.xmod_field + 4] = _s32(xmod - (at + t.xmod_field + 4))
    b[t.size_field : t.size_field + 4] = _s32(size)
    b[t.d_field : t.d_field + 4] = _s32(d)
    b[t.mask_field] = mask
    b[t.viol_field : t.viol_field + 4] = _s32(viol - (at + t.viol_field + 4))
    return b


def _s32(v: int) -> bytes:
    if not -(1 << 31) <= v < (1 << 31):
        raise RewriteError(f"value {v:#x} does not fit a 32-bit field")
    return (v & 0xFFFFFFFF).to_bytes(4, "little")
