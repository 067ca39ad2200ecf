/* Signal handlers: signal() and sigaction() (SA_SIGINFO, SA_NODEFER, SA_RESETHAND,
 * SA_ONSTACK on an alternate stack), nested signals, blocked and pending signals,
 * queued real-time signals with values, and hardware faults (SIGFPE, SIGSEGV)
 * recovered from with siglongjmp. Every signal is raised synchronously, so the
 * output is deterministic. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOGMAX 256
static volatile sig_atomic_t log_buf[LOGMAX];
static volatile sig_atomic_t log_len;
static void log_event(int v) {
    if (log_len < LOGMAX) log_buf[log_len++] = v;
}
static void dump_log(const char *what) {
    printf("%s:", what);
    for (int i = 0; i < log_len; i++) printf(" %d", (int)log_buf[i]);
    printf("\n");
    log_len = 0;
}

static volatile sig_atomic_t usr1_count;
static void on_usr1(int sig) {
    usr1_count++;
    log_event(1000 + sig);
}

static volatile sig_atomic_t info_code, info_signo, info_pid_ok;
static void on_usr2_info(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    info_signo = si->si_signo;
    info_code = si->si_code;
    info_pid_ok = si->si_pid == getpid();
    log_event(2000 + sig);
}

/* SIGHUP handler that raises SIGTERM (nested delivery), whose handler raises SIGHUP again
 * (allowed by SA_NODEFER on SIGHUP) down to a fixed depth. */
static volatile sig_atomic_t nest_depth;
static void on_term(int sig) {
    log_event(3000 + nest_depth);
    if (nest_depth < 4) {
        nest_depth++;
        raise(SIGHUP);
    }
}
static void on_hup(int sig) {
    log_event(4000 + nest_depth);
    raise(SIGTERM);
}

/* a table of handlers installed for several signals */
static void h_a(int sig) { log_event(5000 + sig); }
static void h_b(int sig) { log_event(6000 + sig); }
static void h_c(int sig) { log_event(7000 + sig); }
static void (*const handler_table[])(int) = {h_a, h_b, h_c};

/* real-time signals with queued values */
static void on_rt(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    log_event((sig - SIGRTMIN) * 100 + si->si_value.sival_int);
}

/* alternate stack */
static char *alt_lo, *alt_hi;
static volatile sig_atomic_t on_alt;
static void on_alt_handler(int sig) {
    char marker;
    on_alt = (&marker >= alt_lo && &marker < alt_hi) ? 1 : 2;
    log_event(8000 + sig);
}

/* faults, recovered with siglongjmp */
static sigjmp_buf fault_env;
static volatile sig_atomic_t fault_sig;
static void on_fault(int sig) {
    fault_sig = sig;
    siglongjmp(fault_env, sig);
}

/* siglongjmp out of an ordinary handler */
static sigjmp_buf jump_env;
static void on_jump(int sig) { siglongjmp(jump_env, 100 + sig); }

static volatile int zero = 0;
static volatile uintptr_t null_addr = 0;

__attribute__((noinline)) static int divide(int a, int b) { return a / b; }
__attribute__((noinline)) static int deref(volatile int *p) { return *p; }

