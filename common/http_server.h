/*
 * http_server.h - an HTTP/1.1 server on libuv, parsing with http-parser (Debian's
 * libhttp-parser-dev).
 *
 * The server accepts connections on one address, parses requests with bounded sizes (request
 * line + headers, body, header count), and hands each complete request to the application's
 * handler. The handler answers at once or later (after a command has been decided): the request
 * stays pending until http_respond is called, and the connection reads no further request until
 * then (pipelined requests wait their turn). Keep-alive per HTTP/1.1 rules. Bad input (a parse
 * error, a header block or body over the limit, a URL too long) is answered by the server itself
 * with a problem document (400/413/431) and the connection is closed; other connections are
 * unaffected. Idle connections are closed after a timeout.
 *
 * TLS. http_server_start_tls serves the same HTTP over TLS 1.2/1.3 (the device HTTPS port):
 * OpenSSL runs over memory BIOs on the same loop, and everything above (limits, keep-alive,
 * pipelining, pending answers, problem answers, idle timeout) is the plaintext code path. A client
 * certificate is asked for but not required; one that does not verify against the SSL_CTX's
 * X509_STORE refuses the handshake. The handler sees the certificate and its SHA-256 fingerprint
 * (also on a resumed session). A handshake that fails or does not finish within
 * handshake_timeout_ms just closes that connection. http_server_close_peer drops every live
 * connection of one certificate (revocation). http_tls_server_ctx builds a suitable SSL_CTX.
 *
 * Threading: everything runs on the loop given to http_server_start(_tls), including
 * http_server_close_peer and any SSL_CTX_set1_cert_store on the server's SSL_CTX.
 */
#ifndef REG_HTTP_SERVER_H
#define REG_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct ssl_ctx_st;
struct x509_st;
struct stack_st_X509;

typedef struct http_server http_server;
typedef struct http_req http_req;

typedef struct http_limits {
    size_t max_header_bytes;       /* request line + headers; default 16 KiB (431 over it) */
    size_t max_body_bytes;         /* default 1 MiB (413 over it) */
    const char *large_body_path;   /* NULL, or the one path (exact, decoded) whose requests may */
    size_t max_large_body_bytes;   /* carry bodies up to this (bulk uploads); >= max_body_bytes */
    unsigned max_headers;          /* default 64 (431) */
    unsigned idle_timeout_ms;      /* close a connection idle this long; default 60000 */
    unsigned max_connections;      /* refuse (close at once) beyond it; default 10000 */
    unsigned handshake_timeout_ms; /* TLS: close a connection whose handshake is not done by then;
                                      default 10000 */
} http_limits;

/* What the handler sees. All strings are NUL-terminated and owned by the request; they live until
 * http_respond. `path` is the URL path, percent-decoded; `query` the raw query string without '?'
 * ("" when none). Header values are NULL when absent. */
typedef struct http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;
    const char *query;
    const char *authorization;
    const char *content_type;
    const char *body; /* NUL-terminated too; may contain NULs before body_len */
    size_t body_len;
    uint64_t start_ns; /* monotonic time the request was complete (for latency metrics) */
    /* TLS: the client's certificate (borrowed; valid until http_respond) or NULL. On a resumed
     * session it is the one the session was established with (kept in the session or ticket). */
    struct x509_st *peer_cert;
    /* TLS: the chain the client sent, leaf first (borrowed; valid until http_respond), or NULL
     * when it sent no certificate. On a resumed session (OpenSSL 3.0, tested): NULL when resumed
     * from a ticket (TLS 1.3, and TLS 1.2 by default: a ticket carries the leaf, not the chain);
     * the original chain when resumed from the server's session cache (TLS 1.2 without tickets).
     * A resumed session is not verified again: see http_server_close_peer for revocation. */
    struct stack_st_X509 *peer_chain;
    /* TLS: lower-case hex SHA-256 of the client certificate's DER (64 characters), or NULL. */
    const char *peer_fingerprint;
    bool tls; /* the request came over TLS */
} http_request;

/* The handler takes a pending request. It must eventually call http_respond exactly once (at
 * once or from a later callback on the same loop). */
typedef void (*http_handler)(void *app, http_req *req, const http_request *r);

/* Fills defaults for zero fields. */
void http_limits_default(http_limits *l);

