/*
 * stream.c - server-side TCP and TLS byte streams on libuv (stream.h).
 *
 * TLS runs through one BIO per connection of this file's own kind, over the listener's buffers:
 * OpenSSL reads the ciphertext the socket just delivered straight from the listener's read
 * buffer, and what it writes is gathered in the listener's output buffer, which flush_tls hands
 * to a uv_write after every OpenSSL call. (Memory BIOs would keep, per connection and for its
 * whole life, buffers grown to the largest handshake flight: about 2 KiB of an idle connection.)
 * Buffers are the listener's (socket reads, decrypted plaintext, TLS output); a stream owns
 * memory only for plaintext the application has not consumed yet and for writes in flight, so
 * an idle stream costs its structs and its record state: tls13's, or under TLS 1.2 OpenSSL's
 * SSL object (SSL_MODE_RELEASE_BUFFERS drops its record buffers).
 *
 * After a TLS 1.3 handshake, the connection's records are this file's through tls13.h and the SSL
 * object is freed: OpenSSL keeps about 15 KiB per connection for as long as it lives (the SSL,
 * its session with the decoded client certificate, its AEAD contexts), tls13 about 200 bytes.
 * Ciphertext is then opened in place in the listener's read buffer; only a record split across
 * socket reads is copied, into a buffer of the stream's own until it is whole. TLS 1.2
 * connections stay with OpenSSL.
 *
 * Writes are coalesced: what the application writes to a TLS 1.3 (taken over) or plain stream
 * during one turn of the loop is queued as plaintext and sent at the end of the turn (a check
 * handle) as one write of as few records as fit: an MQTT device answered with a PUBACK and two
 * shadow messages gets one record and one syscall instead of three, and on loopback each write
 * also ran the peer's receive path in the kernel (half of a front end's loop in profiles).
 *
 * One timer per listener enforces handshake deadlines (a per-stream timer would cost every
 * connection a handle); it walks only the streams still in their handshake, which the listener
 * keeps on a list apart from the opened ones (walking 16,000 idle connections four times a
 * second took 3% of a front end). A stream's memory is freed in its uv_close callback, after the
 * application's on_close.
 */
#define _GNU_SOURCE
#include "stream.h"
#include "err.h"
#include "tls13.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

enum { READ_BUF = 64 * 1024, PLAIN_BUF = 16 * 1024, SWEEP_MS = 250, LISTEN_BACKLOG = 4096 };

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct stream {
    uv_tcp_t tcp;
    stream_listener *l;
    struct stream *prev, *next; /* the listener's list it is on: pending, or streams once opened */
    struct stream *ready_next;  /* queued for redelivery after stream_resume */
    SSL *ssl;                   /* and its BIO (stream_bio), which points back here */
    tls13 *tls;                 /* instead of ssl once the handshake is over (TLS 1.3) */
    uint8_t *rec;               /* tls: a record split across reads, until it is whole */
    size_t rec_len;
    void *data;
    char *in; /* unconsumed plaintext */
    size_t in_len, in_cap;
    size_t pending_out; /* queued (outq) and in flight */
    char *outq;         /* plaintext written this turn of the loop, sent at its end */
    size_t outq_len, outq_cap;
    struct stream *flush_prev, *flush_next; /* on the listener's flush list while outq has data */
    uint64_t deadline_ms;                   /* handshake deadline (TLS, before on_open) */
    char fp[65];
    char addr[64];
    bool opened, closing, paused, ready_queued, shut, resumed, flush_queued;
    uv_shutdown_t shutdown;
};

struct stream_listener {
    uv_tcp_t tcp;
    uv_timer_t sweep, ready_timer;
    uv_check_t flush_check; /* sends the streams' queued writes at the end of each turn */
    stream *flushing;       /* the streams with queued writes */
    uv_loop_t *loop;
    SSL_CTX *ctx;
    tls13_engine *tls13; /* NULL: connections are not taken over from OpenSSL */
    stream_limits lim;
    stream_callbacks cb;
    void *app;
    stream *pending; /* accepted, not opened yet (in their TLS handshake) */
    stream *streams; /* opened */
    stream *ready;
    stream_stats stats;
    unsigned handles; /* listener + 2 timers + check + open streams: freed at zero when closing */
    bool closing;
    int port;
    char *rbuf, *pbuf;
    /* What the stream being read may still take from rbuf (stream_bio's reads, or records
     * opened in place). */
    stream *feed_owner;
    char *feed;
    size_t feed_len;
    /* TLS output gathered for out_owner until flush_tls. */
    stream *out_owner;
    char *out;
    size_t out_len, out_cap;
};

