/* The benchmark's load side compiled: the echo agent and the load generator in one epoll loop.

   The same work as echo_agent.py and loadgen.py's echo mode, for the knee of setups that
   carry more calls than one core of Python load can drive. The agent: the upgrade, Welcome,
   SettingsApplied for Settings, every binary frame straight back, ping and close. The
   generator: VAIC calls in Bot API streaming mode (session.initiate, userStream.start, one
   tagged 20 ms userStream.chunk every 20 ms, session.end), each echoed chunk matched to
   its frame by the tag in its first 6 bytes, as loadgen.py does. loadside.py builds and
   drives it; the figures it prints are loadgen.LoadResult's fields, computed by Python.

   Protocol on stdin and stdout, one line each:
     out: ws://127.0.0.1:PORT/v1/agent/converse          once the agent listens
     in:  run URL CALLS DURATION RAMP WARMUP DRAIN TOKEN   TOKEN "-" for none
     out: window start / window end                      as the measurement window opens, closes
     out: {...}                                          the run's result as JSON
   It exits when stdin closes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define FRAME_S 0.020
#define FRAME_BYTES 640 /* 20 ms of 16-bit PCM at 16 kHz */
#define TAG_BYTES 6     /* frame number (u32 LE), call tag (u16 LE): 8 base64 characters */
#define SLOT_S 0.001
#define SLOTS 20
#define EARLY_S 0.002
#define SETUP_TIMEOUT_S 10.0
#define HANGUP_S 1.0   /* after session.end, the bot should close first */
#define SCAN_S 0.005   /* how often deadlines (ramp, drain, hang-up, setup guard) are looked at */

enum kind { K_LISTEN, K_AGENT, K_CALL, K_TIMER, K_STDIN };
enum state { PENDING, CONNECTING, HANDSHAKE, INITIATING, STARTING, STREAMING, DRAINING,
             ENDING, DONE };
static const char *STATE_NAMES[] = {"pending", "connecting", "handshake", "initiating",
                                    "starting", "streaming", "draining", "ending", "done"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* Python's time.monotonic */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "loadside: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* --- byte buffers and number lists ------------------------------------------------------ */

typedef struct { uint8_t *p; size_t len, cap; } buf_t;

static void buf_add(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        if (!(b->p = realloc(b->p, cap))) die("realloc");
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_drop(buf_t *b, size_t n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_free(buf_t *b) { free(b->p); b->p = NULL; b->len = b->cap = 0; }

typedef struct { double *v; size_t n, cap; } list_t;

static void list_add(list_t *l, double x) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        if (!(l->v = realloc(l->v, l->cap * sizeof(double)))) die("realloc");
    }
    l->v[l->n++] = x;
}

/* --- SHA-1 and base64, for the upgrade and the audio --------------------------------- */

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *m = calloc(total, 1);
    if (!m) die("calloc");
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = ROL(a, 5) + f + e + k + w[i];
            e = d; d = c; c = ROL(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static int8_t B64_VALUE[256];

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
    }
    return o;
}

/* Decodes base64 as a JSON string holds it ("\/" allowed); the bytes written. */
static size_t b64_decode(const uint8_t *in, size_t n, uint8_t *out) {
    uint32_t v = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int8_t d = B64_VALUE[in[i]];
        if (d < 0) continue; /* '=', '\\' */
        v = v << 6 | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(v >> bits);
        }
    }
    return o;
}

/* The span of a JSON string value of "key" (the first one): 0 if absent. */
static int json_str(const uint8_t *p, size_t n, const char *key, const uint8_t **v, size_t *vn) {
    size_t kn = strlen(key);
    const uint8_t *end = p + n, *k = p;
    while ((k = memmem(k, (size_t)(end - k), key, kn))) {
        const uint8_t *q = k + kn;
        int quoted = k > p && k[-1] == '"';
        k = q;
        if (!quoted || q >= end || *q != '"') continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
        if (q >= end || *q != ':') continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
        if (q >= end || *q != '"') return 0;
        const uint8_t *s = ++q;
        while (q < end && *q != '"') q += (*q == '\\') ? 2 : 1;
        if (q > end) return 0;
        *v = s;
        *vn = (size_t)(q - s);
        return 1;
    }
    return 0;
}

/* --- connections ------------------------------------------------------------------------ */

typedef struct {
    int kind, fd;
    buf_t in, out;
    int want_out; /* EPOLLOUT registered */
} conn_t;

typedef struct {
    conn_t c;
    int open, configured;
} agent_t;

