/* Function pointers: tables, structs of pointers, qsort/bsearch callbacks,
 * callbacks with context, and tail calls through function pointers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef long (*binop)(long, long);

static long op_add(long a, long b) { return a + b; }
static long op_sub(long a, long b) { return a - b; }
static long op_mul(long a, long b) { return a * b; }
static long op_div(long a, long b) { return b ? a / b : 0; }
static long op_mod(long a, long b) { return b ? a % b : 0; }
static long op_and(long a, long b) { return a & b; }
static long op_or(long a, long b) { return a | b; }
static long op_xor(long a, long b) { return a ^ b; }
static long op_shl(long a, long b) { return (long)((unsigned long)a << (b & 15)); }
static long op_max(long a, long b) { return a > b ? a : b; }
long op_min(long a, long b) { return a < b ? a : b; } /* external linkage on purpose */

static const struct {
    const char *name;
    binop fn;
} op_table[] = {
    {"add", op_add}, {"sub", op_sub}, {"mul", op_mul}, {"div", op_div},
    {"mod", op_mod}, {"and", op_and}, {"or", op_or},   {"xor", op_xor},
    {"shl", op_shl}, {"max", op_max}, {"min", op_min},
};
#define NOPS ((int)(sizeof op_table / sizeof op_table[0]))

/* A writable table, filled at run time. */
static binop runtime_table[NOPS];

__attribute__((noinline)) static binop get_op(int i) { return op_table[i % NOPS].fn; }

/* ---- "objects" with function-pointer members ---------------------------- */
struct shape;
struct shape_ops {
    const char *kind;
    long (*area)(const struct shape *);
    long (*perimeter)(const struct shape *);
    void (*scale)(struct shape *, long);
};
struct shape {
    const struct shape_ops *ops;
    long a, b;
};

static long rect_area(const struct shape *s) { return s->a * s->b; }
static long rect_perim(const struct shape *s) { return 2 * (s->a + s->b); }
static void rect_scale(struct shape *s, long k) { s->a *= k; s->b *= k; }
static long tri_area(const struct shape *s) { return s->a * s->b / 2; }
static long tri_perim(const struct shape *s) { return s->a + s->b + (s->a > s->b ? s->a : s->b); }
static void tri_scale(struct shape *s, long k) { s->a *= k; s->b += k; }
static long sq_area(const struct shape *s) { return s->a * s->a; }
static long sq_perim(const struct shape *s) { return 4 * s->a; }
static void sq_scale(struct shape *s, long k) { s->a += k; }

static const struct shape_ops rect_ops = {"rect", rect_area, rect_perim, rect_scale};
static const struct shape_ops tri_ops = {"tri", tri_area, tri_perim, tri_scale};
static const struct shape_ops sq_ops = {"square", sq_area, sq_perim, sq_scale};

/* ---- qsort / bsearch --------------------------------------------------- */
static int cmp_int_asc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}
static int cmp_int_desc(const void *a, const void *b) { return cmp_int_asc(b, a); }
static int cmp_int_abs_then_val(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    int ax = x < 0 ? -x : x, ay = y < 0 ? -y : y;
    if (ax != ay) return (ax > ay) - (ax < ay);
    return (x > y) - (x < y);
}
static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

struct person {
    const char *name;
    int age;
    int id;
};
static int cmp_person(const void *a, const void *b) {
    const struct person *p = a, *q = b;
    if (p->age != q->age) return p->age - q->age;
    int c = strcmp(p->name, q->name);
    if (c) return c;
    return p->id - q->id;
}
static int cmp_person_key(const void *key, const void *elem) {
    return *(const int *)key - ((const struct person *)elem)->id;
}
static int cmp_person_id(const void *a, const void *b) {
    return ((const struct person *)a)->id - ((const struct person *)b)->id;
}

