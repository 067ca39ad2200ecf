/* Test program for the verifier: indirect calls through a function-pointer table, a switch that compiles to a
 * jump table, and a qsort callback (a pointer that libc calls back). Deterministic output. */
#include <stdio.h>
#include <stdlib.h>

typedef long (*op_fn)(long, long);
static long add(long a, long b) { return a + b; }
static long sub(long a, long b) { return a - b; }
static long mul(long a, long b) { return a * b; }
static long xor_(long a, long b) { return a ^ b; }
static op_fn ops[] = {add, sub, mul, xor_};
volatile long sink;

__attribute__((noinline)) static long apply(op_fn f, long a, long b) {
    long r = f(a, b); /* an indirect call that is not a tail call */
    sink = r;
    return r * 2;
}

__attribute__((noinline)) static long pick(int k, long x) {
    switch (k) {
    case 0: return x + 11;
    case 1: return x * 3;
    case 2: return x ^ 0x55;
    case 3: return x - 7;
    case 4: return x << 2;
    case 5: return x / 3;
    case 6: return x % 5;
    case 7: return -x;
    default: return 0;
    }
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    (void)argv;
    long v[] = {5, 3, 9, 1, 7, 4, 8, 2};
    qsort(v, 8, sizeof v[0], cmp_long);
    long total = 0;
    for (int i = 0; i < 8; i++) {
        total += apply(ops[(i + argc) % 4], v[i], i);
        total += pick((i * 5 + argc) % 9, v[i]);
    }
    for (int i = 0; i < 8; i++)
        printf("%ld ", v[i]);
    printf("\n%ld\n", total);
    return 0;
}