typedef struct write_req {
    uv_write_t req;
    stream *s;
    size_t len;
    char data[];
} write_req;

void stream_limits_default(stream_limits *l)
{
    if (!l->max_connections) l->max_connections = 10000;
    if (!l->handshake_timeout_ms) l->handshake_timeout_ms = 10000;
    if (!l->max_pending_in) l->max_pending_in = 64 * 1024;
    if (!l->max_pending_out) l->max_pending_out = 1024 * 1024;
}

static void listener_maybe_free(stream_listener *l)
{
    if (!l->closing || l->handles) return;
    free(l->rbuf);
    free(l->pbuf);
    free(l->out);
    tls13_engine_free(l->tls13);
    free(l);
}

/* ---- the listener's lists ---- */

static void list_push(stream **head, stream *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
}

static void list_remove(stream **head, stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* ---- closing ---- */

static void flush_unlist(stream *s);

static void on_stream_closed(uv_handle_t *h)
{
    stream *s = container_of((uv_tcp_t *)h, stream, tcp);
    stream_listener *l = s->l;
    list_remove(s->opened ? &l->streams : &l->pending, s);
    if (s->ready_queued) { /* take it off the redelivery queue */
        stream **pp = &l->ready;
        while (*pp && *pp != s)
            pp = &(*pp)->ready_next;
        if (*pp) *pp = s->ready_next;
    }
    l->stats.open--;
    if (s->opened) l->cb.on_close(l->app, s);
    flush_unlist(s);
    free(s->outq);
    if (l->out_owner == s) { /* output it made while closing goes with it */
        l->out_owner = NULL;
        l->out_len = 0;
    }
    SSL_free(s->ssl); /* and its BIO */
    tls13_free(s->tls);
    free(s->rec);
    free(s->in);
    free(s);
    l->handles--;
    listener_maybe_free(l);
}

static void close_now(stream *s)
{
    if (uv_is_closing((uv_handle_t *)&s->tcp)) return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->tcp, on_stream_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    close_now(req->data);
}

/* ---- writing ---- */

static void on_written(uv_write_t *req, int status)
{
    write_req *w = container_of(req, write_req, req);
    w->s->pending_out -= w->len;
    w->s->l->stats.bytes_out += status == 0 ? w->len : 0;
    if (status && !w->s->closing) close_now(w->s);
    free(w);
}

static write_req *write_req_new(stream *s, size_t len)
{
    write_req *w = malloc(sizeof *w + len);
    if (!w) return NULL;
    w->s = s;
    w->len = len;
    return w;
}

/* Queues w (filled) on the socket; w is freed either way. */
static int write_submit(write_req *w)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&w->s->tcp, &b, 1, on_written)) {
        free(w);
        return REG_EIO;
    }
    w->s->pending_out += w->len;
    return 0;
}

static int send_raw(stream *s, const void *data, size_t len)
{
    write_req *w = write_req_new(s, len);
    if (!w) return REG_ENOMEM;
    memcpy(w->data, data, len);
    return write_submit(w);
}

/* Seals plaintext into records (tls) and queues them. */
static int send_sealed(stream *s, const void *data, size_t len)
{
    write_req *w = write_req_new(s, tls13_sealed_len(len));
    if (!w) return REG_ENOMEM;
    if (tls13_seal(s->l->tls13, s->tls, data, len, (uint8_t *)w->data)) {
        free(w);
        return REG_ETLS;
    }
    return write_submit(w);
}

/* Sends the TLS output OpenSSL has produced for s. */
static int flush_tls(stream *s)
{
    stream_listener *l = s->l;
    if (l->out_owner != s || !l->out_len) return 0;
    size_t n = l->out_len;
    l->out_len = 0;
    l->out_owner = NULL;
    return send_raw(s, l->out, n);
}

static void flush_unlist(stream *s)
{
    if (!s->flush_queued) return;
    stream_listener *l = s->l;
    if (s->flush_prev)
        s->flush_prev->flush_next = s->flush_next;
    else
        l->flushing = s->flush_next;
    if (s->flush_next) s->flush_next->flush_prev = s->flush_prev;
    s->flush_prev = s->flush_next = NULL;
    s->flush_queued = false;
}

