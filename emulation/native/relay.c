/* ocalab-relay: the native hot path of emulation/relay.py (constant delay, drop-tail queue).
 *
 * emulation.relay validates the command line and execs this program for links without jitter
 * or loss, so it trusts its arguments (and still exits 2 on ones it cannot read). It behaves as
 * emulation.delayline specifies: FIFO per direction, due = max(arrival + delay, previous due),
 * a frame leaves once it is due within EARLY_NS, frames over --queue-pkts are dropped, and the
 * counters balance: forwarded + dropped + queued == in. Frames come and go in batches
 * (recvmmsg/sendmmsg), each delayed from its kernel receive stamp; the loop sleeps in ppoll
 * until the next due frame and never spins. The queue limit counts the frames read and not
 * yet sent, so a frame waiting in the socket counts from when it is read (at most one wake-up
 * later than a frame-by-frame reader would).
 *
 *   ocalab-relay A B DELAY_NS_AB DELAY_NS_BA QUEUE_PKTS(0 = none) RT_PRIORITY KERNEL_FILTER(0|1)
 *                STATS_FILE|- READY_FILE|- STATIC_JSON CONTROL_FILE|- SEED PAYLOAD_SPORT(0 = none)
 *
 * STATIC_JSON is the stats object's fixed part (rendered by emulation.relay); on SIGTERM or
 * SIGINT the program writes it with the counters added to STATS_FILE and exits 0. On SIGUSR2
 * it writes the same file at once and goes on ("final": false, "stats_dumps" counts the writes,
 * "pid" names the writer): the counters can be read while the relay runs. Each direction also
 * counts the TCP payload of the frames it reads (emulation.tcpcount specifies how).
 *
 * Run-time faults: CONTROL_FILE (emulation.impair's format and grammar, parsed as strictly) is
 * read at start when it exists and again after each SIGUSR1; the handler only sets a flag, the
 * loop reads the file. A bad file is logged, counted (impairment_rejects) and ignored. While
 * down a direction drops every frame it reads; injected loss (xorshift64* seeded from SEED, no
 * syscall) comes after that; extra delay applies to frames read afterwards.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EARLY_NS 50000LL          /* emulation.relay.EARLY_NS: frames due this soon leave now */
#define WAKE_LEAD_NS 10000LL      /* the timer asks to wake this long before the head is due */
#define BATCH 64                  /* frames per recvmmsg / sendmmsg */
#define DRAIN_BATCHES 4           /* recvmmsg calls per socket per wake-up */
#define RX_BUF 65536              /* largest frame received whole */
#define SLOT_BYTES 2048           /* frames up to this size live in the ring itself */
#define SOCK_BUF_BYTES (8 << 20)
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

typedef struct {
    int64_t due_ns;
    uint32_t len;
    uint8_t *big;                 /* malloc'd copy of a frame over SLOT_BYTES, else NULL */
    uint8_t data[SLOT_BYTES];
} slot_t;

/* TCP payload accounting (emulation.tcpcount specifies it): per flow the highest sequence end
 * seen (absolute, 64-bit) and up to MAX_HOLES holes below it (sorted), in FLOW_SLOTS static
 * slots; a full probe sequence evicts its least recently used flow. Static storage is only
 * backed by memory where a flow's holes reach. */
#define FLOW_SLOTS 256            /* a power of two */
#define FLOW_PROBES 8
#define MAX_HOLES 2048            /* slow-start overshoot on a long fat path opens hundreds */

typedef struct {
    uint32_t saddr, daddr, ports; /* ports: sport << 16 | dport */
    int used, nholes;
    uint64_t last_used;
    int64_t high, lo[MAX_HOLES + 1], hi[MAX_HOLES + 1];
} flow_t;

typedef struct {
    uint64_t segments, payload, new_payload, sport_payload, sport_new_payload;
    uint64_t flows_evicted, holes_forgotten, tick;
    flow_t flows[FLOW_SLOTS];
} tcpcount_t;

