/*
 * aur.c -- the native io_uring core of anyio_uring.
 *
 * Theory of operation
 * -------------------
 * This file owns the ring's memory mappings and the SQ/CQ indices, and nothing else.  It knows
 * no tasks, no Python objects and no buffers' owners: Python queues SQEs through the aur_prep_*
 * functions (one C call each), and once per loop tick calls aur_wait(), which publishes every
 * queued SQE, waits in a single io_uring_enter and copies all available completions into a
 * caller-owned array.  Ownership of the memory an SQE points at is the Python layer's business
 * (_ring.py): it keeps that memory alive until the final CQE has passed through aur_wait.
 *
 * Robustness rules kept here:
 *   - SQ full: a prep submits everything queued and retries, so callers never see "no SQE"
 *     unless the kernel refuses to consume (-EBUSY is then returned and nothing is lost).
 *   - CQ overflow (IORING_SQ_CQ_OVERFLOW): aur_wait keeps entering with GETEVENTS to flush the
 *     kernel's overflow list until it is empty or the caller's array is full (`more` tells).
 *   - fork: the rings are mapped MADV_DONTFORK and a pthread_atfork child handler marks every
 *     ring `forked` and closes the inherited fd, so a child can never write the parent's SQ.
 *   - one owner thread: every entry point that writes the SQ, enters or reaps first compares
 *     pthread_self() with the thread that set the ring up (wrong_thread), so another thread can
 *     never race the owner on the SQ tail or the CQ head.
 *   - No malloc per operation: SQEs are written in place, CQEs copied into the caller's array.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "aur_uapi.h"
#include "aur.h"

#ifndef AUR_VERSION
#error "build.py must define AUR_VERSION"
#endif

_Static_assert(sizeof(struct aur_sqe) == 64, "sqe layout");
_Static_assert(sizeof(struct aur_kcqe) == 16, "cqe layout");
_Static_assert(sizeof(aur_cqe) == 16, "aur_cqe layout");
_Static_assert(sizeof(struct aur_params) == 120, "params layout");
_Static_assert(sizeof(struct aur_buf) == 16, "buf layout");
_Static_assert(sizeof(struct aur_buf_reg) == 40, "buf_reg layout");
_Static_assert(sizeof(struct aur_getevents_arg) == 24, "getevents_arg layout");
_Static_assert(sizeof(aur_msghdr) == sizeof(struct msghdr), "msghdr layout");
_Static_assert(offsetof(aur_msghdr, namelen) == offsetof(struct msghdr, msg_namelen), "msghdr layout");
_Static_assert(offsetof(aur_msghdr, iov) == offsetof(struct msghdr, msg_iov), "msghdr layout");
_Static_assert(offsetof(aur_msghdr, control) == offsetof(struct msghdr, msg_control), "msghdr layout");
_Static_assert(offsetof(aur_msghdr, controllen) == offsetof(struct msghdr, msg_controllen), "msghdr layout");
_Static_assert(offsetof(aur_msghdr, flags) == offsetof(struct msghdr, msg_flags), "msghdr layout");
_Static_assert(sizeof(aur_iovec) == sizeof(struct iovec), "iovec layout");

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

const char *aur_version(void) { return AUR_VERSION; }

int64_t aur_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ===================================================================================== syscalls */

