"""The switch-dispatch prover on hand-written windows: which bounds it accepts, and which it must not."""

from __future__ import annotations

import pytest

from cfiguard.verify.dispatch import Dispatch, prove


def window(*lines: str) -> list[tuple[int, int, str, str]]:
    """Instructions `mnemonic operands`, 4 bytes each from 0x1000; the last one is the jmp."""
    out = []
    for k, line in enumerate(lines):
        prefix = "notrack " if line.startswith("notrack ") else ""
        mnem, _, ops = line.removeprefix(prefix).partition(" ")
        mnem = prefix + mnem
        out.append((0x1000 + 4 * k, 4, mnem, ops))
    return out


T = "0x402020"
PROVEN = {
    "zero-extended after the bound": (
        ["cmp edi, 7", "ja 0x9000", "mov edi, edi", f"jmp qword ptr [rdi*8 + {T}]"],
        Dispatch(0x402020, 8, 8, 0x1000),
    ),
    "32-bit write before the bound": (
        ["sub edi, 3", "cmp edi, 7", "ja 0x9000", f"jmp qword ptr [rdi*8 + {T}]"],
        Dispatch(0x402020, 8, 8, 0x1000),
    ),
    "64-bit bound, jae": (
        ["cmp rdi, 7", "jae 0x9000", f"jmp qword ptr [rdi*8 + {T}]"],
        Dispatch(0x402020, 7, 8, 0x1000),
    ),
    "table load into a register": (
        ["movzx eax, byte ptr [rsi]", f"mov rax, qword ptr [rax*8 + {T}]", "jmp rax"],
        Dispatch(0x402020, 256, 8, 0x1000),
    ),
    "16-bit bound, zero-extended": (
        ["cmp ax, 0x1b", "ja 0x9000", "movzx eax, ax", f"jmp qword ptr [rax*8 + {T}]"],
        Dispatch(0x402020, 28, 8, 0x1000),
    ),
    "relative table (PIE)": (
        [
            "cmp edi, 7",
            "ja 0x9000",
            "lea rdx, [rip + 0x100]",
            "mov edi, edi",
            "movsxd rax, dword ptr [rdx + rdi*4]",
            "add rax, rdx",
            "jmp rax",
        ],
        Dispatch(0x100C + 0x100, 8, 4, 0x1000),
    ),
    "bound on the register it was copied from (clang)": (
        ["mov ecx, edi", "cmp edi, 0xc", "ja 0x9000", "mov ecx, ecx", f"jmp qword ptr [rcx*8 + {T}]"],
        Dispatch(0x402020, 13, 8, 0x1000),
    ),
    "copied, then the source reused (gcc)": (
        ["mov ecx, edi", "mov rdi, rsi", "cmp ecx, 0xc", "ja 0x9000", f"jmp qword ptr [rcx*8 + {T}]"],
        Dispatch(0x402020, 13, 8, 0x1000),
    ),
    "CET notrack (ds:) prefix": (
        ["cmp rdx, 3", "ja 0x9000", f"notrack jmp qword ptr ds:[rdx*8 + {T}]"],
        Dispatch(0x402020, 4, 8, 0x1000),
    ),
    "and mask": (["and ecx, 0xf", f"jmp qword ptr [rcx*8 + {T}]"], Dispatch(0x402020, 16, 8, 0x1000)),
    "push and a base copy between bound and load (xz, git)": (
        [
            "cmp esi, 8",
            "ja 0x9000",
            "push rbx",
            "mov esi, esi",
            "mov rbx, rcx",
            "lea rcx, [rip + 0x100]",
            "movsxd rax, dword ptr [rcx + rsi*4]",
            "add rax, rcx",
            "jmp rax",
        ],
        Dispatch(0x1018 + 0x100, 9, 4, 0x1000),
    ),
    # the compare is on the other byte: only the zero-extension bounds the index (256 entries, not 6)
    "8-bit compare of the source bounds the same byte of a 32-bit copy (rustc)": (
        ["mov eax, edx", "cmp dl, 0x18", "ja 0x9000", "movzx ecx, al", f"jmp qword ptr [rcx*8 + {T}]"],
        Dispatch(0x402020, 25, 8, 0x1000),
    ),
    "high byte compared, low byte used": (
        ["cmp ah, 5", "ja 0x9000", "movzx eax, al", f"jmp qword ptr [rax*8 + {T}]"],
        Dispatch(0x402020, 256, 8, 0x1008),
    ),
    "low byte compared, high byte used": (
        ["cmp al, 5", "ja 0x9000", "movzx eax, ah", f"jmp qword ptr [rax*8 + {T}]"],
        Dispatch(0x402020, 256, 8, 0x1008),
    ),
    "cmov and setcc on other registers": (
        [
            "cmp edi, 7",
            "ja 0x9000",
            "sete al",
            "cmovne edx, ecx",
            "mov edi, edi",
            f"jmp qword ptr [rdi*8 + {T}]",
        ],
        Dispatch(0x402020, 8, 8, 0x1000),
    ),
}

