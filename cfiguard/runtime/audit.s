# cfiguard audit logger (x86-64, Intel syntax; position-independent): `harden --audit` only.
#
# In audit mode a violation is logged and the transfer goes on, for a gradual roll-out. A site's audit stub
# saves every register the logger or its syscall may change, calls this with rdi = site, rsi = target,
# edx = kind, restores them and jumps to the guard's `.ok`. The logger writes
# "cfiguard: CFI violation (audit, continuing): <kind> at 0x<site> -> 0x<target>" to fd 2 and returns.
# `cfiguard verify` fails an audit-mode binary unless --allow-audit is given, and `cfiguard info` shows the
# mode, so a release gate never passes one silently.

    push rbx
    push r12
    push r13
    push r14
    push r15
    mov r15, rsp                 # message.s uses rbx (the symbol table)
    cld
    mov r12, rdi                 # site
    mov r13, rsi                 # target
    mov r14d, edx                # kind
    and rsp, -16
    sub rsp, 512
{message}
    mov rsp, r15
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    ret
