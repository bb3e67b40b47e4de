/*
 * http_server.c - the HTTP/1.1 server of http_server.h: libuv for the sockets, http-parser
 * (Debian's libhttp-parser-dev, 2.9.x) for the wire format, jansson for problem documents.
 *
 * Shape. A server owns a listening uv_tcp_t, one sweeping uv_timer_t (idle and slow-request
 * deadlines of every connection) and a 64 KiB read buffer shared by all its connections (the loop
 * is single-threaded and libuv always calls alloc_cb and read_cb back to back, so one buffer is
 * enough). A connection (`conn`) embeds its uv_tcp_t, its http_parser and the one request it may
 * have in flight (`struct http_req`), so handing a request to the application costs no allocation;
 * the connection's buffers (strings of the request head, body, held input, output) are kept and
 * reused from request to request, and only released when they grew past KEEP_BUF.
 *
 * Parsing. http-parser is run over the bytes as they arrive. Its callbacks copy only what the
 * request exposes (URL, Authorization, Content-Type, Expect, body) into the connection's buffers,
 * count everything against the limits, and pause the parser twice per request: once when the head
 * is complete (so the exact size of the head in bytes is known: http-parser's own limit is a
 * compile-time 80 KiB) and once when the message is complete (so a pipelined request is not parsed
 * before the previous one is answered). This core (parse_bytes and the callbacks) touches no
 * socket, which lets tests/fuzz/fuzz_http.c drive it directly by including this file.
 *
 * One request at a time. When a request is complete it is handed to the handler and the
 * connection becomes busy until its response has been written: bytes that arrive meanwhile are
 * held (at most IN_MAX, after which reading stops) and parsed when the response is out. A
 * response is formatted into the connection's reusable output buffer (released in the write
 * callback only if it grew past KEEP_BUF). One given inside the handler is written inline with
 * uv_try_write, which usually sends it whole: no write request, no callback, and the next
 * pipelined request is taken in a loop; otherwise (a later answer, or the rest of a partial write)
 * uv_write sends it and its callback moves on. Errors found by the server (400/413/414/431, with
 * an application/problem+json body naming the cause) are answered, then the connection is
 * half-closed and drained for a short while before it is closed, so that the client sees the
 * answer rather than a reset.
 *
 * Beyond the header's letter: "Expect: 100-continue" is answered with an interim 100; HEAD and
 * 204/304 answers carry no body; an HTTP/1.0 keep-alive answer says "Connection: keep-alive";
 * two Authorization, Content-Type or Expect headers are a 400 (ambiguous); Upgrade/CONNECT are
 * read as plain requests (no protocol switch).
 *
 * TLS. A server started with http_server_start_tls gives each connection an SSL over two memory
 * BIOs (OpenSSL never touches the socket): ciphertext read by libuv is written into the read BIO,
 * SSL_do_handshake and then SSL_read turn it into plaintext in a second shared buffer (one record,
 * 16 KiB), and that plaintext goes through exactly the parsing and dispatching above. A response
 * goes through conn_transmit: plaintext is written to the socket, TLS SSL_writes it into the write
 * BIO and tls_flush moves the ciphertext to the socket (uv_try_write, then one uv_write at a time
 * from the connection's ciphertext buffer); the response counts as written, as for plaintext, when
 * its last ciphertext has left, so that a client that does not read is bounded the same way. Input
 * that arrives while a request is busy stays encrypted in the read BIO: on_alloc counts it against
 * the same IN_MAX bound as held plaintext, and it is decrypted when the connection is ready for
 * its next request. The handshake has its own deadline (handshake_timeout_ms) on the same sweep.
 * A failed handshake or a TLS error closes the connection (the alert is sent if it goes at once);
 * a close after a completed handshake sends close_notify first. OpenSSL's per-thread error queue
 * is cleared around every call, since a stale entry would make SSL_get_error misreport the next
 * connection. The client certificate's SHA-256 fingerprint is computed once per handshake;
 * http_server_close_peer walks the connection list comparing it.
 *
 * Lifetimes. Connection memory is freed only in its uv_close callback, and only when no request
 * is pending with the application; otherwise the close callback detaches it from the server and
 * http_respond frees it. The SSL (hence the peer certificate the request lends) goes with it. The
 * server is freed when its listener, its timer and every connection have been closed.
 */
#include "http_server.h"
#include "err.h"
#include "keystore.h"

#include <http_parser.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum {
    RBUF_SIZE = 64 * 1024, /* the server's shared read buffer */
    IN_MAX = 64 * 1024,    /* input held per connection while a request is busy */
    KEEP_BUF = 64 * 1024,  /* buffers that grew past this are released after each request */
    LINGER_MS = 2000,      /* how long a connection is drained after an error answer */
    PBUF_SIZE = 16 * 1024, /* TLS: the server's shared plaintext buffer (one record) */
    LISTEN_BACKLOG = 1024,
};

#define NONE SIZE_MAX /* "no such string" for the offsets into conn.sbuf */

/* What the last parser callback delivered: a new header field starts when a field callback
 * follows anything but a field. */
enum { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };
/* The header whose value is being captured. */
enum { HT_NONE, HT_AUTH, HT_CTYPE, HT_EXPECT };
/* Where in the message the parser is. */
enum { PH_HEAD, PH_BODY, PH_DONE };
/* Outcome of one parse_bytes call. */
enum { EV_NONE, EV_REQUEST, EV_ERROR };

struct http_req {
    http_request r;
};

typedef struct conn {
    uv_tcp_t tcp;            /* the socket; conn is recovered from it with container_of */
    uv_write_t wreq;         /* the response in flight (at most one) */
    uv_write_t cont_wreq;    /* a "100 Continue" in flight (at most one) */
    uv_shutdown_t shut;      /* half-close before a final close */
    uv_write_t twreq;        /* TLS: ciphertext in flight (at most one write) */
    struct http_server *srv; /* NULL once closed */
    struct conn *prev, *next;
    http_parser parser;
    struct http_req req; /* the request handed to the application */

    /* Parse state of the current message. */
    unsigned char phase, last_cb, target, ev;
    bool hdr_pause, msg_done, expect_continue, keep_alive;
    int err_status;
    char err_buf[160];
    size_t hdr_bytes; /* raw bytes of the head consumed so far (exact, see parse_bytes) */
    size_t cb_bytes;  /* URL + field + value bytes seen by the callbacks (an early bound) */
    unsigned nheaders;
    char fname[16]; /* lower-cased start of the header field being read */
    size_t fname_len;
    size_t val_off, url_len;
    size_t path_off, query_off, auth_off, ctype_off, expect_off; /* into sbuf, or NONE */

    char *sbuf; /* URL, then the captured header values, each NUL-terminated */
    size_t s_len, s_cap;
    char *body; /* body + NUL */
    size_t body_len, body_cap;
    size_t body_max; /* this request's body limit (see http_limits.large_body_path) */
    char *in;        /* bytes read while busy, parsed once the response is out: [in_off, in_len) */
    size_t in_off, in_len, in_cap;
    char *out; /* the response being written */
    size_t out_cap;

    uint64_t deadline; /* loop ms after which the sweep closes the connection (unless pending) */
    bool pending;      /* the application holds req (http_respond not called yet) */
    bool busy;         /* a request is pending or its response is being written */
    bool in_handler;   /* the handler is running for req (a response can be written inline) */
    bool sync_done;    /* ... and its response went out completely during that call */
    bool reading, closing, closed, close_after, peer_eof, lingering, refused;

    /* TLS (ssl NULL for plaintext). The BIOs belong to ssl. */
    SSL *ssl;
    BIO *rbio, *wbio;
    char *cout; /* ciphertext being written */
    size_t cout_cap;
    X509 *peer;                  /* the client's certificate (owned by the session) or NULL */
    struct stack_st_X509 *chain; /* leaf first: the session's chain, or our shallow copy */
    bool own_chain;              /* chain is our copy (sk_X509_free, not the certificates) */
    bool hs_done;                /* handshake complete */
    bool tls_dead;               /* a fatal TLS error: no close_notify */
    bool tls_writing;            /* twreq in flight */
    bool resp_flushing;          /* the response's ciphertext is not all written yet */
    bool rbio_big, wbio_big;     /* a memory BIO grew past KEEP_BUF/2: replace it when empty */
    char fp[65];                 /* hex SHA-256 of peer's DER, or "" */
} conn;