static int sys_setup(uint32_t entries, struct aur_params *p)
{
    long r = syscall(AUR_NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

static int sys_register(int fd, uint32_t op, void *arg, uint32_t nr)
{
    long r = syscall(AUR_NR_io_uring_register, fd, op, arg, nr);
    return r < 0 ? -errno : (int)r;
}

static int ring_enter(aur_ring *r, uint32_t to_submit, uint32_t min_complete, uint32_t flags, void *arg,
                      size_t argsz)
{
    r->enters++;
    if (r->use_registered_fd)
        flags |= AUR_ENTER_REGISTERED_RING;
    long ret = syscall(AUR_NR_io_uring_enter, r->enter_fd, to_submit, min_complete, flags, arg, argsz);
    return ret < 0 ? -errno : (int)ret;
}

/* ========================================================================== fork bookkeeping */

static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
static aur_ring *fork_head;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) { pthread_mutex_lock(&fork_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&fork_lock); }

/* In the child: the mappings are already absent (MADV_DONTFORK); forget them without touching
 * them, and drop the inherited ring fd so the child does not pin the parent's requests. */
static void fork_child(void)
{
    for (aur_ring *r = fork_head; r; r = r->fork_next) {
        r->forked = 1;
        r->sq_ring = r->cq_ring = r->sqes = NULL;
        if (r->ring_fd >= 0)
            close(r->ring_fd);
        r->ring_fd = r->enter_fd = -1;
        r->use_registered_fd = 0;
    }
    pthread_mutex_unlock(&fork_lock);
}

static void fork_install(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

static void fork_link(aur_ring *r)
{
    pthread_once(&fork_once, fork_install);
    pthread_mutex_lock(&fork_lock);
    r->fork_prev = NULL;
    r->fork_next = fork_head;
    if (fork_head)
        fork_head->fork_prev = r;
    fork_head = r;
    pthread_mutex_unlock(&fork_lock);
}

static void fork_unlink(aur_ring *r)
{
    pthread_mutex_lock(&fork_lock);
    if (r->fork_prev)
        r->fork_prev->fork_next = r->fork_next;
    else if (fork_head == r)
        fork_head = r->fork_next;
    if (r->fork_next)
        r->fork_next->fork_prev = r->fork_prev;
    r->fork_next = r->fork_prev = NULL;
    pthread_mutex_unlock(&fork_lock);
}

/* ==================================================================================== lifetime */

aur_ring *aur_ring_new(void)
{
    aur_ring *r = calloc(1, sizeof(*r));
    if (r) {
        r->ring_fd = r->enter_fd = -1;
        r->closed = 1; /* until aur_setup succeeds */
    }
    return r;
}

void aur_ring_free(aur_ring *r)
{
    if (!r)
        return;
    aur_close(r);
    free(r);
}

static void unmap_all(aur_ring *r)
{
    if (r->sqes)
        munmap(r->sqes, r->sqes_sz);
    if (r->cq_ring && r->cq_ring != r->sq_ring)
        munmap(r->cq_ring, r->cq_ring_sz);
    if (r->sq_ring)
        munmap(r->sq_ring, r->sq_ring_sz);
    r->sq_ring = r->cq_ring = r->sqes = NULL;
}

static int map_rings(aur_ring *r, const struct aur_params *p)
{
    int fd = r->ring_fd;
    r->sq_ring_sz = p->sq_off.array + p->sq_entries * sizeof(uint32_t);
    r->cq_ring_sz = p->cq_off.cqes + p->cq_entries * sizeof(struct aur_kcqe);
    int single = (p->features & AUR_FEAT_SINGLE_MMAP) != 0;
    if (single) {
        if (r->cq_ring_sz > r->sq_ring_sz)
            r->sq_ring_sz = r->cq_ring_sz;
        r->cq_ring_sz = r->sq_ring_sz;
    }
    void *sq = mmap(NULL, r->sq_ring_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, AUR_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        return -errno;
    r->sq_ring = sq;
    void *cq = sq;
    if (!single) {
        cq = mmap(NULL, r->cq_ring_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, AUR_OFF_CQ_RING);
        if (cq == MAP_FAILED) {
            int err = -errno;
            unmap_all(r);
            return err;
        }
    }
    r->cq_ring = cq;
    r->sqes_sz = p->sq_entries * sizeof(struct aur_sqe);
    void *sqes = mmap(NULL, r->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, AUR_OFF_SQES);
    if (sqes == MAP_FAILED) {
        int err = -errno;
        unmap_all(r);
        return err;
    }
    r->sqes = sqes;
    /* A fork child must not even have these pages: writing the shared SQ corrupts the parent. */
    madvise(r->sq_ring, r->sq_ring_sz, MADV_DONTFORK);
    if (cq != sq)
        madvise(cq, r->cq_ring_sz, MADV_DONTFORK);
    madvise(sqes, r->sqes_sz, MADV_DONTFORK);

    char *s = sq, *c = cq;
    r->sq_khead = (uint32_t *)(s + p->sq_off.head);
    r->sq_ktail = (uint32_t *)(s + p->sq_off.tail);
    r->sq_kflags = (uint32_t *)(s + p->sq_off.flags);
    r->sq_mask = *(uint32_t *)(s + p->sq_off.ring_mask);
    r->sq_array = NULL;
    if (!(p->flags & AUR_SETUP_NO_SQARRAY)) {
        r->sq_array = (uint32_t *)(s + p->sq_off.array);
        for (uint32_t i = 0; i < p->sq_entries; i++)
            r->sq_array[i] = i; /* identity: SQE index == ring index */
    }
    r->cq_khead = (uint32_t *)(c + p->cq_off.head);
    r->cq_ktail = (uint32_t *)(c + p->cq_off.tail);
    r->cq_mask = *(uint32_t *)(c + p->cq_off.ring_mask);
    r->cqes = c + p->cq_off.cqes;
    return 0;
}

/* Setup flags are dropped in this order when the kernel answers EINVAL. */
static const uint32_t degrade_order[] = {
    AUR_SETUP_NO_SQARRAY,
    AUR_SETUP_DEFER_TASKRUN,
    AUR_SETUP_SINGLE_ISSUER,
    AUR_SETUP_COOP_TASKRUN | AUR_SETUP_TASKRUN_FLAG,
    AUR_SETUP_SUBMIT_ALL,
};

static uint32_t normalize_flags(uint32_t f)
{
    if (!(f & AUR_SETUP_SINGLE_ISSUER))
        f &= ~AUR_SETUP_DEFER_TASKRUN; /* DEFER_TASKRUN requires SINGLE_ISSUER */
    if (!(f & (AUR_SETUP_COOP_TASKRUN | AUR_SETUP_DEFER_TASKRUN)))
        f &= ~AUR_SETUP_TASKRUN_FLAG; /* TASKRUN_FLAG alone is EINVAL */
    return f;
}

int aur_setup(aur_ring *r, uint32_t entries, uint32_t cq_entries, uint32_t allow)
{
    if (!r->closed || r->forked)
        return -EBUSY;
    const uint32_t known = AUR_SETUP_SUBMIT_ALL | AUR_SETUP_COOP_TASKRUN | AUR_SETUP_TASKRUN_FLAG |
                           AUR_SETUP_SINGLE_ISSUER | AUR_SETUP_DEFER_TASKRUN | AUR_SETUP_NO_SQARRAY;
    uint32_t want = normalize_flags(allow & known);
    struct aur_params p;
    int fd;
    size_t step = 0;
    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = want | (cq_entries ? AUR_SETUP_CQSIZE : 0);
        p.cq_entries = cq_entries;
        fd = sys_setup(entries, &p);
        if (fd >= 0)
            break;
        if (fd != -EINVAL)
            return fd;
        /* drop the next flag that is actually set; give up when none is left */
        uint32_t before = want;
        while (step < sizeof(degrade_order) / sizeof(degrade_order[0]) && want == before)
            want = normalize_flags(want & ~degrade_order[step++]);
        if (want == before)
            return fd;
    }
    memset(r, 0, offsetof(aur_ring, enter_fd)); /* counters and public fields */
    r->ring_fd = r->enter_fd = fd;
    r->pid = (int32_t)getpid();
    r->setup_flags = p.flags & ~AUR_SETUP_CQSIZE;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->use_ext_arg = (allow & AUR_ALLOW_EXT_ARG) && (p.features & AUR_FEAT_EXT_ARG);
    r->use_cqe_skip = (allow & AUR_ALLOW_CQE_SKIP) && (p.features & AUR_FEAT_CQE_SKIP);
    r->timeout_pending = 0;
    r->owner_thread = (uint64_t)pthread_self();
    int err = map_rings(r, &p);
    if (err < 0) {
        close(fd);
        r->ring_fd = r->enter_fd = -1;
        return err;
    }
    /* A registered ring fd is per thread; only use it when the ring is bound to one thread. */
    if ((allow & AUR_ALLOW_REGISTERED_FD) && (p.flags & AUR_SETUP_SINGLE_ISSUER)) {
        struct aur_rsrc_update up = {.offset = (uint32_t)-1, .data = (uint64_t)fd};
        if (sys_register(fd, AUR_REGISTER_RING_FDS, &up, 1) == 1) {
            r->enter_fd = (int32_t)up.offset;
            r->use_registered_fd = 1;
        }
    }
    r->closed = 0;
    fork_link(r);
    return 0;
}

int aur_close(aur_ring *r)
{
    if (r->closed)
        return 0;
    r->closed = 1;
    fork_unlink(r);
    if (r->forked)
        return 0; /* fork_child already forgot the mappings and closed the fd */
    if (r->use_registered_fd) {
        struct aur_rsrc_update up = {.offset = (uint32_t)r->enter_fd};
        sys_register(r->ring_fd, AUR_UNREGISTER_RING_FDS, &up, 1);
        r->use_registered_fd = 0;
    }
    unmap_all(r);
    int ret = close(r->ring_fd) < 0 ? -errno : 0;
    r->ring_fd = r->enter_fd = -1;
    return ret;
}

int aur_probe(aur_ring *r, uint8_t *ops)
{
    if (r->closed || r->forked)
        return -EBADFD;
    struct aur_probe_hdr *p = calloc(1, sizeof(*p)); /* must be zeroed, else EINVAL */
    if (!p)
        return -ENOMEM;
    int ret = sys_register(r->ring_fd, AUR_REGISTER_PROBE, p, 256);
    if (ret >= 0) {
        memset(ops, 0, 256);
        for (unsigned i = 0; i < p->ops_len; i++)
            ops[p->ops[i].op] = (p->ops[i].flags & 1) ? 1 : 0;
        ret = p->ops_len;
    }
    free(p);
    return ret;
}

/* ============================================================================ submission side */

/* Nonzero if the calling thread may not use the ring (checked before anything is touched). */
static inline int wrong_thread(const aur_ring *r) { return (uint64_t)pthread_self() != r->owner_thread; }

static uint32_t sq_pending(aur_ring *r) { return (uint32_t)r->sq_written - LOAD_ACQ(r->sq_khead); }

static void publish(aur_ring *r)
{
    if (r->sq_published != r->sq_written) {
        STORE_REL(r->sq_ktail, (uint32_t)r->sq_written);
        r->sq_published = r->sq_written;
    }
}

int aur_submit(aur_ring *r)
{
    if (r->closed || r->forked)
        return -EBADFD;
    if (wrong_thread(r))
        return -AUR_EWRONGTHREAD;
    publish(r);
    uint32_t n = sq_pending(r);
    return n ? ring_enter(r, n, 0, 0, NULL, 0) : 0;
}

/* Return a zeroed SQE and its slot, submitting early if the SQ is full. */
static struct aur_sqe *get_sqe(aur_ring *r, int64_t *slot)
{
    if (r->closed || r->forked) {
        *slot = -EBADFD;
        return NULL;
    }
    if (wrong_thread(r)) {
        *slot = -AUR_EWRONGTHREAD;
        return NULL;
    }
    if (sq_pending(r) >= r->sq_entries) {
        r->sq_full_flushes++;
        int ret = aur_submit(r);
        if (ret < 0 && ret != -EBUSY && ret != -EAGAIN) {
            *slot = ret;
            return NULL;
        }
        if (sq_pending(r) >= r->sq_entries) {
            *slot = -EBUSY; /* the kernel consumed nothing: caller reaps and retries */
            return NULL;
        }
    }
    struct aur_sqe *sqe = (struct aur_sqe *)r->sqes + ((uint32_t)r->sq_written & r->sq_mask);
    memset(sqe, 0, sizeof(*sqe));
    *slot = (int64_t)r->sq_written++;
    return sqe;
}

int aur_withdraw(aur_ring *r, int64_t slot, uint64_t user_data)
{
    if (r->closed || r->forked || slot < 0 || wrong_thread(r))
        return 0;
    if ((uint64_t)slot < r->sq_published || (uint64_t)slot >= r->sq_written)
        return 0;
    struct aur_sqe *sqe = (struct aur_sqe *)r->sqes + ((uint32_t)slot & r->sq_mask);
    if (sqe->user_data != user_data)
        return 0;
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = AUR_OP_NOP;
    sqe->user_data = AUR_UD_WITHDRAWN;
    if (r->use_cqe_skip)
        sqe->flags = AUR_IOSQE_CQE_SKIP_SUCCESS;
    return 1;
}

/* Every prep function: get an SQE, fill the common fields, then the per-opcode ones. */
#define PREP_BEGIN(OPCODE)                                                                      \
    int64_t slot;                                                                               \
    struct aur_sqe *s = get_sqe(r, &slot);                                                      \
    if (!s)                                                                                     \
        return slot;                                                                            \
    s->opcode = (OPCODE);                                                                       \
    s->flags = (uint8_t)sqe_flags;                                                              \
    s->user_data = ud != AUR_UD_FROM_SLOT ? ud : (uint64_t)slot + 1;
#define PREP_END return slot;
#define PTR(p) ((uint64_t)(uintptr_t)(p))

int64_t aur_prep_nop(aur_ring *r, uint64_t ud, uint32_t sqe_flags)
{
    PREP_BEGIN(AUR_OP_NOP) PREP_END
}

int64_t aur_prep_read(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *buf, uint32_t len,
                      uint64_t offset)
{
    PREP_BEGIN(AUR_OP_READ) s->fd = fd; s->addr = PTR(buf); s->len = len; s->off = offset; PREP_END
}

int64_t aur_prep_write(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *buf,
                       uint32_t len, uint64_t offset)
{
    PREP_BEGIN(AUR_OP_WRITE) s->fd = fd; s->addr = PTR(buf); s->len = len; s->off = offset; PREP_END
}

int64_t aur_prep_recv(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *buf, uint32_t len,
                      uint32_t msg_flags, uint32_t ioprio, uint32_t buf_group)
{
    PREP_BEGIN(AUR_OP_RECV) s->fd = fd; s->addr = PTR(buf); s->len = len; s->op_flags = msg_flags;
    s->ioprio = (uint16_t)ioprio; s->buf_index = (uint16_t)buf_group; PREP_END
}

int64_t aur_prep_send(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *buf,
                      uint32_t len, uint32_t msg_flags)
{
    PREP_BEGIN(AUR_OP_SEND) s->fd = fd; s->addr = PTR(buf); s->len = len; s->op_flags = msg_flags; PREP_END
}

/* Zero-copy send: two CQEs, the result (F_MORE) and the notification (F_NOTIF) that releases buf. */
int64_t aur_prep_send_zc(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *buf,
                         uint32_t len, uint32_t msg_flags, uint32_t zc_flags)
{
    PREP_BEGIN(AUR_OP_SEND_ZC) s->fd = fd; s->addr = PTR(buf); s->len = len; s->op_flags = msg_flags;
    s->ioprio = (uint16_t)zc_flags; PREP_END
}

int64_t aur_prep_recvmsg(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *msghdr,
                         uint32_t msg_flags)
{
    PREP_BEGIN(AUR_OP_RECVMSG) s->fd = fd; s->addr = PTR(msghdr); s->len = 1; s->op_flags = msg_flags;
    PREP_END
}

int64_t aur_prep_sendmsg(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *msghdr,
                         uint32_t msg_flags)
{
    PREP_BEGIN(AUR_OP_SENDMSG) s->fd = fd; s->addr = PTR(msghdr); s->len = 1; s->op_flags = msg_flags;
    PREP_END
}

int64_t aur_prep_accept(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *addr, void *addrlen,
                        uint32_t flags, uint32_t ioprio)
{
    PREP_BEGIN(AUR_OP_ACCEPT) s->fd = fd; s->addr = PTR(addr); s->off = PTR(addrlen); s->op_flags = flags;
    s->ioprio = (uint16_t)ioprio; PREP_END
}

int64_t aur_prep_connect(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *addr,
                         uint32_t addrlen)
{
    PREP_BEGIN(AUR_OP_CONNECT) s->fd = fd; s->addr = PTR(addr); s->off = addrlen; PREP_END
}

int64_t aur_prep_shutdown(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint32_t how)
{
    PREP_BEGIN(AUR_OP_SHUTDOWN) s->fd = fd; s->len = how; PREP_END
}

int64_t aur_prep_close(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd)
{
    PREP_BEGIN(AUR_OP_CLOSE) s->fd = fd; PREP_END
}

int64_t aur_prep_socket(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t domain, int32_t type,
                        int32_t protocol)
{
    PREP_BEGIN(AUR_OP_SOCKET) s->fd = domain; s->off = (uint64_t)(uint32_t)type; s->len = (uint32_t)protocol;
    PREP_END
}

int64_t aur_prep_openat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path,
                        uint32_t flags, uint32_t mode)
{
    PREP_BEGIN(AUR_OP_OPENAT) s->fd = dirfd; s->addr = PTR(path); s->len = mode; s->op_flags = flags; PREP_END
}

int64_t aur_prep_statx(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path,
                       uint32_t flags, uint32_t mask, void *statxbuf)
{
    PREP_BEGIN(AUR_OP_STATX) s->fd = dirfd; s->addr = PTR(path); s->len = mask; s->off = PTR(statxbuf);
    s->op_flags = flags; PREP_END
}

int64_t aur_prep_fsync(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint32_t fsync_flags)
{
    PREP_BEGIN(AUR_OP_FSYNC) s->fd = fd; s->op_flags = fsync_flags; PREP_END
}

int64_t aur_prep_ftruncate(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint64_t length)
{
    PREP_BEGIN(AUR_OP_FTRUNCATE) s->fd = fd; s->off = length; PREP_END
}

int64_t aur_prep_unlinkat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path,
                          uint32_t flags)
{
    PREP_BEGIN(AUR_OP_UNLINKAT) s->fd = dirfd; s->addr = PTR(path); s->op_flags = flags; PREP_END
}

