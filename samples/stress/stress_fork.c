/* fork and exec in a loop; the child re-executes this program (hardened binary execs itself). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int child_work(int n) {
    int (*volatile f)(int) = abs;
    return f(-n) * 3 % 251;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "child") == 0) return child_work(atoi(argv[2]));
    long total = 0;
    for (int i = 0; i < 60; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (i % 2) {
                char num[16];
                snprintf(num, sizeof num, "%d", i);
                execl("/proc/self/exe", argv[0], "child", num, (char *)NULL);
                _exit(127);
            }
            _exit(child_work(i));
        }
        int status;
        waitpid(pid, &status, 0);
        total += WIFEXITED(status) ? WEXITSTATUS(status) : 1000;
    }
    printf("total %ld\n", total);
    return 0;
}
