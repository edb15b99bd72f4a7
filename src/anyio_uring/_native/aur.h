/*
 * aur.h -- the C core's whole interface.  This file is valid C and valid cffi cdef at once: the
 * build script (build.py) feeds it to cffi verbatim, aur.c includes it.  Keep it free of
 * #include, expressions in #define and anything cffi cannot parse.
 *
 * Principles (see DESIGN.md section 3):
 *   - no Python-object logic and no malloc per operation; one C call per queued operation
 *     (aur_prep_*), one per loop tick to submit + wait + harvest (aur_wait), or only aur_has_work
 *     for a poll that finds nothing to do;
 *   - which calls keep the GIL is build.py's business (KEEP_GIL): the ones that touch memory only;
 *   - every function returns >= 0 on success or -errno; nothing here raises or prints;
 *   - a ring belongs to the thread that set it up: aur_prep_*, aur_wait and aur_submit called from
 *     any other thread return -AUR_EWRONGTHREAD and touch nothing (one pthread_self() per call);
 *   - user_data values with the top bit set are the runtime's own; AUR_UD_INTERNAL ones never
 *     leave C (the fallback wait timeout, withdrawn SQEs).
 */

/* A completion as handed to Python: 16 bytes, unpacked there with struct format "QiI". */
typedef struct aur_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} aur_cqe;

typedef struct aur_ring {
    /* -- readable from Python -- */
    int32_t ring_fd;
    uint32_t setup_flags;      /* the flags the kernel accepted */
    uint32_t features;         /* IORING_FEAT_* reported by the kernel */
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t use_ext_arg;      /* 1: waits use EXT_ARG timeouts; 0: a TIMEOUT SQE per wait */
    uint32_t use_registered_fd;/* 1: enter goes through a registered ring index */
    uint32_t use_cqe_skip;     /* 1: withdrawn SQEs become NOPs with CQE_SKIP_SUCCESS (no CQE) */
    int32_t forked;            /* set in a fork child: the ring belongs to the parent */
    int32_t closed;
    uint32_t more;             /* the last aur_wait stopped because `out` was full */
    uint64_t sq_written;       /* SQEs written so far (monotonic) */
    uint64_t sq_published;     /* SQEs made visible to the kernel (monotonic) */
    uint64_t enters;           /* io_uring_enter calls made (diagnostics) */
    uint64_t sq_full_flushes;  /* times a prep found the SQ full and submitted early */
    uint64_t overflow_flushes; /* GETEVENTS enters made to flush an overflowed CQ */
    uint64_t stale_timeouts;   /* fallback timeout CQEs swallowed */
    /* -- private to aur.c -- */
    int32_t enter_fd;
    int32_t pid;
    void *sq_ring;
    uint64_t sq_ring_sz;
    void *cq_ring;
    uint64_t cq_ring_sz;
    void *sqes;
    uint64_t sqes_sz;
    uint32_t *sq_khead;
    uint32_t *sq_ktail;
    uint32_t *sq_kflags;
    uint32_t *sq_array;
    uint32_t sq_mask;
    uint32_t cq_mask;
    uint32_t *cq_khead;
    uint32_t *cq_ktail;
    void *cqes;
    int64_t timeout_deadline_ns; /* absolute CLOCK_MONOTONIC deadline of the pending fallback timeout */
    int64_t timeout_ts[2];       /* its timespec: lives here, not on a stack, until the kernel reads it */
    int32_t timeout_pending;
    int32_t pad0;
    uint64_t owner_thread;       /* pthread_self() of the thread that set the ring up */
    struct aur_ring *fork_next;
    struct aur_ring *fork_prev;
} aur_ring;

/* struct iovec / struct msghdr with the LP64 Linux layout (checked against libc in aur.c). */
typedef struct aur_iovec {
    void *base;
    uint64_t len;
} aur_iovec;

typedef struct aur_msghdr {
    void *name;
    uint32_t namelen;
    aur_iovec *iov;
    uint64_t iovlen;
    void *control;
    uint64_t controllen;
    int32_t flags;
} aur_msghdr;

/* A provided-buffer ring (IORING_REGISTER_PBUF_RING).  The ring memory is mmap'd here; the
 * buffers it points at belong to the caller. */
typedef struct aur_pbuf {
    void *ring;
    uint64_t ring_sz;
    uint32_t entries;
    uint32_t mask;
    uint32_t bgid;
    uint32_t tail;       /* local tail; published by aur_pbuf_advance */
    int32_t registered;
    int32_t pad0;
} aur_pbuf;