int64_t aur_prep_renameat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t olddirfd, const char *oldpath,
                          int32_t newdirfd, const char *newpath, uint32_t flags)
{
    PREP_BEGIN(AUR_OP_RENAMEAT) s->fd = olddirfd; s->addr = PTR(oldpath); s->len = (uint32_t)newdirfd;
    s->off = PTR(newpath); s->op_flags = flags; PREP_END
}

int64_t aur_prep_mkdirat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path,
                         uint32_t mode)
{
    PREP_BEGIN(AUR_OP_MKDIRAT) s->fd = dirfd; s->addr = PTR(path); s->len = mode; PREP_END
}

int64_t aur_prep_symlinkat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, const char *target,
                           int32_t newdirfd, const char *linkpath)
{
    PREP_BEGIN(AUR_OP_SYMLINKAT) s->fd = newdirfd; s->addr = PTR(target); s->off = PTR(linkpath); PREP_END
}

int64_t aur_prep_linkat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t olddirfd, const char *oldpath,
                        int32_t newdirfd, const char *newpath, uint32_t flags)
{
    PREP_BEGIN(AUR_OP_LINKAT) s->fd = olddirfd; s->addr = PTR(oldpath); s->len = (uint32_t)newdirfd;
    s->off = PTR(newpath); s->op_flags = flags; PREP_END
}