struct http_server {
    uv_tcp_t listener;
    uv_timer_t sweep;
    uv_loop_t *loop;
    http_limits lim;
    http_handler handler;
    void *app;
    conn *conns;      /* every connection not yet closed, refused ones included */
    unsigned nconns;  /* accepted connections, counted against max_connections */
    unsigned handles; /* listener + sweep + connections still open; freed at zero */
    int port;
    bool closing;
    char *rbuf;   /* shared read buffer (RBUF_SIZE) */
    SSL_CTX *ctx; /* TLS (borrowed), or NULL */
    char *pbuf;   /* TLS: shared plaintext buffer (PBUF_SIZE) */
};

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 */

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (!p) return REG_ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

/* Releases a reusable buffer that grew past KEEP_BUF (a large body or response should not stay
 * pinned to an idle keep-alive connection). */
static void shrink(char **buf, size_t *cap)
{
    if (*cap > KEEP_BUF) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) in place (the result is never longer) and NUL-terminates it at
 * s[result length], which must be writable (s[len] is). Returns 0, -1 for a bad escape, -2 for
 * an encoded NUL. */
static int percent_decode(char *s, size_t len, size_t *out_len)
{
    size_t i = 0, o = 0;
    while (i < len) {
        if (s[i] != '%') {
            s[o++] = s[i++];
            continue;
        }
        if (len - i < 3) return -1;
        int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
        if (hi < 0 || lo < 0) return -1;
        if (hi == 0 && lo == 0) return -2;
        s[o++] = (char)(hi * 16 + lo);
        i += 3;
    }
    s[o] = '\0';
    *out_len = o;
    return 0;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        break;
    }
    /* Unlisted codes get their class's name so the status line is still well-formed. */
    switch (status / 100) {
    case 1:
        return "Informational";
    case 2:
        return "Success";
    case 3:
        return "Redirection";
    case 4:
        return "Client Error";
    case 5:
        return "Server Error";
    default:
        return "Unknown";
    }
}

void http_limits_default(http_limits *l)
{
    if (!l) return;
    if (!l->max_header_bytes) l->max_header_bytes = 16 * 1024;
    if (!l->max_body_bytes) l->max_body_bytes = 1024 * 1024;
    if (l->max_large_body_bytes < l->max_body_bytes) l->max_large_body_bytes = l->max_body_bytes;
    if (!l->max_headers) l->max_headers = 64;
    if (!l->idle_timeout_ms) l->idle_timeout_ms = 60000;
    if (!l->max_connections) l->max_connections = 10000;
    if (!l->handshake_timeout_ms) l->handshake_timeout_ms = 10000;
}

/* Writes the problem document for status/detail into buf (cap bytes) when it fits, else into a
 * malloc'd buffer; returns the document (== buf or to be freed by the caller) and its length.
 * jansson does the escaping; json_dumpb (not json_dumps) so that no memory from jansson's
 * allocator, which other modules may replace, crosses into ours. */
static char *problem_doc(int status, const char *detail, char *buf, size_t cap, size_t *len)
{
    const char *title = http_status_text(status);
    char *doc = NULL;
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "type", json_string("about:blank"));
        json_object_set_new(o, "title", json_string(title));
        json_object_set_new(o, "status", json_integer(status));
        if (detail) {
            json_t *d = json_string(detail);
            if (!d) {
                /* Not UTF-8: keep the ASCII and mark the rest rather than lose the detail. */
                size_t n = strlen(detail);
                char *ascii = malloc(n + 1);
                if (ascii) {
                    for (size_t i = 0; i <= n; i++)
                        ascii[i] = (unsigned char)detail[i] < 0x80 ? detail[i] : '?';
                    d = json_string(ascii);
                    free(ascii);
                }
            }
            if (d) json_object_set_new(o, "detail", d);
        }
        size_t n = json_dumpb(o, NULL, 0, JSON_COMPACT);
        if (n > 0) {
            doc = n <= cap ? buf : malloc(n);
            if (doc && json_dumpb(o, doc, n, JSON_COMPACT) != n) {
                if (doc != buf) free(doc);
                doc = NULL;
            }
            *len = n;
        }
        json_decref(o);
    }
    if (!doc) {
        /* Out of memory: a document without detail still fits the caller's buffer. */
        int n = snprintf(buf, cap, "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d}",
                         title, status);
        *len = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
        doc = buf;
    }
    return doc;
}

/* ---------------------------------------------------------------------------------------------
 * The parsing core: no sockets here (the fuzz harness runs it alone).
 */

static int failf(conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records the first error of the message; returns -1 so parser callbacks can `return failf()`,
 * which makes http-parser stop with HPE_CB_*. */
static int failf(conn *c, int status, const char *fmt, ...)
{
    if (!c->err_status) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err_buf, sizeof c->err_buf, fmt, ap);
        va_end(ap);
        c->err_status = status;
    }
    return -1;
}

/* Prepares the connection for the next message, keeping its buffers. */
static void req_reset(conn *c)
{
    c->phase = PH_HEAD;
    c->last_cb = CB_NONE;
    c->target = HT_NONE;
    c->ev = EV_NONE;
    c->hdr_pause = c->msg_done = c->expect_continue = false;
    c->err_status = 0;
    c->err_buf[0] = '\0';
    c->hdr_bytes = c->cb_bytes = 0;
    c->nheaders = 0;
    c->fname_len = 0;
    c->s_len = c->url_len = c->body_len = 0;
    c->path_off = c->query_off = c->auth_off = c->ctype_off = c->expect_off = NONE;
    shrink(&c->sbuf, &c->s_cap);
    shrink(&c->body, &c->body_cap);
    http_parser_pause(&c->parser, 0);
}

static void parser_setup(conn *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->keep_alive = true;
    req_reset(c);
}