/* Sends what s queued this turn (sealed into records when tls) as one write. */
static int flush_queued(stream *s)
{
    flush_unlist(s);
    size_t n = s->outq_len;
    if (!n) return 0;
    s->outq_len = 0;
    s->pending_out -= n;      /* counted again as the write's length */
    if (s->closing) return 0; /* closed at once: what it had queued goes with it */
    int err = s->tls ? send_sealed(s, s->outq, n) : send_raw(s, s->outq, n);
    free(s->outq); /* an idle stream keeps no buffer */
    s->outq = NULL;
    s->outq_cap = 0;
    return err;
}

static void on_flush_check(uv_check_t *h)
{
    stream_listener *l = h->data;
    while (l->flushing) {
        stream *s = l->flushing;
        if (flush_queued(s) && !s->closing) close_now(s);
    }
    uv_check_stop(h);
}

/* Queues plaintext for the end of this turn of the loop. */
static int queue_write(stream *s, const void *data, size_t len)
{
    if (s->outq_len + len > s->outq_cap) {
        size_t cap = s->outq_cap ? s->outq_cap : 512;
        while (cap < s->outq_len + len)
            cap *= 2;
        char *grown = realloc(s->outq, cap);
        if (!grown) return REG_ENOMEM;
        s->outq = grown;
        s->outq_cap = cap;
    }
    memcpy(s->outq + s->outq_len, data, len);
    s->outq_len += len;
    s->pending_out += len;
    if (!s->flush_queued) {
        stream_listener *l = s->l;
        s->flush_queued = true;
        s->flush_prev = NULL;
        s->flush_next = l->flushing;
        if (l->flushing) l->flushing->flush_prev = s;
        if (!l->flushing) uv_check_start(&l->flush_check, on_flush_check);
        l->flushing = s;
    }
    return 0;
}

/* ---- the BIO between OpenSSL and the listener's buffers ---- */

static int sbio_read(BIO *b, char *buf, int len)
{
    stream *s = BIO_get_data(b);
    stream_listener *l = s->l;
    BIO_clear_retry_flags(b);
    if (l->feed_owner != s || !l->feed_len || len <= 0) {
        BIO_set_retry_read(b); /* nothing more until the socket delivers: "try again" */
        return -1;
    }
    size_t n = (size_t)len < l->feed_len ? (size_t)len : l->feed_len;
    memcpy(buf, l->feed, n);
    l->feed += n;
    l->feed_len -= n;
    return (int)n;
}

static int sbio_write(BIO *b, const char *buf, int len)
{
    stream *s = BIO_get_data(b);
    stream_listener *l = s->l;
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    if (l->out_owner && l->out_owner != s)
        flush_tls(l->out_owner); /* every caller flushes; be sure */
    if (l->out_len + (size_t)len > l->out_cap) {
        size_t cap = l->out_cap ? l->out_cap : 16 * 1024;
        while (cap < l->out_len + (size_t)len)
            cap *= 2;
        char *grown = realloc(l->out, cap);
        if (!grown) return -1;
        l->out = grown;
        l->out_cap = cap;
    }
    memcpy(l->out + l->out_len, buf, (size_t)len);
    l->out_len += (size_t)len;
    l->out_owner = s;
    return len;
}

static long sbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH; /* writes are flushed by flush_tls; nothing else applies */
}

static BIO_METHOD *sbio_method;
static void sbio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "registry stream");
    if (m && BIO_meth_set_read(m, sbio_read) == 1 && BIO_meth_set_write(m, sbio_write) == 1 &&
        BIO_meth_set_ctrl(m, sbio_ctrl) == 1)
        sbio_method = m;
    else
        BIO_meth_free(m);
}

/* A BIO for s (the caller owns it). NULL when out of memory. */
static BIO *stream_bio(stream *s)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sbio_method_make);
    BIO *b = sbio_method ? BIO_new(sbio_method) : NULL;
    if (!b) return NULL;
    BIO_set_data(b, s);
    BIO_set_init(b, 1);
    return b;
}