typedef struct call {
    conn_t c;
    int state;
    uint8_t key[4];
    char cid[48];
    uint16_t tag;
    int total, n, n_echoed, duplicates, garbled;
    double *sent_at;
    uint8_t *echoed;
    double start_at, t_connect, t0, phase, deadline, setup_ms;
    int slot, in_slot;
    uint8_t *chunk; /* the masked userStream.chunk frame; its tag is masked in for each frame */
    size_t chunk_len, tag_at, tag_pos; /* the tag's place in the frame and in the payload */
    buf_t frag;
    int frag_op;
    uint8_t rx[FRAME_BYTES];
    size_t rx_len;
    char failure[200];
} call_t;

static int ep;
static int listen_fd, timer_fd;
static uint8_t scratch[1 << 17];
static uint8_t audio[1 << 16];

static void watch(conn_t *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio does */
}

static void conn_write(conn_t *c, const void *data, size_t n) {
    if (c->fd < 0) return;
    if (!c->out.len) {
        ssize_t w = write(c->fd, data, n);
        if (w == (ssize_t)n) return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return; /* the read side sees it */
            w = 0;
        }
        data = (const uint8_t *)data + w;
        n -= (size_t)w;
    }
    buf_add(&c->out, data, n);
    if (!c->want_out) {
        c->want_out = 1;
        watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
    }
}

static void conn_flush(conn_t *c) {
    while (c->out.len) {
        ssize_t w = write(c->fd, c->out.p, c->out.len);
        if (w <= 0) return;
        buf_drop(&c->out, (size_t)w);
    }
    c->want_out = 0;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void conn_close(conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    buf_free(&c->in);
    buf_free(&c->out);
}

static size_t frame_header(uint8_t *h, int opcode, size_t n, const uint8_t *mask) {
    size_t k = 0;
    h[k++] = (uint8_t)(0x80 | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (n < 126) h[k++] = (uint8_t)(m | n);
    else if (n < 65536) { h[k++] = m | 126; h[k++] = (uint8_t)(n >> 8); h[k++] = (uint8_t)n; }
    else { h[k++] = m | 127; for (int i = 7; i >= 0; i--) h[k++] = (uint8_t)(n >> (8 * i)); }
    if (mask) { memcpy(h + k, mask, 4); k += 4; }
    return k;
}

/* One frame out, masked with ``mask`` (a client's) or not (a server's). */
static void send_frame(conn_t *c, int opcode, const uint8_t *payload, size_t n,
                       const uint8_t *mask) {
    uint8_t *f = n + 14 <= sizeof scratch ? scratch : malloc(n + 14);
    size_t k = frame_header(f, opcode, n, mask);
    memcpy(f + k, payload, n);
    if (mask)
        for (size_t i = 0; i < n; i++) f[k + i] ^= mask[i & 3];
    conn_write(c, f, k + n);
    if (f != scratch) free(f);
}

typedef void (*on_frame_fn)(conn_t *c, int fin, int opcode, uint8_t *payload, size_t n);

/* Every whole frame in ``c->in``, unmasked in place; stops once ``c`` is closed. */
static void read_frames(conn_t *c, on_frame_fn on_frame) {
    size_t pos = 0;
    while (c->fd >= 0 && c->in.len - pos >= 2) {
        uint8_t *p = c->in.p + pos;
        size_t avail = c->in.len - pos, n = p[1] & 0x7F, head = 2;
        if (n == 126) {
            if (avail < 4) break;
            n = (size_t)p[2] << 8 | p[3];
            head = 4;
        } else if (n == 127) {
            if (avail < 10) break;
            n = 0;
            for (int i = 0; i < 8; i++) n = n << 8 | p[2 + i];
            head = 10;
        }
        int masked = p[1] & 0x80;
        if (masked) head += 4;
        if (avail < head + n) break;
        uint8_t *payload = p + head;
        if (masked)
            for (size_t i = 0; i < n; i++) payload[i] ^= p[head - 4 + (i & 3)];
        pos += head + n;
        on_frame(c, p[0] & 0x80, p[0] & 0x0F, payload, n);
    }
    if (c->fd >= 0) buf_drop(&c->in, pos);
}

/* Reads what the socket has into ``c->in``: 0 once the peer closed or failed. */
static int read_in(conn_t *c) {
    for (;;) {
        ssize_t r = read(c->fd, scratch, sizeof scratch);
        if (r > 0) {
            buf_add(&c->in, scratch, (size_t)r);
            if ((size_t)r < sizeof scratch) return 1;
        } else if (r == 0) {
            return 0;
        } else {
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
    }
}

/* --- the echo agent ------------------------------------------------------------------- */

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
static unsigned long agent_ids;

static void accept_key(const char *key, size_t kn, char out[29]) {
    uint8_t joined[128], digest[20];
    if (kn > 64) kn = 64;
    memcpy(joined, key, kn);
    memcpy(joined + kn, GUID, sizeof GUID - 1);
    sha1(joined, kn + sizeof GUID - 1, digest);
    out[b64_encode(digest, 20, out)] = 0;
}

/* The value of header ``name`` in an HTTP head, trimmed. */
static int header_value(const char *head, const char *name, const char **v, size_t *vn) {
    size_t nn = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nn) == 0 && line[nn] == ':') {
            const char *s = line + nn + 1, *e = strstr(s, "\r\n");
            if (!e) e = s + strlen(s);
            while (s < e && *s == ' ') s++;
            while (e > s && e[-1] == ' ') e--;
            *v = s;
            *vn = (size_t)(e - s);
            return 1;
        }
    }
    return 0;
}