/* the -errno of a call from a thread that does not own the ring (EEXIST, as the kernel answers a
 * SINGLE_ISSUER ring entered from another task) */
#define AUR_EWRONGTHREAD 17

/* user_data argument of the prep functions that asks for `slot + 1`: unique for the ring's life
 * (slots count every SQE it wrote), never 0, top bit clear.  The Python ring uses it for every
 * operation, so it passes no counter of its own. */
#define AUR_UD_FROM_SLOT 0

/* reserved user_data values (top bit set = runtime-internal) */
#define AUR_UD_TIMEOUT 0xFFFFFFFFFFFFFFFF
#define AUR_UD_WITHDRAWN 0xFFFFFFFFFFFFFFFE
#define AUR_UD_TAG_CANCEL 0x8000000000000000

/* setup-flag bits of aur_setup's `allow` mask and of aur_ring.setup_flags */
#define AUR_SF_SUBMIT_ALL 128
#define AUR_SF_COOP_TASKRUN 256
#define AUR_SF_TASKRUN_FLAG 512
#define AUR_SF_SINGLE_ISSUER 4096
#define AUR_SF_DEFER_TASKRUN 8192
#define AUR_SF_NO_SQARRAY 65536
/* pseudo-flags in `allow` for features that are not setup flags */
#define AUR_ALLOW_EXT_ARG 0x40000000
#define AUR_ALLOW_REGISTERED_FD 0x20000000
#define AUR_ALLOW_CQE_SKIP 0x10000000

/* cqe->flags */
#define AUR_CQE_F_BUFFER 1
#define AUR_CQE_F_MORE 2
#define AUR_CQE_F_SOCK_NONEMPTY 4
#define AUR_CQE_F_NOTIF 8
#define AUR_CQE_F_BUF_MORE 16
#define AUR_CQE_BUFFER_SHIFT 16
#define AUR_SEND_ZC_REPORT_USAGE 8 /* IORING_SEND_ZC_REPORT_USAGE: NOTIF res says if the kernel copied */
#define AUR_NOTIF_USAGE_ZC_COPIED 0x80000000u

/* sqe->flags */
#define AUR_SQE_IO_LINK 4
#define AUR_SQE_ASYNC 16
#define AUR_SQE_BUFFER_SELECT 32
#define AUR_SQE_CQE_SKIP_SUCCESS 64

/* ioprio / op flags used by the prep functions */
#define AUR_ACCEPT_MULTISHOT 1
#define AUR_RECV_MULTISHOT 2
#define AUR_POLL_ADD_MULTI 1
#define AUR_CANCEL_ALL 1
#define AUR_CANCEL_FD 2
#define AUR_CANCEL_ANY 4
#define AUR_FSYNC_DATASYNC 1
#define AUR_PBUF_RING_INC 2

/* ---- lifetime ---- */
const char *aur_version(void);
aur_ring *aur_ring_new(void);
void aur_ring_free(aur_ring *r);
/* Create the ring: tries the best setup flags within `allow`, dropping them step by step on
 * EINVAL.  Returns 0 or -errno (ENOSYS, EPERM, ENOMEM, EMFILE, ... from io_uring_setup). */
int aur_setup(aur_ring *r, uint32_t entries, uint32_t cq_entries, uint32_t allow);
/* Unmap and close.  The caller must have drained every operation first (see _ring.py). */
int aur_close(aur_ring *r);
/* Fill ops[0..255] with 1 for each supported opcode; returns ops_len or -errno. */
int aur_probe(aur_ring *r, uint8_t *ops);

/* ---- the loop's one wait ----
 * Publish queued SQEs, wait for >= wait_nr completions or timeout_ns (<0: forever, 0: poll), and
 * copy up to max CQEs into out, flushing a CQ overflow as needed.  Returns the number copied
 * (0 on timeout) or -errno (-EINTR: a signal arrived; CQEs already copied are returned first). */
int aur_wait(aur_ring *r, uint32_t wait_nr, int64_t timeout_ns, aur_cqe *out, uint32_t max);
/* Publish and submit queued SQEs without waiting.  Returns the number submitted or -errno. */
int aur_submit(aur_ring *r);
/* Turn a written-but-unpublished SQE back into nothing.  Returns 1 if withdrawn, 0 if it was
 * already submitted (the caller must cancel it asynchronously). */