static int sbuf_append(conn *c, const char *p, size_t n)
{
    if (reserve(&c->sbuf, &c->s_cap, c->s_len + n + 1)) return failf(c, 500, "out of memory");
    memcpy(c->sbuf + c->s_len, p, n);
    c->s_len += n;
    return 0;
}

/* Counts head bytes as the callbacks see them, so one large read cannot make the buffers grow
 * past the limit before the exact count (parse_bytes) is taken. */
static int count_head(conn *c, size_t n)
{
    c->cb_bytes += n;
    if (c->cb_bytes > c->srv->lim.max_header_bytes)
        return failf(c, 431, "request header block exceeds %zu bytes",
                     c->srv->lim.max_header_bytes);
    return 0;
}

/* Ends the URL or a captured header value: NUL-terminates it and records where it is. */
static int finish_piece(conn *c)
{
    if (c->last_cb == CB_URL) {
        c->url_len = c->s_len;
        if (sbuf_append(c, "", 1)) return -1;
    } else if (c->last_cb == CB_VALUE && c->target != HT_NONE) {
        size_t end = c->s_len; /* drop trailing whitespace; http-parser skips the leading */
        while (end > c->val_off && (c->sbuf[end - 1] == ' ' || c->sbuf[end - 1] == '\t'))
            end--;
        c->s_len = end;
        if (sbuf_append(c, "", 1)) return -1;
        if (c->target == HT_AUTH) c->auth_off = c->val_off;
        if (c->target == HT_CTYPE) c->ctype_off = c->val_off;
        if (c->target == HT_EXPECT) c->expect_off = c->val_off;
        c->target = HT_NONE;
    }
    c->last_cb = CB_NONE;
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    /* The whole request must arrive within the idle timeout of its first byte: a client that
     * trickles a head or a body (slowloris) is closed like an idle one. */
    c->deadline = uv_now(c->srv->loop) + c->srv->lim.idle_timeout_ms;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_head(c, n)) return -1;
    c->last_cb = CB_URL;
    return sbuf_append(c, at, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_head(c, n)) return -1;
    if (c->last_cb != CB_FIELD) {
        if (finish_piece(c)) return -1;
        if (++c->nheaders > c->srv->lim.max_headers)
            return failf(c, 431, "more than %u header fields", c->srv->lim.max_headers);
        c->fname_len = 0;
    }
    c->last_cb = CB_FIELD;
    for (size_t i = 0; i < n; i++, c->fname_len++)
        if (c->fname_len < sizeof c->fname) c->fname[c->fname_len] = (char)(at[i] | 0x20);
    return 0;
}

static bool fname_is(const conn *c, const char *lower)
{
    size_t n = strlen(lower);
    return c->fname_len == n && memcmp(c->fname, lower, n) == 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (count_head(c, n)) return -1;
    if (c->last_cb != CB_VALUE) {
        c->last_cb = CB_VALUE;
        c->target = HT_NONE;
        if (c->phase == PH_HEAD) { /* trailers are counted, never captured */
            size_t seen = NONE;
            const char *name = NULL;
            if (fname_is(c, "authorization")) {
                c->target = HT_AUTH;
                seen = c->auth_off;
                name = "Authorization";
            } else if (fname_is(c, "content-type")) {
                c->target = HT_CTYPE;
                seen = c->ctype_off;
                name = "Content-Type";
            } else if (fname_is(c, "expect")) {
                c->target = HT_EXPECT;
                seen = c->expect_off;
                name = "Expect";
            }
            /* Two values for a header we act on would make the request ambiguous. */
            if (seen != NONE) return failf(c, 400, "duplicate %s header", name);
            c->val_off = c->s_len;
        }
    }
    if (c->target != HT_NONE) return sbuf_append(c, at, n);
    return 0;
}

