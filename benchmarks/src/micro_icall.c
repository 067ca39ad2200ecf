/* Worst case for label CFI: almost every instruction executed is an indirect call, a return or an indirect
 * jump, so each guard's fixed cost is paid on a body of two or three instructions.
 *
 *   micro_icall N     runs N rounds and prints a checksum (identical for original and hardened binaries)
 *
 * Three kernels, each dominated by one kind of guarded edge:
 *   - fib through a function pointer: one indirect call and one return per node of the recursion tree;
 *   - a table of tiny arithmetic functions called in a data-dependent order (indirect call + return);
 *   - a switch-based bytecode interpreter (indirect jump through a jump table on every opcode).
 * noinline and the volatile function pointers keep gcc -O2 from turning the indirect calls into direct ones.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t (*fib_fn)(uint64_t);
static fib_fn volatile fib_ptr;

__attribute__((noinline)) static uint64_t fib(uint64_t n) {
    if (n < 2)
        return n;
    return fib_ptr(n - 1) + fib_ptr(n - 2);
}

typedef uint64_t (*op_fn)(uint64_t, uint64_t);
__attribute__((noinline)) static uint64_t op_add(uint64_t a, uint64_t b) { return a + b; }
__attribute__((noinline)) static uint64_t op_sub(uint64_t a, uint64_t b) { return a - b; }
__attribute__((noinline)) static uint64_t op_xor(uint64_t a, uint64_t b) { return a ^ b; }
__attribute__((noinline)) static uint64_t op_mul(uint64_t a, uint64_t b) { return a * (b | 1); }
__attribute__((noinline)) static uint64_t op_rol(uint64_t a, uint64_t b) { return (a << (b & 31)) | (a >> (64 - (b & 31) - 1)); }
__attribute__((noinline)) static uint64_t op_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
__attribute__((noinline)) static uint64_t op_max(uint64_t a, uint64_t b) { return a > b ? a : b; }
__attribute__((noinline)) static uint64_t op_mix(uint64_t a, uint64_t b) { return (a ^ (b >> 3)) + 0x9e3779b97f4a7c15ULL; }

static op_fn volatile table[8] = {op_add, op_sub, op_xor, op_mul, op_rol, op_min, op_max, op_mix};

__attribute__((noinline)) static uint64_t table_kernel(uint64_t rounds) {
    uint64_t acc = 1, x = 88172645463325252ULL;
    for (uint64_t i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = table[x & 7](acc, x);
    }
    return acc;
}

enum { OP_PUSH, OP_ADD, OP_MUL, OP_DUP, OP_SWAP, OP_POP, OP_XOR, OP_SHR, OP_INC, OP_JNZ, OP_HALT };

__attribute__((noinline)) static uint64_t interp(const uint8_t *code, uint64_t loops) {
    uint64_t stack[64];
    int sp = 0;
    size_t pc = 0;
    uint64_t counter = loops;
    for (;;) {
        switch (code[pc++]) {
        case OP_PUSH: stack[sp++] = code[pc++]; break;
        case OP_ADD: sp--; stack[sp - 1] += stack[sp]; break;
        case OP_MUL: sp--; stack[sp - 1] *= stack[sp] | 1; break;
        case OP_DUP: stack[sp] = stack[sp - 1]; sp++; break;
        case OP_SWAP: { uint64_t t = stack[sp - 1]; stack[sp - 1] = stack[sp - 2]; stack[sp - 2] = t; } break;
        case OP_POP: sp--; break;
        case OP_XOR: sp--; stack[sp - 1] ^= stack[sp]; break;
        case OP_SHR: stack[sp - 1] >>= 1; break;
        case OP_INC: stack[sp - 1]++; break;
        case OP_JNZ: if (--counter) pc = code[pc]; else pc++; break;
        case OP_HALT: return stack[sp - 1];
        default: abort();
        }
    }
}

int main(int argc, char **argv) {
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10;
    fib_ptr = fib;
    static const uint8_t prog[] = {OP_PUSH, 7, /* 2: */ OP_DUP, OP_PUSH, 3, OP_MUL, OP_XOR, OP_INC, OP_DUP,
                                   OP_SHR, OP_ADD, OP_PUSH, 5, OP_SWAP, OP_POP, OP_JNZ, 2, OP_HALT};
    uint64_t sum = 0;
    for (uint64_t r = 0; r < n; r++) {
        sum += fib_ptr(24);
        sum += table_kernel(200000);
        sum += interp(prog, 200000);
    }
    printf("%llu\n", (unsigned long long)sum);
    return 0;
}