int aur_withdraw(aur_ring *r, int64_t slot, uint64_t user_data);
/* Number of CQEs waiting in the CQ ring (no syscall). */
uint32_t aur_cq_ready(aur_ring *r);
/* 0 if aur_wait with a zero timeout would find nothing to do: no SQE to submit, no CQE in the CQ,
 * neither IORING_SQ_TASKRUN (deferred completions waiting for enter) nor IORING_SQ_CQ_OVERFLOW
 * set.  1 otherwise, and also when that cannot be told from shared memory (DEFER_TASKRUN without
 * TASKRUN_FLAG) or aur_wait would refuse the call (closed, forked, another thread): the caller's
 * aur_wait then does the work or reports the error.  No syscall. */
int aur_has_work(aur_ring *r);
/* CLOCK_MONOTONIC in nanoseconds. */
int64_t aur_now_ns(void);

/* ---- prep functions: each writes one SQE and returns its slot (>= 0) or -errno ----
 * The SQE's user_data is `ud`, or `slot + 1` when ud is AUR_UD_FROM_SLOT.
 * The SQE stays local until the next aur_wait/aur_submit, or until a prep finds the SQ full, in
 * which case everything queued is submitted first (counted in sq_full_flushes).  Pointers must
 * stay valid until the operation's final CQE: the Python layer owns that rule. */
int64_t aur_prep_nop(aur_ring *r, uint64_t ud, uint32_t sqe_flags);
int64_t aur_prep_read(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *buf, uint32_t len, uint64_t offset);
int64_t aur_prep_write(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *buf, uint32_t len, uint64_t offset);
int64_t aur_prep_recv(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *buf, uint32_t len, uint32_t msg_flags, uint32_t ioprio, uint32_t buf_group);
int64_t aur_prep_send(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *buf, uint32_t len, uint32_t msg_flags);
int64_t aur_prep_send_zc(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *buf, uint32_t len, uint32_t msg_flags, uint32_t zc_flags);
int64_t aur_prep_recvmsg(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *msghdr, uint32_t msg_flags);
int64_t aur_prep_sendmsg(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *msghdr, uint32_t msg_flags);
int64_t aur_prep_accept(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, void *addr, void *addrlen, uint32_t flags, uint32_t ioprio);
int64_t aur_prep_connect(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, const void *addr, uint32_t addrlen);
int64_t aur_prep_shutdown(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint32_t how);
int64_t aur_prep_close(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd);
int64_t aur_prep_socket(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t domain, int32_t type, int32_t protocol);
int64_t aur_prep_openat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path, uint32_t flags, uint32_t mode);
int64_t aur_prep_statx(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path, uint32_t flags, uint32_t mask, void *statxbuf);
int64_t aur_prep_fsync(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint32_t fsync_flags);
int64_t aur_prep_ftruncate(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint64_t length);
int64_t aur_prep_unlinkat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path, uint32_t flags);
int64_t aur_prep_renameat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t olddirfd, const char *oldpath, int32_t newdirfd, const char *newpath, uint32_t flags);
int64_t aur_prep_mkdirat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t dirfd, const char *path, uint32_t mode);
int64_t aur_prep_symlinkat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, const char *target, int32_t newdirfd, const char *linkpath);
int64_t aur_prep_linkat(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t olddirfd, const char *oldpath, int32_t newdirfd, const char *newpath, uint32_t flags);
int64_t aur_prep_poll_add(aur_ring *r, uint64_t ud, uint32_t sqe_flags, int32_t fd, uint32_t events, uint32_t multishot);
int64_t aur_prep_cancel(aur_ring *r, uint64_t ud, uint32_t sqe_flags, uint64_t target, int32_t fd, uint32_t cancel_flags);
int64_t aur_prep_timeout(aur_ring *r, uint64_t ud, uint32_t sqe_flags, void *ts, uint32_t count, uint32_t timeout_flags);
int64_t aur_prep_waitid(aur_ring *r, uint64_t ud, uint32_t sqe_flags, uint32_t idtype, int32_t id, void *infop, uint32_t options);

