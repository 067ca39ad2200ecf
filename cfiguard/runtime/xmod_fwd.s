# cfiguard cross-module stub for an indirect call or jump (one per site, after the violation stubs).
#
# A guard whose target T lies outside the module's code range [lo, hi) jumps here with r11 = T - lo and
# r10 = lo. Targets in another module pass (the coarse cross-module policy), except addresses of this very
# module outside its code: its data, bss, relocation-read-only data and label table are never valid targets
# (shellcode in a global buffer, a pointer aimed at a vtable). Exits, always with r11 = T - lo:
#   OK   (r10 = lo again): the guard's `.ok`, which transfers to T;
#   BAD: the site's violation stub, which reports T.
# Uses only r10, r11 and the flags, which the guard already treats as clobbered. The placeholders (LO =
# 0x11223344, MODLO = 0x13243546, MODSIZE = 0x22334455, OK = 0x50000000, BAD = 0x40000000) are patched per
# site by cfiguard/rewrite/xmod.py; the verifier matches the assembled bytes exactly.

    add r11, r10                       # r11 = T
    lea r10, [rip + 0x13243546]        # MODLO: the module's lowest loaded address
    neg r10
    add r10, r11                       # T - module start
    cmp r10, 0x22334455                # MODSIZE: the module's whole loaded span
    jb bad                             # inside the module, outside its code
    lea r10, [rip + 0x11223344]        # LO
    sub r11, r10
    jmp 0x50000000                     # OK
bad:
    lea r10, [rip + 0x11223344]        # LO
    sub r11, r10
    jmp 0x40000000                     # BAD
