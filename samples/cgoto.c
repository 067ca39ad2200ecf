/* Computed goto (GNU labels-as-values): a threaded bytecode interpreter with a
 * static table of label addresses, a dispatcher that uses a table of label
 * differences (relative offsets, as glibc's printf does), and a label address
 * kept in a local variable. */
#include <stdio.h>
#include <string.h>

enum {
    PUSH, POP, DUP, SWAP, OVER, ADD, SUB, MUL, DIV, MOD, LT, EQ, JMP, JZ, JNZ,
    LOAD, STORE, PRINT, CALL, RET, NOT, INC, DEC, HALT, NOPCODES
};
static const char *const opnames[NOPCODES] = {
    "push", "pop", "dup", "swap", "over", "add", "sub", "mul", "div", "mod", "lt", "eq",
    "jmp",  "jz",  "jnz", "load", "store", "print", "call", "ret", "not", "inc", "dec", "halt",
};

struct vm_result {
    long top;
    long steps;
    long printed;
    long opcount[NOPCODES];
};

__attribute__((noinline)) static void run(const long *code, long *vars, struct vm_result *res, int verbose) {
    static void *tbl[] = {
        &&op_push, &&op_pop,  &&op_dup,   &&op_swap,  &&op_over, &&op_add, &&op_sub, &&op_mul,
        &&op_div,  &&op_mod,  &&op_lt,    &&op_eq,    &&op_jmp,  &&op_jz,  &&op_jnz, &&op_load,
        &&op_store, &&op_print, &&op_call, &&op_ret, &&op_not, &&op_inc, &&op_dec, &&op_halt,
    };
    long stack[256];
    long rstack[64];
    int sp = 0, rsp = 0;
    const long *pc = code;
    long a, b;
    memset(res, 0, sizeof *res);

#define NEXT                                                                                             \
    do {                                                                                                 \
        res->steps++;                                                                                    \
        res->opcount[*pc]++;                                                                             \
        goto *tbl[*pc++];                                                                                \
    } while (0)

    NEXT;
op_push: stack[sp++] = *pc++; NEXT;
op_pop: sp--; NEXT;
op_dup: stack[sp] = stack[sp - 1]; sp++; NEXT;
op_swap: a = stack[sp - 1]; stack[sp - 1] = stack[sp - 2]; stack[sp - 2] = a; NEXT;
op_over: stack[sp] = stack[sp - 2]; sp++; NEXT;
op_add: b = stack[--sp]; stack[sp - 1] += b; NEXT;
op_sub: b = stack[--sp]; stack[sp - 1] -= b; NEXT;
op_mul: b = stack[--sp]; stack[sp - 1] *= b; NEXT;
op_div: b = stack[--sp]; stack[sp - 1] = b ? stack[sp - 1] / b : 0; NEXT;
op_mod: b = stack[--sp]; stack[sp - 1] = b ? stack[sp - 1] % b : 0; NEXT;
op_lt: b = stack[--sp]; stack[sp - 1] = stack[sp - 1] < b; NEXT;
op_eq: b = stack[--sp]; stack[sp - 1] = stack[sp - 1] == b; NEXT;
op_jmp: pc = code + *pc; NEXT;
op_jz: a = stack[--sp]; pc = a ? pc + 1 : code + *pc; NEXT;
op_jnz: a = stack[--sp]; pc = a ? code + *pc : pc + 1; NEXT;
op_load: stack[sp++] = vars[*pc++]; NEXT;
op_store: vars[*pc++] = stack[--sp]; NEXT;
op_print:
    res->printed++;
    if (verbose) printf("  out %ld\n", stack[sp - 1]);
    sp--;
    NEXT;
op_call: rstack[rsp++] = (pc + 1) - code; pc = code + *pc; NEXT;
op_ret: pc = code + rstack[--rsp]; NEXT;
op_not: stack[sp - 1] = !stack[sp - 1]; NEXT;
op_inc: stack[sp - 1]++; NEXT;
op_dec: stack[sp - 1]--; NEXT;
op_halt:
    res->top = sp > 0 ? stack[sp - 1] : 0;
#undef NEXT
}

/* ---- a tiny assembler with labels -------------------------------------- */
struct asmb {
    long code[512];
    int n;
    int labels[32];
    int fix_at[64], fix_label[64], nfix;
};
static void E(struct asmb *a, long op) { a->code[a->n++] = op; }
static void E1(struct asmb *a, long op, long arg) { E(a, op); E(a, arg); }
static void LBL(struct asmb *a, int l) { a->labels[l] = a->n; }
static void J(struct asmb *a, long op, int l) {
    E(a, op);
    a->fix_at[a->nfix] = a->n;
    a->fix_label[a->nfix++] = l;
    E(a, 0);
}
static void finish(struct asmb *a) {
    for (int i = 0; i < a->nfix; i++) a->code[a->fix_at[i]] = a->labels[a->fix_label[i]];
}

enum { V0, V1, V2, V3, V4 };

