# cfiguard violation handler (x86-64, Intel syntax, assembled by keystone; position-independent).
#
# One per hardened module, at the end of the new code segment. A guard's violation stub jumps here with
#   rdi = site address, rsi = target address (link-time addresses, as objdump and the JSON report show them),
#   edx = kind (0 call, 1 jmp, 2 ret).
# It may run while the program is under attack, so it uses no libc and no data of the program, and it must
# not be abandonable: the program's own signal handlers must never run once it has started.
#   1. block every signal (rt_sigprocmask SIG_SETMASK, all ones): no handler of the program can run, so
#      nothing can siglongjmp out of here (SIGKILL and SIGSTOP cannot be blocked, and only end or stop us);
#   2. reset SIGALRM to its default action, arm alarm(2) and unblock SIGALRM alone: if the write below blocks
#      (stderr a stalled pipe), the alarm ends the process;
#   3. write "cfiguard: CFI violation: <kind> at 0x<site> -> 0x<target>\n" to fd 2, built in a fresh
#      aligned stack area (its result is ignored: a failed write must not stop us from dying);
#   4. reset SIGABRT to its default action, unblock it alone, and tgkill(getpid(), gettid(), SIGABRT);
#   5. if that returns, exit_group(134); hlt as the very last resort.
# Rules the verifier checks (docs/verifier.md): no ret, no indirect branch, and every syscall is immediately
# preceded by `mov eax, N` with N one of write, rt_sigaction, rt_sigprocmask, alarm, getpid, gettid, tgkill,
# exit_group.
#
# Stack layout (after alignment): [rsp, rsp+256) message, [rsp+256, rsp+288) struct sigaction,
# [rsp+288, rsp+296) a signal set.

    cld
    mov r12, rdi                 # site
    mov r13, rsi                 # target
    mov r14d, edx                # kind
    and rsp, -16
    sub rsp, 512

    # 1. block every signal
    mov qword ptr [rsp + 288], -1
    lea rsi, [rsp + 288]
    mov edi, 2                   # SIG_SETMASK
    xor edx, edx
    mov r10d, 8
    mov eax, 14                  # rt_sigprocmask
    syscall

    # 2. SIGALRM: default action, alarm(2), unblocked
    lea rsi, [rsp + 256]
    xor eax, eax
    mov qword ptr [rsi], rax     # sa_handler = SIG_DFL
    mov qword ptr [rsi + 8], rax
    mov qword ptr [rsi + 16], rax
    mov qword ptr [rsi + 24], rax
    mov edi, 14                  # SIGALRM
    xor edx, edx
    mov r10d, 8
    mov eax, 13                  # rt_sigaction
    syscall
    mov edi, 2
    mov eax, 37                  # alarm
    syscall
    mov qword ptr [rsp + 288], 0x2000    # 1 << (SIGALRM - 1)
    lea rsi, [rsp + 288]
    mov edi, 1                   # SIG_UNBLOCK
    xor edx, edx
    mov r10d, 8
    mov eax, 14                  # rt_sigprocmask
    syscall

    # 3. the message: message.s
{message}
    # 4. SIGABRT: default action, unblocked, raised on this thread
    lea rsi, [rsp + 256]
    mov edi, 6                   # SIGABRT (the sigaction struct above is still all zeros)
    xor edx, edx
    mov r10d, 8
    mov eax, 13                  # rt_sigaction
    syscall
    mov qword ptr [rsp + 288], 32        # 1 << (SIGABRT - 1)
    lea rsi, [rsp + 288]
    mov edi, 1                   # SIG_UNBLOCK
    xor edx, edx
    mov r10d, 8
    mov eax, 14                  # rt_sigprocmask
    syscall
    mov eax, 39                  # getpid
    syscall
    mov r12d, eax
    mov eax, 186                 # gettid
    syscall
    mov esi, eax
    mov edi, r12d
    mov edx, 6
    mov eax, 234                 # tgkill
    syscall

    # 5. last resorts
    mov edi, 134
    mov eax, 231                 # exit_group
    syscall
    hlt