typedef struct {                  /* one direction: a growing ring of slots, FIFO by due time */
    slot_t *slots;
    size_t cap, head, n;
    int64_t delay_ns, last_due_ns;
    int64_t base_delay_ns;        /* the command line's delay; delay_ns = base + injected extra */
    long limit;                   /* 0: no queue limit */
    int down;                     /* injected: drop every frame read */
    double inj_loss_p;            /* injected Bernoulli loss, 0..1 */
    uint64_t rng;                 /* xorshift64* state (never 0) */
    uint64_t frames_in, bytes_in, frames_out, bytes_out, frames_qdrop, bytes_qdrop;
    uint64_t frames_inj, bytes_inj, frames_down, bytes_down;
    uint64_t send_errors, max_queue;
    tcpcount_t *tcp;              /* payload counters of the frames read (static storage) */
} line_t;

typedef struct {                  /* the control file's state (emulation.impair.Impairment) */
    double extra_ms_ab, extra_ms_ba, loss_pct_ab, loss_pct_ba;
    int down;
} impair_t;

static volatile sig_atomic_t stop_flag = 0, reload_flag = 0, dump_flag = 0;
static tcpcount_t tcp_ab, tcp_ba;
static unsigned payload_sport = 0; /* 0: no source port of interest */
static uint64_t stats_dumps = 0;
static char last_error[256] = "";
static impair_t current;          /* the last control file applied (zeros until one is) */
static uint64_t impair_changes = 0, impair_rejects = 0;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }
static void on_reload(int sig) { (void)sig; reload_flag = 1; }
static void on_dump(int sig) { (void)sig; dump_flag = 1; }

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return (x ^ (x >> 31)) | 1;   /* never 0 */
}

