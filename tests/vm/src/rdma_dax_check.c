/*
 * rdma_dax_check TARGET [PATH [OFFSET]]
 *
 * Registers a 2 MiB RDMA memory region over TARGET and writes into it with one-sided RDMA
 * WRITEs from a second RC queue pair of the same process (loopback through the soft-RoCE
 * device), then checks every byte of the region: written ranges hold the source bytes, the rest
 * still holds the fill byte (so a WRITE that lands at the wrong offset is caught).
 *   anon    ordinary anonymous memory (PATH ignored)
 *   devdax  a device-DAX character device (e.g. /dev/dax1.0), mapped MAP_SHARED at OFFSET
 *           (a multiple of 2 MiB; lets several processes use one device side by side)
 *   fsdax   a file on an ext4 -o dax mount, mapped MAP_SHARED_VALIDATE | MAP_SYNC
 * Env: KEEL_RDMA_DEVICE (default rxe0).
 * Exit status: 0 registered, written and verified; 2 setup error; 3 the kernel refused to
 * register the region; 4 a work request failed or timed out; 5 data verification failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

#define REGION ((size_t)2 << 20)
#define FILL 0xA5

struct write_op {
    size_t off, len;
};
/* page-sized records, an unaligned short one, and a multi-packet one crossing pages */
static const struct write_op ops[] = {
    {65536, 4096},  {69632, 4096},  {73728, 4096},  {77824, 4096},  {81920, 4096},
    {86016, 4096},  {90112, 4096},  {94208, 4096},  {98304, 4096},  {102400, 4096},
    {300017, 100},  {1048579, 60000}, {REGION - 8, 8},
};
#define NOPS (sizeof ops / sizeof ops[0])

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int modify(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask, const char *what) {
    int rc = ibv_modify_qp(qp, a, mask);
    if (rc != 0) fprintf(stderr, "rdma_dax_check: modify QP to %s: %s\n", what, strerror(rc));
    return rc;
}

/* INIT -> RTR -> RTS towards remote_qpn on the same port and GID */
static int connect_qp(struct ibv_qp *qp, uint32_t remote_qpn, const union ibv_gid *gid, int gid_idx,
                      enum ibv_mtu mtu) {
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    if (modify(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, "INIT"))
        return -1;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = mtu;
    a.dest_qp_num = remote_qpn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = *gid;
    a.ah_attr.grh.sgid_index = (uint8_t)gid_idx;
    a.ah_attr.grh.hop_limit = 1;
    a.ah_attr.port_num = 1;
    if (modify(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                           IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER, "RTR"))
        return -1;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 14;
    a.retry_cnt = 7;
    a.rnr_retry = 7;
    a.max_rd_atomic = 1;
    return modify(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                              IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC, "RTS");
}