int64_t aur_prep_poll_add(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint32_t events,
                          uint32_t multishot)
{
    PREP_BEGIN(AUR_OP_POLL_ADD) s->fd = fd; s->op_flags = events; s->len = multishot ? AUR_POLL_ADD_MULTI : 0;
    PREP_END
}

int64_t aur_prep_cancel(aur_ring *r, uint64_t ud, uint32_t sqe_flags, uint64_t target, int32_t fd,
                        uint32_t cancel_flags)
{
    PREP_BEGIN(AUR_OP_ASYNC_CANCEL) s->addr = target; s->fd = fd; s->op_flags = cancel_flags; PREP_END
}

int64_t aur_prep_timeout(aur_ring *r, uint64_t ud, uint32_t sqe_flags, void *ts, uint32_t count,
                         uint32_t timeout_flags)
{
    PREP_BEGIN(AUR_OP_TIMEOUT) s->fd = -1; s->addr = PTR(ts); s->len = 1; s->off = count;
    s->op_flags = timeout_flags; PREP_END
}

int64_t aur_prep_waitid(aur_ring *r, uint64_t ud, uint32_t sqe_flags, uint32_t idtype, int32_t id,
                        void *infop, uint32_t options)
{
    PREP_BEGIN(AUR_OP_WAITID) s->fd = id; s->len = idtype; s->file_index = options; s->off = PTR(infop);
    PREP_END
}