/* Uniform in [0, 1) from xorshift64*. */
static double uniform01(line_t *q) {
    q->rng ^= q->rng >> 12, q->rng ^= q->rng << 25, q->rng ^= q->rng >> 27;
    return (double)((q->rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "relay: error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void grow(line_t *q) {
    size_t cap = q->cap ? q->cap * 2 : 1024;
    slot_t *s = malloc(cap * sizeof(slot_t));
    if (!s) die("out of memory for the queue");
    for (size_t i = 0; i < q->n; i++)
        memcpy(&s[i], &q->slots[(q->head + i) % q->cap], sizeof(slot_t));
    free(q->slots);
    q->slots = s, q->cap = cap, q->head = 0;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The flow's slot: found, else a free one among FLOW_PROBES, else the least recently used of
 * them (evicted). */
static flow_t *flow_slot(tcpcount_t *t, uint32_t sa, uint32_t da, uint32_t ports, int *fresh) {
    uint32_t h = sa * 0x9E3779B1u ^ da * 0x85EBCA77u ^ ports * 0xC2B2AE3Du;
    h ^= h >> 15;
    flow_t *free_slot = NULL, *lru = NULL;
    for (int i = 0; i < FLOW_PROBES; i++) {
        flow_t *f = &t->flows[(h + i) & (FLOW_SLOTS - 1)];
        if (f->used && f->saddr == sa && f->daddr == da && f->ports == ports) {
            *fresh = 0, f->last_used = ++t->tick;
            return f;
        }
        if (!f->used && !free_slot) free_slot = f;
        if (f->used && (!lru || f->last_used < lru->last_used)) lru = f;
    }
    if (!free_slot) free_slot = lru, t->flows_evicted++;
    *fresh = 1;
    free_slot->used = 1, free_slot->saddr = sa, free_slot->daddr = da, free_slot->ports = ports;
    free_slot->last_used = ++t->tick;
    return free_slot;
}

/* Bytes of [s, e) inside f's holes; those parts leave the holes (sorted, disjoint; at most
 * MAX_HOLES + 1 remain). Binary search, then one memmove: cheap however many holes are open. */
static int64_t fill_holes(flow_t *f, int64_t s, int64_t e) {
    int a = 0, b = f->nholes;
    while (a < b) {  /* the first hole ending after s */
        int mid = (a + b) / 2;
        if (f->hi[mid] <= s) a = mid + 1;
        else b = mid;
    }
    int i = a, j = a;
    int64_t new = 0;
    for (; j < f->nholes && f->lo[j] < e; j++)
        new += (f->hi[j] < e ? f->hi[j] : e) - (f->lo[j] > s ? f->lo[j] : s);
    if (i == j) return 0;
    int64_t rl[2], rh[2];
    int nrem = 0;
    if (f->lo[i] < s) rl[nrem] = f->lo[i], rh[nrem] = s, nrem++;
    if (f->hi[j - 1] > e) rl[nrem] = e, rh[nrem] = f->hi[j - 1], nrem++;
    int tail = f->nholes - j;
    memmove(f->lo + i + nrem, f->lo + j, sizeof(f->lo[0]) * tail);
    memmove(f->hi + i + nrem, f->hi + j, sizeof(f->hi[0]) * tail);
    for (int k = 0; k < nrem; k++) f->lo[i + k] = rl[k], f->hi[i + k] = rh[k];
    f->nholes = i + nrem + tail;
    return new;
}

static void forget_lowest_holes(tcpcount_t *t, flow_t *f) {
    if (f->nholes <= MAX_HOLES) return;
    int drop = f->nholes - MAX_HOLES;
    memmove(f->lo, f->lo + drop, sizeof(f->lo[0]) * MAX_HOLES);
    memmove(f->hi, f->hi + drop, sizeof(f->hi[0]) * MAX_HOLES);
    f->nholes = MAX_HOLES, t->holes_forgotten += (uint64_t)drop;
}

/* Bytes of a segment's sequence range [seq, seq + payload) not seen before on its flow. */
static int64_t new_bytes(tcpcount_t *t, flow_t *f, int fresh, uint32_t seq, uint32_t payload,
                         int syn) {
    uint32_t start = syn ? seq + 1 : seq;  /* a SYN's data begins after it */
    if (fresh || syn) f->high = start, f->nholes = 0;
    int64_t s = f->high + (int32_t)(start - (uint32_t)f->high), e = s + payload, new = 0;
    if (s < f->high) new = fill_holes(f, s, e < f->high ? e : f->high);
    if (e > f->high) {
        if (s > f->high) f->lo[f->nholes] = f->high, f->hi[f->nholes] = s, f->nholes++;
        new += e - (s > f->high ? s : f->high);
        f->high = e;
    }
    forget_lowest_holes(t, f);
    return new;
}

/* Count an IPv4 TCP frame's payload (emulation.tcpcount.parse_segment: up to two VLAN tags,
 * no fragments, lengths must fit the frame). No syscall, no allocation. */
static void count_tcp(tcpcount_t *t, const uint8_t *p, uint32_t n) {
    uint32_t off = 12;
    if (n < 14) return;
    uint16_t etype = be16(p + off);
    for (int i = 0; i < 2 && (etype == 0x8100 || etype == 0x88A8) && n >= off + 6; i++)
        off += 4, etype = be16(p + off);
    off += 2;
    if (etype != 0x0800 || n < off + 20) return;
    const uint8_t *ip = p + off;
    uint32_t ihl = (ip[0] & 0x0F) * 4u, total = be16(ip + 2);
    if (ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 || (be16(ip + 6) & 0x3FFF) || total > n - off ||
        n < off + ihl + 20)
        return;
    const uint8_t *tcp = ip + ihl;
    uint32_t thl = (tcp[12] >> 4) * 4u;
    if (thl < 20 || total < ihl + thl) return;
    uint32_t payload = total - ihl - thl, sport = be16(tcp);
    int syn = (tcp[13] & 0x02) != 0;
    t->segments++;
    if (!payload && !syn) return;
    int fresh;
    flow_t *f = flow_slot(t, be32(ip + 12), be32(ip + 16), sport << 16 | be16(tcp + 2), &fresh);
    int64_t new = new_bytes(t, f, fresh, be32(tcp + 4), payload, syn);
    t->payload += payload, t->new_payload += (uint64_t)new;
    if (sport == payload_sport) t->sport_payload += payload, t->sport_new_payload += (uint64_t)new;
}

static void push(line_t *q, const uint8_t *frame, uint32_t len, int64_t now_ns) {
    q->frames_in++, q->bytes_in += len;
    count_tcp(q->tcp, frame, len);
    if (q->down) {
        q->frames_down++, q->bytes_down += len;
        return;
    }
    if (q->inj_loss_p > 0 && uniform01(q) < q->inj_loss_p) {
        q->frames_inj++, q->bytes_inj += len;
        return;
    }
    if (q->limit && (long)q->n >= q->limit) {
        q->frames_qdrop++, q->bytes_qdrop += len;
        return;
    }
    if (q->n == q->cap) grow(q);
    slot_t *s = &q->slots[(q->head + q->n) % q->cap];
    int64_t due = now_ns + q->delay_ns;
    if (due < q->last_due_ns) due = q->last_due_ns;
    q->last_due_ns = due;
    s->due_ns = due, s->len = len, s->big = NULL;
    if (len <= SLOT_BYTES) {
        memcpy(s->data, frame, len);
    } else {
        if (!(s->big = malloc(len))) die("out of memory for a frame");
        memcpy(s->big, frame, len);
    }
    if (++q->n > q->max_queue) q->max_queue = q->n;
}

/* Send every frame due by `horizon` through fd, in order, BATCH at a time. */
static void flush(line_t *q, int fd, int64_t horizon, const char *dir) {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    while (q->n && q->slots[q->head].due_ns <= horizon) {
        int k = 0;
        while (k < BATCH && k < (int)q->n) {
            slot_t *s = &q->slots[(q->head + k) % q->cap];
            if (s->due_ns > horizon) break;
            iov[k].iov_base = s->big ? s->big : s->data;
            iov[k].iov_len = s->len;
            memset(&msgs[k].msg_hdr, 0, sizeof(msgs[k].msg_hdr));
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            k++;
        }
        int done = 0;
        while (done < k) {  /* forwarded = left the queue, as in delayline; failures counted */
            int r = sendmmsg(fd, msgs + done, k - done, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                /* e.g. ENETDOWN while a link is failed: the frame is dropped and counted */
                q->send_errors++;
                snprintf(last_error, sizeof(last_error), "%s: [Errno %d] %s", dir, errno, strerror(errno));
                done++;
                continue;
            }
            done += r;
        }
        for (int i = 0; i < k; i++) q->frames_out++, q->bytes_out += iov[i].iov_len;
        for (int i = 0; i < k; i++) {
            slot_t *s = &q->slots[q->head];
            free(s->big);
            s->big = NULL;
            q->head = (q->head + 1) % q->cap, q->n--;
        }
    }
}

static uint8_t rxbuf[BATCH][RX_BUF];
static uint8_t rxctl[BATCH][CMSG_SPACE(sizeof(struct timespec)) +
                            CMSG_SPACE(sizeof(struct tpacket_auxdata))];

/* CLOCK_REALTIME minus CLOCK_MONOTONIC now: kernel receive stamps are wall-clock times. */
static int64_t real_minus_mono_ns(void) {
    struct timespec r, m;
    clock_gettime(CLOCK_REALTIME, &r);
    clock_gettime(CLOCK_MONOTONIC, &m);
    return ((int64_t)r.tv_sec - m.tv_sec) * 1000000000LL + (r.tv_nsec - m.tv_nsec);
}

/* The kernel's receive time of a frame (monotonic ns; `fallback` without a stamp), and its
 * VLAN tag put back into the frame: the receive path moves an 802.1Q tag out of the frame
 * into metadata (PACKET_AUXDATA), and a relay must send the frame as it came. */
static int64_t arrival_ns(struct msghdr *h, uint8_t *frame, uint32_t *len, int64_t offset_ns,
                          int64_t fallback) {
    int64_t t = fallback;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            int64_t k = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - offset_ns;
            t = k < fallback ? k : fallback;  /* never in the future */
        } else if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof(aux));
            if (!(aux.tp_vlan_tci || (aux.tp_status & TP_STATUS_VLAN_VALID)) || *len < 12 ||
                *len + 4 > RX_BUF)
                continue;
            uint16_t tpid = htons((aux.tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux.tp_vlan_tpid
                                                                             : ETH_P_8021Q);
            uint16_t tci = htons(aux.tp_vlan_tci);
            memmove(frame + 16, frame + 12, *len - 12);
            memcpy(frame + 12, &tpid, 2);
            memcpy(frame + 14, &tci, 2);
            *len += 4;
        }
    }
    return t;
}