REFUSED = {
    "upper half unknown": ["cmp edi, 7", "ja 0x9000", f"jmp qword ptr [rdi*8 + {T}]"],
    "a call between write and bound": [
        "sub edi, 3",
        "call 0x5000",
        "cmp edi, 7",
        "ja 0x9000",
        f"jmp qword ptr [rdi*8 + {T}]",
    ],
    "wrong condition": ["cmp rdi, 7", "jbe 0x9000", f"jmp qword ptr [rdi*8 + {T}]"],
    "signed condition": ["cmp rdi, 7", "jg 0x9000", f"jmp qword ptr [rdi*8 + {T}]"],
    "index overwritten": [
        "cmp rdi, 7",
        "ja 0x9000",
        "mov rdi, qword ptr [rsp]",
        f"jmp qword ptr [rdi*8 + {T}]",
    ],
    "partial write": ["cmp rdi, 7", "ja 0x9000", "mov dil, byte ptr [rsi]", f"jmp qword ptr [rdi*8 + {T}]"],
    "unknown instruction": ["cmp rdi, 7", "ja 0x9000", "xchg rdi, rsi", f"jmp qword ptr [rdi*8 + {T}]"],
    "base overwritten": [
        "cmp rdi, 7",
        "ja 0x9000",
        "lea rdx, [rip + 0x100]",
        "movsxd rax, dword ptr [rdx + rdi*4]",
        "add rdx, 8",
        "add rax, rdx",
        "jmp rax",
    ],
    "copy source changed before the bound": [
        "mov ecx, edi",
        "mov edi, esi",
        "cmp edi, 0xc",
        "ja 0x9000",
        f"jmp qword ptr [rcx*8 + {T}]",
    ],
    # Red-team shapes: a narrow compare must never bound a wider value.
    "8-bit compare of the source of an earlier 32-bit copy": [
        "mov eax, edi",
        "cmp dil, 7",
        "ja 0x9000",
        f"jmp qword ptr [rax*8 + {T}]",
    ],
    "16-bit compare of the source of an earlier 32-bit copy": [
        "mov eax, edi",
        "cmp di, 7",
        "ja 0x9000",
        f"jmp qword ptr [rax*8 + {T}]",
    ],
    "clang unsigned char switch: 8-bit compare, then a 32-bit copy": [
        "cmp dil, 7",
        "ja 0x9000",
        "mov eax, edi",
        f"jmp qword ptr [rax*8 + {T}]",
    ],
    "high byte masked": ["mov eax, edi", "and ah, 7", "movzx eax, ax", f"jmp qword ptr [rax*8 + {T}]"],
    "and on the low byte only": ["and cl, 7", f"jmp qword ptr [rcx*8 + {T}]"],
    "16-bit register copy": ["cmp eax, 7", "ja 0x9000", "mov cx, ax", f"jmp qword ptr [rcx*8 + {T}]"],
    "implicit write by lock cmpxchg": [
        "cmp eax, 7",
        "ja 0x9000",
        "mov eax, eax",
        "lock cmpxchg qword ptr [rsi], rdx",
        f"jmp qword ptr [rax*8 + {T}]",
    ],
    "pop into the index": ["cmp rdi, 7", "ja 0x9000", "pop rdi", f"jmp qword ptr [rdi*8 + {T}]"],
    "setcc into the index": ["cmp rdi, 7", "ja 0x9000", "setne dil", f"jmp qword ptr [rdi*8 + {T}]"],
    "cmov into the index": ["cmp rdi, 7", "ja 0x9000", "cmovne rdi, rsi", f"jmp qword ptr [rdi*8 + {T}]"],
    "fs segment": ["cmp rdx, 3", "ja 0x9000", f"jmp qword ptr fs:[rdx*8 + {T}]"],
    "no bound": ["mov rax, qword ptr [rdi*8 + 0x402020]", "jmp rax"],
    "too many entries": ["cmp rdi, 0x10000", "ja 0x9000", f"jmp qword ptr [rdi*8 + {T}]"],
}


@pytest.mark.parametrize("name", sorted(PROVEN))
def test_proven(name: str) -> None:
    lines, expected = PROVEN[name]
    assert prove(window(*lines)) == expected


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(name: str) -> None:
    assert prove(window(*REFUSED[name])) is None
