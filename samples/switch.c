/* Dense switch statements, big enough that gcc and clang lower them to jump
 * tables (at -O0 too): an expression evaluator, a tokenizer with case ranges,
 * a state machine, an offset case range, Duff's device and nested switches. */
#include <stdio.h>
#include <string.h>

static unsigned long trace_hash = 0;
__attribute__((noinline)) static void note(int tag, long v) {
    trace_hash = trace_hash * 31 + (unsigned long)(tag * 7) + (unsigned long)v;
}

/* 1. expression evaluator: every case computes something different. */
__attribute__((noinline)) static long eval_op(int op, long a, long b) {
    long r;
    switch (op) {
    case 0: r = a + b; break;
    case 1: r = a - b; break;
    case 2: r = a * b; break;
    case 3: r = b ? a / b : -1; break;
    case 4: r = b ? a % b : -1; break;
    case 5: r = a & b; break;
    case 6: r = a | b; break;
    case 7: r = a ^ b; break;
    case 8: r = (long)((unsigned long)a << (b & 7)); break;
    case 9: r = a >> (b & 7); break;
    case 10: r = a > b ? a : b; break;
    case 11: r = a < b ? a : b; break;
    case 12: r = a * a + b; break;
    case 13: r = (a + b) * (a - b); break;
    case 14: r = a == b; break;
    case 15: r = -a + 3 * b; break;
    case 16: r = a * 2 + (b >> 1); break;
    case 17: r = a * 10 + b % 10; break;
    case 18: r = ~a & 0xff; break;
    case 19: r = a + b + 1000; break;
    default: r = 0; note(99, op); break;
    }
    note(op, r);
    return r;
}

/* 2. tokenizer: switch on characters with GNU case ranges. */
enum tok { T_IDENT, T_NUM, T_OP, T_SPACE, T_PUNCT, T_OTHER, T_COUNT };
__attribute__((noinline)) static enum tok classify(int c, int *opcount) {
    switch (c) {
    case 'a' ... 'z':
    case 'A' ... 'Z':
    case '_':
        return T_IDENT;
    case '0' ... '9':
        return T_NUM;
    case '+': (*opcount)++; return T_OP;
    case '-': (*opcount) += 2; return T_OP;
    case '*': (*opcount) += 3; return T_OP;
    case '/': (*opcount) += 4; return T_OP;
    case '%': (*opcount) += 5; return T_OP;
    case '=': (*opcount) += 6; return T_OP;
    case '<': (*opcount) += 7; return T_OP;
    case '>': (*opcount) += 8; return T_OP;
    case '!': (*opcount) += 9; return T_OP;
    case '&': (*opcount) += 10; return T_OP;
    case '|': (*opcount) += 11; return T_OP;
    case ' ':
    case '\t':
    case '\n':
        return T_SPACE;
    case '(': case ')': case '{': case '}': case '[': case ']': case ';': case ',': case '.':
        return T_PUNCT;
    default:
        return T_OTHER;
    }
}

/* 3. a state machine in a loop: parse "key=value;" records. */
enum st { S_START, S_KEY, S_EQ, S_VAL, S_NUM, S_STR, S_ESC, S_END, S_ERR, S_SKIP, S_COMMENT, S_DONE };
static const char *state_names[] = {"start", "key",  "eq",   "val",     "num",     "str",
                                    "esc",   "end",  "err",  "skip",    "comment", "done"};