/* Read up to DRAIN_BATCHES x BATCH waiting frames from fd into q, each delayed from its kernel
 * receive time, so frames may wait in the socket until the next wake-up without changing their
 * due time. Outgoing frames are skipped when the kernel cannot filter them (pre-4.20). */
static void drain(int fd, int kernel_filter, line_t *q) {
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_ll from[BATCH];
    for (int round = 0; round < DRAIN_BATCHES; round++) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = rxbuf[i], iov[i].iov_len = RX_BUF;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i], msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i], msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
            msgs[i].msg_hdr.msg_control = rxctl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof(rxctl[i]);
        }
        int r = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ENETDOWN || errno == ENXIO) return;
            die("recvmmsg");
        }
        int64_t now = mono_ns(), offset = real_minus_mono_ns();
        for (int i = 0; i < r; i++) {
            if (!kernel_filter && from[i].sll_pkttype == PACKET_OUTGOING) continue;
            uint32_t len = msgs[i].msg_len;
            int64_t at = arrival_ns(&msgs[i].msg_hdr, rxbuf[i], &len, offset, now);
            push(q, rxbuf[i], len, at);
        }
        if (r < BATCH) return;
    }
}

static int ifindex_of(const char *name) {
    unsigned idx = if_nametoindex(name);
    if (!idx) {
        fprintf(stderr, "relay: error: interface '%s' does not exist in this network namespace\n", name);
        exit(1);
    }
    return (int)idx;
}

