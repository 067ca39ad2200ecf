# AVX512-FP16 code that capstone 5 cannot decode, in a function the program never runs (fp16(0) returns at once).
# Used by tests/unit/test_vex.py: cfiguard must relocate it (re-aiming the rip-relative vaddph) and verify it.
        .text
        .globl main
        .type fp16, @function
fp16:   test %edi, %edi
        jz 1f
        vfpclassphz $0x81, (%rax), %k1
        vaddph konst(%rip), %zmm0, %zmm1
        vmovw %xmm0, %eax
1:      ret
        .size fp16, .-fp16
        .type main, @function
main:   sub $8, %rsp
        xor %edi, %edi
        call fp16
        add $8, %rsp
        xor %eax, %eax
        ret
        .size main, .-main
        .section .rodata
        .balign 64
konst:  .fill 64, 1, 0x3c
        .section .note.GNU-stack,"",@progbits
