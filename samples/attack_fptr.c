/* Attack demo: a function pointer in a heap object is overwritten by an
 * "overflow" of the neighbouring name buffer, redirecting an indirect call to
 * win(), a function whose address is never taken anywhere in the program.
 *
 *   attack_fptr            normal mode: prints results, exits 0
 *   attack_fptr OFFSET     attack mode: OFFSET (hex, may be negative) is
 *                          sym(win) - sym(ref); the pointer becomes &ref + OFFSET
 *
 * win() prints HIJACKED and exits with status 42. It is static, never
 * referenced (kept by `used`) and has no endbr64 (nocf_check), so nothing in
 * the binary marks it as an indirect-branch target. ref() is address-taken
 * legitimately: it is the handler the program really installs. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

__attribute__((noinline)) int ref(int x) { return 2 * x + 1; }
__attribute__((noinline)) int other(int x) { return x * x - 3; }

struct handler {
    char name[16];
    int (*fn)(int);
};

__attribute__((noinline)) static int dispatch(const struct handler *h, int x) { return h->fn(x); }

/* Copies len bytes into h->name: the bug is that len is not checked against sizeof h->name. */
__attribute__((noinline)) static void set_name(struct handler *h, const unsigned char *src, size_t len) {
    unsigned char *volatile dst = (unsigned char *)h;
    for (size_t i = 0; i < len; i++) dst[offsetof(struct handler, name) + i] = src[i];
}

int main(int argc, char **argv) {
    struct handler *hs = calloc(2, sizeof *hs);
    memcpy(hs[0].name, "ref", 4);
    hs[0].fn = ref;
    memcpy(hs[1].name, "other", 6);
    hs[1].fn = other;
    for (int i = 0; i < 2; i++)
        for (int x = 0; x < 5; x++) printf("%s(%d) = %d\n", hs[i].name, x, dispatch(&hs[i], x));

    if (argc > 1) {
        long long off = strtoll(argv[1], NULL, 16);
        uintptr_t target = (uintptr_t)ref + (uintptr_t)off;
        unsigned char payload[sizeof(struct handler)];
        memset(payload, 'A', sizeof payload);
        payload[sizeof hs[0].name - 1] = '\0';
        memcpy(payload + offsetof(struct handler, fn), &target, sizeof target);
        printf("attack: overwriting handler with &ref%+lld\n", off);
        fflush(stdout);
        set_name(&hs[0], payload, sizeof payload);
    }
    printf("after: %s(7) = %d\n", hs[0].name, dispatch(&hs[0], 7));
    free(hs);
    return 0;
}