static void agent_frame(conn_t *c, int fin, int opcode, uint8_t *payload, size_t n) {
    agent_t *a = (agent_t *)c;
    (void)fin; /* the bridge sends no fragments in a call we measure */
    static const char APPLIED[] = "{\"type\":\"SettingsApplied\"}";
    if (opcode == 0x2) {
        send_frame(c, 0x2, payload, n, NULL);
    } else if (opcode == 0x1) {
        if (!a->configured && memmem(payload, n, "\"Settings\"", 10)) {
            a->configured = 1;
            send_frame(c, 0x1, (const uint8_t *)APPLIED, sizeof APPLIED - 1, NULL);
        }
    } else if (opcode == 0x9) {
        send_frame(c, 0xA, payload, n, NULL);
    } else if (opcode == 0x8) {
        send_frame(c, 0x8, payload, n < 2 ? n : 2, NULL);
        conn_close(c);
    }
}

static void agent_upgrade(agent_t *a) {
    conn_t *c = &a->c;
    uint8_t *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
    if (!end) return;
    size_t head_len = (size_t)(end - c->in.p);
    char head[8192];
    if (head_len >= sizeof head) head_len = sizeof head - 1;
    memcpy(head, c->in.p, head_len);
    head[head_len] = 0;
    buf_drop(&c->in, (size_t)(end - c->in.p) + 4);
    const char *key;
    size_t kn;
    if (!header_value(head, "sec-websocket-key", &key, &kn)) {
        static const char BAD[] = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        conn_write(c, BAD, sizeof BAD - 1);
        conn_close(c);
        return;
    }
    char accept[29], reply[512], welcome[96];
    accept_key(key, kn, accept);
    int wn = snprintf(welcome, sizeof welcome, "{\"type\":\"Welcome\",\"request_id\":\"%032lx\"}",
                      ++agent_ids);
    int rn = snprintf(reply, sizeof reply,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    conn_write(c, reply, (size_t)rn);
    send_frame(c, 0x1, (const uint8_t *)welcome, (size_t)wn, NULL);
    a->open = 1;
}

static void agent_readable(agent_t *a) {
    conn_t *c = &a->c;
    int alive = read_in(c);
    if (!a->open) agent_upgrade(a);
    if (a->open && c->fd >= 0) read_frames(c, agent_frame);
    if (!alive && c->fd >= 0) conn_close(c);
    if (c->fd < 0) free(a);
}

/* --- the run: calls, the metronome, the window ------------------------------------------ */

static struct {
    int active, calls, done;
    double duration_s, ramp_s, warmup_s, drain_s, start, win0, win1, next_scan;
    int window_state; /* 0 before, 1 open, 2 closed */
    struct sockaddr_in addr;
    char host[128], path[512], token[256];
    call_t **all;
    list_t latencies, setup, send_lag;
} run;

static struct {
    call_t **slot[SLOTS];
    int count[SLOTS], cap[SLOTS];
    long next_tick;
    int armed;
} metro;

/* The timer fires up to half a slot either side of the tick, at random: work done right
   after the kernel's own tick every time would hide from its per-core accounting, which
   samples what runs at each tick, and the load core would look idle (EARLY_S covers it). */
static void metro_arm(long tick) {
    metro.next_tick = tick;
    metro.armed = 1;
    double at = ((double)tick + (double)rand() / RAND_MAX - 0.5) * SLOT_S;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)at;
    its.it_value.tv_nsec = (long)((at - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

/* Adds ``call`` at its phase within the period; when its first frame is due. */
static double metro_join(call_t *call, double now) {
    int slot = (int)lround(call->phase / SLOT_S) % SLOTS;
    long tick = (long)ceil(now / SLOT_S);
    tick += ((slot - tick) % SLOTS + SLOTS) % SLOTS;
    if (metro.count[slot] == metro.cap[slot]) {
        metro.cap[slot] = metro.cap[slot] ? metro.cap[slot] * 2 : 64;
        metro.slot[slot] = realloc(metro.slot[slot], (size_t)metro.cap[slot] * sizeof(call_t *));
        if (!metro.slot[slot]) die("realloc");
    }
    metro.slot[slot][metro.count[slot]++] = call;
    call->slot = slot;
    call->in_slot = 1;
    if (!metro.armed || tick < metro.next_tick) metro_arm(tick);
    return (double)tick * SLOT_S;
}

static void metro_leave(call_t *call) {
    if (!call->in_slot) return;
    call_t **s = metro.slot[call->slot];
    int *n = &metro.count[call->slot];
    for (int i = 0; i < *n; i++)
        if (s[i] == call) { s[i] = s[--*n]; break; }
    call->in_slot = 0;
}

static void call_fail(call_t *call, const char *reason);
static void call_end(call_t *call, double now);

static int in_window(double t) { return run.win0 <= t && t < run.win1; }

static void call_send(call_t *call, const char *text, size_t n) {
    send_frame(&call->c, 0x1, (const uint8_t *)text, n, call->key);
}

static void call_finish(call_t *call) {
    metro_leave(call);
    conn_close(&call->c);
    buf_free(&call->frag);
    if (call->state != DONE) {
        call->state = DONE;
        run.done++;
    }
}

static void call_hang_up(call_t *call) {
    if (call->c.fd >= 0) {
        uint8_t code[2] = {0x03, 0xE8}; /* 1000 */
        send_frame(&call->c, 0x8, code, 2, call->key);
    }
    call_finish(call);
}

/* Records why the call failed, unless it was ending anyway. */
static void call_failed(call_t *call, const char *reason) {
    if (call->state == ENDING || call->state == DONE) return;
    snprintf(call->failure, sizeof call->failure, "%s: %s", STATE_NAMES[call->state], reason);
    for (char *q = call->failure; *q; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20) *q = '\'';
    call->state = ENDING;
}

static void call_fail(call_t *call, const char *reason) {
    call_failed(call, reason);
    call_hang_up(call);
}

/* Sends the frames due by ``now`` (the metronome's call); 0 once done. */
static int call_tick(call_t *call, double now) {
    int n = call->n;
    double late = now - call->t0 - n * FRAME_S;
    if (late < -EARLY_S || call->state != STREAMING) return call->state == STREAMING;
    if (in_window(now)) list_add(&run.send_lag, late > 0 ? late * 1000 : 0.0);
    int due = n + 1 + (int)floor((late + EARLY_S) / FRAME_S);
    if (due > call->total) due = call->total;
    for (; n < due; n++) {
        uint8_t tag[TAG_BYTES], *frame = call->chunk + call->tag_at;
        char text[8];
        memcpy(tag, &n, 4); /* little-endian, as the machine is */
        memcpy(tag + 4, &call->tag, 2);
        b64_encode(tag, TAG_BYTES, text);
        for (int i = 0; i < 8; i++) frame[i] = (uint8_t)text[i] ^ call->key[(call->tag_pos + i) & 3];
        call->sent_at[n] = now;
        conn_write(&call->c, call->chunk, call->chunk_len);
    }
    call->n = n;
    if (n < call->total) return 1;
    if (call->n_echoed == call->total) {
        call_end(call, now);
    } else {
        call->state = DRAINING;
        call->deadline = now + run.drain_s;
    }
    return 0;
}

static void metro_fire(void) {
    uint64_t expirations;
    if (read(timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd");
    metro.armed = 0;
    double now = now_s();
    long tick = metro.next_tick, last = (long)floor((now + SLOT_S / 2) / SLOT_S);
    if (last < tick) last = tick;
    for (long t = tick; t <= last; t++) {
        int s = (int)(t % SLOTS);
        for (int i = 0; i < metro.count[s];) {
            call_t *call = metro.slot[s][i];
            if (call_tick(call, now)) {
                i++;
            } else if (call->in_slot) {
                metro_leave(call); /* swaps the last call into place i */
            }
        }
        if (t - tick >= SLOTS) break; /* a whole period caught up */
    }
    tick = last + 1;
    for (int step = 0; step < SLOTS; step++)
        if (metro.count[(tick + step) % SLOTS]) { metro_arm(tick + step); return; }
}

static void call_end(call_t *call, double now) {
    if (call->state == ENDING || call->state == DONE) return;
    call->state = ENDING;
    char end[160];
    int n = snprintf(end, sizeof end,
                     "{\"type\":\"session.end\",\"conversationId\":\"%s\","
                     "\"reasonCode\":\"client-disconnected\"}", call->cid);
    call_send(call, end, (size_t)n);
    call->deadline = now + HANGUP_S;
}

static void call_match(call_t *call, const uint8_t *frame, double now) {
    uint32_t n;
    uint16_t tag;
    memcpy(&n, frame, 4);
    memcpy(&tag, frame + 4, 2);
    if (tag != call->tag || n >= (uint32_t)call->n) { call->garbled++; return; }
    if (call->echoed[n]) { call->duplicates++; return; }
    call->echoed[n] = 1;
    call->n_echoed++;
    double sent = call->sent_at[n];
    if (in_window(sent)) list_add(&run.latencies, (now - sent) * 1000);
    if (call->n_echoed == call->total && call->state == DRAINING) call_end(call, now);
}

static void call_echo(call_t *call, const uint8_t *b64, size_t n, double now) {
    if (n / 4 * 3 > sizeof audio) { call->garbled++; return; }
    size_t len = b64_decode(b64, n, audio);
    if (len == FRAME_BYTES && !call->rx_len) { call_match(call, audio, now); return; }
    for (size_t i = 0; i < len;) { /* chunks the bot cut to another size */
        size_t take = FRAME_BYTES - call->rx_len;
        if (take > len - i) take = len - i;
        memcpy(call->rx + call->rx_len, audio + i, take);
        call->rx_len += take;
        i += take;
        if (call->rx_len == FRAME_BYTES) { call_match(call, call->rx, now); call->rx_len = 0; }
    }
}

static int is(const uint8_t *v, size_t n, const char *s) {
    return n == strlen(s) && memcmp(v, s, n) == 0;
}

static void call_text(call_t *call, const uint8_t *p, size_t n) {
    double now = now_s();
    const uint8_t *type, *v;
    size_t tn, vn;
    if (!json_str(p, n, "type", &type, &tn)) { call_fail(call, "a message without a type"); return; }
    if (is(type, tn, "playStream.chunk")) {
        if (json_str(p, n, "audioChunk", &v, &vn)) call_echo(call, v, vn, now);
    } else if (is(type, tn, "session.accepted") && call->state == INITIATING) {
        call->state = STARTING;
        char start[128];
        int sn = snprintf(start, sizeof start,
                          "{\"type\":\"userStream.start\",\"conversationId\":\"%s\"}", call->cid);
        call_send(call, start, (size_t)sn);
    } else if (is(type, tn, "userStream.started") && call->state == STARTING) {
        call->state = STREAMING;
        call->setup_ms = (now - call->t_connect) * 1000;
        call->t0 = metro_join(call, now);
    } else if ((is(type, tn, "session.error") || is(type, tn, "activities")) &&
               call->state != ENDING) {
        char why[160] = "";
        if (json_str(p, n, "reason", &v, &vn) || json_str(p, n, "name", &v, &vn))
            snprintf(why, sizeof why, "%.*s", (int)(vn < 120 ? vn : 120), (const char *)v);
        char reason[200];
        snprintf(reason, sizeof reason, "%.*s from the bot (%s)", (int)tn, (const char *)type,
                 why);
        call_fail(call, reason);
    }
}

static void call_frame(conn_t *c, int fin, int opcode, uint8_t *payload, size_t n) {
    call_t *call = (call_t *)c;
    if (opcode == 0x1 && fin) {
        call_text(call, payload, n);
    } else if (opcode == 0x1 || opcode == 0x2 || opcode == 0x0) {
        if (opcode) { call->frag_op = opcode; call->frag.len = 0; }
        buf_add(&call->frag, payload, n);
        if (fin && call->frag_op == 0x1) call_text(call, call->frag.p, call->frag.len);
    } else if (opcode == 0x8) {
        int code = n >= 2 ? payload[0] << 8 | payload[1] : 1005;
        send_frame(c, 0x8, payload, n < 2 ? n : 2, call->key);
        char reason[64];
        snprintf(reason, sizeof reason, "closed by the bot (%d)", code);
        call_failed(call, reason);
        call_finish(call);
    } else if (opcode == 0x9) {
        send_frame(c, 0xA, payload, n, call->key);
    }
}

static void call_build(call_t *call) {
    static const uint8_t silent[FRAME_BYTES];
    char b64[900];
    size_t rest = b64_encode(silent + TAG_BYTES, FRAME_BYTES - TAG_BYTES, b64);
    char payload[1100];
    int head = snprintf(payload, sizeof payload,
                        "{\"type\":\"userStream.chunk\",\"conversationId\":\"%s\",\"audioChunk\":\"",
                        call->cid);
    memset(payload + head, 'A', 8); /* the tag's place */
    memcpy(payload + head + 8, b64, rest);
    memcpy(payload + head + 8 + rest, "\"}", 2);
    size_t n = (size_t)head + 8 + rest + 2;
    call->chunk = malloc(n + 14);
    size_t k = frame_header(call->chunk, 0x1, n, call->key);
    for (size_t i = 0; i < n; i++) call->chunk[k + i] = (uint8_t)payload[i] ^ call->key[i & 3];
    call->chunk_len = k + n;
    call->tag_at = k + (size_t)head;
    call->tag_pos = (size_t)head;
    call->sent_at = calloc((size_t)call->total, sizeof(double));
    call->echoed = calloc((size_t)call->total, 1);
}

/* A call that never connected fails with the reason alone, as in loadgen.py. */
static void call_unreachable(call_t *call, int err) {
    snprintf(call->failure, sizeof call->failure, "connect: %s", strerror(err));
    call_finish(call);
}

static void call_connect(call_t *call, double now) {
    call->t_connect = now;
    call->state = CONNECTING;
    call->deadline = now + SETUP_TIMEOUT_S;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    nodelay(fd);
    call->c.fd = fd;
    if (connect(fd, (struct sockaddr *)&run.addr, sizeof run.addr) < 0 && errno != EINPROGRESS) {
        call_unreachable(call, errno);
        return;
    }
    watch(&call->c, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD);
    call->c.want_out = 1;
}

static void call_connected(call_t *call) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(call->c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        call_unreachable(call, err);
        return;
    }
    call->state = HANDSHAKE;
    char req[1024], key_b64[25];
    uint8_t nonce[16];
    for (int i = 0; i < 16; i++) nonce[i] = (uint8_t)rand();
    key_b64[b64_encode(nonce, 16, key_b64)] = 0;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", run.path, run.host,
                     key_b64);
    if (run.token[0])
        n += snprintf(req + n, sizeof req - (size_t)n, "Authorization: Bearer %s\r\n", run.token);
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    call->c.want_out = 0;
    watch(&call->c, EPOLLIN, EPOLL_CTL_MOD);
    conn_write(&call->c, req, (size_t)n);
}

static void call_readable(call_t *call) {
    conn_t *c = &call->c;
    int alive = read_in(c);
    if (call->state == HANDSHAKE) {
        uint8_t *end = c->in.len ? memmem(c->in.p, c->in.len, "\r\n\r\n", 4) : NULL;
        if (end) {
            uint8_t *eol = memmem(c->in.p, c->in.len, "\r\n", 2);
            if (!memmem(c->in.p, (size_t)(eol - c->in.p), " 101 ", 5)) {
                char reason[200];
                snprintf(reason, sizeof reason, "upgrade refused: %.*s",
                         (int)((eol - c->in.p) < 150 ? (eol - c->in.p) : 150), (char *)c->in.p);
                call_fail(call, reason);
                return;
            }
            buf_drop(&c->in, (size_t)(end - c->in.p) + 4);
            call->state = INITIATING;
            char init[320];
            int n = snprintf(init, sizeof init,
                             "{\"type\":\"session.initiate\",\"conversationId\":\"%s\","
                             "\"botName\":\"bench\",\"caller\":\"+15550100\","
                             "\"expectAudioMessages\":true,"
                             "\"supportedMediaFormats\":[\"raw/lpcm16\"]}", call->cid);
            call_send(call, init, (size_t)n);
        }
    }
    if (call->state > HANDSHAKE && c->fd >= 0) read_frames(c, call_frame);
    if (!alive && c->fd >= 0) {
        call_failed(call, "connection closed");
        call_finish(call);
    }
}

/* --- the run's start, deadlines and result -------------------------------------------------- */

static int parse_url(const char *url) {
    if (strncmp(url, "ws://", 5)) return 0;
    const char *h = url + 5, *slash = strchr(h, '/');
    size_t hn = slash ? (size_t)(slash - h) : strlen(h);
    if (hn >= sizeof run.host) return 0;
    memcpy(run.host, h, hn);
    run.host[hn] = 0;
    snprintf(run.path, sizeof run.path, "%s", slash ? slash : "/");
    char name[128];
    snprintf(name, sizeof name, "%s", run.host);
    int port = 80;
    char *colon = strrchr(name, ':');
    if (colon) { *colon = 0; port = atoi(colon + 1); }
    memset(&run.addr, 0, sizeof run.addr);
    run.addr.sin_family = AF_INET;
    run.addr.sin_port = htons((uint16_t)port);
    if (!strcmp(name, "localhost")) snprintf(name, sizeof name, "127.0.0.1");
    return inet_pton(AF_INET, name, &run.addr.sin_addr) == 1;
}

static void run_start(char *line) {
    char url[700], token[256];
    int calls;
    double duration, ramp, warmup, drain;
    if (sscanf(line, "run %699s %d %lf %lf %lf %lf %255s", url, &calls, &duration, &ramp,
               &warmup, &drain, token) != 7 || calls < 1 || !parse_url(url)) {
        fprintf(stderr, "loadside: not a run command: %s", line);
        printf("{\"error\":\"not a run command\"}\n");
        fflush(stdout);
        return;
    }
    snprintf(run.token, sizeof run.token, "%s", strcmp(token, "-") ? token : "");
    run.active = 1;
    run.calls = calls;
    run.done = 0;
    run.duration_s = duration;
    run.ramp_s = ramp;
    run.warmup_s = warmup;
    run.drain_s = drain;
    run.start = now_s();
    run.win0 = run.start + ramp + warmup;
    run.win1 = run.start + duration - FRAME_S;
    run.window_state = run.win1 > run.win0 ? 0 : 2;
    run.latencies.n = run.setup.n = run.send_lag.n = 0;
    run.all = calloc((size_t)calls, sizeof(call_t *));
    for (int i = 0; i < calls; i++) {
        call_t *call = calloc(1, sizeof *call);
        call->c.kind = K_CALL;
        call->c.fd = -1;
        call->state = PENDING;
        call->start_at = run.start + i * ramp / calls;
        call->tag = (uint16_t)(0xAC00 + i);
        call->total = (int)lround(duration / FRAME_S);
        call->setup_ms = -1;
        /* Calls are independent, so their frames are spread over the 20 ms period evenly
           (golden-ratio steps), not sent in step. */
        call->phase = fmod(i * 0.6180339887498949, 1.0) * FRAME_S;
        for (int k = 0; k < 4; k++) call->key[k] = (uint8_t)rand();
        snprintf(call->cid, sizeof call->cid, "bench-%d-%08x", i, (unsigned)rand());
        call_build(call);
        run.all[i] = call;
    }
    run.next_scan = run.start;
}

static void print_list(const char *name, list_t *l) {
    printf("\"%s\":[", name);
    for (size_t i = 0; i < l->n; i++) printf(i ? ",%.3f" : "%.3f", l->v[i]);
    printf("]");
}

static void run_finish(void) {
    int ok = 0;
    long sent = 0, echoed = 0, duplicates = 0, garbled = 0;
    double call_seconds = 0;
    printf("{\"calls\":%d,\"window\":[%.6f,%.6f],\"failures\":[", run.calls, run.win0, run.win1);
    int first = 1;
    for (int i = 0; i < run.calls; i++) {
        call_t *call = run.all[i];
        if (call->failure[0]) { printf("%s\"%s\"", first ? "" : ",", call->failure); first = 0; }
        else if (call->n == call->total) ok++;
        sent += call->n;
        echoed += call->n_echoed;
        duplicates += call->duplicates;
        garbled += call->garbled;
        if (call->setup_ms >= 0) list_add(&run.setup, call->setup_ms);
        if (call->t0 > 0) {
            double end = call->t0 + call->n * FRAME_S;
            double overlap = (run.win1 < end ? run.win1 : end) -
                             (run.win0 > call->t0 ? run.win0 : call->t0);
            if (overlap > 0) call_seconds += overlap;
        }
    }
    printf("],\"ok_calls\":%d,\"sent\":%ld,\"echoed\":%ld,\"duplicates\":%ld,\"garbled\":%ld,"
           "\"call_seconds\":%.6f,", ok, sent, echoed, duplicates, garbled, call_seconds);
    print_list("latencies_ms", &run.latencies);
    printf(",");
    print_list("setup_ms", &run.setup);
    printf(",");
    print_list("send_lag_ms", &run.send_lag);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < run.calls; i++) {
        free(run.all[i]->sent_at);
        free(run.all[i]->echoed);
        free(run.all[i]->chunk);
        free(run.all[i]);
    }
    free(run.all);
    run.all = NULL;
    run.active = 0;
}

static void run_scan(double now) {
    if (run.window_state == 0 && now >= run.win0) {
        run.window_state = 1;
        printf("window start\n");
        fflush(stdout);
    }
    if (run.window_state == 1 && now >= run.win1) {
        run.window_state = 2;
        printf("window end\n");
        fflush(stdout);
    }
    if (now < run.next_scan) return;
    run.next_scan = now + SCAN_S;
    for (int i = 0; i < run.calls; i++) {
        call_t *call = run.all[i];
        switch (call->state) {
        case PENDING:
            if (call->c.fd < 0 && !call->t_connect && now >= call->start_at)
                call_connect(call, now);
            break;
        case CONNECTING: case HANDSHAKE: case INITIATING: case STARTING:
            if (now >= call->deadline) call_fail(call, "setup timed out");
            break;
        case DRAINING:
            if (now >= call->deadline) call_end(call, now);
            break;
        case ENDING:
            if (now >= call->deadline) call_hang_up(call);
            break;
        default:
            break;
        }
    }
}

/* --- the loop ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(time(NULL) ^ getpid()));
    memset(B64_VALUE, -1, sizeof B64_VALUE);
    for (int i = 0; i < 64; i++) B64_VALUE[(uint8_t)B64[i]] = (int8_t)i;
    setvbuf(stdout, NULL, _IOFBF, 1 << 20);

    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listen_fd, 1024) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(listen_fd, (struct sockaddr *)&addr, &alen);
    static conn_t listener = {.kind = K_LISTEN}, timer = {.kind = K_TIMER},
                  input = {.kind = K_STDIN};
    listener.fd = listen_fd;
    watch(&listener, EPOLLIN, EPOLL_CTL_ADD);
    if ((timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
        die("timerfd_create");
    timer.fd = timer_fd;
    watch(&timer, EPOLLIN, EPOLL_CTL_ADD);
    input.fd = 0;
    watch(&input, EPOLLIN, EPOLL_CTL_ADD);
    printf("ws://127.0.0.1:%d/v1/agent/converse\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[512];
    char line[2048];
    size_t line_len = 0;
    for (;;) {
        int timeout = run.active ? (int)(SCAN_S * 1000) : -1;
        int n = epoll_wait(ep, events, 512, timeout);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            switch (c->kind) {
            case K_LISTEN:
                for (;;) {
                    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    nodelay(fd);
                    agent_t *a = calloc(1, sizeof *a);
                    a->c.kind = K_AGENT;
                    a->c.fd = fd;
                    watch(&a->c, EPOLLIN, EPOLL_CTL_ADD);
                }
                break;
            case K_AGENT:
                if (ev & EPOLLOUT) conn_flush(c);
                if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) agent_readable((agent_t *)c);
                break;
            case K_CALL: {
                call_t *call = (call_t *)c;
                if (c->fd < 0) break; /* closed earlier in this batch */
                if (call->state == CONNECTING) {
                    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) call_connected(call);
                    break;
                }
                if (ev & EPOLLOUT) conn_flush(c);
                if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) call_readable(call);
                break;
            }
            case K_TIMER:
                metro_fire();
                break;
            case K_STDIN: {
                ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
                if (r <= 0) return 0;
                line_len += (size_t)r;
                char *nl;
                while ((nl = memchr(line, '\n', line_len))) {
                    size_t len = (size_t)(nl - line) + 1;
                    char cmd[2048];
                    memcpy(cmd, line, len);
                    cmd[len] = 0;
                    memmove(line, line + len, line_len - len);
                    line_len -= len;
                    if (!run.active) run_start(cmd);
                }
                if (line_len == sizeof line - 1) line_len = 0;
                break;
            }
            }
        }
        if (run.active) {
            run_scan(now_s());
            if (run.done == run.calls) run_finish();
        }
    }
}
