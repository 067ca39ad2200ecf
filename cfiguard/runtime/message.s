# The message "<s_prefix><kind> at 0x<site> -> 0x<target>\n", built at rsp and written to fd 2 (the result of
# the write is ignored). In: r12 = site, r13 = target, r14d = kind (0 call, 1 jmp, 2 ret); rsp: a free,
# aligned 512-byte area. Shared by the violation handler (handler.s) and the audit logger (audit.s).
    # 3. the message
    mov rdi, rsp
    lea rsi, [rip + s_prefix]
    mov ecx, {prefix_len}                  # len(s_prefix)
    rep movsb
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
    lea rsi, [rip + s_at]
    mov ecx, 6                   # len(" at 0x")
    rep movsb
    lea r9, [rip + s_digits]

    mov rax, r12                 # site in hex, without leading zeros
    mov rcx, 60
    xor r8d, r8d
hex_loop_1:
    mov rdx, rax
    shr rdx, cl
    and edx, 15
    or r8d, edx
    test rcx, rcx
    jz hex_emit_1
    test r8d, r8d
    jz hex_next_1
hex_emit_1:
    mov dl, byte ptr [r9 + rdx]
    mov byte ptr [rdi], dl
    inc rdi
hex_next_1:
    sub rcx, 4
    jns hex_loop_1

    lea rsi, [rip + s_arrow]
    mov ecx, 6                   # len(" -> 0x")
    rep movsb

    mov rax, r13                 # target in hex
    mov rcx, 60
    xor r8d, r8d
hex_loop_2:
    mov rdx, rax
    shr rdx, cl
    and edx, 15
    or r8d, edx
    test rcx, rcx
    jz hex_emit_2
    test r8d, r8d
    jz hex_next_2
hex_emit_2:
    mov dl, byte ptr [r9 + rdx]
    mov byte ptr [rdi], dl
    inc rdi
hex_next_2:
    sub rcx, 4
    jns hex_loop_2

    mov byte ptr [rdi], 10
    inc rdi
    mov rdx, rdi
    mov rsi, rsp
    sub rdx, rsi
    mov edi, 2                   # stderr
    mov eax, 1                   # write
    syscall

