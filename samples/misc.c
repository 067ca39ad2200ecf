/* Varargs (va_list, va_copy, vsnprintf), setjmp/longjmp out of deep recursion,
 * atexit handlers, constructor/destructor functions, and recursion of several
 * kinds (plain, mutual, backtracking). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- constructors / destructors / atexit -------------------------------- */
static int ctor_value;
__attribute__((constructor)) static void early_init(void) { ctor_value = 1234; }
__attribute__((constructor(200))) static void earlier_init(void) { ctor_value = -1; }
__attribute__((destructor)) static void late_fini(void) { printf("destructor: ctor_value=%d\n", ctor_value); }

static int exit_order;
static void bye_1(void) { printf("atexit handler 1 (order %d)\n", ++exit_order); }
static void bye_2(void) { printf("atexit handler 2 (order %d)\n", ++exit_order); }
static void bye_3(void) {
    printf("atexit handler 3 (order %d)\n", ++exit_order);
    fflush(stdout);
}

/* ---- varargs ------------------------------------------------------------ */
static long sum_ints(int n, ...) {
    va_list ap;
    long s = 0;
    va_start(ap, n);
    for (int i = 0; i < n; i++) s += va_arg(ap, int);
    va_end(ap);
    return s;
}
static double mean_doubles(int n, ...) {
    va_list ap;
    double s = 0;
    va_start(ap, n);
    for (int i = 0; i < n; i++) s += va_arg(ap, double);
    va_end(ap);
    return n ? s / n : 0.0;
}
/* A mini formatter: %d int, %l long, %s string, %f double (2 decimals), %c char, %% */
static int mini_format(char *out, size_t cap, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    size_t n = 0;
    int args = 0;
    for (const char *p = fmt; *p && n + 32 < cap; p++) {
        if (*p != '%') {
            out[n++] = *p;
            continue;
        }
        switch (*++p) {
        case 'd': n += (size_t)snprintf(out + n, cap - n, "%d", va_arg(ap, int)); args++; break;
        case 'l': n += (size_t)snprintf(out + n, cap - n, "%ld", va_arg(ap, long)); args++; break;
        case 's': n += (size_t)snprintf(out + n, cap - n, "%s", va_arg(ap, const char *)); args++; break;
        case 'f': n += (size_t)snprintf(out + n, cap - n, "%.2f", va_arg(ap, double)); args++; break;
        case 'c': out[n++] = (char)va_arg(ap, int); args++; break;
        case '%': out[n++] = '%'; break;
        default: out[n++] = '?'; break;
        }
    }
    out[n] = '\0';
    /* walk the same arguments again with the copy: the first must match */
    int first = (fmt[0] == '%' && fmt[1] == 'd') ? va_arg(ap2, int) : -1;
    va_end(ap2);
    va_end(ap);
    return args * 1000 + (first & 0xff);
}
static int vwrap(char *buf, size_t cap, const char *fmt, va_list ap) { return vsnprintf(buf, cap, fmt, ap); }
static int wrap(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vwrap(buf, cap, fmt, ap);
    va_end(ap);
    return r;
}
/* many mixed arguments: more than fit in registers */
static long many_args(int n, ...) {
    va_list ap;
    va_start(ap, n);
    long acc = 0;
    for (int i = 0; i < n; i++) {
        if (i % 3 == 2) acc += (long)(va_arg(ap, double) * 10);
        else acc = acc * 3 + va_arg(ap, long);
    }
    va_end(ap);
    return acc;
}

/* ---- setjmp / longjmp ---------------------------------------------------- */
static jmp_buf env_outer, env_inner;
static int unwound_frames;
__attribute__((noinline)) static int dive(int depth, int bail_at, jmp_buf *env) {
    volatile char pad[32];
    pad[0] = (char)depth;
    if (depth == bail_at) longjmp(*env, depth == 0 ? 0 : depth * 10 + 1);
    if (depth >= 1000) return depth; /* never reached: every caller bails out earlier */
    int r = dive(depth + 1, bail_at, env) + pad[0];
    unwound_frames++; /* only reached if nothing jumped */
    return r;
}
__attribute__((noinline)) static int inner_protected(int bail) {
    volatile int stage = 0;
    int r = setjmp(env_inner);
    if (r == 0) {
        stage = 1;
        dive(0, bail, &env_inner);
        return -1;
    }
    stage = 2;
    if (r > 2500) longjmp(env_outer, r + 1); /* re-throw to the outer handler */
    return r * 100 + stage;
}