/* Splits the request target into the decoded path and the raw query, in place in sbuf. */
static int parse_target(conn *c)
{
    struct http_parser_url u;
    /* http_parser_url holds 16-bit offsets. */
    if (c->url_len > UINT16_MAX) return failf(c, 414, "request target too long");
    http_parser_url_init(&u);
    if (c->url_len == 0 ||
        http_parser_parse_url(c->sbuf, c->url_len, c->parser.method == HTTP_CONNECT, &u) != 0)
        return failf(c, 400, "invalid request target");
    if (u.field_set & (1u << UF_QUERY)) {
        size_t off = u.field_data[UF_QUERY].off, n = u.field_data[UF_QUERY].len;
        c->sbuf[off + n] = '\0'; /* overwrites '#' or the URL's own NUL */
        c->query_off = off;
    }
    if (u.field_set & (1u << UF_PATH)) {
        size_t off = u.field_data[UF_PATH].off, n = u.field_data[UF_PATH].len, dn;
        /* The decoded path ends at or before the '?' / '#' / NUL that followed it, so the
         * query is left intact. */
        int rc = percent_decode(c->sbuf + off, n, &dn);
        if (rc == -2) return failf(c, 400, "encoded NUL in path");
        if (rc) return failf(c, 400, "invalid percent-encoding in path");
        c->path_off = off;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    const http_limits *lim = &c->srv->lim;
    if (finish_piece(c)) return -1;
    /* No protocol upgrades (Upgrade: h2c, CONNECT): read the message as plain HTTP and let the
     * application answer it. */
    p->upgrade = 0;
    if (parse_target(c)) return -1;
    c->body_max = lim->large_body_path && c->path_off != NONE &&
                          !strcmp(c->sbuf + c->path_off, lim->large_body_path)
                      ? lim->max_large_body_bytes
                      : lim->max_body_bytes;
    bool chunked = p->flags & F_CHUNKED;
    if (!chunked && p->content_length != ULLONG_MAX) {
        if (p->content_length > c->body_max)
            return failf(c, 413, "request body of %llu bytes exceeds %zu bytes",
                         (unsigned long long)p->content_length, c->body_max);
        if (reserve(&c->body, &c->body_cap, (size_t)p->content_length + 1))
            return failf(c, 500, "out of memory");
    }
    c->expect_continue = c->expect_off != NONE && p->http_major == 1 && p->http_minor >= 1 &&
                         strcasecmp(c->sbuf + c->expect_off, "100-continue") == 0 &&
                         (chunked || (p->content_length != ULLONG_MAX && p->content_length > 0));
    c->phase = PH_BODY;
    /* Pause so parse_bytes learns exactly where the head ended (see there). */
    c->hdr_pause = true;
    http_parser_pause(p, 1);
    return 0;
}

static int on_chunk_header(http_parser *p)
{
    conn *c = p->data;
    /* A chunk's announced size already tells whether the body will be too large. */
    if (p->content_length > c->body_max - c->body_len)
        return failf(c, 413, "request body exceeds %zu bytes", c->body_max);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (n > c->body_max - c->body_len)
        return failf(c, 413, "request body exceeds %zu bytes", c->body_max);
    if (reserve(&c->body, &c->body_cap, c->body_len + n + 1)) return failf(c, 500, "out of memory");
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    if (finish_piece(c)) return -1; /* a trailer value, if any: only resets last_cb */
    c->keep_alive = http_should_keep_alive(p);
    c->phase = PH_DONE;
    c->msg_done = true;
    /* Pause: the next pipelined request waits until this one is answered. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* Runs the parser over data[0..len) and stops at the first complete request (c->ev ==
 * EV_REQUEST), error (EV_ERROR, c->err_status and c->err_buf set) or the end of the data
 * (EV_NONE). Returns the bytes consumed; on EV_REQUEST the rest belongs to the next request.
 *
 * The head is measured here, in raw bytes: every byte consumed while the message is in its head
 * counts, and the pause in on_headers_complete returns just before the head's final LF (which
 * http-parser reprocesses on resume), so the head's exact size is known when it completes. */
static size_t parse_bytes(conn *c, const char *data, size_t len)
{
    const size_t max = c->srv->lim.max_header_bytes;
    size_t off = 0;
    c->ev = EV_NONE;
    while (off < len) {
        size_t n = http_parser_execute(&c->parser, &parser_settings, data + off, len - off);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED && c->hdr_pause) {
            c->hdr_pause = false;
            c->hdr_bytes += n + 1;
            off += n;
            if (c->hdr_bytes > max) {
                failf(c, 431, "request header block exceeds %zu bytes", max);
                c->ev = EV_ERROR;
                return off;
            }
            http_parser_pause(&c->parser, 0);
            continue;
        }
        if (e == HPE_PAUSED && c->msg_done) {
            c->ev = EV_REQUEST;
            return off + n;
        }
        if (e != HPE_OK) {
            if (!c->err_status) {
                if (e == HPE_HEADER_OVERFLOW)
                    failf(c, 431, "request header block too large (%s)", http_errno_name(e));
                else
                    failf(c, 400, "malformed request: %s (%s)", http_errno_name(e),
                          http_errno_description(e));
            }
            c->ev = EV_ERROR;
            return off + n;
        }
        if (c->phase == PH_HEAD) {
            c->hdr_bytes += n;
            if (c->hdr_bytes > max) {
                failf(c, 431, "request header block exceeds %zu bytes", max);
                c->ev = EV_ERROR;
                return off + n;
            }
        }
        if (n == 0) break; /* cannot happen without an error; never spin */
        off += n;
    }
    return off;
}

/* Points the public request at the parsed strings (all inside the connection's buffers). */
static void req_fill(conn *c)
{
    http_request *r = &c->req.r;
    r->method = http_method_str((enum http_method)c->parser.method);
    r->path = c->path_off != NONE ? c->sbuf + c->path_off : "/";
    r->query = c->query_off != NONE ? c->sbuf + c->query_off : "";
    r->authorization = c->auth_off != NONE ? c->sbuf + c->auth_off : NULL;
    r->content_type = c->ctype_off != NONE ? c->sbuf + c->ctype_off : NULL;
    if (c->body_len) {
        c->body[c->body_len] = '\0'; /* reserve() always left room for it */
        r->body = c->body;
    } else {
        r->body = "";
    }
    r->body_len = c->body_len;
    r->start_ns = uv_hrtime();
    r->tls = c->ssl != NULL;
    r->peer_cert = c->peer;
    r->peer_chain = c->chain;
    r->peer_fingerprint = c->fp[0] ? c->fp : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Connections
 */

static void conn_free(conn *c)
{
    if (c->own_chain) sk_X509_free(c->chain); /* shallow: the certificates are the session's */
    SSL_free(c->ssl);                         /* with its BIOs and session */
    free(c->cout);
    free(c->sbuf);
    free(c->body);
    free(c->in);
    free(c->out);
    free(c);
}

static void server_maybe_free(struct http_server *s)
{
    if (s->closing && s->handles == 0) {
        free(s->rbuf);
        free(s->pbuf);
        free(s);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = container_of(h, conn, tcp);
    struct http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (!c->refused) s->nconns--;
    s->handles--;
    c->srv = NULL;
    c->closed = true;
    /* A pending request keeps the connection's memory until http_respond. */
    if (!c->pending) conn_free(c);
    server_maybe_free(s);
}

static void tls_goodbye(conn *c);

static void conn_close(conn *c)
{
    if (c->closing) return;
    if (c->ssl) tls_goodbye(c);
    c->closing = true;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = container_of(h, conn, tcp);
    size_t room = RBUF_SIZE;
    /* While busy, what is read is held, so read no more than the room left for it. */
    if (c->busy && !c->close_after && !c->lingering) room = IN_MAX - (c->in_len - c->in_off);
    if (c->ssl && !c->close_after && !c->lingering) {
        /* Ciphertext not yet decrypted counts against the same bound. */
        size_t pend = BIO_ctrl_pending(c->rbio);
        room = pend < room ? room - pend : 0;
    }
    *buf = uv_buf_init(room ? c->srv->rbuf : NULL, (unsigned)room);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(conn *c)
{
    if (c->reading || c->closing) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

static void conn_read_stop(conn *c)
{
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* Keeps bytes read while busy (or left over after a complete request) for later. */
static int conn_hold(conn *c, const char *p, size_t n)
{
    if (c->in_off > 0) { /* compact: the held bytes always start at 0 before appending */
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (reserve(&c->in, &c->in_cap, c->in_len + n)) return REG_ENOMEM;
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Transport: the response bytes go to the socket as they are, or through TLS
 */

static void on_write(uv_write_t *w, int status);
static void conn_written(conn *c, int status);
static void on_tls_write(uv_write_t *w, int status);

/* Moves the ciphertext waiting in the write BIO to the socket: at once with uv_try_write when it
 * may, otherwise (or for the rest) with one uv_write at a time, whose callback flushes again. A
 * response's completion must not be reported from inside http_respond (the next pipelined request
 * would be dispatched inside the application's call), so once a response is in the BIO it is only
 * tried at once inside the handler, where completion is reported through sync_done. The
 * ciphertext is copied out of the BIO because the BIO's buffer moves when OpenSSL writes to it
 * while a write is in flight. */
static void tls_flush(conn *c)
{
    if (c->tls_writing || c->closing) return;
    size_t pend = BIO_ctrl_pending(c->wbio);
    if (pend == 0) return;
    if (pend > INT_MAX || reserve(&c->cout, &c->cout_cap, pend) ||
        BIO_read(c->wbio, c->cout, (int)pend) != (int)pend) {
        conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init(c->cout, (unsigned)pend);
    if (!c->resp_flushing || c->in_handler) {
        int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (w == (int)pend) {
            if (c->resp_flushing) {
                c->resp_flushing = false;
                c->sync_done = true;
            }
            return;
        }
        if (w < 0 && w != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (w > 0) {
            b.base += w;
            b.len -= (unsigned)w;
        }
    }
    if (uv_write(&c->twreq, (uv_stream_t *)&c->tcp, &b, 1, on_tls_write) != 0) {
        conn_close(c);
        return;
    }
    c->tls_writing = true;
}

static void on_tls_write(uv_write_t *w, int status)
{
    conn *c = container_of(w, conn, twreq);
    c->tls_writing = false;
    if (status < 0 || c->closing) {
        c->resp_flushing = false;
        conn_written(c, status < 0 ? status : UV_ECANCELED);
        return;
    }
    if (BIO_ctrl_pending(c->wbio) > 0) { /* written meanwhile: the rest of a response, an alert */
        tls_flush(c);
        return;
    }
    if (c->resp_flushing) {
        c->resp_flushing = false;
        conn_written(c, 0);
    }
}

/* Before a close: close_notify when the handshake completed (so that the client can tell a close
 * from a truncation), then what is waiting in the write BIO (that, or a handshake alert) if it
 * goes out at once. Never waits. */
static void tls_goodbye(conn *c)
{
    if (c->hs_done && !c->tls_dead && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
    }
    ERR_clear_error();
    char *p = NULL;
    long n = BIO_get_mem_data(c->wbio, &p);
    if (c->tls_writing || n <= 0 || n > KEEP_BUF) return; /* a queued write: not now */
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
}

/* Replaces a memory BIO that grew large once it is empty (a BIO_s_mem never shrinks its buffer),
 * and releases the ciphertext buffer, so that an idle keep-alive connection pins no more than
 * a plaintext one. */
static void tls_trim(conn *c)
{
    shrink(&c->cout, &c->cout_cap);
    if (c->rbio_big && BIO_ctrl_pending(c->rbio) == 0) {
        BIO *b = BIO_new(BIO_s_mem());
        if (b) {
            BIO_set_mem_eof_return(b, -1);
            SSL_set0_rbio(c->ssl, b); /* frees the old one */
            c->rbio = b;
            c->rbio_big = false;
        }
    }
    if (c->wbio_big && !c->tls_writing && BIO_ctrl_pending(c->wbio) == 0) {
        BIO *b = BIO_new(BIO_s_mem());
        if (b) {
            SSL_set0_wbio(c->ssl, b);
            c->wbio = b;
            c->wbio_big = false;
        }
    }
    ERR_clear_error();
}

/* Sends the response formatted in c->out[0..n). It completes through conn_written (a write
 * callback) or, inside the handler, by setting sync_done when it all went out at once. */
static void conn_transmit(conn *c, size_t n)
{
    if (c->ssl) {
        ERR_clear_error();
        if (n > INT_MAX || SSL_write(c->ssl, c->out, (int)n) != (int)n) {
            c->tls_dead = true;
            conn_close(c);
            return;
        }
        if (n > KEEP_BUF / 2) c->wbio_big = true;
        c->resp_flushing = true;
        tls_flush(c);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
    if (c->in_handler) {
        /* Answered inside the handler: write at once. When it all goes out (the usual case on a
         * keep-alive connection) there is no write request, hence no callback and none of the
         * epoll_ctl that libuv spends after each uv_write; conn_dispatch's caller carries on. */
        int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (w == (int)n) {
            c->sync_done = true;
            return;
        }
        if (w < 0 && w != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (w > 0) {
            b.base += w;
            b.len -= (unsigned)w;
        }
    }
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) conn_close(c);
}

static void on_continue_written(uv_write_t *w, int status)
{
    conn *c = container_of(w, conn, cont_wreq);
    if (status < 0 && !c->closing) conn_close(c);
}

/* Sends an interim "100 Continue" (static bytes); no completion to wait for. */
static int conn_transmit_interim(conn *c, char *p, size_t n)
{
    if (c->ssl) {
        ERR_clear_error();
        if (SSL_write(c->ssl, p, (int)n) != (int)n) {
            c->tls_dead = true;
            return REG_ETLS;
        }
        tls_flush(c);
        return 0;
    }
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    return uv_write(&c->cont_wreq, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) ? REG_EIO
                                                                                       : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Responses and the request cycle
 */

static size_t put(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    return n;
}

static size_t put_uint(char *dst, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* Formats and writes the response to the current request; the connection stays busy until
 * on_write. The response is assembled in the connection's reusable output buffer. */
static void conn_send(conn *c, int status, const char *ctype, const char *body, size_t body_len,
                      const char *extra)
{
    if (status < 100 || status > 999) status = 500;
    bool close = c->close_after || !c->keep_alive || c->srv->closing;
    bool http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
    bool no_length = status == 204 || status == 304 || status < 200;
    bool no_body = no_length || c->parser.method == HTTP_HEAD;
    const char *reason = http_status_text(status);
    size_t rlen = strlen(reason), clen = ctype ? strlen(ctype) : 0;
    size_t xlen = extra ? strlen(extra) : 0;
    size_t need = 128 + rlen + clen + xlen + (no_body ? 0 : body_len);

    c->close_after = close;
    if (reserve(&c->out, &c->out_cap, need)) {
        conn_close(c);
        return;
    }
    char *o = c->out;
    size_t n = put(o, "HTTP/1.1 ", 9);
    n += put_uint(o + n, (size_t)status);
    o[n++] = ' ';
    n += put(o + n, reason, rlen);
    n += put(o + n, "\r\n", 2);
    if (ctype) {
        n += put(o + n, "Content-Type: ", 14);
        n += put(o + n, ctype, clen);
        n += put(o + n, "\r\n", 2);
    }
    if (!no_length) {
        n += put(o + n, "Content-Length: ", 16);
        n += put_uint(o + n, body_len);
        n += put(o + n, "\r\n", 2);
    }
    if (close)
        n += put(o + n, "Connection: close\r\n", 19);
    else if (http10)
        n += put(o + n, "Connection: keep-alive\r\n", 24); /* 1.0 needs it said */
    if (xlen) n += put(o + n, extra, xlen);
    n += put(o + n, "\r\n", 2);
    if (!no_body && body_len) n += put(o + n, body, body_len);

    /* A client that does not read its answer is bounded like an idle one. */
    c->deadline = uv_now(c->srv->loop) + c->srv->lim.idle_timeout_ms;
    conn_transmit(c, n);
}

/* Answers an error the server found itself, then closes (after draining). */
static void conn_fail(conn *c)
{
    char buf[512];
    size_t n = 0;
    int status = c->err_status ? c->err_status : 400;
    char *doc = problem_doc(status, c->err_buf[0] ? c->err_buf : NULL, buf, sizeof buf, &n);
    c->busy = true;
    c->close_after = true;
    c->keep_alive = false;
    conn_send(c, status, "application/problem+json", doc, n, NULL);
    if (doc != buf) free(doc);
}

/* Hands the parsed request to the application. Returns true when it was answered and written
 * out completely during the call. */
static bool conn_dispatch(conn *c)
{
    struct http_server *s = c->srv;
    req_fill(c);
    c->busy = true;
    c->pending = true;
    c->in_handler = true;
    c->sync_done = false;
    /* The handler may respond at once, later, or close the server; the connection's memory
     * outlives this call either way (it is freed only in a close callback or http_respond). */
    s->handler(s->app, &c->req, &c->req.r);
    c->in_handler = false;
    bool done = c->sync_done;
    c->sync_done = false;
    return done;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = container_of(req, conn, shut);
    if (status < 0 && !c->closing) conn_close(c);
}

/* The last response is out: half-close and drain what the client still sends (so that closing
 * with unread input does not reset the connection and destroy the answer), until EOF or a short
 * deadline. */
static void conn_finish(conn *c)
{
    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    uint64_t linger =
        c->srv->lim.idle_timeout_ms < LINGER_MS ? c->srv->lim.idle_timeout_ms : LINGER_MS;
    c->deadline = uv_now(c->srv->loop) + linger;
    if (c->ssl) {
        /* close_notify goes ahead of the FIN (uv_shutdown waits for queued writes). */
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        ERR_clear_error();
        tls_flush(c);
        if (c->closing) return;
    }
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
}

/* A response has been written completely. Returns true when the connection is ready for its
 * next request. */
static bool conn_response_done(conn *c)
{
    shrink(&c->out, &c->out_cap);
    if (c->closing) return false;
    if (c->close_after) {
        conn_finish(c);
        return false;
    }
    c->busy = false;
    req_reset(c);
    c->deadline = uv_now(c->srv->loop) + c->srv->lim.idle_timeout_ms;
    return true;
}

/* Outcome of conn_feed. */
enum { FEED_MORE, FEED_WAIT, FEED_NEXT };

/* Parses data (the shared read buffer, or the connection's held input when `held`) and acts on
 * the outcome; at most one request is dispatched. Returns FEED_MORE when everything was consumed
 * without completing a request, FEED_NEXT when a request was answered at once and the connection
 * is ready for the next, FEED_WAIT otherwise (a pending request, a write in flight, an error
 * being answered, a close). */
static int conn_feed(conn *c, const char *data, size_t len, bool held)
{
    size_t n = parse_bytes(c, data, len);
    if (held) c->in_off += n;
    if (c->expect_continue && c->ev == EV_NONE) {
        /* The client waits for this before sending the body; the head was acceptable. */
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->expect_continue = false;
        if (conn_transmit_interim(c, cont, sizeof cont - 1) != 0) {
            conn_close(c);
            return FEED_WAIT;
        }
    }
    if (c->ev == EV_NONE) return FEED_MORE;
    if (c->ev == EV_ERROR) {
        conn_fail(c);
        return FEED_WAIT;
    }
    if (!held && n < len && conn_hold(c, data + n, len - n) != 0) {
        conn_close(c);
        return FEED_WAIT;
    }
    return conn_dispatch(c) && conn_response_done(c) ? FEED_NEXT : FEED_WAIT;
}

static int tls_read(conn *c);

/* Between requests: parses what was held, one request after another while they are answered at
 * once (a loop, not recursion, however many were pipelined), then, over TLS, what can be
 * decrypted from the ciphertext received so far, and then reads on. */
static void conn_run_held(conn *c)
{
    for (;;) {
        while (c->in_off < c->in_len) {
            int r = conn_feed(c, c->in + c->in_off, c->in_len - c->in_off, true);
            if (r == FEED_WAIT) return;
        }
        c->in_off = c->in_len = 0;
        if (!c->ssl) break;
        int n = tls_read(c);
        if (n < 0) return; /* closed */
        if (n == 0) break; /* needs more ciphertext */
        /* What follows a complete request is held by conn_feed and parsed at the loop's top. */
        if (conn_feed(c, c->srv->pbuf, (size_t)n, false) == FEED_WAIT) return;
    }
    if (c->ssl) tls_trim(c);
    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
}

/* A response has left (status 0), or could not be written. */
static void conn_written(conn *c, int status)
{
    if (status < 0) {
        shrink(&c->out, &c->out_cap);
        if (!c->closing) conn_close(c);
        return;
    }
    if (conn_response_done(c)) conn_run_held(c);
}

static void on_write(uv_write_t *w, int status)
{
    conn_written(container_of(w, conn, wreq), status);
}

/* ---------------------------------------------------------------------------------------------
 * TLS input: handshake, then plaintext into the same parser
 */

/* Records the client certificate, its fingerprint and its chain (leaf first). False when they
 * could not be recorded (out of memory): the connection must not serve requests without them. */
static bool tls_peer(conn *c)
{
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (!cert) return true;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!X509_digest(cert, EVP_sha256(), md, &len) || len != 32) return false;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < len; i++) {
        c->fp[2 * i] = hex[md[i] >> 4];
        c->fp[2 * i + 1] = hex[md[i] & 15];
    }
    c->fp[2 * len] = '\0';
    c->peer = cert;
    /* On the server side OpenSSL keeps the chain without the leaf (and on a session resumed
     * from a ticket, no chain at all: a ticket carries only the leaf); the request shows the
     * leaf first. */
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(c->ssl);
    if (!sent) return true;
    if (sk_X509_num(sent) > 0 && X509_cmp(sk_X509_value(sent, 0), cert) == 0) {
        c->chain = sent;
        return true;
    }
    STACK_OF(X509) *ch = sk_X509_new_reserve(NULL, sk_X509_num(sent) + 1);
    if (!ch) return false;
    sk_X509_push(ch, cert);
    for (int i = 0; i < sk_X509_num(sent); i++)
        sk_X509_push(ch, sk_X509_value(sent, i));
    c->chain = ch;
    c->own_chain = true;
    return true;
}

/* Drives the handshake with the ciphertext received so far. True once it is complete; false
 * while it needs more input, or when it failed (the connection is then closing: nothing is
 * counted or logged, a bad handshake is the client's business). */
static bool tls_handshake(conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->hs_done = true;
        if (!tls_peer(c)) {
            conn_close(c);
            return false;
        }
        c->deadline = uv_now(c->srv->loop) + c->srv->lim.idle_timeout_ms;
        tls_flush(c); /* the last flight; TLS 1.3 session tickets */
        return !c->closing;
    }
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ) {
        /* Resuming (known once the ClientHello has been answered): issue no new TLS 1.3 tickets
         * at the end of this handshake, the client keeps the one it used until the session
         * times out (as nginx does). OpenSSL 3.0 builds a resumed session's new ticket from a
         * copy of the session made by encoding and decoding it, client certificate included,
         * which doubled the CPU of a resumed handshake here. */
        if (SSL_session_reused(c->ssl)) SSL_set_num_tickets(c->ssl, 0);
        tls_flush(c);
        return false;
    }
    c->tls_dead = true;
    conn_close(c); /* sends the alert if it goes at once */
    return false;
}

/* Decrypts what it can into the server's plaintext buffer. Returns the bytes, 0 when more
 * ciphertext is needed, -1 when the connection was closed (the client's close_notify, which is
 * its EOF, or a TLS error). */
static int tls_read(conn *c)
{
    ERR_clear_error();
    int n = SSL_read(c->ssl, c->srv->pbuf, PBUF_SIZE);
    int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
    ERR_clear_error();
    if (BIO_ctrl_pending(c->wbio) > 0) tls_flush(c); /* a KeyUpdate answer, say */
    if (c->closing) return -1;
    if (n > 0) return n;
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e != SSL_ERROR_ZERO_RETURN) c->tls_dead = true;
    conn_close(c);
    return -1;
}

/* Ciphertext from the socket. While a request is busy it only accumulates (on_alloc bounds it)
 * and is decrypted when the connection is ready for its next request. */
static void tls_input(conn *c, const char *p, size_t n)
{
    if (BIO_write(c->rbio, p, (int)n) != (int)n) {
        ERR_clear_error();
        conn_close(c);
        return;
    }
    size_t pend = BIO_ctrl_pending(c->rbio);
    if (pend > KEEP_BUF / 2) c->rbio_big = true;
    if (c->busy) {
        if (c->in_len - c->in_off + pend >= IN_MAX) conn_read_stop(c);
        return;
    }
    if (!c->hs_done && !tls_handshake(c)) return;
    conn_run_held(c);
}

static int tls_conn_init(conn *c)
{
    c->ssl = SSL_new(c->srv->ctx);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!c->ssl || !r || !w) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        BIO_free(r);
        BIO_free(w);
        ERR_clear_error();
        return REG_ENOMEM;
    }
    BIO_set_mem_eof_return(r, -1); /* empty is "no data yet", not EOF */
    SSL_set_bio(c->ssl, r, w);
    c->rbio = r;
    c->wbio = w;
    SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    SSL_set_accept_state(c->ssl);
    return 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = container_of(st, conn, tcp);
    if (nread == 0) return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS) { /* held input full: wait for the response */
            conn_read_stop(c);
        } else if (nread == UV_EOF && c->busy && !c->lingering) {
            /* The client may only have half-closed: answer what it asked, then close. */
            c->peer_eof = true;
            conn_read_stop(c);
        } else {
            /* EOF when idle, or a reset: with a request pending it becomes an orphan that
             * http_respond will free. */
            conn_close(c);
        }
        return;
    }
    if (c->close_after || c->lingering) return; /* draining before close */
    if (c->ssl) {
        tls_input(c, buf->base, (size_t)nread);
        return;
    }
    if (c->busy) {
        if (conn_hold(c, buf->base, (size_t)nread) != 0)
            conn_close(c);
        else if (c->in_len - c->in_off >= IN_MAX)
            conn_read_stop(c);
        return;
    }
    if (conn_feed(c, buf->base, (size_t)nread, false) == FEED_NEXT) conn_run_held(c);
}

/* ---------------------------------------------------------------------------------------------
 * Server
 */

static void on_connection(uv_stream_t *l, int status)
{
    struct http_server *s = container_of(l, struct http_server, listener);
    if (status < 0 || s->closing) return;
    conn *c = calloc(1, sizeof *c);
    if (!c) return; /* libuv reports the connection again on the next iteration */
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->srv = s;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->handles++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || s->nconns >= s->lim.max_connections) {
        c->refused = true; /* over the limit: closed at once */
        conn_close(c);
        return;
    }
    s->nconns++;
    uv_tcp_nodelay(&c->tcp, 1);
    parser_setup(c);
    if (s->ctx && tls_conn_init(c) != 0) {
        conn_close(c);
        return;
    }
    c->deadline = uv_now(s->loop) + (s->ctx ? s->lim.handshake_timeout_ms : s->lim.idle_timeout_ms);
    conn_read_start(c);
}

static void on_sweep(uv_timer_t *t)
{
    struct http_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    /* conn_close only schedules the close, so the list stays intact while walking it. */
    for (conn *c = s->conns; c; c = c->next)
        if (!c->closing && !c->pending && now >= c->deadline) conn_close(c);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->handles--;
    server_maybe_free(s);
}

static int map_uv_err(int rc)
{
    switch (rc) {
    case UV_ENOMEM:
        return REG_ENOMEM;
    case UV_EINVAL:
    case UV_EADDRNOTAVAIL:
    case UV_EAFNOSUPPORT:
        return REG_EINVAL;
    case UV_EADDRINUSE:
        return REG_EEXISTS;
    default:
        return REG_EIO;
    }
}

static int server_start(uv_loop_t *loop, const char *host, int port, const http_limits *limits,
                        SSL_CTX *ctx, http_handler handler, void *app, http_server **out)
{
    if (out) *out = NULL;
    if (!loop || !host || !handler || !out || port < 0 || port > 65535) return REG_EINVAL;
    struct sockaddr_storage ss;
    const char *h = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    if (uv_ip4_addr(h, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(h, port, (struct sockaddr_in6 *)&ss) != 0)
        return REG_EINVAL;

    struct http_server *s = calloc(1, sizeof *s);
    if (!s) return REG_ENOMEM;
    if (limits) s->lim = *limits;
    http_limits_default(&s->lim);
    s->loop = loop;
    s->handler = handler;
    s->app = app;
    s->ctx = ctx;
    s->rbuf = malloc(RBUF_SIZE);
    if (ctx) s->pbuf = malloc(PBUF_SIZE);
    if (!s->rbuf || (ctx && !s->pbuf)) {
        free(s->rbuf);
        free(s->pbuf);
        free(s);
        return REG_ENOMEM;
    }
    int rc = uv_tcp_init(loop, &s->listener);
    if (rc) {
        free(s->rbuf);
        free(s->pbuf);
        free(s);
        return map_uv_err(rc);
    }
    s->listener.data = s;
    s->handles = 1;
    uv_timer_init(loop, &s->sweep); /* cannot fail */
    s->sweep.data = s;
    s->handles++;

    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (!rc) rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (!rc) {
        struct sockaddr_storage bound;
        int blen = sizeof bound;
        rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
        if (!rc)
            s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                        : ((struct sockaddr_in *)&bound)->sin_port);
    }
    if (rc) {
        /* Handles are released through the loop; the server is freed when it runs. */
        s->closing = true;
        uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
        uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
        return map_uv_err(rc);
    }
    /* One timer for every connection's deadline; its period bounds how late a close can be. */
    unsigned shortest = s->lim.idle_timeout_ms;
    if (ctx && s->lim.handshake_timeout_ms < shortest) shortest = s->lim.handshake_timeout_ms;
    uint64_t period = shortest / 8;
    if (period < 10) period = 10;
    if (period > 1000) period = 1000;
    uv_timer_start(&s->sweep, on_sweep, period, period);
    *out = s;
    return REG_OK;
}

int http_server_start(struct uv_loop_s *loop, const char *host, int port, const http_limits *limits,
                      http_handler handler, void *app, http_server **out)
{
    return server_start(loop, host, port, limits, NULL, handler, app, out);
}

int http_server_start_tls(struct uv_loop_s *loop, const char *host, int port,
                          const http_limits *limits, struct ssl_ctx_st *ctx, http_handler handler,
                          void *app, http_server **out)
{
    if (out) *out = NULL;
    if (!ctx) return REG_EINVAL;
    return server_start(loop, host, port, limits, ctx, handler, app, out);
}

int http_server_port(const http_server *s)
{
    return s ? s->port : 0;
}

void http_server_close(http_server *s)
{
    if (!s || s->closing) return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
    for (conn *c = s->conns; c; c = c->next)
        conn_close(c);
}

unsigned http_server_close_peer(http_server *s, const char *fingerprint_hex)
{
    if (!s || !fingerprint_hex || strlen(fingerprint_hex) != 64) return 0;
    unsigned n = 0;
    /* conn_close only schedules the close, so the list stays intact while walking it. */
    for (conn *c = s->conns; c; c = c->next) {
        if (c->closing || !c->fp[0] || strcasecmp(c->fp, fingerprint_hex) != 0) continue;
        conn_close(c);
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Server SSL_CTX
 */

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return 0; /* an encrypted key is an error, never a prompt on the terminal */
}

/* Translates OpenSSL's error queue into REG_ETLS (logging the reason once) or REG_ENOMEM. */
static int tls_ctx_error(const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE) {
        ERR_clear_error();
        return REG_ENOMEM;
    }
    char why[256] = "no detail";
    if (e) ERR_error_string_n(e, why, sizeof why);
    fprintf(stderr, "http_tls_server_ctx: %s: %s\n", what, why);
    ERR_clear_error();
    return REG_ETLS;
}

int http_tls_server_ctx(const char *cert_chain_pem, const char *key_pem, struct ssl_ctx_st **out)
{
    static const unsigned char sid_ctx[] = "registry-https";
    if (out) *out = NULL;
    if (!cert_chain_pem || !key_pem || !out) return REG_EINVAL;
    ERR_clear_error();
    int rc = REG_ENOMEM;
    X509 *x = NULL;
    EVP_PKEY *key = NULL;
    BIO *b = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) goto fail;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        rc = tls_ctx_error("protocol version");
        goto fail;
    }
    /* No renegotiation: nothing here needs it, and it would let a client make the loop run
     * handshakes without opening connections. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);

    if (!(b = BIO_new_mem_buf(cert_chain_pem, -1))) goto fail;
    x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
    if (!x || SSL_CTX_use_certificate(ctx, x) != 1) {
        rc = tls_ctx_error("server certificate");
        goto fail;
    }
    X509_free(x);
    while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) { /* takes x only on success */
            rc = tls_ctx_error("intermediate certificate");
            goto fail;
        }
    }
    /* The loop ends at the end of the text (no further BEGIN line) or at a malformed block. */
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        rc = tls_ctx_error("certificate chain");
        goto fail;
    }
    ERR_clear_error();
    BIO_free(b);
    if (!(b = BIO_new_mem_buf(key_pem, -1))) goto fail;
    key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    if (!key || SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        rc = tls_ctx_error("private key");
        goto fail;
    }

    /* Ask for a client certificate without requiring one; OpenSSL's verifier checks a presented
     * chain against the store at handshake time (the store the ctx holds then, so replacing it
     * with SSL_CTX_set1_cert_store takes effect at the next handshake). No callback: a chain that
     * does not verify refuses the handshake. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Without a session id context, OpenSSL refuses to resume a session that has a client
     * certificate. */
    if (SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1) != 1) {
        rc = tls_ctx_error("session id context");
        goto fail;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20000);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET); /* tickets on (the default, said out loud) */
    /* One TLS 1.3 ticket, not OpenSSL's default two: each ticket after the handshake copies the
     * session through an encode/decode cycle in OpenSSL 3.0, re-decoding the client certificate
     * (measured: 15% of the device port's CPU in bootstraps). A device reconnects one at a time. */
    SSL_CTX_set_num_tickets(ctx, 1);

    EVP_PKEY_free(key);
    BIO_free(b);
    *out = ctx;
    return REG_OK;
