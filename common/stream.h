/*
 * stream.h - server-side byte streams on libuv: a listener accepting TCP connections, each
 * speaking plain TCP or TLS (OpenSSL through a BIO over the listener's buffers), delivering
 * plaintext to the application and sending the plaintext it writes. The MQTT server is a
 * protocol on top of it (the HTTP server still has its own TLS plumbing); this module knows
 * nothing of either.
 *
 * TLS: the handshake runs before the application hears of the connection (on_open), within
 * handshake_timeout_ms; a failed or timed-out handshake just closes the connection (counted in
 * the listener's stats by reason). The client certificate's SHA-256 fingerprint is available
 * from on_open until on_close, also on a resumed session; the certificate itself and the chain
 * it came with only during on_open. Once on_open has returned, a TLS 1.3 connection's records
 * are sealed and opened by tls13.h and OpenSSL's SSL object is freed (the stream sets the
 * context's key log callback for that; a context with another one keeps its connections in
 * OpenSSL). TLS 1.2 stays in OpenSSL, with SSL_MODE_RELEASE_BUFFERS: an idle TLS connection
 * holds no record buffers either way.
 *
 * Memory and back-pressure: the listener reads into one shared buffer; the application consumes
 * what it can in on_data and the stream keeps the unconsumed rest (at most max_pending_in bytes;
 * beyond that it stops reading until the application calls stream_resume). Output is queued and
 * bounded by max_pending_out; stream_write fails with REG_EAGAIN when the queue is full. A
 * stream's memory is freed only after on_close has returned (in the uv_close callback).
 *
 * Threading: everything on the loop given to stream_listen.
 */
#ifndef REG_STREAM_H
#define REG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct ssl_ctx_st;
struct x509_st;
struct stack_st_X509;

typedef struct stream_listener stream_listener;
typedef struct stream stream;

typedef struct stream_limits {
    unsigned max_connections;      /* refuse (close at once) beyond it; default 10000 */
    unsigned handshake_timeout_ms; /* TLS only; default 10000 */
    size_t max_pending_in;         /* unconsumed plaintext kept per stream; default 64 KiB */
    size_t max_pending_out;        /* queued output per stream; default 1 MiB */
    bool reuse_port;               /* SO_REUSEPORT: several processes share the port */
} stream_limits;

typedef struct stream_callbacks {
    /* A connection is ready (TLS: its handshake completed). The application may write, close,
     * or attach its state with stream_set_data. */
    void (*on_open)(void *app, stream *s);
    /* Plaintext arrived: returns how many bytes it consumed (0..len); the rest is handed again
     * with what arrives next. The application may close the stream from here. */
    size_t (*on_data)(void *app, stream *s, const char *data, size_t len);
    /* The peer closed, an error happened, or stream_close was called: the last callback for s
     * (on_open having been called). s must not be used after it returns. */
    void (*on_close)(void *app, stream *s);
} stream_callbacks;

/* Why TLS handshakes failed (handshake_timeouts are counted apart). */
enum stream_handshake_failure {
    STREAM_HS_CERTIFICATE, /* the client's certificate did not verify */
    STREAM_HS_PROTOCOL,    /* not TLS, or no version or cipher in common */
    STREAM_HS_CLOSED,      /* the client went away during the handshake */
    STREAM_HS_OTHER,
    STREAM_HS_FAILURE_COUNT
};
extern const char *const stream_handshake_failure_names[STREAM_HS_FAILURE_COUNT];

typedef struct stream_stats {
    uint64_t accepted, refused, handshakes_full, handshakes_resumed, handshake_failures,
        handshake_timeouts, bytes_in, bytes_out;
    uint64_t taken_over; /* TLS 1.3 connections whose records tls13 took over from OpenSSL */
    uint64_t handshake_failed[STREAM_HS_FAILURE_COUNT]; /* handshake_failures by reason */
    unsigned open;
} stream_stats;

/* Fills defaults for zero fields. */
void stream_limits_default(stream_limits *l);

/* Listens on host:port (port 0 picks one; stream_listener_port says which). ctx NULL: plain TCP;
 * else TLS with that context (borrowed; it must outlive the listener; the application may swap
 * its X509_STORE with SSL_CTX_set1_cert_store between handshakes). limits and cb are copied.
 * The caller owns *out. */
int stream_listen(struct uv_loop_s *loop, const char *host, int port, struct ssl_ctx_st *ctx,
                  const stream_limits *limits, const stream_callbacks *cb, void *app,
                  stream_listener **out);
int stream_listener_port(const stream_listener *l);
/* Stops accepting and closes every stream (their on_close run); the listener is freed once
 * they are all closed. */
void stream_listener_close(stream_listener *l);
/* Closes every stream whose client certificate has this fingerprint (hex, either case).
 * Returns how many. */
unsigned stream_listener_close_peer(stream_listener *l, const char *fingerprint_hex);
void stream_listener_stats(const stream_listener *l, stream_stats *out);

/* Queues plaintext for the peer (copied; encrypted first under TLS). 0, REG_EAGAIN when the
 * output queue would pass max_pending_out (nothing queued), REG_ECLOSED when closing. */
int stream_write(stream *s, const void *data, size_t len);
/* Bytes queued for output and not yet written to the socket. */
size_t stream_pending_out(const stream *s);
/* Stops / restarts reading (back-pressure from the application). */
void stream_pause(stream *s);
void stream_resume(stream *s);
/* Closes the stream after its queued output (TLS: close_notify) is sent, or at once when
 * `now`. on_close follows (never from inside this call). */
void stream_close(stream *s, bool now);

void stream_set_data(stream *s, void *data);
void *stream_data(const stream *s);
/* TLS: the client's certificate and the chain it sent (NULL on a resumed session), during
 * on_open (also later on a TLS 1.2 connection); the certificate's fingerprint (lower-case hex)
 * until on_close returns. NULL when none or plain TCP. Borrowed. */
struct x509_st *stream_peer_cert(const stream *s);
struct stack_st_X509 *stream_peer_chain(const stream *s);
const char *stream_peer_fingerprint(const stream *s);
bool stream_tls_resumed(const stream *s);
/* The peer's address as "ip:port". */
const char *stream_peer_addr(const stream *s);

#endif
