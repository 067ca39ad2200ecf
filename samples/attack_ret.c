/* Attack demo: a function overwrites its own saved return address, so that its
 * `ret` transfers control to win(), a function whose address is never taken.
 *
 *   attack_ret            normal mode: prints results, exits 0
 *   attack_ret OFFSET     attack mode: OFFSET (hex, may be negative) is
 *                         sym(win) - sym(ref); the return address becomes &ref + OFFSET
 *
 * The Makefile builds this file with -fno-omit-frame-pointer, and victim() calls
 * __builtin_frame_address(0), so victim() always has a frame pointer: the saved
 * return address sits at __builtin_frame_address(0) + 8 at every -O level with
 * both gcc and clang. win() realigns the stack (force_align_arg_pointer) because
 * it is entered by a `ret`, not a `call`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* With -fcf-protection, keep win() free of endbr64: it must not look like an indirect-branch target. */
#if defined(__CET__)
#define NO_ENDBR __attribute__((nocf_check))
#else
#define NO_ENDBR
#endif

NO_ENDBR __attribute__((used, noinline, force_align_arg_pointer)) static void win(void) {
    static const char msg[] = "HIJACKED\n";
    ssize_t r = write(1, msg, sizeof msg - 1);
    (void)r;
    _exit(42);
}

__attribute__((noinline)) int ref(int x) { return 3 * x + 2; }
__attribute__((noinline)) int other(int x) { return x - 1; }
static int (*const volatile table[2])(int) = {ref, other};

static volatile uintptr_t attack_target;

__attribute__((noinline)) static int victim(int x) {
    volatile int local[4] = {x, x + 1, x + 2, x + 3};
    if (attack_target) {
        void *volatile *frame = (void *volatile *)__builtin_frame_address(0);
        frame[1] = (void *)attack_target; /* the saved return address */
    }
    return local[0] + local[1] * local[2] - local[3];
}

__attribute__((noinline)) static int outer(int x) {
    int r = victim(x);
    return r + 1; /* after a hijack, never reached */
}

int main(int argc, char **argv) {
    for (int i = 0; i < 2; i++)
        for (int x = 0; x < 5; x++) printf("table[%d](%d) = %d\n", i, x, table[i](x));
    for (int x = 0; x < 5; x++) printf("outer(%d) = %d\n", x, outer(x));
    if (argc > 1) {
        long long off = strtoll(argv[1], NULL, 16);
        attack_target = (uintptr_t)table[0] + (uintptr_t)off;
        printf("attack: overwriting the return address with &ref%+lld\n", off);
        fflush(stdout);
    }
    printf("after: outer(10) = %d\n", outer(10));
    return 0;
}