/* factorials 1..N (N in V2) */
static void asm_fact(struct asmb *a) {
    enum { LOOP, END };
    E1(a, PUSH, 1); E1(a, STORE, V0); E1(a, PUSH, 1); E1(a, STORE, V1);
    LBL(a, LOOP);
    E1(a, LOAD, V2); E1(a, LOAD, V0); E(a, LT); J(a, JNZ, END);
    E1(a, LOAD, V1); E1(a, LOAD, V0); E(a, MUL); E(a, DUP); E1(a, STORE, V1); E(a, PRINT);
    E1(a, LOAD, V0); E(a, INC); E1(a, STORE, V0); J(a, JMP, LOOP);
    LBL(a, END);
    E1(a, LOAD, V1); E(a, HALT);
}

/* fibonacci with a CALLed subroutine (n in V2) */
static void asm_fib(struct asmb *a) {
    enum { LOOP, END, STEP };
    E1(a, PUSH, 0); E1(a, STORE, V0); E1(a, PUSH, 1); E1(a, STORE, V1);
    LBL(a, LOOP);
    E1(a, LOAD, V2); J(a, JZ, END);
    J(a, CALL, STEP);
    E1(a, LOAD, V2); E(a, DEC); E1(a, STORE, V2); J(a, JMP, LOOP);
    LBL(a, END);
    E1(a, LOAD, V0); E(a, HALT);
    LBL(a, STEP);
    E1(a, LOAD, V0); E1(a, LOAD, V1); E(a, DUP); E1(a, STORE, V0); E(a, ADD); E1(a, STORE, V1);
    E1(a, LOAD, V0); E(a, PRINT); E(a, RET);
}

/* primes below V2, printing each; returns the count */
static void asm_primes(struct asmb *a) {
    enum { OUTER, INNER, PRIME, NEXT, END };
    E1(a, PUSH, 2); E1(a, STORE, V0); E1(a, PUSH, 0); E1(a, STORE, V3);
    LBL(a, OUTER);
    E1(a, LOAD, V0); E1(a, LOAD, V2); E(a, LT); J(a, JZ, END);
    E1(a, PUSH, 2); E1(a, STORE, V1);
    LBL(a, INNER);
    E1(a, LOAD, V1); E(a, DUP); E(a, MUL); E1(a, LOAD, V0); E(a, SWAP); E(a, LT); J(a, JNZ, PRIME);
    E1(a, LOAD, V0); E1(a, LOAD, V1); E(a, MOD); J(a, JZ, NEXT);
    E1(a, LOAD, V1); E(a, INC); E1(a, STORE, V1); J(a, JMP, INNER);
    LBL(a, PRIME);
    E1(a, LOAD, V0); E(a, PRINT); E1(a, LOAD, V3); E(a, INC); E1(a, STORE, V3);
    LBL(a, NEXT);
    E1(a, LOAD, V0); E(a, INC); E1(a, STORE, V0); J(a, JMP, OUTER);
    LBL(a, END);
    E1(a, LOAD, V3); E(a, HALT);
}

/* gcd(V0, V1) with swap/over/mod */
static void asm_gcd(struct asmb *a) {
    enum { LOOP, END };
    E1(a, LOAD, V0); E1(a, LOAD, V1);
    LBL(a, LOOP);
    E(a, DUP); J(a, JZ, END);
    E(a, SWAP); E(a, OVER); E(a, MOD); J(a, JMP, LOOP);
    LBL(a, END);
    E(a, POP); E(a, HALT);
}

/* collatz steps of V0 */
static void asm_collatz(struct asmb *a) {
    enum { LOOP, EVEN, COUNT, END };
    E1(a, PUSH, 0); E1(a, STORE, V1);
    LBL(a, LOOP);
    E1(a, LOAD, V0); E1(a, PUSH, 1); E(a, EQ); J(a, JNZ, END);
    E1(a, LOAD, V0); E1(a, PUSH, 2); E(a, MOD); J(a, JZ, EVEN);
    E1(a, LOAD, V0); E1(a, PUSH, 3); E(a, MUL); E(a, INC); E1(a, STORE, V0); J(a, JMP, COUNT);
    LBL(a, EVEN);
    E1(a, LOAD, V0); E1(a, PUSH, 2); E(a, DIV); E1(a, STORE, V0);
    LBL(a, COUNT);
    E1(a, LOAD, V1); E(a, INC); E1(a, STORE, V1); J(a, JMP, LOOP);
    LBL(a, END);
    E1(a, LOAD, V1); E(a, HALT);
}

/* (1 + .. + n)^2 - (1^2 + .. + n^2), n in V2 */
static void asm_sumsq(struct asmb *a) {
    enum { LOOP, END };
    E1(a, PUSH, 0); E1(a, STORE, V0); E1(a, PUSH, 0); E1(a, STORE, V1); E1(a, PUSH, 1); E1(a, STORE, V3);
    LBL(a, LOOP);
    E1(a, LOAD, V2); E1(a, LOAD, V3); E(a, LT); J(a, JNZ, END);
    E1(a, LOAD, V0); E1(a, LOAD, V3); E(a, ADD); E1(a, STORE, V0);
    E1(a, LOAD, V1); E1(a, LOAD, V3); E(a, DUP); E(a, MUL); E(a, ADD); E1(a, STORE, V1);
    E1(a, LOAD, V3); E(a, INC); E1(a, STORE, V3); J(a, JMP, LOOP);
    LBL(a, END);
    E1(a, LOAD, V0); E(a, DUP); E(a, MUL); E1(a, LOAD, V1); E(a, SUB); E(a, HALT);
}