/* ============================================================================ completion side */

uint32_t aur_cq_ready(aur_ring *r)
{
    if (r->closed || r->forked)
        return 0;
    return LOAD_ACQ(r->cq_ktail) - *r->cq_khead;
}

int aur_has_work(aur_ring *r)
{
    if (r->closed || r->forked || wrong_thread(r))
        return 1;
    if (r->sq_written != r->sq_published || sq_pending(r))
        return 1;
    if (LOAD_ACQ(r->cq_ktail) != *r->cq_khead)
        return 1;
    if ((r->setup_flags & AUR_SETUP_DEFER_TASKRUN) && !(r->setup_flags & AUR_SETUP_TASKRUN_FLAG))
        return 1; /* deferred work is invisible without the flag: only an enter can tell */
    return (LOAD_ACQ(r->sq_kflags) & (AUR_SQ_TASKRUN | AUR_SQ_CQ_OVERFLOW)) != 0;
}

/* Copy CQEs out of the CQ ring, swallowing the C core's own internal completions. */
static uint32_t copy_cqes(aur_ring *r, aur_cqe *out, uint32_t max)
{
    uint32_t head = *r->cq_khead;
    uint32_t tail = LOAD_ACQ(r->cq_ktail);
    const struct aur_kcqe *cqes = r->cqes;
    uint32_t n = 0;
    while (head != tail && n < max) {
        const struct aur_kcqe *c = &cqes[head & r->cq_mask];
        head++;
        if (c->user_data == AUR_UD_TIMEOUT) {
            r->timeout_pending = 0;
            r->stale_timeouts++;
            continue;
        }
        if (c->user_data == AUR_UD_WITHDRAWN)
            continue;
        out[n].user_data = c->user_data;
        out[n].res = c->res;
        out[n].flags = c->flags;
        n++;
    }
    STORE_REL(r->cq_khead, head);
    return n;
}

