"""Byte-exact tests of instruction re-encoding and guard templates (disassembly in comments)."""

from __future__ import annotations

import capstone
import pytest

from cfiguard.disasm.decode import mem_operand
from cfiguard.errors import RewriteError
from cfiguard.rewrite import encode
from cfiguard.rewrite.guards import CALL_MASK, JMP_MASK, RET_MASK, instantiate, template
from cfiguard.rewrite.handler import handler_code
from cfiguard.rewrite.relocate import violation_stub

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def dis(code: bytes, at: int = 0) -> list[str]:
    return [f"{m} {o}".strip() for _, _, m, o in MD.disasm_lite(code, at)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ffd0", "4c8bd8"),  # call rax            -> mov r11, rax
        ("41ffd4", "4d8bdc"),  # call r12          -> mov r11, r12
        ("ff5008", "4c8b5808"),  # call [rax+8]    -> mov r11, [rax + 8]
        ("41ff5424f8", "4d8b5c24f8"),  # call [r12-8] -> mov r11, [r12 - 8]
        ("ff14c5a0104000", "4c8b1cc5a0104000"),  # call [rax*8+0x4010a0]
        ("3effe0", "4c8bd8"),  # notrack jmp rax   -> mov r11, rax (notrack dropped)
        ("64ff142528000000", "644c8b1c2528000000"),  # call fs:[0x28] keeps the fs prefix
    ],
)
def test_mov_r11_from_operand(raw: str, expected: str) -> None:
    code = bytes.fromhex(raw)
    mem = mem_operand(code, 0x1000)
    out = encode.mov_r11_from(code, mem, 0x5000, 0x1000)
    assert out.hex() == expected
    assert dis(out)[0].startswith("mov r11")


def test_mov_r11_rip_relative_is_reaimed() -> None:
    # call [rip + 0x100] at 0x1000 reads 0x1106; moved to 0x9000 the mov must still read 0x1106.
    raw = bytes.fromhex("ff1500010000")
    out = encode.mov_r11_from(raw, mem_operand(raw, 0x1000), 0x9000, 0x1000)
    assert out[:3].hex() == "4c8b1d"
    disp = int.from_bytes(out[3:7], "little", signed=True)
    assert 0x9000 + len(out) + disp == 0x1106


def test_mov_r11_rsp_operand_gets_extra_displacement() -> None:
    # jmp [rsp+8] under the preserving guard (152 bytes pushed): mov r11, [rsp + 0xa0], disp32 form.
    raw = bytes.fromhex("ff642408")
    out = encode.mov_r11_from(raw, mem_operand(raw, 0), 0, 0, 152)
    assert out.hex() == "4c8b9c24a0000000"
    assert dis(out) == ["mov r11, qword ptr [rsp + 0xa0]"]


def test_branches_are_rel32() -> None:
    assert encode.jmp_rel32(0x1000, 0x1010).hex() == "e90b000000"  # jmp 0x1010
    assert encode.call_rel32(0x1000, 0x900).hex() == "e8fbf8ffff"  # call 0x900
    assert (
        encode.jcc_rel32(encode.jcc_condition(bytes.fromhex("7405")), 0x1000, 0x2000).hex() == "0f84fa0f0000"
    )
    assert encode.jcc_condition(bytes.fromhex("0f8f00000000")) == 0xF  # jg near
    with pytest.raises(RewriteError):
        encode.jmp_rel32(0, 1 << 40)


def test_loop_expansion_keeps_semantics() -> None:
    # jrcxz 0x1080 at 0x1000 -> jrcxz +2; jmp +5; jmp rel32 0x1080
    out = encode.loop_expansion(bytes.fromhex("e37e"), 0x5000, 0x1080)
    assert len(out) == encode.loop_expansion_size(bytes.fromhex("e37e")) == 9
    assert dis(out, 0x5000) == ["jrcxz 0x5004", "jmp 0x5009", "jmp 0x1080"]


def test_redisplace_rip_uses_four_byte_displacement() -> None:
    # movdqa xmm0, [rip + 0xfa1] (capstone reports disp_size 2 here; it is always 4 for rip)
    raw = bytes.fromhex("660f6f05a10f0000")
    out = encode.redisplace_rip(raw, mem_operand(raw, 0x1087), 0x1087, 0x20000)
    assert dis(out, 0x20000) == [f"movdqa xmm0, xmmword ptr [rip - {0x20000 + 8 - (0x1087 + 8 + 0xFA1):#x}]"]


@pytest.mark.parametrize(("name", "mask"), [("ret", RET_MASK), ("call", CALL_MASK), ("tailjmp", JMP_MASK)])
def test_guard_fields(name: str, mask: int) -> None:
    t = template(name)
    at, lo, size, d, viol = 0x20000, 0x1000, 0x30000, 0x40000, 0x2F000
    g = bytes(instantiate(t, at, lo, size, d, mask, viol))
    text = dis(g, at)
    assert f"lea r10, [rip - {at + t.lo_field + 4 - lo:#x}]" in text
    assert f"cmp r11, {size:#x}" in text
    assert f"test byte ptr [r10 + r11 + {d:#x}], {mask}" in text
    assert f"je {viol:#x}" in text


def test_ret_template_exact_bytes() -> None:
    assert template("ret").code.hex() == (
        "4c895c24f8"
        "4c895424f0"
        "4c8b1c24"  # save r11, r10; mov r11, [rsp]
        "4c8d1544332211"
        "4d29d3"
        "4981fb55443322"
        "0f83dbffff4f"  # lea r10; sub; cmp; jae (rel32 to the cross-module stub, placeholder 0x50000000)
        "43f6841a6655443377"
        "0f84ccffff3f"  # test byte [r10+r11+D], M; jz
        "4c8b5c24f8"
        "4c8b5424f0"  # restore r11, r10
    )


def test_violation_stub_and_handler() -> None:
    stub = violation_stub(0x3000, 0x1234, "ret", 0x1000, 0x3100)
    assert dis(stub, 0x3000) == ["movabs rdi, 0x1234", "lea rsi, [r11 + 0x1000]", "mov edx, 2", "jmp 0x3100"]
    text = dis(handler_code())
    assert not any(t.startswith(("ret", "call", "jmp r", "jmp q")) for t in text)
    assert "syscall" in text
