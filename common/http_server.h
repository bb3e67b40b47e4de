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
 * Threading: everything runs on the loop given to http_server_start.
 */
#ifndef REG_HTTP_SERVER_H
#define REG_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;

typedef struct http_server http_server;
typedef struct http_req http_req;

typedef struct http_limits {
    size_t max_header_bytes;  /* request line + headers; default 16 KiB (431 over it) */
    size_t max_body_bytes;    /* default 1 MiB (413 over it) */
    unsigned max_headers;     /* default 64 (431) */
    unsigned idle_timeout_ms; /* close a connection idle this long; default 60000 */
    unsigned max_connections; /* refuse (close at once) beyond it; default 10000 */
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
