/* Recursion close to the stack limit (through a function pointer), and longjmp out of a signal handler. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static sigjmp_buf env;
static volatile int hits;

static void on_usr1(int sig) { (void)sig; hits++; siglongjmp(env, hits); }

static long down(long n, long (*self)(long, void *), void *p);
static long step(long n, void *p) { return down(n, (long (*)(long, void *))p, p); }
static long down(long n, long (*self)(long, void *), void *p) {
    volatile char pad[64];
    pad[0] = (char)n;
    if (n == 0) return pad[0];
    return self(n - 1, p) + 1 + pad[0] * 0;
}

int main(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_STACK, &rl);
    /* ~160 bytes per frame pair: use about 80% of an 8 MiB stack (the default). */
    long depth = 8L * 1024 * 1024 * 8 / 10 / 160;
    printf("recursion %ld\n", down(depth, (long (*)(long, void *))step, (void *)step));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    for (int i = 0; i < 1000; i++) {
        if (sigsetjmp(env, 1) == 0) raise(SIGUSR1);
    }
    printf("longjmp out of handler %d times\n", hits);
    return 0;
}