int stream_write(stream *s, const void *data, size_t len)
{
    if (s->closing || s->shut) return REG_ECLOSED;
    if (s->pending_out + len > s->l->lim.max_pending_out) return REG_EAGAIN;
    if (s->tls || !s->ssl) return len ? queue_write(s, data, len) : 0;
    while (len) {
        int n = SSL_write(s->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0) {
            ERR_clear_error();
            return REG_EIO;
        }
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    return flush_tls(s);
}

size_t stream_pending_out(const stream *s)
{
    return s->pending_out;
}

void stream_close(stream *s, bool now)
{
    if (s->closing || s->shut) return;
    if (!now) {
        if (s->ssl && s->opened) {
            SSL_shutdown(s->ssl); /* close_notify */
            flush_tls(s);
        } else if (s->tls) {
            uint8_t alert[TLS13_CONTROL_RECORD];
            size_t n = 0;
            flush_queued(s); /* before the close_notify */
            if (!tls13_seal_close(s->l->tls13, s->tls, alert, &n)) send_raw(s, alert, n);
        } else {
            flush_queued(s);
        }
        s->shut = true;
        s->shutdown.data = s;
        uv_read_stop((uv_stream_t *)&s->tcp);
        /* The shutdown waits for the queued writes. */
        if (uv_shutdown(&s->shutdown, (uv_stream_t *)&s->tcp, on_shutdown) == 0) return;
    }
    close_now(s);
}

/* ---- reading ---- */

/* Hands plaintext to the application, keeping what it does not consume. */
static void deliver(stream *s, const char *data, size_t len)
{
    stream_listener *l = s->l;
    if (s->in_len) {
        if (s->in_len + len > s->in_cap) {
            size_t cap = s->in_len + len;
            char *grown = realloc(s->in, cap);
            if (!grown) {
                close_now(s);
                return;
            }
            s->in = grown;
            s->in_cap = cap;
        }
        memcpy(s->in + s->in_len, data, len);
        s->in_len += len;
        data = s->in;
        len = s->in_len;
    }
    size_t used = s->paused ? 0 : l->cb.on_data(l->app, s, data, len);
    if (s->closing) return;
    if (used > len) used = len;
    size_t rest = len - used;
    if (!rest) {
        free(s->in); /* drained: an idle stream keeps no buffer */
        s->in = NULL;
        s->in_len = s->in_cap = 0;
        return;
    }
    if (rest > l->lim.max_pending_in) {
        close_now(s); /* a packet the application will never take whole */
        return;
    }
    if (data == s->in) {
        memmove(s->in, s->in + used, rest);
        s->in_len = rest;
    } else {
        char *buf = malloc(rest);
        if (!buf) {
            close_now(s);
            return;
        }
        memcpy(buf, data + used, rest);
        free(s->in);
        s->in = buf;
        s->in_len = s->in_cap = rest;
    }
}

static void opened(stream *s)
{
    stream_listener *l = s->l;
    if (s->ssl) {
        X509 *peer = SSL_get0_peer_certificate(s->ssl);
        if (peer) {
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned n = 0;
            if (X509_digest(peer, EVP_sha256(), md, &n) == 1)
                for (unsigned i = 0; i < n && i < 32; i++)
                    snprintf(s->fp + 2 * i, 3, "%02x", md[i]);
        }
        s->resumed = SSL_session_reused(s->ssl);
        if (s->resumed) {
            l->stats.handshakes_resumed++;
            SSL_set_num_tickets(s->ssl, 0); /* see http_tls_server_ctx: no new tickets */
        } else {
            l->stats.handshakes_full++;
        }
    }
    list_remove(&l->pending, s);
    list_push(&l->streams, s);
    s->opened = true;
    l->cb.on_open(l->app, s);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    stream *s = container_of((uv_tcp_t *)h, stream, tcp);
    buf->base = s->l->rbuf;
    buf->len = READ_BUF;
}

const char *const stream_handshake_failure_names[STREAM_HS_FAILURE_COUNT] = {
    "certificate", "protocol", "closed", "other"};

/* Counts a failed handshake under its reason, read from the verification result and OpenSSL's
 * error queue (before it is cleared). */
static void handshake_failed(stream *s, enum stream_handshake_failure why)
{
    if (why != STREAM_HS_CLOSED) {
        unsigned long err = ERR_peek_error();
        int reason = ERR_GET_LIB(err) == ERR_LIB_SSL ? ERR_GET_REASON(err) : 0;
        if (SSL_get_verify_result(s->ssl) != X509_V_OK ||
            reason == SSL_R_CERTIFICATE_VERIFY_FAILED ||
            reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            why = STREAM_HS_CERTIFICATE;
        else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
                 reason == SSL_R_UNKNOWN_PROTOCOL || reason == SSL_R_UNSUPPORTED_PROTOCOL ||
                 reason == SSL_R_NO_SHARED_CIPHER || reason == SSL_R_VERSION_TOO_LOW ||
                 reason == SSL_R_RECORD_LENGTH_MISMATCH || reason == SSL_R_PACKET_LENGTH_TOO_LONG)
            why = STREAM_HS_PROTOCOL;
    }
    s->l->stats.handshake_failures++;
    s->l->stats.handshake_failed[why]++;
}

static void tls_read(stream *s);
static void records_in(stream *s);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    stream *s = container_of((uv_tcp_t *)st, stream, tcp);
    stream_listener *l = s->l;
    if (nread == 0) return;
    if (nread < 0) {
        if (!s->opened && s->ssl) handshake_failed(s, STREAM_HS_CLOSED);
        close_now(s);
        return;
    }
    l->stats.bytes_in += (uint64_t)nread;
    if (!s->ssl && !s->tls) {
        deliver(s, buf->base, (size_t)nread);
        return;
    }
    /* OpenSSL reads the ciphertext from rbuf through stream_bio until it asks for more, or
     * records_in opens it there. */
    l->feed_owner = s;
    l->feed = buf->base;
    l->feed_len = (size_t)nread;
    if (s->tls)
        records_in(s);
    else
        tls_read(s);
    l->feed_owner = NULL;
    l->feed_len = 0;
}