/* Without EXT_ARG, a wait with a timeout is bounded by an absolute TIMEOUT SQE that also
 * completes as soon as any other CQE is posted (count = 1), so at most one is usually pending.
 * Its timespec is kept in the ring: the kernel reads it when it consumes the SQE, which is not
 * necessarily during this aur_wait (an enter can fail with -EBUSY/-EAGAIN before submitting). */
static int arm_fallback_timeout(aur_ring *r, int64_t timeout_ns)
{
    int64_t deadline = aur_now_ns() + timeout_ns;
    if (r->timeout_pending && r->timeout_deadline_ns <= deadline)
        return 0;
    r->timeout_ts[0] = deadline / 1000000000LL;
    r->timeout_ts[1] = deadline % 1000000000LL;
    int64_t slot = aur_prep_timeout(r, AUR_UD_TIMEOUT, 0, r->timeout_ts, 1, AUR_TIMEOUT_ABS);
    if (slot < 0)
        return (int)slot;
    r->timeout_pending = 1;
    r->timeout_deadline_ns = deadline;
    return 0;
}

int aur_wait(aur_ring *r, uint32_t wait_nr, int64_t timeout_ns, aur_cqe *out, uint32_t max)
{
    if (r->closed || r->forked)
        return -EBADFD;
    if (wrong_thread(r))
        return -AUR_EWRONGTHREAD;
    r->more = 0;
    uint32_t n = copy_cqes(r, out, max);
    if (n > 0 || timeout_ns == 0)
        wait_nr = 0;
    const int defer_no_flag = (r->setup_flags & AUR_SETUP_DEFER_TASKRUN) &&
                              !(r->setup_flags & AUR_SETUP_TASKRUN_FLAG);
    for (;;) {
        struct aur_kernel_timespec ts;
        struct aur_getevents_arg ga;
        void *arg = NULL;
        size_t argsz = 0;
        uint32_t flags = 0;
        if (wait_nr > 0 && timeout_ns > 0) {
            if (r->use_ext_arg) {
                ts.tv_sec = timeout_ns / 1000000000LL;
                ts.tv_nsec = timeout_ns % 1000000000LL;
                memset(&ga, 0, sizeof(ga));
                ga.ts = PTR(&ts);
                arg = &ga;
                argsz = sizeof(ga);
                flags |= AUR_ENTER_EXT_ARG;
            } else {
                int err = arm_fallback_timeout(r, timeout_ns);
                if (err < 0)
                    return n ? (int)n : err;
            }
        }
        publish(r);
        uint32_t to_submit = sq_pending(r);
        uint32_t sqf = LOAD_ACQ(r->sq_kflags);
        if (wait_nr > 0 || defer_no_flag || (sqf & (AUR_SQ_CQ_OVERFLOW | AUR_SQ_TASKRUN)))
            flags |= AUR_ENTER_GETEVENTS;
        if (!to_submit && !(flags & AUR_ENTER_GETEVENTS))
            break;
        int ret = ring_enter(r, to_submit, wait_nr, flags, arg, argsz);
        if (ret < 0 && ret != -ETIME && ret != -EBUSY && ret != -EAGAIN) {
            n += copy_cqes(r, out + n, max - n);
            if (n)
                break;
            return ret; /* -EINTR: a signal; the caller runs its handlers and calls again */
        }
        n += copy_cqes(r, out + n, max - n);
        sqf = LOAD_ACQ(r->sq_kflags);
        if ((sqf & AUR_SQ_CQ_OVERFLOW) && n < max) {
            r->overflow_flushes++;
            wait_nr = 0; /* keep flushing the kernel's overflow list, never block */
            continue;
        }
        break;
    }
    if (n == max || aur_cq_ready(r) || (LOAD_ACQ(r->sq_kflags) & AUR_SQ_CQ_OVERFLOW))
        r->more = 1;
    return (int)n;
}

/* ======================================================================= provided-buffer rings */

int aur_pbuf_register(aur_ring *r, aur_pbuf *p, uint32_t entries, uint32_t bgid, uint32_t flags)
{
    if (r->closed || r->forked)
        return -EBADFD;
    if (entries == 0 || entries > 32768 || (entries & (entries - 1)) || bgid > 65535)
        return -EINVAL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t sz = (entries * sizeof(struct aur_buf) + page - 1) & ~(page - 1);
    void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    struct aur_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = PTR(mem);
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)bgid;
    reg.flags = (uint16_t)flags;
    int ret = sys_register(r->ring_fd, AUR_REGISTER_PBUF_RING, &reg, 1);
    if (ret < 0) {
        munmap(mem, sz);
        return ret;
    }
    p->ring = mem;
    p->ring_sz = sz;
    p->entries = entries;
    p->mask = entries - 1;
    p->bgid = bgid;
    p->tail = 0;
    p->registered = 1;
    return 0;
}

