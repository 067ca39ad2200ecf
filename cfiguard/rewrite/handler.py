"""The violation handler: one per module, in the new code segment.

It may run while the program is under attack, so it uses no libc and no stack data of the program: it builds
the message `cfiguard: CFI violation: <kind> at 0x<site> -> 0x<target>` in a fresh aligned stack area, writes
it to fd 2 with a raw syscall, resets SIGABRT to its default action and unblocks it (a program's own handler must
not swallow the abort), and raises SIGABRT on the current thread. If that somehow returns it exits with 134.
It contains no `ret` and no indirect branch, so it adds no unguarded site.

Inputs (set by the per-site violation stub): rdi = site address, rsi = target address (link-time addresses, to
match `objdump` and the JSON report), edx = kind (0 call, 1 jmp, 2 ret).
"""

from __future__ import annotations

from functools import lru_cache

from cfiguard.errors import RewriteError

_HEX = """
    mov rax, {reg}
    mov rcx, 60
    xor r8d, r8d
hex_loop_{n}:
    mov rdx, rax
    shr rdx, cl
    and edx, 15
    or r8d, edx
    test rcx, rcx
    jz hex_emit_{n}
    test r8d, r8d
    jz hex_next_{n}
hex_emit_{n}:
    mov dl, byte ptr [r9 + rdx]
    mov byte ptr [rdi], dl
    inc rdi
hex_next_{n}:
    sub rcx, 4
    jns hex_loop_{n}
"""

_COPY = """
    lea rsi, [rip + {label}]
    mov ecx, {length}
    rep movsb
"""

_PREFIX = b"cfiguard: CFI violation: "
_AT = b" at 0x"
_ARROW = b" -> 0x"


def _asm_source() -> str:
    return (
        """
    cld
    mov r12, rdi
    mov r13, rsi
    mov r14d, edx
    and rsp, -16
    sub rsp, 512
    mov rdi, rsp
"""
        + _COPY.format(label="s_prefix", length=len(_PREFIX))
        + """
    lea rsi, [rip + s_call]
    mov ecx, 4
    cmp r14d, 1
    jb kind_done
    lea rsi, [rip + s_jmp]
    mov ecx, 3
    je kind_done
    lea rsi, [rip + s_ret]
    mov ecx, 3
kind_done:
    rep movsb
"""
        + _COPY.format(label="s_at", length=len(_AT))
        + "    lea r9, [rip + s_digits]\n"
        + _HEX.format(reg="r12", n=1)
        + _COPY.format(label="s_arrow", length=len(_ARROW))
        + _HEX.format(reg="r13", n=2)
        + """
    mov byte ptr [rdi], 10
    inc rdi
    mov rdx, rdi
    lea rsi, [rsp]
    sub rdx, rsi
    mov edi, 2
    mov eax, 1
    syscall
    lea rsi, [rsp + 256]
    xor eax, eax
    mov qword ptr [rsi], rax
    mov qword ptr [rsi + 8], rax
    mov qword ptr [rsi + 16], rax
    mov qword ptr [rsi + 24], rax
    mov edi, 6
    xor edx, edx
    mov r10d, 8
    mov eax, 13
    syscall
    lea rsi, [rsp + 256]
    mov qword ptr [rsi], 32
    mov edi, 1
    xor edx, edx
    mov r10d, 8
    mov eax, 14
    syscall
    mov eax, 39
    syscall
    mov r12d, eax
    mov eax, 186
    syscall
    mov esi, eax
    mov edi, r12d
    mov edx, 6
    mov eax, 234
    syscall
    mov edi, 134
    mov eax, 231
    syscall
    hlt
"""
    )


@lru_cache(maxsize=1)
def handler_code() -> bytes:
    """Position-independent handler bytes: code, then its strings."""
    import keystone

    strings = {
        "s_prefix": _PREFIX,
        "s_call": b"call",
        "s_jmp": b"jmp",
        "s_ret": b"ret",
        "s_at": _AT,
        "s_arrow": _ARROW,
        "s_digits": b"0123456789abcdef",
    }
    src = _asm_source()
    for name, value in strings.items():
        src += f"{name}:\n" + "".join(f"    .byte {b}\n" for b in value)
    try:
        ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
        enc, _ = ks.asm(src, 0)
    except keystone.KsError as e:  # pragma: no cover
        raise RewriteError(f"keystone failed on the violation handler: {e}") from None
    return bytes(enc)
