/* Closed-loop TCP request/response load generator for benchmarks/net_bench.py.
 *
 * Usage: loadgen -p PORT [-h 127.0.0.1] [-c CONNS] [-m BYTES] [-d SECONDS] [-w WARMUP] [-k]
 *
 * Opens CONNS connections to an echo server; each connection sends a message of BYTES bytes and
 * waits until all BYTES bytes have come back before it sends the next one.  One thread, epoll,
 * non-blocking sockets, TCP_NODELAY.  Round trips completed during the WARMUP seconds are not
 * counted; then the round trips completed within the next SECONDS seconds are.  At the end every
 * connection finishes the round trip it has in flight (so nothing is left unread when it closes),
 * then the connections are closed.  -k checks every echoed byte against what was sent (each
 * message carries its connection and sequence number).
 *
 * Prints one JSON line: {"conns", "msg_bytes", "duration", "round_trips", "rate", "p50_us",
 * "p99_us", "max_us"} or, on failure, {"error": "..."} (exit status 1).
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent, received;
    uint64_t seq;
    double started;
    int want_out; /* EPOLLOUT registered */
    int active;   /* a round trip is in flight */
    unsigned char *out, *in;
};

static size_t msg_bytes = 1024;
static int check;
static double *lat; /* microseconds of the counted round trips */
static size_t nlat, caplat;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fail(const char *what, int err)
{
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(err));
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(struct conn *c, int index)
{
    /* Bytes that differ per connection and per message: a stray or reordered byte shows. */
    uint64_t x = ((uint64_t)index << 32) ^ (c->seq * 0x9e3779b97f4a7c15ULL) ^ 0x5851f42d4c957f2dULL;
    for (size_t i = 0; i < msg_bytes; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        c->out[i] = (unsigned char)x;
    }
}

static void set_out(int ep, struct conn *c, int index, int want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)index};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl", errno);
    c->want_out = want;
}

static void pump_send(int ep, struct conn *c, int index)
{
    while (c->sent < msg_bytes) {
        ssize_t n = send(c->fd, c->out + c->sent, msg_bytes - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            fail("send", errno);
        }
        c->sent += (size_t)n;
    }
    set_out(ep, c, index, c->sent < msg_bytes);
}

static void start(int ep, struct conn *c, int index)
{
    c->seq++;
    if (check)
        fill(c, index);
    c->sent = c->received = 0;
    c->active = 1;
    c->started = now();
    pump_send(ep, c, index);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, nconns = 1, opt;
    double duration = 2.0, warmup = 0.5;
    while ((opt = getopt(argc, argv, "h:p:c:m:d:w:k")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 'm': msg_bytes = (size_t)atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'k': check = 1; break;
        default:
            fprintf(stderr, "usage: %s -p PORT [-h HOST] [-c CONNS] [-m BYTES] [-d SECONDS] [-w WARMUP] [-k]\n",
                    argv[0]);
            return 2;
        }
    }
    if (port <= 0 || nconns <= 0 || msg_bytes == 0) {
        printf("{\"error\": \"bad arguments\"}\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        printf("{\"error\": \"bad host\"}\n");
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fail("epoll_create1", errno);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    unsigned char *shared_out = malloc(msg_bytes);
    if (!conns || !shared_out)
        fail("malloc", ENOMEM);
    memset(shared_out, 'x', msg_bytes);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        /* Blocking connect (the kernel completes it without the server's accept()), then
         * non-blocking for the run. */
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            fail("socket", errno);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            fail("connect", errno);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->out = check ? malloc(msg_bytes) : shared_out;
        c->in = malloc(msg_bytes);
        if (!c->out || !c->in)
            fail("malloc", ENOMEM);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            fail("epoll_ctl", errno);
    }

    double t_start = now();
    double t_count = t_start + warmup, t_end = t_count + duration;
    uint64_t counted = 0;
    int stopping = 0, in_flight = 0;
    for (int i = 0; i < nconns; i++) {
        start(ep, &conns[i], i);
        in_flight++;
    }
    struct epoll_event events[512];
    while (in_flight > 0) {
        double t = now();
        if (!stopping && t >= t_end)
            stopping = 1;
        if (stopping && t >= t_end + 10.0) {
            printf("{\"error\": \"%d round trips still in flight 10 s after the end\"}\n", in_flight);
            return 1;
        }
        int timeout_ms = stopping ? 100 : (int)((t_end - t) * 1000) + 1;
        int n = epoll_wait(ep, events, 512, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("epoll_wait", errno);
        }
        for (int e = 0; e < n; e++) {
            int index = (int)events[e].data.u32;
            struct conn *c = &conns[index];
            if ((events[e].events & EPOLLOUT) && c->active)
                pump_send(ep, c, index);
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            for (;;) {
                size_t room = msg_bytes - c->received;
                if (room == 0) {
                    /* Data while no round trip is in flight: the server sent too much. */
                    unsigned char extra;
                    ssize_t r = recv(c->fd, &extra, 1, MSG_DONTWAIT | MSG_PEEK);
                    if (r > 0) {
                        printf("{\"error\": \"connection %d: more bytes echoed than sent\"}\n", index);
                        return 1;
                    }
                    if (r == 0) {
                        printf("{\"error\": \"connection %d closed by the server\"}\n", index);
                        return 1;
                    }
                    break;
                }
                ssize_t r = recv(c->fd, c->in + c->received, room, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK)
                        break;
                    fail("recv", errno);
                }
                if (r == 0) {
                    printf("{\"error\": \"connection %d closed by the server after %zu of %zu bytes\"}\n",
                           index, c->received, msg_bytes);
                    return 1;
                }
                c->received += (size_t)r;
                if (c->received > c->sent) {
                    printf("{\"error\": \"connection %d: more bytes echoed than sent\"}\n", index);
                    return 1;
                }
                if (c->received < msg_bytes)
                    continue;
                /* One round trip done. */
                double done = now();
                if (check && memcmp(c->in, c->out, msg_bytes) != 0) {
                    printf("{\"error\": \"connection %d message %llu: echoed bytes differ\"}\n", index,
                           (unsigned long long)c->seq);
                    return 1;
                }
                if (done >= t_count && done < t_end) {
                    counted++;
                    if (nlat == caplat) {
                        caplat = caplat ? caplat * 2 : 65536;
                        lat = realloc(lat, caplat * sizeof *lat);
                        if (!lat)
                            fail("realloc", ENOMEM);
                    }
                    lat[nlat++] = (done - c->started) * 1e6;
                }
                c->active = 0;
                if (stopping || done >= t_end) {
                    stopping = 1;
                    in_flight--;
                    break;
                }
                start(ep, c, index);
            }
        }
    }
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);

    double p50 = 0, p99 = 0, mx = 0;
    if (nlat) {
        qsort(lat, nlat, sizeof *lat, cmp_double);
        p50 = lat[nlat / 2];
        p99 = lat[(size_t)(nlat * 0.99)];
        mx = lat[nlat - 1];
    }
    printf("{\"conns\": %d, \"msg_bytes\": %zu, \"duration\": %.3f, \"round_trips\": %llu, \"rate\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}\n",
           nconns, msg_bytes, duration, (unsigned long long)counted, counted / duration, p50, p99, mx);
    return 0;
}
