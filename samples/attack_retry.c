/* Attack demo against the violation handler itself: the program installs a SIGALRM handler that
 * siglongjmps back into the attack loop, keeps an alarm pending, and its stderr is a pipe that nobody reads
 * (the caller fills it first). A violation handler that wrote its message before blocking signals could be
 * abandoned this way, and the attacker could retry guesses until one works.
 *
 *   attack_retry            normal mode: prints "ok", exits 0
 *   attack_retry OFFSET     attack mode: the function pointer becomes &ref + OFFSET (sym(win) - sym(ref)),
 *                           tried up to 5 times; each survived try prints "survived N"
 *
 * win() prints HIJACKED and exits with status 42; its address is never taken. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
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

NO_ENDBR __attribute__((used, noinline)) static void win(void) {
    static const char msg[] = "HIJACKED\n";
    ssize_t r = write(1, msg, sizeof msg - 1);
    (void)r;
    _exit(42);
}

__attribute__((noinline)) int ref(int x) { return 2 * x + 1; }

static sigjmp_buf env;
static void on_alarm(int sig) {
    (void)sig;
    siglongjmp(env, 1);
}

int (*volatile fp)(int) = ref;

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("ok %d\n", fp(20));
        return 0;
    }
    long off = strtol(argv[1], NULL, 16);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    static volatile int tries = 0;
    sigsetjmp(env, 1);
    if (tries > 0) {
        printf("survived %d\n", tries);
        fflush(stdout);
    }
    if (tries >= 5) return 0;
    tries++;
    alarm(1);
    fp = (int (*)(int))((uintptr_t)ref + off);
    fp(1);
    return 0;
}