/* ---- recursion ------------------------------------------------------------ */
static long ackermann(long m, long n) {
    if (m == 0) return n + 1;
    if (n == 0) return ackermann(m - 1, 1);
    return ackermann(m - 1, ackermann(m, n - 1));
}
static long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
static int is_odd(unsigned n);
static int is_even(unsigned n) { return n == 0 ? 1 : is_odd(n - 1); }
static int is_odd(unsigned n) { return n == 0 ? 0 : is_even(n - 1); }
static long hanoi(int n, int from, int to, int via, long *checksum) {
    if (n == 0) return 0;
    long moves = hanoi(n - 1, from, via, to, checksum);
    *checksum = (*checksum * 7 + from * 3 + to) % 1000000007;
    return moves + 1 + hanoi(n - 1, via, to, from, checksum);
}
static int queens(int n, int row, int *cols) {
    if (row == n) return 1;
    int count = 0;
    for (int c = 0; c < n; c++) {
        int ok = 1;
        for (int r = 0; r < row; r++)
            if (cols[r] == c || abs(cols[r] - c) == row - r) { ok = 0; break; }
        if (!ok) continue;
        cols[row] = c;
        count += queens(n, row + 1, cols);
    }
    return count;
}
static void permute(char *s, int k, int n, int *count, char *first, char *last) {
    if (k == n) {
        if (*count == 0) strcpy(first, s);
        strcpy(last, s);
        (*count)++;
        return;
    }
    for (int i = k; i < n; i++) {
        char t = s[k]; s[k] = s[i]; s[i] = t;
        permute(s, k + 1, n, count, first, last);
        t = s[k]; s[k] = s[i]; s[i] = t;
    }
}
static int flood(char grid[8][9], int r, int c) {
    if (r < 0 || r >= 8 || c < 0 || c >= 8 || grid[r][c] != '.') return 0;
    grid[r][c] = '#';
    return 1 + flood(grid, r + 1, c) + flood(grid, r - 1, c) + flood(grid, r, c + 1) + flood(grid, r, c - 1);
}
static long partitions(int n, int max) {
    if (n == 0) return 1;
    long total = 0;
    for (int k = max < n ? max : n; k >= 1; k--) total += partitions(n - k, k);
    return total;
}

int main(void) {
    atexit(bye_1);
    atexit(bye_2);
    atexit(bye_3);
    printf("constructor ran: ctor_value=%d\n", ctor_value);

    printf("sum_ints: %ld %ld %ld\n", sum_ints(0), sum_ints(3, 1, 2, 3), sum_ints(10, 1, -2, 3, -4, 5, -6, 7, -8, 9, -10));
    printf("mean_doubles: %.3f %.3f\n", mean_doubles(4, 1.5, 2.5, 3.5, 4.5), mean_doubles(7, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.25));
    char buf[256];
    int r = mini_format(buf, sizeof buf, "%d items of %s cost %f (%c%c) %l%% %q", 7, "widgets", 12.3456, 'o', 'k', 99999999999L);
    printf("mini_format -> \"%s\" code=%d\n", buf, r);
    for (int i = 0; i < 5; i++) {
        r = mini_format(buf, sizeof buf, "%d:%s:%l:%f", i * 11, i % 2 ? "odd" : "even", (long)i << 40, i / 3.0);
        printf("mini_format[%d] -> \"%s\" code=%d\n", i, buf, r);
    }
    r = wrap(buf, sizeof buf, "%5d|%-6s|%08.3f|%x|%lu", 42, "ab", 3.14159, 0xbeef, 18446744073709551615UL);
    printf("wrap(%d) -> \"%s\"\n", r, buf);
    printf("many_args: %ld\n", many_args(12, 1L, 2L, 0.5, 3L, 4L, 1.25, 5L, 6L, 2.5, 7L, 8L, 9.75));

    for (int bail = 0; bail <= 600; bail += 150) {
        volatile int status = setjmp(env_outer);
        if (status == 0) {
            int v = inner_protected(bail);
            printf("longjmp bail=%d -> inner result %d\n", bail, v);
        } else {
            printf("longjmp bail=%d -> rethrown to outer with %d\n", bail, status);
        }
    }
    printf("frames that returned normally: %d\n", unwound_frames);

    printf("ackermann(2,3)=%ld ackermann(3,3)=%ld ackermann(3,5)=%ld\n", ackermann(2, 3), ackermann(3, 3), ackermann(3, 5));
    for (int n = 0; n <= 27; n += 3) printf("fib(%d)=%ld\n", n, fib(n));
    printf("is_even(1000)=%d is_odd(777)=%d is_even(31)=%d\n", is_even(1000), is_odd(777), is_even(31));
    for (int n = 1; n <= 16; n += 3) {
        long ck = 0;
        long moves = hanoi(n, 1, 3, 2, &ck);
        printf("hanoi(%d) moves=%ld checksum=%ld\n", n, moves, ck);
    }
    for (int n = 1; n <= 8; n++) {
        int cols[8];
        printf("queens(%d)=%d\n", n, queens(n, 0, cols));
    }
    char s[] = "abcdef";
    int count = 0;
    char first[8], last[8];
    permute(s, 0, 6, &count, first, last);
    printf("permutations of abcdef: %d first=%s last=%s\n", count, first, last);
    char grid[8][9] = {"..#.....", ".##..#..", "#...##..", "..#....#", ".#..###.", "....#...", "##..#.#.", "...#...."};
    printf("flood from (0,0): %d cells\n", flood(grid, 0, 0));
    printf("flood from (7,7): %d cells\n", flood(grid, 7, 7));
    for (int i = 0; i < 8; i++) printf("  %s\n", grid[i]);
    for (int n = 1; n <= 40; n += 6) printf("partitions(%d)=%ld\n", n, partitions(n, n));
    return 3; /* a non-zero exit code on purpose */
}
