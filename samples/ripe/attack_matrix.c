/* RIPE-style attack matrix: one program, many (location x technique) combinations.
 *
 *   attack_matrix                         normal mode: every indirect transfer used legitimately, exit 0
 *   attack_matrix LOCATION TECHNIQUE OFF  attack mode
 *
 * LOCATION  where the code pointer lives:
 *   stack   a function pointer in a local struct      heap   in a malloc'ed struct
 *   bss     in a zero-initialised global struct        data   in an initialised global struct
 *   ret     the saved return address of a function     got    the GOT slot of puts() (lazy binding)
 * TECHNIQUE how it is corrupted:
 *   direct  an arbitrary write of the pointer          overflow   an unchecked copy past a buffer
 * OFF       hex, sym(win) - sym(ref); the new pointer is &ref + OFF (for got: see below)
 *
 * win() prints HIJACKED and exits 42; its address is never taken, so it carries no label. For `got`, OFF is
 * slot(puts) - &anchor (a data symbol) and the value written is &ref + (sym(win) - sym(ref)) given as a second
 * offset argument; built with -z lazy -z norelro so the GOT is writable, as in the classic attack. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

__attribute__((noinline)) int ref(int x) { return 3 * x + 1; }

struct victim {
    char buf[16];
    int (*fn)(int);
};

struct victim bss_victim;
struct victim data_victim = {"data", ref};
long anchor = 1;

static uintptr_t evil;

/* The bug: no bound check on len. */
__attribute__((noinline)) static void copy(struct victim *v, const unsigned char *src, size_t len) {
    unsigned char *volatile dst = (unsigned char *)v->buf;
    for (size_t i = 0; i < len; i++) dst[i] = src[i];
}

__attribute__((noinline)) static void corrupt(struct victim *v, int overflow) {
    if (overflow) {
        unsigned char payload[sizeof(struct victim)];
        memset(payload, 'A', sizeof payload);
        memcpy(payload + offsetof(struct victim, fn), &evil, sizeof evil);
        copy(v, payload, offsetof(struct victim, fn) + sizeof evil);
    } else {
        *(uintptr_t volatile *)&v->fn = evil;
    }
}

__attribute__((noinline)) static int call(struct victim *v, int x) { return v->fn(x); }

__attribute__((noinline, optimize("no-omit-frame-pointer"))) static int smash_return(int overflow) {
    volatile uintptr_t *frame = (volatile uintptr_t *)__builtin_frame_address(0);
    if (overflow) {
        unsigned char *volatile p = (unsigned char *)(frame + 1);
        for (size_t i = 0; i < sizeof evil; i++) p[i] = ((unsigned char *)&evil)[i];
    } else {
        frame[1] = evil;
    }
    return 0;
}

int main(int argc, char **argv) {
    struct victim stack_victim = {"stack", ref};
    struct victim *heap_victim = malloc(sizeof *heap_victim);
    memcpy(heap_victim->buf, "heap", 5);
    heap_victim->fn = ref;
    bss_victim.fn = ref;
    printf("%d %d %d %d\n", call(&stack_victim, 1), call(heap_victim, 2), call(&bss_victim, 3), call(&data_victim, 4));
    puts("normal");
    if (argc < 4) return 0;
    const char *where = argv[1];
    int overflow = strcmp(argv[2], "overflow") == 0;
    evil = (uintptr_t)((char *)ref + strtoll(argv[3], NULL, 16));
    if (strcmp(where, "stack") == 0) corrupt(&stack_victim, overflow), call(&stack_victim, 5);
    else if (strcmp(where, "heap") == 0) corrupt(heap_victim, overflow), call(heap_victim, 5);
    else if (strcmp(where, "bss") == 0) corrupt(&bss_victim, overflow), call(&bss_victim, 5);
    else if (strcmp(where, "data") == 0) corrupt(&data_victim, overflow), call(&data_victim, 5);
    else if (strcmp(where, "ret") == 0) smash_return(overflow);
    else if (strcmp(where, "got") == 0 && argc > 4) {
        uintptr_t *slot = (uintptr_t *)((char *)&anchor + strtoll(argv[4], NULL, 16));
        *slot = evil;
        puts("through the GOT");
    }
    puts("not hijacked");
    return 0;
}
