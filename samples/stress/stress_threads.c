/* 16 threads making millions of indirect calls while an interval timer delivers signals to the process. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#define THREADS 16
#define CALLS 400000

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) { (void)sig; ticks++; }

typedef unsigned long (*op_fn)(unsigned long, unsigned long);
static unsigned long op_add(unsigned long a, unsigned long b) { return a + b; }
static unsigned long op_xor(unsigned long a, unsigned long b) { return a ^ (b * 2654435761u); }
static unsigned long op_rot(unsigned long a, unsigned long b) { return (a << 7 | a >> 57) + b; }
static unsigned long op_mul(unsigned long a, unsigned long b) { return a * 31 + b; }
static op_fn table[] = {op_add, op_xor, op_rot, op_mul};

static unsigned long results[THREADS];

static void *worker(void *arg) {
    unsigned long id = (unsigned long)arg, acc = id;
    for (unsigned long i = 0; i < CALLS; i++) acc = table[(acc ^ i) & 3](acc, i);
    results[id] = acc;
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    pthread_t t[THREADS];
    for (unsigned long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    unsigned long sum = 0;
    for (int i = 0; i < THREADS; i++) sum ^= results[i] * (i + 1);
    printf("checksum %lx signals %s\n", sum, ticks > 0 ? "delivered" : "none");
    return 0;
}