fail:
    X509_free(x);
    EVP_PKEY_free(key);
    BIO_free(b);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

const http_request *http_req_request(const http_req *req)
{
    return &req->r;
}

void http_respond(http_req *req, int status, const char *content_type, const char *body,
                  size_t body_len, const char *extra_headers)
{
    if (!req) return;
    conn *c = container_of(req, conn, req);
    if (!c->pending) return; /* a second answer to the same request is ignored */
    c->pending = false;
    if (c->closed) { /* the connection went away meanwhile: only free */
        conn_free(c);
        return;
    }
    if (c->closing) return; /* its close callback, still to come, frees it */
    conn_send(c, status, content_type, body ? body : "", body ? body_len : 0, extra_headers);
}

void http_respond_problem(http_req *req, int status, const char *detail)
{
    char buf[1024];
    size_t n = 0;
    char *doc = problem_doc(status, detail, buf, sizeof buf, &n);
    http_respond(req, status, "application/problem+json", doc, n, NULL);
    if (doc != buf) free(doc);
}

/* ---- session tickets shared by the front ends ---- */

enum { TICKET_PERIOD_S = 12 * 3600, TICKET_KEY_BYTES = 16 + 32 + 32 /* name, AES, HMAC */ };

typedef struct ticket_keys {
    unsigned char secret[32];
    int64_t period[2]; /* the period each slot's keys are for (slot = period & 1) */
    unsigned char key[2][TICKET_KEY_BYTES];
} ticket_keys;