static struct ibv_qp *make_qp(struct ibv_pd *pd, struct ibv_cq *cq) {
    struct ibv_qp_init_attr ia;
    memset(&ia, 0, sizeof ia);
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = 32;
    ia.cap.max_recv_wr = 1;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    return ibv_create_qp(pd, &ia);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: rdma_dax_check anon|devdax|fsdax [PATH [OFFSET]]\n");
        return 2;
    }
    const char *target = argv[1];
    const char *path = argc > 2 ? argv[2] : "";
    off_t offset = argc > 3 ? (off_t)strtoll(argv[3], NULL, 0) : 0;
    const char *devname = getenv("KEEL_RDMA_DEVICE") ? getenv("KEEL_RDMA_DEVICE") : "rxe0";
    char label[512];
    snprintf(label, sizeof label, "%s%s%s @%lld MiB", target, *path ? " " : "", path,
             (long long)(offset >> 20));

    /* ---- the target region */
    unsigned char *dst;
    if (strcmp(target, "anon") == 0) {
        dst = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else if (strcmp(target, "devdax") == 0 || strcmp(target, "fsdax") == 0) {
        int dev = strcmp(target, "devdax") == 0;
        int fd = open(path, dev ? O_RDWR : O_RDWR | O_CREAT, 0644);
        if (fd < 0 || (!dev && ftruncate(fd, REGION) != 0)) {
            fprintf(stderr, "rdma_dax_check: %s: %s\n", path, strerror(errno));
            return 2;
        }
        dst = mmap(NULL, REGION, PROT_READ | PROT_WRITE, dev ? MAP_SHARED : MAP_SHARED_VALIDATE | MAP_SYNC,
                   fd, offset);
    } else {
        fprintf(stderr, "rdma_dax_check: unknown target %s\n", target);
        return 2;
    }
    if (dst == MAP_FAILED) {
        fprintf(stderr, "rdma_dax_check: mmap %s: %s\n", label, strerror(errno));
        return 2;
    }
    memset(dst, FILL, REGION);
    unsigned char *src = malloc(REGION);
    if (src == NULL) return 2;
    unsigned int seed = (unsigned int)getpid() * 2654435761u;
    for (size_t i = 0; i < REGION; i++) src[i] = (unsigned char)((i * 151u + seed) >> 3) | 1u;

    /* ---- the device */
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    struct ibv_context *ctx = NULL;
    for (int i = 0; list && i < n; i++)
        if (strcmp(ibv_get_device_name(list[i]), devname) == 0) ctx = ibv_open_device(list[i]);
    if (ctx == NULL) {
        fprintf(stderr, "rdma_dax_check: cannot open RDMA device %s (%d devices)\n", devname, n);
        return 2;
    }
    struct ibv_port_attr port;
    if (ibv_query_port(ctx, 1, &port) != 0 || port.state != IBV_PORT_ACTIVE) {
        fprintf(stderr, "rdma_dax_check: %s port 1 is not active\n", devname);
        return 2;
    }
    /* the RoCEv2 GID of the interface's IPv4 address (::ffff:a.b.c.d) */
    int gid_idx = -1;
    union ibv_gid gid;
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    for (int i = 0; i < port.gid_tbl_len && gid_idx < 0; i++)
        if (ibv_query_gid(ctx, 1, i, &gid) == 0 && memcmp(gid.raw, v4mapped, 12) == 0) gid_idx = i;
    if (gid_idx < 0) {
        fprintf(stderr, "rdma_dax_check: %s has no IPv4-mapped GID (no address on its netdev?)\n", devname);
        return 2;
    }

    struct ibv_pd *pd = ibv_alloc_pd(ctx);
    struct ibv_cq *cq = pd ? ibv_create_cq(ctx, 64, NULL, NULL, 0) : NULL;
    struct ibv_qp *writer = cq ? make_qp(pd, cq) : NULL;
    struct ibv_qp *owner = writer ? make_qp(pd, cq) : NULL;
    if (owner == NULL) {
        fprintf(stderr, "rdma_dax_check: PD/CQ/QP setup failed: %s\n", strerror(errno));
        return 2;
    }
    struct ibv_mr *dst_mr = ibv_reg_mr(pd, dst, REGION,
                                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    if (dst_mr == NULL) {
        int e = errno;
        printf("rdma_dax_check: %s: registering the 2 MiB region refused: %s (errno %d)\n", label,
               strerror(e), e);
        return 3;
    }
    struct ibv_mr *src_mr = ibv_reg_mr(pd, src, REGION, IBV_ACCESS_LOCAL_WRITE);
    if (src_mr == NULL) {
        fprintf(stderr, "rdma_dax_check: registering the source buffer: %s\n", strerror(errno));
        return 2;
    }
    if (connect_qp(writer, owner->qp_num, &gid, gid_idx, port.active_mtu) != 0 ||
        connect_qp(owner, writer->qp_num, &gid, gid_idx, port.active_mtu) != 0)
        return 2;

    /* ---- one RDMA WRITE at a time, each waited for */
    double total_us = 0;
    size_t bytes = 0;
    for (size_t k = 0; k < NOPS; k++) {
        struct ibv_sge sge = {.addr = (uintptr_t)(src + ops[k].off), .length = (uint32_t)ops[k].len,
                              .lkey = src_mr->lkey};
        struct ibv_send_wr wr, *bad = NULL;
        memset(&wr, 0, sizeof wr);
        wr.wr_id = k;
        wr.sg_list = &sge;
        wr.num_sge = 1;
        wr.opcode = IBV_WR_RDMA_WRITE;
        wr.send_flags = IBV_SEND_SIGNALED;
        wr.wr.rdma.remote_addr = (uintptr_t)(dst + ops[k].off);
        wr.wr.rdma.rkey = dst_mr->rkey;
        double t0 = now_us();
        int rc = ibv_post_send(writer, &wr, &bad);
        if (rc != 0) {
            fprintf(stderr, "rdma_dax_check: post RDMA WRITE %zu: %s\n", k, strerror(rc));
            return 4;
        }
        struct ibv_wc wc;
        int got = 0;
        while ((got = ibv_poll_cq(cq, 1, &wc)) == 0) {
            if (now_us() - t0 > 10e6) {
                fprintf(stderr, "rdma_dax_check: RDMA WRITE %zu: no completion within 10 s\n", k);
                return 4;
            }
        }
        total_us += now_us() - t0;
        if (got < 0 || wc.status != IBV_WC_SUCCESS || wc.wr_id != k) {
            fprintf(stderr, "rdma_dax_check: RDMA WRITE %zu completed with %s\n", k,
                    got < 0 ? "a poll error" : ibv_wc_status_str(wc.status));
            return 4;
        }
        bytes += ops[k].len;
    }

    /* ---- every byte of the region */
    size_t wrong = 0, first = 0;
    for (size_t i = 0; i < REGION; i++) {
        unsigned char want = FILL;
        for (size_t k = 0; k < NOPS; k++)
            if (i >= ops[k].off && i < ops[k].off + ops[k].len) want = src[i];
        if (dst[i] != want && wrong++ == 0) first = i;
    }
    if (wrong != 0) {
        printf("rdma_dax_check: %s: %zu bytes wrong after the RDMA WRITEs, first at offset %zu\n", label,
               wrong, first);
        return 5;
    }
    printf("rdma_dax_check: %s: MR registered on %s, %zu RDMA WRITEs (%zu bytes) landed exactly, "
           "mean %.1f us per WRITE (post to completion)\n",
           label, devname, NOPS, bytes, total_us / NOPS);
    ibv_destroy_qp(owner);
    ibv_destroy_qp(writer);
    ibv_dereg_mr(src_mr);
    ibv_dereg_mr(dst_mr);
    ibv_destroy_cq(cq);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
    ibv_free_device_list(list);
    return 0;
}
