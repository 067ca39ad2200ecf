# cfiguard cross-module stub for a return (one per site, after the violation stubs).
#
# A return whose target T lies outside the module's code range [lo, hi) comes here with r11 = T - lo and
# r10 = lo. It may leave the module only to an address right after a call instruction (or to the two places
# the C library makes functions return to without a call: the signal restorer `mov rax, 15; syscall`, and
# makecontext's `__start_context`, `mov rsp, rbx; mov rdi, [rsp]`), never into this module's own data. That
# stops return-into-libc (a return to a function entry) and most gadget chains (a `pop rdi; ret` is rarely
# right after a call). The call forms recognised end exactly at T:
#   e8 rel32 (5 bytes); ff /2 of 2, 3, 4, 6 or 7 bytes (call reg, [reg], [reg+d8], [sib], [sib+d8],
#   [rip+d32], [reg+d32], [sib+d32]), with or without a REX or other prefix before the ff.
# The byte patterns may also match bytes that are no call (that only allows more, never breaks a return).
# Exits as in xmod_fwd.s: OK with r10 = lo, r11 = T - lo; BAD with r11 = T - lo. Only r10, r11 and the
# flags are used: at a return they are saved or dead (docs/guards.md).

    add r11, r10                       # r11 = T
    lea r10, [rip + 0x13243546]        # MODLO
    neg r10
    add r10, r11
    cmp r10, 0x22334455                # MODSIZE
    jb bad                             # into this module's own data
    cmp byte ptr [r11 - 5], 0xe8       # call rel32
    je good
    movzx r10d, word ptr [r11 - 2]     # ff /2, 2 bytes
    and r10d, 0x38ff
    cmp r10d, 0x10ff
    je good
    movzx r10d, word ptr [r11 - 3]     # ff /2, 3 bytes
    and r10d, 0x38ff
    cmp r10d, 0x10ff
    je good
    movzx r10d, word ptr [r11 - 4]     # ff /2, 4 bytes
    and r10d, 0x38ff
    cmp r10d, 0x10ff
    je good
    movzx r10d, word ptr [r11 - 6]     # ff /2, 6 bytes
    and r10d, 0x38ff
    cmp r10d, 0x10ff
    je good
    movzx r10d, word ptr [r11 - 7]     # ff /2, 7 bytes
    and r10d, 0x38ff
    cmp r10d, 0x10ff
    je good
    mov r10d, dword ptr [r11]          # the signal restorer: 48 c7 c0 0f 00 00 00 0f 05
    cmp r10d, 0x0fc0c748
    jne startctx
    cmp dword ptr [r11 + 4], 0x0f000000
    jne startctx
    cmp byte ptr [r11 + 8], 0x05
    je good
startctx:
    mov r10d, dword ptr [r11]          # __start_context: 48 89 dc 48 8b 3c 24
    cmp r10d, 0x48dc8948
    jne bad
    cmp word ptr [r11 + 4], 0x3c8b
    jne bad
    cmp byte ptr [r11 + 6], 0x24
    je good
bad:
    lea r10, [rip + 0x11223344]        # LO
    sub r11, r10
    jmp 0x40000000                     # BAD
good:
    lea r10, [rip + 0x11223344]        # LO
    sub r11, r10
    jmp 0x50000000                     # OK
