/* conn: the two ends of the new-connection-rate measurement, run inside namespaces.
 *
 *   conn serve LIFETIME_S PORT [PORT...]
 *       Listen on 0.0.0.0:PORT and [::]:PORT (TCP, IPV6_V6ONLY); accept and close every
 *       connection. Prints "ready".
 *       Each line read on stdin is answered with the number of connections accepted so far;
 *       EOF on stdin (the parent is gone) or LIFETIME_S ends it.
 *   conn connect UID DST PORT SECONDS MAX_COUNT
 *       As UID (groups dropped), open and close TCP connections to DST:PORT (IPv6 if DST has
 *       a ':') one after the
 *       other, until SECONDS have passed or MAX_COUNT connections were made (both bound).
 *       Each close is an RST (SO_LINGER 0), so no TIME_WAIT piles up. Prints one JSON line:
 *       {"ok": N, "failed": N, "seconds": S, "error": "..."}; stops at the first failure.
 *
 * In C so that what is measured is the kernel's cost per connection (socket, the nat hooks'
 * rule evaluation on the SYN, conntrack, the handshake), not an interpreter's.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int serve(int argc, char **argv) {
    double deadline = now() + atof(argv[2]);
    int n = argc - 3;
    if (n < 1 || n > 8) { fprintf(stderr, "serve: 1 to 8 ports\n"); return 2; }
    struct pollfd fds[17];
    fds[0].fd = 0; fds[0].events = POLLIN;
    for (int i = 0; i < n; i++) {
        int one = 1;
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3 + i]))};
        if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) { perror("listen"); return 2; }
        int s6 = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        setsockopt(s6, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[3 + i]))};
        if (bind(s6, (struct sockaddr *)&a6, sizeof a6) || listen(s6, 4096)) { perror("listen6"); return 2; }
        fds[1 + 2 * i].fd = s; fds[1 + 2 * i].events = POLLIN;
        fds[2 + 2 * i].fd = s6; fds[2 + 2 * i].events = POLLIN;
    }
    n *= 2;
    printf("ready\n");
    fflush(stdout);
    unsigned long long accepted = 0;
    char line[64];
    while (now() < deadline) {
        if (poll(fds, n + 1, 1000) < 0 && errno != EINTR) return 2;
        for (int i = 1; i <= n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            for (int k = 0; k < 1024; k++) { /* bounded drain */
                int c = accept4(fds[i].fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) break;
                close(c);
                accepted++;
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(0, line, sizeof line);
            if (r <= 0) return 0;
            printf("%llu\n", accepted);
            fflush(stdout);
        }
    }
    return 0;
}

static int connect_loop(char **argv) {
    uid_t uid = (uid_t)atol(argv[2]);
    if (setgroups(0, NULL) || setgid(uid) || setuid(uid)) { perror("setuid"); return 2; }
    struct sockaddr_storage dst = {0};
    socklen_t dst_len;
    int family = strchr(argv[3], ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&dst;
        d->sin6_family = AF_INET6; d->sin6_port = htons(atoi(argv[4])); dst_len = sizeof *d;
        if (inet_pton(AF_INET6, argv[3], &d->sin6_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    } else {
        struct sockaddr_in *d = (struct sockaddr_in *)&dst;
        d->sin_family = AF_INET; d->sin_port = htons(atoi(argv[4])); dst_len = sizeof *d;
        if (inet_pton(AF_INET, argv[3], &d->sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    }
    double seconds = atof(argv[5]);
    long max_count = atol(argv[6]);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    struct timeval tmo = {.tv_sec = 1, .tv_usec = 0}; /* a lost SYN fails the run, bounded */
    long ok = 0, failed = 0;
    const char *error = "";
    double t0 = now(), t = t0;
    while (ok < max_count && (t = now()) - t0 < seconds) {
        int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) { failed++; error = strerror(errno); break; }
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof tmo);
        if (connect(s, (struct sockaddr *)&dst, dst_len) != 0) {
            failed++; error = strerror(errno); close(s); break;
        }
        close(s);
        ok++;
    }
    t = now();
    printf("{\"ok\": %ld, \"failed\": %ld, \"seconds\": %.6f, \"error\": \"%s\"}\n", ok, failed, t - t0, error);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "serve")) return serve(argc, argv);
    if (argc == 7 && !strcmp(argv[1], "connect")) return connect_loop(argv);
    fprintf(stderr, "usage: %s serve LIFETIME_S PORT... | connect UID DST PORT SECONDS MAX_COUNT\n", argv[0]);
    return 2;
}