static int install(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}
static int install_info(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = flags | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(void) {
    /* 1. signal() + raise() */
    signal(SIGUSR1, on_usr1);
    for (int i = 0; i < 5; i++) raise(SIGUSR1);
    printf("usr1_count=%d\n", (int)usr1_count);
    dump_log("usr1");

    /* 2. sigaction with SA_SIGINFO */
    install_info(SIGUSR2, on_usr2_info, 0);
    raise(SIGUSR2);
    printf("siginfo signo=%d code=%d (SI_TKILL=%d) pid_ok=%d\n", (int)info_signo, (int)info_code, SI_TKILL,
           (int)info_pid_ok);
    kill(getpid(), SIGUSR2);
    printf("siginfo via kill code=%d (SI_USER=%d) pid_ok=%d\n", (int)info_code, SI_USER, (int)info_pid_ok);
    dump_log("usr2");

    /* 3. nested signals */
    install(SIGHUP, on_hup, SA_NODEFER);
    install(SIGTERM, on_term, SA_NODEFER);
    raise(SIGHUP);
    printf("nest_depth=%d\n", (int)nest_depth);
    dump_log("nested");

    /* 4. a table of handlers */
    static const int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, SIGWINCH, SIGCHLD, SIGURG, SIGPIPE, SIGALRM};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 9; i++) install(sigs[i], handler_table[(i + round) % 3], 0);
        for (int i = 0; i < 9; i++) raise(sigs[i]);
        char name[32];
        snprintf(name, sizeof name, "table round %d", round);
        dump_log(name);
    }

    /* 5. blocked signals stay pending and are delivered on unblock, lowest number first */
    sigset_t set, old, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, &old);
    raise(SIGALRM);
    raise(SIGUSR2);
    raise(SIGUSR1);
    raise(SIGUSR1); /* standard signals do not queue */
    sigpending(&pend);
    printf("pending usr1=%d usr2=%d alrm=%d hup=%d\n", sigismember(&pend, SIGUSR1), sigismember(&pend, SIGUSR2),
           sigismember(&pend, SIGALRM), sigismember(&pend, SIGHUP));
    dump_log("while blocked");
    sigprocmask(SIG_SETMASK, &old, NULL);
    dump_log("after unblock");

    /* 6. SA_RESETHAND */
    install(SIGUSR1, on_usr1, SA_RESETHAND);
    raise(SIGUSR1);
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    printf("after SA_RESETHAND handler is default: %d\n", cur.sa_handler == SIG_DFL);
    dump_log("resethand");

    /* 7. queued real-time signals carry values, in order */
    sigset_t rtset;
    sigemptyset(&rtset);
    for (int k = 0; k < 3; k++) {
        install_info(SIGRTMIN + k, on_rt, 0);
        sigaddset(&rtset, SIGRTMIN + k);
    }
    sigprocmask(SIG_BLOCK, &rtset, &old);
    for (int v = 1; v <= 6; v++) {
        union sigval sv;
        sv.sival_int = v * 11;
        sigqueue(getpid(), SIGRTMIN + (3 - v % 3) % 3, sv);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    dump_log("realtime");

    /* 8. SA_ONSTACK on an alternate stack */
    size_t altsize = 64 * 1024;
    alt_lo = malloc(altsize);
    alt_hi = alt_lo + altsize;
    stack_t ss = {.ss_sp = alt_lo, .ss_size = altsize, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    install(SIGWINCH, on_alt_handler, SA_ONSTACK);
    raise(SIGWINCH);
    printf("handler ran on the alternate stack: %s\n", on_alt == 1 ? "yes" : "no");
    install(SIGWINCH, on_alt_handler, 0);
    raise(SIGWINCH);
    printf("handler without SA_ONSTACK on the alternate stack: %s\n", on_alt == 1 ? "yes" : "no");
    dump_log("altstack");

    /* 9. hardware faults, recovered with siglongjmp */
    install(SIGFPE, on_fault, 0);
    install(SIGSEGV, on_fault, 0);
    for (volatile int i = 0; i < 3; i++) {
        int r = sigsetjmp(fault_env, 1);
        if (r == 0) {
            int q = divide(100 + i, zero);
            printf("no fault?! %d\n", q);
        } else {
            printf("recovered from signal %d (SIGFPE=%d) round %d\n", r, SIGFPE, i);
        }
        r = sigsetjmp(fault_env, 1);
        if (r == 0) {
            int v = deref((volatile int *)null_addr);
            printf("no fault?! %d\n", v);
        } else {
            printf("recovered from signal %d (SIGSEGV=%d) round %d\n", r, SIGSEGV, i);
        }
    }
    printf("ordinary division still works: %d\n", divide(100, 7));

    /* 10. siglongjmp out of a handler restores the signal mask */
    install(SIGUSR2, on_jump, 0);
    for (volatile int i = 0; i < 3; i++) {
        int r = sigsetjmp(jump_env, 1);
        if (r == 0) {
            raise(SIGUSR2);
            printf("not reached\n");
        } else {
            sigset_t now;
            sigprocmask(SIG_BLOCK, NULL, &now);
            printf("jumped out with %d, usr2 blocked afterwards: %d\n", r, sigismember(&now, SIGUSR2));
        }
    }
    printf("final usr1_count=%d\n", (int)usr1_count);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    free(alt_lo);
    return 0;
}