static void set_buf(int fd, int force_opt, int plain_opt) {
    int size = SOCK_BUF_BYTES;
    if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof(size)) < 0)
        setsockopt(fd, SOL_SOCKET, plain_opt, &size, sizeof(size));
}

static int open_rx(const char *name, int *kernel_filter) {
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) die("AF_PACKET socket (needs CAP_NET_RAW)");
    int one = 1;
    if (*kernel_filter && setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0)
        *kernel_filter = 0;
    set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF);
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0) die("SO_TIMESTAMPNS");
    if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0) die("PACKET_AUXDATA");
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = ifindex_of(name)};
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) die("bind rx");
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int open_tx(const char *name) {
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) die("AF_PACKET socket (needs CAP_NET_RAW)");
    set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = 0, .sll_ifindex = ifindex_of(name)};
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) die("bind tx");
    return fd;
}

/* Write text to path through a temporary file and rename; 0, or -1 with a message on stderr. */
static int write_atomic(const char *path, const char *text) {
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) == 0) return 0;
    fprintf(stderr, "relay: error: %s: %s\n", path, strerror(errno));
    return -1;
}

/* ---- run-time faults: the control file (grammar of emulation.impair.parse_control) ---- */
#define CONTROL_MAX_BYTES 4096
#define MAX_DELAY_MS 60000.0

