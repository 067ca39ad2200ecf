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

    # " (in <function>+0x<offset>)" when the module has a symbol table for the handler: SYMTAB is u64 count,
    # then count x (u64 link-time address, u64 name offset), sorted, then the NUL-terminated names. The site is
    # looked up by binary search for the last function that starts at or before it.
    lea rbx, [rip + 0x61626364]        # SYMTAB (patched by the rewriter)
    mov rcx, qword ptr [rbx]
    test rcx, rcx
    jz sym_done
    xor r8d, r8d                       # lo
    mov r10, rcx                       # hi
sym_loop:
    cmp r8, r10
    jae sym_found
    lea rax, [r8 + r10]
    shr rax, 1
    mov rdx, rax
    shl rdx, 4
    cmp qword ptr [rbx + rdx + 8], r12
    ja sym_high
    lea r8, [rax + 1]
    jmp sym_loop
sym_high:
    mov r10, rax
    jmp sym_loop
sym_found:
    test r8, r8
    jz sym_done
    dec r8
    shl r8, 4
    lea rsi, [rip + s_in]
    mov ecx, 5                         # len(" (in ")
    rep movsb
    mov rcx, qword ptr [rbx]           # the names start after 8 + 16 * count bytes
    shl rcx, 4
    lea rsi, [rbx + rcx + 8]
    add rsi, qword ptr [rbx + r8 + 16] # the name
    mov ecx, 120                       # at most 120 bytes of it
sym_name:
    mov al, byte ptr [rsi]
    test al, al
    jz sym_name_end
    mov byte ptr [rdi], al
    inc rdi
    inc rsi
    dec ecx
    jnz sym_name
sym_name_end:
    mov byte ptr [rdi], 43             # '+'
    mov byte ptr [rdi + 1], 48         # '0'
    mov byte ptr [rdi + 2], 120        # 'x'
    add rdi, 3
    mov rax, r12
    sub rax, qword ptr [rbx + r8 + 8]  # offset of the site in the function
    mov rcx, 60
    xor r8d, r8d
hex_loop_3:
    mov rdx, rax
    shr rdx, cl
    and edx, 15
    or r8d, edx
    test rcx, rcx
    jz hex_emit_3
    test r8d, r8d
    jz hex_next_3
hex_emit_3:
    mov dl, byte ptr [r9 + rdx]
    mov byte ptr [rdi], dl
    inc rdi
hex_next_3:
    sub rcx, 4
    jns hex_loop_3
    mov byte ptr [rdi], 41             # ')'
    inc rdi
sym_done:
    mov byte ptr [rdi], 10
    inc rdi
    mov rdx, rdi
    mov rsi, rsp
    sub rdx, rsi
    mov edi, 2                   # stderr
    mov eax, 1                   # write
    syscall

