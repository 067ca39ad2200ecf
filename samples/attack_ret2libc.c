/* Attack demo across modules: a saved return address overwritten to point into libc.
 *
 *   attack_ret2libc            normal mode: prints "ok 42", exits 0
 *   attack_ret2libc entry      the return address becomes libc's _exit (a function entry: return-into-libc)
 *   attack_ret2libc gadget     it becomes a `pop rdi; ret` inside libc, then 42, then _exit (a gadget chain)
 *
 * Either way a hijacked run exits with status 42 without printing "ok". The overwrite is done by hand in
 * victim() (writing through the frame address), standing for a stack overflow. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uintptr_t chain[3];  /* what the "overflow" writes over the return address and above it */
static int depth;

__attribute__((noinline)) static int victim(int n) {
    volatile uintptr_t *ret = (uintptr_t *)__builtin_frame_address(0) + 1;
    if (chain[0]) {
        ret[0] = chain[0];
        ret[1] = chain[1];
        ret[2] = chain[2];
    }
    depth += n;
    return n + 1;  /* the return: rdi still holds n = 42 when chain[0] is _exit itself */
}

/* A `pop rdi; ret` (5f c3) inside libc's code that does not follow a call. */
static uintptr_t find_gadget(void) {
    uintptr_t exit_addr = (uintptr_t)dlsym(RTLD_NEXT, "_exit");
    Dl_info info;
    if (!dladdr((void *)exit_addr, &info)) return 0;
    const unsigned char *p = (const unsigned char *)exit_addr;
    for (int i = -0x20000; i < 0x20000; i++) {
        if (p[i] == 0x5f && p[i + 1] == 0xc3 && p[i - 5] != 0xe8 && p[i - 2] != 0xff && p[i - 3] != 0xff)
            return (uintptr_t)(p + i);
    }
    return 0;
}

int main(int argc, char **argv) {
    uintptr_t exit_addr = (uintptr_t)dlsym(RTLD_NEXT, "_exit");
    if (argc > 1 && !strcmp(argv[1], "entry")) {
        chain[0] = exit_addr;
    } else if (argc > 1 && !strcmp(argv[1], "gadget")) {
        chain[0] = find_gadget();
        chain[1] = 42;
        chain[2] = exit_addr;
        if (!chain[0]) return 3;
    }
    int r = victim(42);
    printf("ok %d\n", r - 1);
    return 0;
}