static void tls_read(stream *s)
{
    stream_listener *l = s->l;
    if (!s->opened) {
        int r = SSL_do_handshake(s->ssl);
        /* Done: what OpenSSL wrote in this last step (its tickets) tells tls13 where its write
         * sequence stands. */
        tls13 *t = NULL;
        if (r == 1 && l->tls13 && l->out_owner == s)
            tls13_take_over(l->tls13, s->ssl, (const uint8_t *)l->out, l->out_len, &t);
        flush_tls(s);
        if (r != 1) {
            int e = SSL_get_error(s->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                handshake_failed(s, STREAM_HS_OTHER);
                ERR_clear_error();
                close_now(s);
                return;
            }
            ERR_clear_error();
            return;
        }
        opened(s);
        if (t && !s->closing) {
            SSL_free(s->ssl);
            s->ssl = NULL;
            s->tls = t;
            l->stats.taken_over++;
            records_in(s); /* what came with the client's Finished */
            return;
        }
        tls13_free(t);
        if (s->closing) return;
    }
    while (!s->closing) {
        int n = SSL_read(s->ssl, l->pbuf, PLAIN_BUF);
        if (n > 0) {
            deliver(s, l->pbuf, (size_t)n);
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_ZERO_RETURN || (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE))
            close_now(s);
        break;
    }
    if (!s->closing) flush_tls(s); /* tickets, alerts */
}

/* Handles one record opened by tls13: 0 to go on, -1 when the stream was closed. */
static int record_opened(stream *s, int r, const uint8_t *plain, size_t plain_len)
{
    if (r == TLS13_DATA && plain_len) deliver(s, (const char *)plain, plain_len);
    if (r == TLS13_CONTROL && tls13_reply_due(s->tls)) {
        uint8_t reply[TLS13_CONTROL_RECORD];
        size_t n = 0;
        if (flush_queued(s) || /* what was written before goes under the old key */
            tls13_seal_reply(s->l->tls13, s->tls, reply, &n) || send_raw(s, reply, n))
            r = -1;
    }
    if (r < 0 || r == TLS13_CLOSED) close_now(s); /* an alert, a bad record, or our failure */
    return s->closing ? -1 : 0;
}

