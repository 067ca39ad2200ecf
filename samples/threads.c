/* Threads and thread-local storage: __thread variables (initialised and zeroed),
 * workers started through a table of thread functions, a mutex-protected shared
 * counter, pthread_once, a pthread_key destructor, a barrier, a condition-variable
 * producer/consumer, pthread_exit with cleanup handlers, and results collected by
 * join. Threads only write to their own slots; main prints after joining, so the
 * output does not depend on scheduling. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTHREADS 8

static __thread long tls_counter;          /* .tbss */
static __thread long tls_init = 42;        /* .tdata */
__thread int tls_visible[4] = {1, 2, 3, 4}; /* external linkage */

struct slot {
    int index;
    long result;
    long tls_before, tls_after;
    int visible_sum;
    int once_seen;
    long partial;
};
static struct slot slots[NTHREADS];

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long shared_total;
static long shared_increments;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_runs;
static void init_once(void) { once_runs++; }

static pthread_key_t key;
static int key_destructor_runs[NTHREADS];
static void key_destructor(void *p) {
    struct slot *s = p;
    key_destructor_runs[s->index]++;
}

static pthread_barrier_t barrier;

__attribute__((noinline)) static void bump(long by) { tls_counter += by; }

static long work_squares(struct slot *s) {
    long acc = 0;
    for (long i = 0; i < 1000; i++) {
        bump(i % 7);
        acc += (i * s->index) % 97;
    }
    return acc;
}
static long work_primes(struct slot *s) {
    long count = 0;
    for (long n = 2; n < 2000 + 100 * s->index; n++) {
        int prime = 1;
        for (long d = 2; d * d <= n; d++)
            if (n % d == 0) { prime = 0; break; }
        count += prime;
        bump(prime);
    }
    return count;
}
static long work_fib(struct slot *s) {
    long a = 0, b = 1;
    for (int i = 0; i < 40 + s->index; i++) {
        long t = a + b;
        a = b;
        b = t;
        bump(1);
    }
    return a;
}
static long work_string(struct slot *s) {
    char buf[128];
    long h = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(buf, sizeof buf, "thread-%d-item-%d", s->index, i);
        for (char *p = buf; *p; p++) h = (h * 131 + *p) % 1000000007;
        bump(2);
    }
    return h;
}
static long (*const workers[])(struct slot *) = {work_squares, work_primes, work_fib, work_string};

static void *thread_main(void *arg) {
    struct slot *s = arg;
    pthread_once(&once, init_once);
    s->once_seen = once_runs;
    pthread_setspecific(key, s);
    s->tls_before = tls_init * 1000 + tls_counter;
    tls_init += s->index;
    s->result = workers[s->index % 4](s);
    for (int i = 0; i < 4; i++) {
        tls_visible[i] *= s->index + 1;
        s->visible_sum += tls_visible[i];
    }

    /* phase 1: everyone adds into the shared total under the mutex */
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&lock);
        shared_total += s->index + 1;
        shared_increments++;
        pthread_mutex_unlock(&lock);
    }
    pthread_barrier_wait(&barrier);
    /* phase 2: after the barrier every thread sees the same, final total */
    pthread_mutex_lock(&lock);
    s->partial = shared_total;
    pthread_mutex_unlock(&lock);
    s->tls_after = tls_init * 1000000 + tls_counter;
    return (void *)(intptr_t)(s->index * 10 + 1);
}

/* producer / consumer over a small ring buffer */
#define RING 8
static struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    long items[RING];
    int head, tail, count, done;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0, 0, 0};