int aur_pbuf_unregister(aur_ring *r, aur_pbuf *p)
{
    if (!p->registered)
        return 0;
    int ret = 0;
    if (!r->closed && !r->forked) {
        struct aur_buf_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.bgid = (uint16_t)p->bgid;
        ret = sys_register(r->ring_fd, AUR_UNREGISTER_PBUF_RING, &reg, 1);
    }
    munmap(p->ring, p->ring_sz);
    p->ring = NULL;
    p->registered = 0;
    return ret < 0 ? ret : 0;
}

void aur_pbuf_add(aur_pbuf *p, void *addr, uint32_t len, uint32_t bid, uint32_t offset)
{
    struct aur_buf *b = (struct aur_buf *)p->ring + ((p->tail + offset) & p->mask);
    b->addr = PTR(addr); /* never touch b->resv: in entry 0 it is the ring's tail */
    b->len = len;
    b->bid = (uint16_t)bid;
}

void aur_pbuf_advance(aur_pbuf *p, uint32_t count)
{
    p->tail += count;
    STORE_REL((uint16_t *)((char *)p->ring + offsetof(struct aur_buf, resv)), (uint16_t)p->tail);
}

void aur_pbuf_recycle(aur_pbuf *p, void *addr, uint32_t len, uint32_t bid)
{
    aur_pbuf_add(p, addr, len, bid, 0);
    aur_pbuf_advance(p, 1);
}

int64_t aur_pbuf_head(aur_ring *r, aur_pbuf *p)
{
    if (r->closed || r->forked || !p->registered)
        return -EBADFD;
    struct aur_buf_status st;
    memset(&st, 0, sizeof(st));
    st.buf_group = p->bgid;
    int ret = sys_register(r->ring_fd, AUR_REGISTER_PBUF_STATUS, &st, 1);
    return ret < 0 ? ret : (int64_t)st.head;
}

uint32_t aur_pbuf_entry_len(const aur_pbuf *p, uint32_t index)
{
    if (!p->registered)
        return UINT32_MAX; /* no ring memory: report "not used up", the answer that recycles nothing */
    const struct aur_buf *b = (const struct aur_buf *)p->ring + (index & p->mask);
    return LOAD_ACQ(&b->len); /* written by the kernel (io-wq workers too): never a torn read */
}

/* ======================================================= inline file attempts (hp-files) */
/* Non-blocking system calls that Python tries before queueing a ring operation; see aur.h.  The
 * kernel ABI bits are defined here (not from libc headers, which may predate them). */

#include <fcntl.h>
#include <sys/sysmacros.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#define AUR_NR_statmount 457
#define AUR_RESOLVE_CACHED 0x20ULL
#define AUR_AT_EMPTY_PATH 0x1000
#define AUR_AT_HANDLE_FID 0x200
#define AUR_AT_HANDLE_MNT_ID_UNIQUE 0x001
#define AUR_STATX_BASIC_STATS 0x7ffU
#define AUR_O_TMPFILE_BIT (O_TMPFILE & ~O_DIRECTORY) /* __O_TMPFILE */
#define AUR_STATMOUNT_SB_BASIC 0x1ULL

struct aur_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

struct aur_mnt_id_req {
    uint32_t size;
    uint32_t spare;
    uint64_t mnt_id;
    uint64_t param;
};

struct aur_statmount_head { /* the fixed start of struct statmount */
    uint32_t size;
    uint32_t mnt_opts;
    uint64_t mask;
    uint32_t sb_dev_major;
    uint32_t sb_dev_minor;
    uint64_t sb_magic;
    uint32_t sb_flags;
    uint32_t fs_type;
    uint64_t rest[128]; /* room for the rest of the fixed part (no strings are asked for) */
};

struct aur_file_handle {
    uint32_t handle_bytes;
    int32_t handle_type;
    unsigned char f_handle[128]; /* MAX_HANDLE_SZ */
};

_Static_assert(sizeof(struct aur_open_how) == 24, "open_how layout");
_Static_assert(sizeof(struct aur_mnt_id_req) == 24, "mnt_id_req layout (MNT_ID_REQ_SIZE_VER0)");
_Static_assert(offsetof(struct aur_statmount_head, sb_magic) == 24, "statmount layout");

static int inline_openat2(int dirfd, const char *path, uint64_t flags)
{
    struct aur_open_how how = {flags, 0, AUR_RESOLVE_CACHED};
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    return fd < 0 ? -errno : (int)fd;
}

/* The unique id of fd's mount without calling the file system's getattr (which may block on a
 * network or cluster file system); 0 if the kernel cannot tell. */
static uint64_t inline_mount_of(int fd)
{
    struct aur_file_handle fh;
    uint64_t mnt_id = 0;
    fh.handle_bytes = sizeof(fh.f_handle);
    long r = syscall(SYS_name_to_handle_at, fd, "", &fh, &mnt_id,
                     AUR_AT_EMPTY_PATH | AUR_AT_HANDLE_FID | AUR_AT_HANDLE_MNT_ID_UNIQUE);
    if (r < 0 && errno != EOVERFLOW) /* EOVERFLOW still reports the mount */
        return 0;
    return mnt_id;
}