/* Opens the records in the feed (and first completes a record split across reads). */
static void records_in(stream *s)
{
    stream_listener *l = s->l;
    uint8_t *plain = NULL;
    size_t used = 0, plain_len = 0;
    if (s->rec_len) {
        size_t need = TLS13_RECORD_HEADER;
        for (;;) {
            if (s->rec_len >= TLS13_RECORD_HEADER)
                need = TLS13_RECORD_HEADER + ((size_t)s->rec[3] << 8 | s->rec[4]);
            if (s->rec_len >= need || !l->feed_len) break;
            if (need > TLS13_MAX_RECORD) break; /* tls13_open refuses it */
            uint8_t *grown = realloc(s->rec, need);
            if (!grown) {
                close_now(s);
                return;
            }
            s->rec = grown;
            size_t take = need - s->rec_len < l->feed_len ? need - s->rec_len : l->feed_len;
            memcpy(s->rec + s->rec_len, l->feed, take);
            s->rec_len += take;
            l->feed += take;
            l->feed_len -= take;
        }
        int r = tls13_open(l->tls13, s->tls, s->rec, s->rec_len, &used, &plain, &plain_len);
        if (r == TLS13_INCOMPLETE) return; /* the feed is used up */
        r = record_opened(s, r, plain, plain_len);
        free(s->rec);
        s->rec = NULL;
        s->rec_len = 0;
        if (r) return;
    }
    while (l->feed_len) {
        uint8_t *at = (uint8_t *)l->feed;
        int r = tls13_open(l->tls13, s->tls, at, l->feed_len, &used, &plain, &plain_len);
        if (r == TLS13_INCOMPLETE) { /* keep the start of the record */
            if (!(s->rec = malloc(l->feed_len))) {
                close_now(s);
                return;
            }
            memcpy(s->rec, at, l->feed_len);
            s->rec_len = l->feed_len;
            l->feed_len = 0;
            return;
        }
        l->feed += used;
        l->feed_len -= used;
        if (record_opened(s, r, plain, plain_len)) return;
    }
}

void stream_pause(stream *s)
{
    if (s->paused || s->closing) return;
    s->paused = true;
    uv_read_stop((uv_stream_t *)&s->tcp);
}

static void on_ready(uv_timer_t *t)
{
    stream_listener *l = t->data;
    while (l->ready) {
        stream *s = l->ready;
        l->ready = s->ready_next;
        s->ready_queued = false;
        if (!s->closing && !s->paused && s->in_len) {
            /* deliver() appends to s->in: hand it over as fresh input instead */
            char *buf = s->in;
            size_t len = s->in_len;
            s->in = NULL;
            s->in_len = s->in_cap = 0;
            deliver(s, buf, len);
            free(buf);
        }
    }
}

void stream_resume(stream *s)
{
    if (!s->paused || s->closing || s->shut) return;
    s->paused = false;
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    if (s->in_len && !s->ready_queued) { /* input that waited: hand it over on the loop */
        s->ready_queued = true;
        s->ready_next = s->l->ready;
        s->l->ready = s;
        uv_timer_start(&s->l->ready_timer, on_ready, 0, 0);
    }
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status)
{
    stream_listener *l = container_of((uv_tcp_t *)server, stream_listener, tcp);
    if (status < 0 || l->closing) return;
    stream *s = calloc(1, sizeof *s);
    if (!s) return;
    s->l = l;
    uv_tcp_init(l->loop, &s->tcp);
    l->handles++;
    l->stats.open++;
    list_push(&l->pending, s);
    if (uv_accept(server, (uv_stream_t *)&s->tcp)) {
        close_now(s);
        return;
    }
    l->stats.accepted++;
    if (l->stats.open > l->lim.max_connections) {
        l->stats.refused++;
        close_now(s);
        return;
    }
    struct sockaddr_storage ss;
    int alen = sizeof ss;
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &alen) == 0 &&
        ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(s->addr, sizeof s->addr, "%s:%u", ip, ntohs(in->sin_port));
    }
    uv_tcp_nodelay(&s->tcp, 1);
    if (l->ctx) {
        s->ssl = SSL_new(l->ctx);
        BIO *b = s->ssl ? stream_bio(s) : NULL;
        if (!b) {
            close_now(s);
            return;
        }
        SSL_set_bio(s->ssl, b, b); /* one BIO both ways: the SSL takes our one reference */
        SSL_set_accept_state(s->ssl);
        SSL_set_mode(s->ssl, SSL_MODE_RELEASE_BUFFERS);
        if (l->tls13) tls13_watch(s->ssl); /* without it, the SSL just stays */
        s->deadline_ms = uv_now(l->loop) + l->lim.handshake_timeout_ms;
    }
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    if (!l->ctx) opened(s);
}

static void on_sweep(uv_timer_t *t)
{
    stream_listener *l = t->data;
    uint64_t now = uv_now(l->loop);
    for (stream *s = l->pending, *next; s; s = next) { /* the open ones have no deadline */
        next = s->next;
        if (s->ssl && !s->opened && !s->closing && now >= s->deadline_ms) {
            l->stats.handshake_timeouts++;
            close_now(s);
        }
    }
}