static void *producer(void *arg) {
    long n = (long)(intptr_t)arg;
    for (long i = 1; i <= n; i++) {
        pthread_mutex_lock(&q.m);
        while (q.count == RING) pthread_cond_wait(&q.not_full, &q.m);
        q.items[q.tail] = i;
        q.tail = (q.tail + 1) % RING;
        q.count++;
        pthread_cond_signal(&q.not_empty);
        pthread_mutex_unlock(&q.m);
    }
    pthread_mutex_lock(&q.m);
    q.done = 1;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.m);
    return NULL;
}
struct consumed {
    long sum, sum_sq, count, order_ok;
};
static void *consumer(void *arg) {
    struct consumed *c = arg;
    long last = 0;
    c->order_ok = 1;
    for (;;) {
        pthread_mutex_lock(&q.m);
        while (q.count == 0 && !q.done) pthread_cond_wait(&q.not_empty, &q.m);
        if (q.count == 0 && q.done) {
            pthread_mutex_unlock(&q.m);
            break;
        }
        long v = q.items[q.head];
        q.head = (q.head + 1) % RING;
        q.count--;
        pthread_cond_signal(&q.not_full);
        pthread_mutex_unlock(&q.m);
        if (v != last + 1) c->order_ok = 0;
        last = v;
        c->sum += v;
        c->sum_sq += v * v;
        c->count++;
    }
    return c;
}

/* pthread_exit from deep inside, with cleanup handlers */
static int cleanup_log[8];
static int cleanup_n;
static void cleanup(void *arg) { cleanup_log[cleanup_n++] = (int)(intptr_t)arg; }
static volatile int exit_enabled = 1;
__attribute__((noinline)) static void deep_exit(int depth) {
    if (depth > 0)
        deep_exit(depth - 1);
    else if (exit_enabled)
        pthread_exit((void *)(intptr_t)777);
    cleanup_log[7] = -1; /* not reached */
}
static void *exiter(void *arg) {
    pthread_cleanup_push(cleanup, (void *)1);
    pthread_cleanup_push(cleanup, (void *)2);
    pthread_cleanup_push(cleanup, (void *)3);
    deep_exit(10);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    return NULL;
}

int main(void) {
    pthread_t tids[NTHREADS];
    pthread_key_create(&key, key_destructor);
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    tls_counter = 5;
    tls_init = 7;

    for (int i = 0; i < NTHREADS; i++) {
        slots[i].index = i;
        pthread_create(&tids[i], NULL, thread_main, &slots[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        pthread_join(tids[i], &ret);
        printf("thread %d returned %ld\n", i, (long)(intptr_t)ret);
    }
    for (int i = 0; i < NTHREADS; i++) {
        const struct slot *s = &slots[i];
        printf("slot %d: result=%ld tls_before=%ld tls_after=%ld visible_sum=%d once=%d partial=%ld "
               "key_destructor=%d\n",
               i, s->result, s->tls_before, s->tls_after, s->visible_sum, s->once_seen, s->partial,
               key_destructor_runs[i]);
    }
    printf("shared_total=%ld increments=%ld once_runs=%d\n", shared_total, shared_increments, once_runs);
    printf("main tls: counter=%ld init=%ld visible=%d,%d,%d,%d\n", tls_counter, tls_init, tls_visible[0],
           tls_visible[1], tls_visible[2], tls_visible[3]);

    for (long n = 10; n <= 10000; n *= 10) {
        pthread_t p, c;
        struct consumed got = {0, 0, 0, 0};
        q.head = q.tail = q.count = q.done = 0;
        pthread_create(&c, NULL, consumer, &got);
        pthread_create(&p, NULL, producer, (void *)(intptr_t)n);
        pthread_join(p, NULL);
        void *r;
        pthread_join(c, &r);
        printf("queue n=%ld: count=%ld sum=%ld sum_sq=%ld in_order=%ld same_ptr=%d\n", n, got.count, got.sum,
               got.sum_sq, got.order_ok, r == &got);
    }

    pthread_t ex;
    void *exret;
    pthread_create(&ex, NULL, exiter, NULL);
    pthread_join(ex, &exret);
    printf("pthread_exit value=%ld cleanups=%d order=", (long)(intptr_t)exret, cleanup_n);
    for (int i = 0; i < cleanup_n; i++) printf("%d", cleanup_log[i]);
    printf(" unreached=%d\n", cleanup_log[7]);

    pthread_barrier_destroy(&barrier);
    pthread_key_delete(key);
    return 0;
}