__attribute__((noinline)) static void run_machine(const char *in) {
    enum st s = S_START;
    long num = 0, records = 0, errors = 0, strlen_acc = 0, comments = 0, transitions = 0;
    for (const char *p = in;; p++) {
        char c = *p;
        enum st prev = s;
        switch (s) {
        case S_START:
            if (c == '\0') s = S_DONE;
            else if (c == '#') s = S_COMMENT;
            else if (c == ' ' || c == ';') s = S_START;
            else if ((c >= 'a' && c <= 'z')) s = S_KEY;
            else s = S_ERR;
            break;
        case S_KEY:
            if (c == '=') s = S_EQ;
            else if (c >= 'a' && c <= 'z') s = S_KEY;
            else s = S_ERR;
            break;
        case S_EQ:
            if (c >= '0' && c <= '9') { num = c - '0'; s = S_NUM; }
            else if (c == '"') s = S_STR;
            else s = S_ERR;
            break;
        case S_VAL: s = S_END; break;
        case S_NUM:
            if (c >= '0' && c <= '9') num = num * 10 + (c - '0');
            else if (c == ';') { records++; printf("  record num=%ld\n", num); s = S_START; }
            else if (c == '\0') { records++; s = S_DONE; }
            else s = S_ERR;
            break;
        case S_STR:
            if (c == '\\') s = S_ESC;
            else if (c == '"') s = S_END;
            else if (c == '\0') s = S_ERR;
            else strlen_acc++;
            break;
        case S_ESC: strlen_acc += 2; s = c ? S_STR : S_ERR; break;
        case S_END:
            records++;
            printf("  record str (total chars %ld)\n", strlen_acc);
            s = c == '\0' ? S_DONE : S_START;
            break;
        case S_ERR: errors++; s = S_SKIP; p--; break;
        case S_SKIP:
            if (c == ';') s = S_START;
            else if (c == '\0') s = S_DONE;
            break;
        case S_COMMENT:
            if (c == '\n' || c == '\0') { comments++; s = c ? S_START : S_DONE; }
            break;
        case S_DONE: break;
        }
        if (s != prev) transitions++;
        note(100 + (int)s, c);
        if (s == S_DONE || c == '\0') break;
    }
    printf("machine: records=%ld errors=%ld comments=%ld transitions=%ld final=%s\n", records, errors,
           comments, transitions, state_names[s]);
}

/* 4. cases offset from zero: 1000..1023. */
__attribute__((noinline)) static const char *http_ish(int code, long *acc) {
    switch (code) {
    case 1000: *acc += 1; return "continue";
    case 1001: *acc += 2; return "switching";
    case 1002: *acc *= 3; return "processing";
    case 1003: *acc -= 4; return "early";
    case 1004: *acc += 5; return "ok";
    case 1005: *acc ^= 6; return "created";
    case 1006: *acc += 7; return "accepted";
    case 1007: *acc *= 2; return "non-authoritative";
    case 1008: *acc -= 9; return "no-content";
    case 1009: *acc += 10; return "reset";
    case 1010: *acc |= 11; return "partial";
    case 1011: *acc += 12; return "multi";
    case 1012: *acc -= 13; return "already";
    case 1013: *acc += 14; return "im-used";
    case 1015: *acc += 15; return "redirect";
    case 1016: *acc *= 5; return "moved";
    case 1017: *acc += 17; return "found";
    case 1018: *acc -= 18; return "see-other";
    case 1019: *acc += 19; return "not-modified";
    case 1020: *acc &= 0xffff; return "use-proxy";
    case 1022: *acc += 22; return "temporary";
    case 1023: *acc += 23; return "permanent";
    default: *acc += 1000; return "unknown";
    }
}

/* 5. Duff's device. */
__attribute__((noinline)) static void duff_copy(short *to, const short *from, int count) {
    int n = (count + 7) / 8;
    if (count <= 0) return;
    switch (count % 8) {
    case 0: do { *to++ = *from++; /* fallthrough */
    case 7:      *to++ = *from++; /* fallthrough */
    case 6:      *to++ = *from++; /* fallthrough */
    case 5:      *to++ = *from++; /* fallthrough */
    case 4:      *to++ = *from++; /* fallthrough */
    case 3:      *to++ = *from++; /* fallthrough */
    case 2:      *to++ = *from++; /* fallthrough */
    case 1:      *to++ = *from++;
            } while (--n > 0);
    }
}

/* 6. nested switches, with fallthrough. */
__attribute__((noinline)) static int nested(int a, int b) {
    int r = 0;
    switch (a) {
    case 0:
        switch (b) {
        case 0: r = 1; break;
        case 1: r = 3; break;
        case 2: r = 5; break;
        case 3: r = 7; break;
        case 4: r = 11; break;
        case 5: r = 13; break;
        case 6: r = 17; break;
        default: r = -1; break;
        }
        break;
    case 1: r += 100; /* fallthrough */
    case 2: r += 200; /* fallthrough */
    case 3:
        switch (b) {
        case 0: r += 10; break;
        case 1: r += 20; /* fallthrough */
        case 2: r += 30; break;
        case 3: r *= 2; break;
        case 4: r -= 50; break;
        case 5: r = r / 3; break;
        case 6: r = -r; break;
        default: r += 9999; break;
        }
        break;
    case 4: r = a * b; break;
    case 5: r = a + b * 1000; break;
    case 6: r = nested(b % 4, a - 6); break;
    case 7: r = 77; break;
    default: r = -a; break;
    }
    return r;
}