static void trim(const char **b, const char **e) {
    while (*b < *e && (**b == ' ' || **b == '\t' || **b == '\r')) (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r')) (*e)--;
}

/* A plain decimal: 1-9 digits, optionally '.' and 1-9 digits. Returns 0 and sets *out, or -1. */
static int parse_decimal(const char *b, const char *e, double *out) {
    const char *p = b, *dot = NULL;
    for (; p < e; p++) {
        if (*p == '.' && !dot) dot = p;
        else if (!isdigit((unsigned char)*p)) return -1;
    }
    long int_len = (dot ? dot : e) - b, frac_len = dot ? e - dot - 1 : 0;
    if (int_len < 1 || int_len > 9 || (dot && (frac_len < 1 || frac_len > 9))) return -1;
    char buf[32];
    memcpy(buf, b, (size_t)(e - b));
    buf[e - b] = '\0';
    *out = strtod(buf, NULL);
    return 0;
}

/* Parse text[0..n) into *imp; 0, or -1 with the reason in why. */
static int parse_control(const char *text, size_t n, impair_t *imp, char *why, size_t why_size) {
    static const char *keys[] = {"extra_delay_ms_ab", "extra_delay_ms_ba", "loss_pct_ab",
                                 "loss_pct_ba", "down"};
    int seen[5] = {0};
    double val[5] = {0};
    const char *end = text + n;
    for (int line = 1; text <= end; line++) {
        const char *nl = memchr(text, '\n', (size_t)(end - text)), *e = nl ? nl : end, *b = text;
        text = e + 1;
        trim(&b, &e);
        if (b == e || *b == '#') continue;
        const char *eq = memchr(b, '=', (size_t)(e - b));
        int k = -1;
        if (eq) {
            const char *kb = b, *ke = eq;
            trim(&kb, &ke);
            for (int i = 0; i < 5; i++)
                if ((size_t)(ke - kb) == strlen(keys[i]) && !memcmp(kb, keys[i], (size_t)(ke - kb))) k = i;
        }
        if (k < 0) {
            snprintf(why, why_size, "line %d: expected one of %s, %s, %s, %s, down =value", line,
                     keys[0], keys[1], keys[2], keys[3]);
            return -1;
        }
        if (seen[k]++) {
            snprintf(why, why_size, "line %d: %s given twice", line, keys[k]);
            return -1;
        }
        const char *vb = eq + 1, *ve = e;
        trim(&vb, &ve);
        double high = k < 2 ? MAX_DELAY_MS : k < 4 ? 100.0 : 1.0;
        if ((k == 4 && !(ve - vb == 1 && (*vb == '0' || *vb == '1'))) ||
            parse_decimal(vb, ve, &val[k]) != 0 || val[k] > high) {
            snprintf(why, why_size, "line %d: bad value for %s (%s within [0, %g])", line, keys[k],
                     k == 4 ? "0 or 1" : "a plain decimal", high);
            return -1;
        }
    }
    *imp = (impair_t){val[0], val[1], val[2], val[3], val[4] != 0};
    return 0;
}

static void reject(const char *why) {
    impair_rejects++;
    fprintf(stderr, "relay: control file ignored (previous state kept): %s\n", why);
    fflush(stderr);
}

/* Read the control file and apply it to both directions; log and keep the state on failure. */
static void load_control(const char *path, line_t *ab, line_t *ba, int missing_ok) {
    char why[300], text[CONTROL_MAX_BYTES + 1];
    if (strcmp(path, "-") == 0) {
        reject("SIGUSR1 without --control-file");
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (!(missing_ok && errno == ENOENT)) {
            snprintf(why, sizeof(why), "%s: %s", path, strerror(errno));
            reject(why);
        }
        return;
    }
    size_t n = fread(text, 1, sizeof(text), f);
    int failed = ferror(f);
    fclose(f);
    impair_t imp;
    if (failed) {
        snprintf(why, sizeof(why), "%s: read error", path);
        reject(why);
        return;
    }
    if (n > CONTROL_MAX_BYTES) {
        snprintf(why, sizeof(why), "%s: control file over %d bytes", path, CONTROL_MAX_BYTES);
        reject(why);
        return;
    }
    if (parse_control(text, n, &imp, why, sizeof(why)) != 0) {
        reject(why);
        return;
    }
    ab->delay_ns = ab->base_delay_ns + (int64_t)(imp.extra_ms_ab * 1e6 + 0.5);  /* >= 0 */
    ba->delay_ns = ba->base_delay_ns + (int64_t)(imp.extra_ms_ba * 1e6 + 0.5);
    ab->inj_loss_p = imp.loss_pct_ab / 100.0, ba->inj_loss_p = imp.loss_pct_ba / 100.0;
    ab->down = ba->down = imp.down;
    current = imp;
    impair_changes++;
}

static int line_json(char *out, size_t size, const line_t *q) {
    const tcpcount_t *t = q->tcp;
    return snprintf(out, size,
        "{\"frames_in\": %llu, \"bytes_in\": %llu, \"frames_forwarded\": %llu, "
        "\"bytes_forwarded\": %llu, \"frames_dropped_loss\": 0, \"bytes_dropped_loss\": 0, "
        "\"frames_dropped_queue\": %llu, \"bytes_dropped_queue\": %llu, "
        "\"frames_dropped_injected\": %llu, \"bytes_dropped_injected\": %llu, "
        "\"frames_dropped_down\": %llu, \"bytes_dropped_down\": %llu, \"frames_queued\": %zu, "
        "\"max_queue_pkts\": %llu, \"frames_send_errors\": %llu, \"tcp_segments\": %llu, "
        "\"tcp_payload_bytes\": %llu, \"tcp_new_payload_bytes\": %llu, \"sport_payload_bytes\": %llu, "
        "\"sport_new_payload_bytes\": %llu, \"flows_evicted\": %llu, \"holes_forgotten\": %llu}",
        (unsigned long long)q->frames_in, (unsigned long long)q->bytes_in,
        (unsigned long long)q->frames_out, (unsigned long long)q->bytes_out,
        (unsigned long long)q->frames_qdrop, (unsigned long long)q->bytes_qdrop,
        (unsigned long long)q->frames_inj, (unsigned long long)q->bytes_inj,
        (unsigned long long)q->frames_down, (unsigned long long)q->bytes_down, q->n,
        (unsigned long long)q->max_queue, (unsigned long long)q->send_errors,
        (unsigned long long)t->segments, (unsigned long long)t->payload,
        (unsigned long long)t->new_payload, (unsigned long long)t->sport_payload,
        (unsigned long long)t->sport_new_payload, (unsigned long long)t->flows_evicted,
        (unsigned long long)t->holes_forgotten);
}

/* The stats file: counters now, `final` at exit (a live dump on SIGUSR2 otherwise); 0 or -1. */
static int write_stats(const char *path, const char *static_json, const line_t *ab,
                       const line_t *ba, int kernel_filter, double duration_s, int final) {
    size_t n = strlen(static_json);
    char l_ab[2048], l_ba[2048], err[600];
    line_json(l_ab, sizeof(l_ab), ab);
    line_json(l_ba, sizeof(l_ba), ba);
    if (last_error[0]) snprintf(err, sizeof(err), "\"%s\"", last_error);
    else snprintf(err, sizeof(err), "null");
    size_t size = n + 8192;
    char *text = malloc(size);
    if (!text) die("out of memory");
    snprintf(text, size, "%.*s, \"engine\": \"native\", \"pid\": %d, \"stats_dumps\": %llu, "
             "\"final\": %s, \"kernel_outgoing_filter\": %s, "
             "\"duration_s\": %.3f, \"ab\": %s, \"ba\": %s, \"last_send_error\": %s, "
             "\"impairment_changes\": %llu, \"impairment_rejects\": %llu, \"impairment\": "
             "{\"extra_delay_ms_ab\": %.6f, \"extra_delay_ms_ba\": %.6f, \"loss_pct_ab\": %.6f, "
             "\"loss_pct_ba\": %.6f, \"down\": %s}}\n",
             (int)(n - 1), static_json, (int)getpid(), (unsigned long long)++stats_dumps,
             final ? "true" : "false", kernel_filter ? "true" : "false", duration_s, l_ab, l_ba, err,
             (unsigned long long)impair_changes, (unsigned long long)impair_rejects,
             current.extra_ms_ab, current.extra_ms_ba, current.loss_pct_ab, current.loss_pct_ba,
             current.down ? "true" : "false");
    int rc = write_atomic(path, text);
    free(text);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 14) {
        fprintf(stderr, "usage: %s A B DELAY_NS_AB DELAY_NS_BA QUEUE_PKTS RT_PRIORITY KERNEL_FILTER "
                "STATS_FILE READY_FILE STATIC_JSON CONTROL_FILE SEED PAYLOAD_SPORT (run it through "
                "emulation.relay)\n",
                argv[0]);
        return 2;
    }
    line_t ab = {0}, ba = {0};
    ab.base_delay_ns = ab.delay_ns = atoll(argv[3]), ba.base_delay_ns = ba.delay_ns = atoll(argv[4]);
    const char *control_file = argv[11];
    uint64_t seed = strtoull(argv[12], NULL, 10);
    long sport = atol(argv[13]);
    payload_sport = (unsigned)sport;
    ab.tcp = &tcp_ab, ba.tcp = &tcp_ba;
    ab.rng = splitmix64(seed * 2), ba.rng = splitmix64(seed * 2 + 1);
    ab.limit = ba.limit = atol(argv[5]);
    ab.last_due_ns = ba.last_due_ns = INT64_MIN / 2;
    int rt_priority = atoi(argv[6]), kf_a = atoi(argv[7]) != 0, kf_b = kf_a;
    const char *stats_file = argv[8], *ready_file = argv[9], *static_json = argv[10];
    size_t sj = strlen(static_json);
    if (ab.delay_ns < 0 || ba.delay_ns < 0 || ab.limit < 0 || rt_priority < 0 || rt_priority > 99 ||
        sport < 0 || sport > 65535 || sj < 2 || static_json[sj - 1] != '}') {
        fprintf(stderr, "relay: error: bad numeric argument\n");
        return 2;
    }
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);  /* emulation.relay blocked it (and SIGUSR2) before exec */
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, NULL);  /* delivered only inside ppoll: no lost wake-up */
    sigemptyset(&empty);
    struct sigaction sa = {.sa_handler = on_signal}, sr = {.sa_handler = on_reload};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sr, NULL);
    struct sigaction sd = {.sa_handler = on_dump};
    sigaction(SIGUSR2, &sd, NULL);
    int rx_a = open_rx(argv[1], &kf_a), rx_b = open_rx(argv[2], &kf_b);
    int tx_a = open_tx(argv[1]), tx_b = open_tx(argv[2]);
    int kernel_filter = kf_a && kf_b;
    if (strcmp(control_file, "-") != 0) load_control(control_file, &ab, &ba, 1);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    if (rt_priority > 0) {
        struct sched_param sp = {.sched_priority = rt_priority};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
            fprintf(stderr, "relay: warning: cannot use SCHED_FIFO %d (%s); delays may stretch "
                    "when CPUs are busy\n", rt_priority, strerror(errno));
    }
    int64_t started = mono_ns();
    if (strcmp(ready_file, "-") != 0) {
        char pid[32];
        snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
        if (write_atomic(ready_file, pid) != 0) return 1;
    }
    printf("READY\n");
    fflush(stdout);
    /* A frame's due time is its kernel receive time + delay, and with a constant delay a frame
     * that arrives later is due later: while a direction has frames queued, its socket is read
     * only when its head is due (one wake-up serves what arrived meanwhile); only an empty
     * direction waits on its socket. Each wake-up reads both sockets, then sends what is due. */
    while (!stop_flag) {
        drain(rx_a, kernel_filter, &ab);
        drain(rx_b, kernel_filter, &ba);
        int64_t horizon = mono_ns() + EARLY_NS;
        flush(&ab, tx_b, horizon, "ab");
        flush(&ba, tx_a, horizon, "ba");
        struct pollfd fds[2];
        nfds_t nfds = 0;
        int64_t next = INT64_MAX;
        if (ab.n) next = ab.slots[ab.head].due_ns;
        else fds[nfds++] = (struct pollfd){.fd = rx_a, .events = POLLIN};
        if (ba.n) next = ba.slots[ba.head].due_ns < next ? ba.slots[ba.head].due_ns : next;
        else fds[nfds++] = (struct pollfd){.fd = rx_b, .events = POLLIN};
        struct timespec ts, *tsp = NULL;
        if (next != INT64_MAX) {
            int64_t wait = next - WAKE_LEAD_NS - mono_ns();
            if (wait < 0) wait = 0;
            ts.tv_sec = wait / 1000000000LL, ts.tv_nsec = wait % 1000000000LL;
            tsp = &ts;
        }
        /* POLLERR wakes us too; the next drain reads and clears it (ENETDOWN while a link is
         * down), so a failed link cannot make this loop spin */
        if (ppoll(fds, nfds, tsp, &empty) < 0 && errno != EINTR) die("ppoll");
        if (reload_flag) {
            reload_flag = 0;
            load_control(control_file, &ab, &ba, 0);
        }
        if (dump_flag) {  /* a failed live dump is logged and the relay goes on */
            dump_flag = 0;
            if (strcmp(stats_file, "-") != 0)
                write_stats(stats_file, static_json, &ab, &ba, kernel_filter,
                            (mono_ns() - started) / 1e9, 0);
        }
    }
    if (strcmp(stats_file, "-") != 0)
        if (write_stats(stats_file, static_json, &ab, &ba, kernel_filter,
                        (mono_ns() - started) / 1e9, 1) != 0)
            return 1;
    return 0;
}