/* ---- provided-buffer rings ---- */
int aur_pbuf_register(aur_ring *r, aur_pbuf *p, uint32_t entries, uint32_t bgid, uint32_t flags);
int aur_pbuf_unregister(aur_ring *r, aur_pbuf *p);
/* Stage a buffer at tail+offset (not yet visible); aur_pbuf_advance publishes count of them. */
void aur_pbuf_add(aur_pbuf *p, void *addr, uint32_t len, uint32_t bid, uint32_t offset);
void aur_pbuf_advance(aur_pbuf *p, uint32_t count);
/* add + advance(1): hand one buffer back to the kernel. */
void aur_pbuf_recycle(aur_pbuf *p, void *addr, uint32_t len, uint32_t bid);
/* The kernel's head (buffers consumed so far), via IORING_REGISTER_PBUF_STATUS; -errno on error. */
int64_t aur_pbuf_head(aur_ring *r, aur_pbuf *p);
/* The len field of the ring entry at position `index` (masked), as the kernel left it.  In an
 * incremental ring (AUR_PBUF_RING_INC) the kernel advances addr/len of the entry it is filling in
 * place and sets len to 0 once the buffer is used up.  UINT32_MAX if `p` is not registered. */
uint32_t aur_pbuf_entry_len(const aur_pbuf *p, uint32_t index);

/* ---- inline file attempts: non-blocking system calls tried before a ring operation ----
 * (hp-files) Each is one C call from Python.  "Local" mounts are those whose unique mount id
 * (STATX_MNT_ID_UNIQUE / statmount) Python has put into `local` after checking the file system
 * type: their getattr works on the in-memory inode and never blocks.  A stat or fstat runs only
 * on a local mount (the mount is identified first, with name_to_handle_at, which does not call
 * getattr); a lookup runs only through the dcache (RESOLVE_CACHED: -EAGAIN instead of I/O). */
#define AUR_INLINE_LOCAL_MAX 32
#define AUR_INLINE_UNKNOWN_MOUNT 1
#define AUR_INLINE_RAW 2
/* os.stat_result's 19 fields in its order, computed from a statx exactly as _files.py's
 * stat_from_view does (st_dev/st_rdev with makedev; float times as s + ns * 1e-9, no FMA). */
typedef struct aur_statres {
    uint64_t mode, ino, dev, nlink, uid, gid, size;
    int64_t atime, mtime, ctime;
    double atime_f, mtime_f, ctime_f;
    int64_t atime_ns, mtime_ns, ctime_ns;
    uint64_t blksize, blocks, rdev;
} aur_statres;
typedef struct aur_fsinline {
    uint64_t mnt_id;          /* out: the unique mount id the last attempt saw (0: unknown) */
    uint32_t nlocal;          /* in: how many entries of local[] are valid */
    uint32_t found;           /* out (aur_inline_open): 1 if statx[] holds the new fd's statx */
    uint64_t local[AUR_INLINE_LOCAL_MAX]; /* in: unique ids of mounts known to be local */
    uint8_t statx[256];       /* out: a struct statx */
    aur_statres st;           /* out (aur_inline_stat): statx[] as os.stat_result's fields */
} aur_fsinline;
/* stat(path) without blocking: openat2(O_PATH [| O_NOFOLLOW], RESOLVE_CACHED), the mount of the
 * result, and statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS) if that mount is local.  Returns 0
 * (s->statx and s->st filled), AUR_INLINE_RAW (s->statx filled; a time in ns overflows int64:
 * s->st is not), AUR_INLINE_UNKNOWN_MOUNT (s->mnt_id names the mount; nothing stat'ed), or
 * -errno: -EAGAIN when the lookup cannot be made without blocking, else the lookup's error. */
int aur_inline_stat(aur_fsinline *s, int32_t dirfd, const char *path, uint32_t nofollow);
/* io_uring's inline OPENAT as a system call: openat2(flags | O_NONBLOCK, RESOLVE_CACHED), then
 * O_NONBLOCK cleared again (F_SETFL) unless asked for; then, if the fd's mount is local, its
 * statx into s->statx (s->found = 1).  Returns the new fd, or -errno (-EAGAIN: not without
 * blocking -- always for O_CREAT, O_TRUNC and O_TMPFILE). */
int aur_inline_open(aur_fsinline *s, int32_t dirfd, const char *path, uint32_t flags);
/* statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS) if fd's mount is local: 0 (s->statx filled),
 * AUR_INLINE_UNKNOWN_MOUNT (s->mnt_id set), or -errno. */
int aur_inline_fstat(aur_fsinline *s, int32_t fd);
/* The super-block magic of the mount with unique id mnt_id (statmount(2), 6.8+), or -errno. */
int64_t aur_mount_magic(uint64_t mnt_id);