/* Starts listening on host:port (port 0 picks one; http_server_port tells which). `limits` is
 * copied. The caller owns *out; http_server_close stops accepting and closes every connection
 * (the server is freed when they are closed). Returns 0 or a REG_E* code. */
int http_server_start(struct uv_loop_s *loop, const char *host, int port, const http_limits *limits,
                      http_handler handler, void *app, http_server **out);
int http_server_port(const http_server *s);
void http_server_close(http_server *s);

/* Like http_server_start, but every connection speaks TLS with an SSL made from `ctx`. ctx is
 * borrowed: the server takes no reference, so ctx must outlive the server (until the loop has run
 * the close callbacks after http_server_close). The ctx's settings (certificate, verification,
 * session cache, tickets) apply as they are at each handshake, so the application may replace the
 * trust store with SSL_CTX_set1_cert_store between handshakes, on the loop thread. A handshake that
 * fails (no ClientHello, a refused certificate, an alert) closes that connection silently. */
int http_server_start_tls(struct uv_loop_s *loop, const char *host, int port,
                          const http_limits *limits, struct ssl_ctx_st *ctx, http_handler handler,
                          void *app, http_server **out);

/* Closes every connection of this server whose client certificate has this SHA-256 fingerprint
 * (hex, either case): idle keep-alive connections, connections with a request pending (the later
 * http_respond then only frees), lingering ones. Returns how many it closed. Loop thread only.
 * Cost: one walk of the server's connection list (O(connections), a string compare each).
 * It does not stop the client from coming back by resuming its session (resumption does not
 * verify the certificate again, and tickets outlive any store change): the application must
 * also refuse the fingerprint in its handler (or stop resumption). */
unsigned http_server_close_peer(http_server *s, const char *fingerprint_hex);

/* Makes a server SSL_CTX from PEM text: `cert_chain_pem` holds the server certificate then its
 * intermediates, `key_pem` the private key. TLS 1.2 minimum (1.3 allowed); a client certificate
 * is requested, not required (SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT); a presented chain is
 * verified by OpenSSL's verifier against the ctx's X509_STORE, which starts empty (every client
 * certificate is refused until the application installs its CAs with SSL_CTX_set1_cert_store);
 * no partial chains (a trusted intermediate alone does not make a chain valid). No client CA list
 * is sent (it would go stale when the store is replaced), so clients offer their certificate
 * whatever CA issued it. Server session cache (20000 sessions) and session tickets are on, with a
 * session id context so that sessions with client certificates resume. (The server issues TLS 1.3
 * tickets after a full handshake only, not after a resumption: see http_server.c.) The caller owns
 * *out and frees it with SSL_CTX_free. Returns 0, REG_EINVAL (NULL argument), REG_ETLS (bad PEM,
 * key not matching the certificate; OpenSSL's reason is logged) or REG_ENOMEM. */
int http_tls_server_ctx(const char *cert_chain_pem, const char *key_pem, struct ssl_ctx_st **out);

/* Session tickets that every process given the same secret can open, so that a device resumes
 * on whichever front end the kernel hands its reconnection to (OpenSSL's default ticket key is
 * random per process). The ticket keys (AES-256-CBC + HMAC-SHA256, the RFC 5077 layout) are
 * derived from secret for each TICKET_PERIOD of 12 hours: a ticket of the previous period still
 * opens, an older one means a full handshake. The secret is copied. Use from one thread (the
 * loop's). 0, or REG_ENOMEM. */
int http_tls_share_tickets(struct ssl_ctx_st *ctx, const unsigned char secret[32]);

/* The parsed request of a pending request (valid until http_respond). */
const http_request *http_req_request(const http_req *req);

/* Answers a pending request: status, content type, body (copied). Frees the request; req must
 * not be used afterwards. When the client has gone away meanwhile, this only frees. `extra_headers`
 * is NULL or a string of "Name: value\r\n" lines added to the response. */
void http_respond(http_req *req, int status, const char *content_type, const char *body,
                  size_t body_len, const char *extra_headers);

/* Answers with an RFC 9457 problem document (application/problem+json):
 * {"type": "about:blank" or type_uri, "title": the status's reason phrase, "status", "detail"}. */
void http_respond_problem(http_req *req, int status, const char *detail);

/* The reason phrase of a status code ("Not Found"). */
const char *http_status_text(int status);

#endif