/* ---- callbacks with context -------------------------------------------- */
typedef void (*visit_fn)(long value, void *ctx);
static void for_each(const long *xs, int n, visit_fn fn, void *ctx) {
    for (int i = 0; i < n; i++) fn(xs[i], ctx);
}
struct stats {
    long sum, min, max, count;
};
static void visit_stats(long v, void *ctx) {
    struct stats *s = ctx;
    if (s->count == 0 || v < s->min) s->min = v;
    if (s->count == 0 || v > s->max) s->max = v;
    s->sum += v;
    s->count++;
}
static void visit_print(long v, void *ctx) { printf("  %s%ld\n", (const char *)ctx, v); }
static void visit_hash(long v, void *ctx) {
    unsigned long *h = ctx;
    *h = (*h ^ (unsigned long)v) * 1099511628211UL;
}

/* ---- tail calls through function pointers ------------------------------ */
struct machine;
typedef long (*state_fn)(long n, long acc, const struct machine *m);
struct machine {
    state_fn next[3];
};
static long st_a(long n, long acc, const struct machine *m);
static long st_b(long n, long acc, const struct machine *m);
static long st_c(long n, long acc, const struct machine *m);
static long st_a(long n, long acc, const struct machine *m) {
    if (n <= 0) return acc;
    return m->next[(n + acc) % 3](n - 1, acc + 1, m);
}
static long st_b(long n, long acc, const struct machine *m) {
    if (n <= 0) return acc * 3;
    return m->next[(n * 7 + acc) % 3](n - 1, (acc * 5 + 3) % 100003, m);
}
static long st_c(long n, long acc, const struct machine *m) {
    if (n <= 0) return -acc;
    return m->next[(acc ^ n) % 3](n - 1, (acc + n * n) % 99991, m);
}

/* Trampolined continuation passing: every step returns the next step. */
struct step;
typedef struct step (*step_fn)(long *state);
struct step {
    step_fn fn;
};
static struct step s_collatz(long *st);
static struct step s_done(long *st) { (void)st; return (struct step){NULL}; }
static struct step s_collatz(long *st) {
    if (st[0] == 1) return (struct step){s_done};
    st[0] = (st[0] & 1) ? 3 * st[0] + 1 : st[0] / 2;
    st[1]++;
    return (struct step){s_collatz};
}

/* A function returning a pointer to a function. */
static long twice(long x) { return 2 * x; }
static long square(long x) { return x * x; }
static long negate(long x) { return -x; }
static long (*pick_unary(int i))(long) {
    static long (*const u[])(long) = {twice, square, negate};
    return u[i % 3];
}
static long compose_apply(long (*f)(long), long (*g)(long), long x) { return f(g(x)); }