static int inline_is_local(const aur_fsinline *s, uint64_t mnt_id)
{
    uint32_t n = s->nlocal < AUR_INLINE_LOCAL_MAX ? s->nlocal : AUR_INLINE_LOCAL_MAX;
    for (uint32_t i = 0; mnt_id && i < n; i++)
        if (s->local[i] == mnt_id)
            return 1;
    return 0;
}

/* statx of fd if its mount is local: 0, AUR_INLINE_UNKNOWN_MOUNT or -errno. */
static int inline_statx_fd(aur_fsinline *s, int fd)
{
    s->mnt_id = inline_mount_of(fd);
    if (!inline_is_local(s, s->mnt_id))
        return AUR_INLINE_UNKNOWN_MOUNT;
    if (syscall(SYS_statx, fd, "", AUR_AT_EMPTY_PATH, AUR_STATX_BASIC_STATS, s->statx) < 0)
        return -errno;
    return 0;
}

/* struct statx (include/uapi/linux/stat.h), the part os.stat_result needs */
struct aur_statx_ts {
    int64_t tv_sec;
    uint32_t tv_nsec;
    int32_t reserved;
};
struct aur_statx {
    uint32_t mask, blksize;
    uint64_t attributes;
    uint32_t nlink, uid, gid;
    uint16_t mode, spare0;
    uint64_t ino, size, blocks, attributes_mask;
    struct aur_statx_ts atime, btime, ctime, mtime;
    uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
};
_Static_assert(offsetof(struct aur_statx, atime) == 64, "statx layout");
_Static_assert(offsetof(struct aur_statx, dev_minor) == 140, "statx layout");

/* Python's s + ns * 1e-9 on floats: the product is rounded before the sum (no fused
 * multiply-add, which the compiler may otherwise contract this into). */
static double inline_float_time(const struct aur_statx_ts *t)
{
    volatile double frac = (double)t->tv_nsec * 1e-9;
    return (double)t->tv_sec + frac;
}

static int inline_ns_time(const struct aur_statx_ts *t, int64_t *out)
{
    int64_t ns;
    if (__builtin_mul_overflow(t->tv_sec, (int64_t)1000000000, &ns) ||
        __builtin_add_overflow(ns, (int64_t)t->tv_nsec, out))
        return -1;
    return 0;
}

/* s->statx -> s->st; AUR_INLINE_RAW if a time in ns does not fit int64 (Python decodes it). */
static int inline_digest(aur_fsinline *s)
{
    struct aur_statx sx;
    aur_statres *o = &s->st;
    memcpy(&sx, s->statx, sizeof(sx));
    if (inline_ns_time(&sx.atime, &o->atime_ns) || inline_ns_time(&sx.mtime, &o->mtime_ns) ||
        inline_ns_time(&sx.ctime, &o->ctime_ns))
        return AUR_INLINE_RAW;
    o->mode = sx.mode;
    o->ino = sx.ino;
    o->dev = makedev(sx.dev_major, sx.dev_minor);
    o->nlink = sx.nlink;
    o->uid = sx.uid;
    o->gid = sx.gid;
    o->size = sx.size;
    o->atime = sx.atime.tv_sec;
    o->mtime = sx.mtime.tv_sec;
    o->ctime = sx.ctime.tv_sec;
    o->atime_f = inline_float_time(&sx.atime);
    o->mtime_f = inline_float_time(&sx.mtime);
    o->ctime_f = inline_float_time(&sx.ctime);
    o->blksize = sx.blksize;
    o->blocks = sx.blocks;
    o->rdev = makedev(sx.rdev_major, sx.rdev_minor);
    return 0;
}

int aur_inline_stat(aur_fsinline *s, int32_t dirfd, const char *path, uint32_t nofollow)
{
    int fd = inline_openat2(dirfd, path, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
    if (fd < 0)
        return fd;
    int ret = inline_statx_fd(s, fd);
    close(fd); /* an O_PATH fd: no flush, no release */
    return ret == 0 ? inline_digest(s) : ret;
}

int aur_inline_open(aur_fsinline *s, int32_t dirfd, const char *path, uint32_t flags)
{
    s->found = 0;
    s->mnt_id = 0;
    if (flags & (O_CREAT | O_TRUNC | AUR_O_TMPFILE_BIT))
        return -EAGAIN; /* RESOLVE_CACHED refuses them; io_uring always punts them too */
    int fd = inline_openat2(dirfd, path, (uint64_t)(flags | O_NONBLOCK));
    if (fd < 0)
        return fd;
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, (int)flags) < 0) {
        close(fd);
        return -EAGAIN; /* cannot happen; let the ring open it */
    }
    if (inline_statx_fd(s, fd) == 0)
        s->found = 1;
    return fd;
}

int aur_inline_fstat(aur_fsinline *s, int32_t fd)
{
    return inline_statx_fd(s, fd);
}

int64_t aur_mount_magic(uint64_t mnt_id)
{
    struct aur_mnt_id_req req;
    struct aur_statmount_head sm;
    memset(&req, 0, sizeof(req));
    req.size = sizeof(req);
    req.mnt_id = mnt_id;
    req.param = AUR_STATMOUNT_SB_BASIC;
    if (syscall(AUR_NR_statmount, &req, &sm, sizeof(sm), 0) < 0)
        return -errno;
    if (!(sm.mask & AUR_STATMOUNT_SB_BASIC))
        return -ENODATA;
    return (int64_t)(sm.sb_magic & 0x7fffffffffffffffULL);
}