/* 7. a big switch over an enum, called with a string argument. */
enum color { RED, ORANGE, YELLOW, GREEN, CYAN, BLUE, INDIGO, VIOLET, BLACK, WHITE, GREY, BROWN, PINK };
__attribute__((noinline)) static void describe(enum color c, char *buf, size_t n) {
    switch (c) {
    case RED: snprintf(buf, n, "red:%d", 0xff0000); break;
    case ORANGE: snprintf(buf, n, "orange:%d:%s", 0xff8000, "warm"); break;
    case YELLOW: snprintf(buf, n, "yellow/%x", 0xffff00); break;
    case GREEN: strncpy(buf, "green", n); break;
    case CYAN: snprintf(buf, n, "cyan(%o)", 0x00ffff); break;
    case BLUE: snprintf(buf, n, "%s-%s", "deep", "blue"); break;
    case INDIGO: snprintf(buf, n, "indigo#%d", 75); break;
    case VIOLET: snprintf(buf, n, "violet %c%c", 'v', 'i'); break;
    case BLACK: strncpy(buf, "black", n); buf[0] = 'B'; break;
    case WHITE: snprintf(buf, n, "white=%5.2f", 1.0); break;
    case GREY: snprintf(buf, n, "grey%d%d", 1, 2); break;
    case BROWN: snprintf(buf, n, "br%sown", "--"); break;
    case PINK: snprintf(buf, n, "pink[%ld]", 12345678901L); break;
    default: snprintf(buf, n, "?%d", (int)c); break;
    }
}

int main(void) {
    for (int op = 0; op < 22; op++) {
        printf("op%-2d:", op);
        for (long a = -7; a <= 9; a += 4)
            for (long b = -3; b <= 6; b += 3) printf(" %ld", eval_op(op, a, b));
        printf("\n");
    }

    const char *sources[] = {
        "int main(void) { return a+b*c-d/e%f; }",
        "if (x <= 10 && y != z || !w) { q[3] = r & s | t; }",
        "for(i=0;i<n;i++)sum+=v[i]*w[i]; @ $ ` ~ ^",
        "__attribute__ ((noinline)) static long f123(long, long);",
    };
    for (int i = 0; i < 4; i++) {
        int counts[T_COUNT] = {0}, opcount = 0;
        for (const char *p = sources[i]; *p; p++) counts[classify((unsigned char)*p, &opcount)]++;
        printf("tokens[%d]: ident=%d num=%d op=%d space=%d punct=%d other=%d opweight=%d\n", i,
               counts[T_IDENT], counts[T_NUM], counts[T_OP], counts[T_SPACE], counts[T_PUNCT],
               counts[T_OTHER], opcount);
    }

    run_machine("a=1;bb=22;ccc=\"str\\\"ing\";# comment\nd=4444;bad!;e=\"x\";f=99");
    run_machine("#only a comment");
    run_machine("x=\"unterminated");
    run_machine("k=12;;;  z=7;Q=3;m=\"\\\\\";n=0");

    long acc = 1;
    for (int code = 995; code < 1030; code++) {
        const char *name = http_ish(code, &acc);
        printf("code %d %-18s acc=%ld\n", code, name, acc);
    }

    short src[100], dst[100];
    for (int i = 0; i < 100; i++) src[i] = (short)(i * i - 50 * i);
    for (int count = 0; count <= 100; count += 7) {
        memset(dst, 0, sizeof dst);
        duff_copy(dst, src, count);
        long sum = 0;
        for (int i = 0; i < 100; i++) sum += dst[i] * (i + 1);
        printf("duff %3d sum=%ld\n", count, sum);
    }

    for (int a = -1; a <= 9; a++) {
        printf("nested a=%2d:", a);
        for (int b = -1; b <= 8; b++) printf(" %d", nested(a, b));
        printf("\n");
    }

    char buf[64];
    for (int c = RED; c <= PINK + 2; c++) {
        describe((enum color)c, buf, sizeof buf);
        printf("color %2d %s\n", c, buf);
    }
    printf("trace hash %lu\n", trace_hash);
    return 0;
}