static int ticket_index = -1;

static void ticket_keys_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr) OPENSSL_clear_free(ptr, sizeof(ticket_keys));
}

static void ticket_index_make(void)
{
    ticket_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ticket_keys_free);
}

/* The keys of one period: derived on first use, then kept in its slot. NULL when HKDF fails. */
static const unsigned char *ticket_keys_for(ticket_keys *tk, int64_t period)
{
    int slot = (int)(period & 1);
    if (tk->period[slot] != period) {
        char info[64];
        snprintf(info, sizeof info, "registry tls ticket %lld", (long long)period);
        if (keystore_hkdf(tk->secret, sizeof tk->secret, info, tk->key[slot], TICKET_KEY_BYTES))
            return NULL;
        tk->period[slot] = period;
    }
    return tk->key[slot];
}

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    ticket_keys *tk = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_index);
    if (!tk) return -1;
    int64_t now = (int64_t)time(NULL) / TICKET_PERIOD_S;
    for (int back = 0; back < 2; back++) {
        const unsigned char *k = ticket_keys_for(tk, now - back);
        if (!k) return -1;
        if (enc) {
            if (RAND_bytes(iv, 16) != 1) return -1;
            memcpy(key_name, k, 16);
        } else if (memcmp(key_name, k, 16) != 0) {
            continue;
        }
        OSSL_PARAM mac[] = {
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(k + 48), 32),
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_end()};
        if (EVP_MAC_CTX_set_params(hctx, mac) != 1 ||
            EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k + 16, iv, enc) != 1)
            return -1;
        return back ? 2 : 1; /* 2: opened with last period's key, a fresh ticket is due */
    }
    return 0; /* not ours (or older): a full handshake */
}

int http_tls_share_tickets(SSL_CTX *ctx, const unsigned char secret[32])
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, ticket_index_make);
    if (ticket_index < 0) return REG_ENOMEM;
    ticket_keys *tk = OPENSSL_zalloc(sizeof *tk);
    if (!tk) return REG_ENOMEM;
    memcpy(tk->secret, secret, sizeof tk->secret);
    tk->period[0] = tk->period[1] = -1;
    if (SSL_CTX_set_ex_data(ctx, ticket_index, tk) != 1) {
        OPENSSL_clear_free(tk, sizeof *tk);
        return REG_ENOMEM;
    }
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    return 0;
}
