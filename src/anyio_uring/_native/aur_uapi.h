/*
 * aur_uapi.h -- the io_uring kernel ABI, carried by the project.
 *
 * The build machines ship older uapi headers (Debian 12: linux-libc-dev 6.1) than the kernels we
 * run on (6.18), so the C core never includes <linux/io_uring.h>.  Layouts and numbers below are
 * the kernel's ABI (stable by definition); each struct has a size assertion in aur.c.
 */
#ifndef AUR_UAPI_H
#define AUR_UAPI_H

#include <stdint.h>

/* ---- syscall numbers (identical on every architecture since 5.1) ---- */
#define AUR_NR_io_uring_setup 425
#define AUR_NR_io_uring_enter 426
#define AUR_NR_io_uring_register 427

/* ---- submission queue entry (64 bytes) ---- */
struct aur_sqe {
    uint8_t opcode;
    uint8_t flags;       /* IOSQE_* */
    uint16_t ioprio;     /* also: accept/recv/send flags such as multishot */
    int32_t fd;
    uint64_t off;        /* also: addr2 */
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags;   /* the per-opcode union: rw_flags, msg_flags, open_flags, cancel_flags, ... */
    uint64_t user_data;
    uint16_t buf_index;  /* also: buf_group */
    uint16_t personality;
    uint32_t file_index; /* also: splice_fd_in, waitid options */
    uint64_t addr3;
    uint64_t pad2;
};

/* ---- completion queue entry (16 bytes; we never set CQE32) ---- */
struct aur_kcqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct aur_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};

struct aur_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};

struct aur_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    struct aur_sqring_offsets sq_off;
    struct aur_cqring_offsets cq_off;
};

struct aur_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
};

struct aur_kernel_timespec {
    int64_t tv_sec;
    long long tv_nsec;
};

struct aur_probe_op {
    uint8_t op;
    uint8_t resv;
    uint16_t flags; /* IO_URING_OP_SUPPORTED */
    uint32_t resv2;
};

struct aur_probe_hdr {
    uint8_t last_op;
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct aur_probe_op ops[256];
};

struct aur_buf {
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    uint16_t resv; /* entry 0's resv is the ring tail */
};

struct aur_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    uint16_t flags;
    uint64_t resv[3];
};

struct aur_buf_status {
    uint32_t buf_group;
    uint32_t head;
    uint32_t resv[8];
};

struct aur_rsrc_update {
    uint32_t offset;
    uint32_t resv;
    uint64_t data;
};

/* ---- setup flags ---- */
#define AUR_SETUP_CQSIZE (1U << 3)
#define AUR_SETUP_CLAMP (1U << 4)
#define AUR_SETUP_SUBMIT_ALL (1U << 7)
#define AUR_SETUP_COOP_TASKRUN (1U << 8)
#define AUR_SETUP_TASKRUN_FLAG (1U << 9)
#define AUR_SETUP_SINGLE_ISSUER (1U << 12)
#define AUR_SETUP_DEFER_TASKRUN (1U << 13)
#define AUR_SETUP_NO_SQARRAY (1U << 16)

/* ---- features ---- */
#define AUR_FEAT_SINGLE_MMAP (1U << 0)
#define AUR_FEAT_NODROP (1U << 1)
#define AUR_FEAT_EXT_ARG (1U << 8)
#define AUR_FEAT_CQE_SKIP (1U << 11)

/* ---- opcodes ---- */
enum {
    AUR_OP_NOP = 0, AUR_OP_READV = 1, AUR_OP_WRITEV = 2, AUR_OP_FSYNC = 3, AUR_OP_POLL_ADD = 6,
    AUR_OP_POLL_REMOVE = 7, AUR_OP_SENDMSG = 9, AUR_OP_RECVMSG = 10, AUR_OP_TIMEOUT = 11,
    AUR_OP_TIMEOUT_REMOVE = 12, AUR_OP_ACCEPT = 13, AUR_OP_ASYNC_CANCEL = 14, AUR_OP_LINK_TIMEOUT = 15,
    AUR_OP_CONNECT = 16, AUR_OP_FALLOCATE = 17, AUR_OP_OPENAT = 18, AUR_OP_CLOSE = 19, AUR_OP_STATX = 21,
    AUR_OP_READ = 22, AUR_OP_WRITE = 23, AUR_OP_SEND = 26, AUR_OP_RECV = 27, AUR_OP_SHUTDOWN = 34,
    AUR_OP_RENAMEAT = 35, AUR_OP_UNLINKAT = 36, AUR_OP_MKDIRAT = 37, AUR_OP_SYMLINKAT = 38,
    AUR_OP_LINKAT = 39, AUR_OP_SOCKET = 45, AUR_OP_SEND_ZC = 47, AUR_OP_WAITID = 50, AUR_OP_FTRUNCATE = 55, AUR_OP_LAST = 62
};

/* ---- sqe->flags ---- */
#define AUR_IOSQE_ASYNC (1U << 4)
#define AUR_IOSQE_BUFFER_SELECT (1U << 5)
#define AUR_IOSQE_CQE_SKIP_SUCCESS (1U << 6)

/* ---- enter flags ---- */
#define AUR_ENTER_GETEVENTS (1U << 0)
#define AUR_ENTER_EXT_ARG (1U << 3)
#define AUR_ENTER_REGISTERED_RING (1U << 4)

/* ---- sq_flags ---- */
#define AUR_SQ_CQ_OVERFLOW (1U << 1)
#define AUR_SQ_TASKRUN (1U << 2)

/* ---- timeout flags ---- */
#define AUR_TIMEOUT_ABS (1U << 0)

/* ---- register opcodes ---- */
#define AUR_REGISTER_PROBE 8
#define AUR_REGISTER_RING_FDS 20
#define AUR_UNREGISTER_RING_FDS 21
#define AUR_REGISTER_PBUF_RING 22
#define AUR_UNREGISTER_PBUF_RING 23
#define AUR_REGISTER_PBUF_STATUS 26

/* ---- mmap offsets ---- */
#define AUR_OFF_SQ_RING 0ULL
#define AUR_OFF_CQ_RING 0x8000000ULL
#define AUR_OFF_SQES 0x10000000ULL

#endif /* AUR_UAPI_H */