int main(void) {
    /* op tables */
    static const long args[][2] = {{7, 3}, {-20, 6}, {1000, 7}, {0, 5}, {123456, 789}, {-9, -4}};
    for (int i = 0; i < NOPS; i++) runtime_table[i] = op_table[NOPS - 1 - i].fn;
    for (int a = 0; a < (int)(sizeof args / sizeof args[0]); a++) {
        for (int i = 0; i < NOPS; i++) {
            long x = args[a][0], y = args[a][1];
            long r1 = op_table[i].fn(x, y);
            long r2 = runtime_table[NOPS - 1 - i](x, y);
            long r3 = get_op(i)(x, y);
            printf("op %-3s(%ld, %ld) = %ld %s\n", op_table[i].name, x, y, r1,
                   (r1 == r2 && r2 == r3) ? "ok" : "MISMATCH");
        }
    }
    long acc = 1;
    for (int i = 0; i < 200; i++) acc = get_op(i * 7 + 3)(acc, i + 1) % 1000003;
    printf("op chain = %ld\n", acc);

    /* shapes */
    struct shape shapes[] = {
        {&rect_ops, 3, 4}, {&tri_ops, 6, 8}, {&sq_ops, 5, 0}, {&rect_ops, 10, 1}, {&sq_ops, 2, 0},
    };
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5; i++) {
            struct shape *s = &shapes[i];
            printf("round %d %-6s area=%ld perimeter=%ld\n", round, s->ops->kind, s->ops->area(s),
                   s->ops->perimeter(s));
            s->ops->scale(s, round + 2);
        }
    }

    /* qsort / bsearch */
    int nums[64];
    unsigned seed = 12345;
    for (int i = 0; i < 64; i++) {
        seed = seed * 1103515245u + 12345u;
        nums[i] = (int)((seed >> 16) % 2001) - 1000;
    }
    int (*cmps[])(const void *, const void *) = {cmp_int_asc, cmp_int_desc, cmp_int_abs_then_val};
    for (int c = 0; c < 3; c++) {
        qsort(nums, 64, sizeof nums[0], cmps[c]);
        printf("sorted[%d]:", c);
        for (int i = 0; i < 64; i++) printf(" %d", nums[i]);
        printf("\n");
    }
    qsort(nums, 64, sizeof nums[0], cmp_int_asc);
    for (int k = -1000; k <= 1000; k += 97) {
        int *hit = bsearch(&k, nums, 64, sizeof nums[0], cmp_int_asc);
        printf("bsearch %d -> %s\n", k, hit ? "found" : "absent");
    }
    for (int i = 0; i < 64; i += 9) {
        int *hit = bsearch(&nums[i], nums, 64, sizeof nums[0], cmp_int_asc);
        printf("bsearch present %d -> %s\n", nums[i], hit && *hit == nums[i] ? "found" : "absent");
    }
    const char *words[] = {"pear", "apple", "fig", "banana", "kiwi", "cherry", "date", "grape",
                           "lemon", "mango", "apricot", "lime", "plum", "peach", "melon", "olive"};
    qsort(words, 16, sizeof words[0], cmp_str);
    for (int i = 0; i < 16; i++) printf("word %2d %s\n", i, words[i]);
    const char *key = "lime";
    const char **w = bsearch(&key, words, 16, sizeof words[0], cmp_str);
    printf("bsearch word lime -> index %d\n", w ? (int)(w - words) : -1);

    struct person people[] = {
        {"zoe", 30, 7}, {"adam", 25, 3}, {"eve", 30, 1}, {"bob", 25, 9}, {"carl", 41, 4},
        {"dora", 19, 2}, {"eve", 30, 8}, {"finn", 19, 6}, {"gina", 41, 5}, {"hank", 33, 0},
    };
    qsort(people, 10, sizeof people[0], cmp_person);
    for (int i = 0; i < 10; i++) printf("person %-4s %d #%d\n", people[i].name, people[i].age, people[i].id);
    qsort(people, 10, sizeof people[0], cmp_person_id);
    for (int id = 0; id < 12; id += 1) {
        struct person *p = bsearch(&id, people, 10, sizeof people[0], cmp_person_key);
        printf("lookup id %d -> %s\n", id, p ? p->name : "-");
    }

    /* callbacks with context */
    long values[40];
    for (int i = 0; i < 40; i++) values[i] = (long)((i * 37 + 11) % 53) - 20;
    struct stats st = {0, 0, 0, 0};
    for_each(values, 40, visit_stats, &st);
    printf("stats sum=%ld min=%ld max=%ld count=%ld\n", st.sum, st.min, st.max, st.count);
    for_each(values, 8, visit_print, (void *)"value ");
    unsigned long h = 1469598103934665603UL;
    for_each(values, 40, visit_hash, &h);
    printf("hash=%lu\n", h);

    /* tail calls */
    struct machine m1 = {{st_a, st_b, st_c}}, m2 = {{st_c, st_a, st_b}};
    for (long n = 0; n <= 20000; n += 2500) {
        printf("machine1(%ld) = %ld, machine2(%ld) = %ld\n", n, m1.next[n % 3](n, 1, &m1), n,
               m2.next[n % 3](n, 1, &m2));
    }
    for (long start = 1; start <= 30; start++) {
        long stt[2] = {start, 0};
        struct step s = {s_collatz};
        while (s.fn) s = s.fn(stt);
        printf("collatz(%ld) steps=%ld\n", start, stt[1]);
    }
    for (int i = 0; i < 9; i++) {
        long (*f)(long) = pick_unary(i), (*g)(long) = pick_unary(i / 3);
        printf("compose %d = %ld\n", i, compose_apply(f, g, i + 3));
    }
    printf("fptr identity: %d %d\n", get_op(10) == op_min, pick_unary(1) == square);
    return 0;
}
