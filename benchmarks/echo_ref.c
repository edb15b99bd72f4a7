/* Reference echo server for benchmarks/net_bench.py (--reference): the same service as the anyio
 * echo server, in C, to show the floor the kernel and the load generator leave on this machine.
 *
 * Usage: echo_ref   (listens on 127.0.0.1, an ephemeral port, printed on the first line of stdout)
 *
 * One thread, epoll (level-triggered), non-blocking sockets, TCP_NODELAY.  Per readable
 * connection: read up to 64 KiB, write it straight back; what the socket does not take at once is
 * kept and flushed on EPOLLOUT before the connection is read again.  Runs until killed.
 *
 * Build: gcc -O2 -o echo_ref echo_ref.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    char *pending; /* bytes the socket did not take yet */
    size_t len, off;
};

static char buf[65536];

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void watch(int ep, int op, struct conn *c, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) fail("epoll_ctl");
}

static void drop(struct conn *c) {
    close(c->fd);
    free(c->pending);
    free(c);
}

int main(void) {
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (ls < 0) fail("socket");
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind");
    if (listen(ls, 4096) < 0) fail("listen");
    if (getsockname(ls, (struct sockaddr *)&addr, &alen) < 0) fail("getsockname");
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(0);
    if (ep < 0) fail("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev) < 0) fail("epoll_ctl");
    struct epoll_event events[512];
    for (;;) {
        int n = epoll_wait(ep, events, 512, -1);
        if (n < 0 && errno != EINTR) fail("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) { /* the listener */
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (c == NULL) fail("calloc");
                    c->fd = fd;
                    watch(ep, EPOLL_CTL_ADD, c, EPOLLIN);
                }
                continue;
            }
            if (c->pending != NULL) { /* writable again: flush, then read again */
                ssize_t w = write(c->fd, c->pending + c->off, c->len - c->off);
                if (w < 0 && errno != EAGAIN) {
                    drop(c);
                    continue;
                }
                if (w > 0) c->off += (size_t)w;
                if (c->off == c->len) {
                    free(c->pending);
                    c->pending = NULL;
                    watch(ep, EPOLL_CTL_MOD, c, EPOLLIN);
                }
                continue;
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) { /* EOF or error: the client is done */
                drop(c);
                continue;
            }
            ssize_t w = write(c->fd, buf, (size_t)r);
            if (w < 0 && errno != EAGAIN) {
                drop(c);
                continue;
            }
            if (w < 0) w = 0;
            if (w < r) {
                c->len = (size_t)(r - w);
                c->off = 0;
                c->pending = malloc(c->len);
                if (c->pending == NULL) fail("malloc");
                memcpy(c->pending, buf + w, c->len);
                watch(ep, EPOLL_CTL_MOD, c, EPOLLOUT);
            }
        }
    }
}