static void on_listener_handle_closed(uv_handle_t *h)
{
    stream_listener *l = h->data;
    l->handles--;
    listener_maybe_free(l);
}

/* A listening socket, with SO_REUSEPORT when asked (libuv 1.44 has no flag for it). */
static int bind_socket(stream_listener *l, const char *host, int port)
{
    struct sockaddr_storage ss;
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;
    int err = family == AF_INET6 ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                                 : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (err) return REG_EINVAL;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return REG_EIO;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l->lim.reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        close(fd);
        return REG_EIO;
    }
    socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, len)) {
        close(fd);
        return errno == EADDRINUSE ? REG_EEXISTS : REG_EIO;
    }
    if (uv_tcp_open(&l->tcp, fd)) {
        close(fd);
        return REG_EIO;
    }
    return 0;
}

int stream_listen(uv_loop_t *loop, const char *host, int port, SSL_CTX *ctx,
                  const stream_limits *limits, const stream_callbacks *cb, void *app,
                  stream_listener **out)
{
    stream_listener *l = calloc(1, sizeof *l);
    if (!l) return REG_ENOMEM;
    l->loop = loop;
    l->ctx = ctx;
    if (limits) l->lim = *limits;
    stream_limits_default(&l->lim);
    l->cb = *cb;
    l->app = app;
    /* Without the engine or the key log hook, connections simply stay with OpenSSL. */
    if (ctx && !tls13_engine_new(&l->tls13) && tls13_watch_ctx(ctx)) {
        tls13_engine_free(l->tls13);
        l->tls13 = NULL;
    }
    l->rbuf = malloc(READ_BUF);
    l->pbuf = malloc(PLAIN_BUF);
    if (!l->rbuf || !l->pbuf) {
        free(l->rbuf);
        free(l->pbuf);
        tls13_engine_free(l->tls13);
        free(l);
        return REG_ENOMEM;
    }
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    uv_timer_init(loop, &l->sweep);
    l->sweep.data = l;
    uv_timer_init(loop, &l->ready_timer);
    l->ready_timer.data = l;
    uv_check_init(loop, &l->flush_check);
    l->flush_check.data = l;
    l->handles = 4;
    int err = bind_socket(l, host, port);
    if (!err && uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection)) err = REG_EIO;
    if (err) {
        stream_listener_close(l);
        return err;
    }
    struct sockaddr_storage ss;
    int alen = sizeof ss;
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &alen);
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    uv_timer_start(&l->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    *out = l;
    return 0;
}

int stream_listener_port(const stream_listener *l)
{
    return l->port;
}

void stream_listener_close(stream_listener *l)
{
    if (!l || l->closing) return;
    l->closing = true;
    for (stream *s = l->pending; s; s = s->next)
        close_now(s);
    for (stream *s = l->streams; s; s = s->next)
        close_now(s);
    uv_close((uv_handle_t *)&l->tcp, on_listener_handle_closed);
    uv_close((uv_handle_t *)&l->sweep, on_listener_handle_closed);
    uv_close((uv_handle_t *)&l->ready_timer, on_listener_handle_closed);
    uv_close((uv_handle_t *)&l->flush_check, on_listener_handle_closed);
}

unsigned stream_listener_close_peer(stream_listener *l, const char *fingerprint_hex)
{
    unsigned n = 0;
    for (stream *s = l->streams; s; s = s->next)
        if (s->fp[0] && !strcasecmp(s->fp, fingerprint_hex) && !s->closing) {
            close_now(s);
            n++;
        }
    return n;
}

void stream_listener_stats(const stream_listener *l, stream_stats *out)
{
    *out = l->stats;
}

void stream_set_data(stream *s, void *data)
{
    s->data = data;
}

void *stream_data(const stream *s)
{
    return s->data;
}

X509 *stream_peer_cert(const stream *s)
{
    return s->ssl ? SSL_get0_peer_certificate(s->ssl) : NULL;
}

STACK_OF(X509) *stream_peer_chain(const stream *s)
{
    return s->ssl ? SSL_get_peer_cert_chain(s->ssl) : NULL;
}

const char *stream_peer_fingerprint(const stream *s)
{
    return s->fp[0] ? s->fp : NULL;
}

bool stream_tls_resumed(const stream *s)
{
    return s->resumed;
}

const char *stream_peer_addr(const stream *s)
{
    return s->addr;
}
