/* spawn: time one command inside a network namespace and report its peak RSS.
 *
 *   spawn NETNS_PATH STDIN_FILE LOG_FILE CMD [ARG...]
 *
 * Enters the namespace (setns), then measures fork -> exec -> exit -> wait4 of CMD with
 * CLOCK_MONOTONIC. Prints one line: "<wall_ns> <ru_maxrss_kb> <wait_status>".
 * STDIN_FILE ("-" for /dev/null) is CMD's stdin; CMD's stdout and stderr go to LOG_FILE.
 *
 * Why C: the kernel records the pre-exec address space's peak RSS in ru_maxrss, and a forked
 * (or vforked) child starts with its parent's; a Python launcher would put its own ~10 MB under
 * every figure. This process is ~1 MB, so ru_maxrss is the command's. It also keeps
 * `ip netns exec` (a mount namespace, a /sys remount) out of the measured time.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s NETNS_PATH STDIN_FILE LOG_FILE CMD [ARG...]\n", argv[0]);
        return 2;
    }
    int nsfd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) { perror(argv[1]); return 2; }
    int in = open(strcmp(argv[2], "-") ? argv[2] : "/dev/null", O_RDONLY | O_CLOEXEC);
    int log = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (in < 0 || log < 0) { perror("open"); return 2; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
        dup2(in, 0); dup2(log, 1); dup2(log, 2);
        execvp(argv[4], argv + 4);
        perror(argv[4]);
        _exit(127);
    }
    struct rusage ru;
    int status = 0;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("%lld %ld %d\n", ns, ru.ru_maxrss, status);
    return 0;
}