static void report(const char *name, long arg, const struct vm_result *r) {
    printf("%s(%ld) = %ld  steps=%ld printed=%ld\n", name, arg, r->top, r->steps, r->printed);
    printf("  ops:");
    for (int i = 0; i < NOPCODES; i++)
        if (r->opcount[i]) printf(" %s=%ld", opnames[i], r->opcount[i]);
    printf("\n");
}

/* ---- relative label tables (label differences) ------------------------ */
__attribute__((noinline)) static long rel_dispatch(const char *s, long *classes) {
    static const int offsets[] = {
        &&r_digit - &&r_digit, &&r_alpha - &&r_digit, &&r_space - &&r_digit,
        &&r_punct - &&r_digit, &&r_other - &&r_digit,
    };
    long acc = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int cls = (c >= '0' && c <= '9')                            ? 0
                  : ((c | 32) >= 'a' && (c | 32) <= 'z')           ? 1
                  : (c == ' ')                                      ? 2
                  : (c == '.' || c == ',' || c == '!' || c == '?') ? 3
                                                                    : 4;
        goto *(&&r_digit + offsets[cls]);
    r_digit:
        classes[0]++;
        acc = acc * 10 + (c - '0');
        continue;
    r_alpha:
        classes[1]++;
        acc += (c | 32) - 'a' + 1;
        continue;
    r_space:
        classes[2]++;
        acc = -acc;
        continue;
    r_punct:
        classes[3]++;
        acc *= 3;
        continue;
    r_other:
        classes[4]++;
        acc ^= c;
        continue;
    }
    return acc;
}

/* ---- a label address held in a variable --------------------------------- */
__attribute__((noinline)) static long bounce(long n) {
    long acc = 0;
    void *target = n & 1 ? &&odd : &&even;
    goto *target;
even:
    acc += n / 2;
    if (--n > 0) { target = n & 1 ? &&odd : &&even; goto *target; }
    return acc;
odd:
    acc += 3 * n + 1;
    if (--n > 0) { target = n & 1 ? &&odd : &&even; goto *target; }
    return acc;
}

int main(void) {
    struct asmb a;
    struct vm_result r;
    long vars[8];

    memset(&a, 0, sizeof a); asm_fact(&a); finish(&a);
    for (long n = 1; n <= 20; n += 19) {
        memset(vars, 0, sizeof vars); vars[V2] = n;
        run(a.code, vars, &r, 1);
        report("fact", n, &r);
    }
    memset(&a, 0, sizeof a); asm_fib(&a); finish(&a);
    for (long n = 0; n <= 60; n += 15) {
        memset(vars, 0, sizeof vars); vars[V2] = n;
        run(a.code, vars, &r, n == 30);
        report("fib", n, &r);
    }
    memset(&a, 0, sizeof a); asm_primes(&a); finish(&a);
    for (long n = 10; n <= 1000; n *= 10) {
        memset(vars, 0, sizeof vars); vars[V2] = n;
        run(a.code, vars, &r, n == 100);
        report("primes_below", n, &r);
    }
    memset(&a, 0, sizeof a); asm_gcd(&a); finish(&a);
    for (long x = 12; x < 2000; x = x * 3 + 7) {
        memset(vars, 0, sizeof vars); vars[V0] = x; vars[V1] = 462;
        run(a.code, vars, &r, 0);
        report("gcd462", x, &r);
    }
    memset(&a, 0, sizeof a); asm_collatz(&a); finish(&a);
    for (long x = 1; x <= 40; x += 3) {
        memset(vars, 0, sizeof vars); vars[V0] = x;
        run(a.code, vars, &r, 0);
        report("collatz", x, &r);
    }
    memset(&a, 0, sizeof a); asm_sumsq(&a); finish(&a);
    for (long n = 1; n <= 100; n = n * 2 + 1) {
        memset(vars, 0, sizeof vars); vars[V2] = n;
        run(a.code, vars, &r, 0);
        report("sumsq", n, &r);
    }

    const char *texts[] = {"Hello, world! 123", "42 is the answer.", "a1b2c3 d4e5f6?", "~~ @@ ##", ""};
    for (int i = 0; i < 5; i++) {
        long classes[5] = {0};
        long v = rel_dispatch(texts[i], classes);
        printf("rel_dispatch[%d] = %ld classes=%ld/%ld/%ld/%ld/%ld\n", i, v, classes[0], classes[1],
               classes[2], classes[3], classes[4]);
    }
    for (long n = 0; n <= 100; n += 11) printf("bounce(%ld) = %ld\n", n, bounce(n));
    return 0;
}
