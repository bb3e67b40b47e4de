/*
 * fuzz_http.c - libFuzzer harness for the request parser of common/http_server.c.
 *
 * The harness includes http_server.c itself so that it can drive the socket-free parsing core
 * (parse_bytes, the http-parser callbacks, req_fill, req_reset) on a connection that never
 * touches a socket: each input is parsed as a stream of pipelined requests, once in one piece and
 * once cut into small pieces chosen by the input's first bytes. Every request must satisfy the
 * invariants of http_request (NUL-terminated strings, a decoded path without NUL, a body within
 * the limit), the server's error answers must be one of its statuses and render as a problem
 * document, and the two runs must agree: the same requests in the same order, and an error in
 * one exactly when there is one in the other (the head-size check may report 431 where the other
 * cut reports http-parser's 400 for the same malformed oversized head).
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon tests/fuzz/fuzz_http.c \
 *        common/err.c $(pkg-config --cflags --libs libuv jansson openssl) -lhttp_parser
 * Run:   ./fuzz_http -max_total_time=60 tests/fuzz/corpus_http
 */
#include "http_server.c"

#include "tests/fuzz/fuzz_check.h"

/* Small limits (chosen per input) so that inputs reach them often. */
static struct http_server fuzz_srv;
static uv_loop_t fuzz_loop;

typedef struct record {
    char *p;
    size_t len, cap;
    int requests;
    int error; /* 0 or the status of the error that ended the stream */
} record;

static void rec_put(record *r, const void *p, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        while (cap < r->len + n)
            cap *= 2;
        r->p = realloc(r->p, cap);
        if (!r->p) abort();
        r->cap = cap;
    }
    memcpy(r->p + r->len, p, n);
    r->len += n;
}

static void rec_str(record *r, const char *s)
{
    rec_put(r, s ? s : "(null)", s ? strlen(s) + 1 : 7);
}

static void check_request(conn *c, record *rec)
{
    const http_request *q = &c->req.r;
    req_fill(c);
    CHECK(q->method && q->path && q->query);
    CHECK(q->body && q->body[q->body_len] == '\0');
    CHECK(q->body_len <= fuzz_srv.lim.max_body_bytes);
    CHECK(strlen(q->path) <= c->url_len); /* decoding never lengthens */
    CHECK(c->s_len <= fuzz_srv.lim.max_header_bytes + 8);
    rec_str(rec, q->method);
    rec_str(rec, q->path);
    rec_str(rec, q->query);
    rec_str(rec, q->authorization);
    rec_str(rec, q->content_type);
    rec_put(rec, &q->body_len, sizeof q->body_len);
    rec_put(rec, q->body, q->body_len);
    rec_put(rec, &c->keep_alive, sizeof c->keep_alive);
    rec->requests++;
}

static void check_error(conn *c, record *rec)
{
    int st = c->err_status;
    CHECK(st == 400 || st == 413 || st == 414 || st == 431 || st == 500);
    char buf[512];
    size_t n = 0;
    char *doc = problem_doc(st, c->err_buf, buf, sizeof buf, &n);
    json_t *j = json_loadb(doc, n, 0, NULL); /* the document must be valid JSON */
    CHECK(j && json_integer_value(json_object_get(j, "status")) == st);
    json_decref(j);
    if (doc != buf) free(doc);
    rec->error = st;
}

/* Parses data as a stream, `cut` bytes at a time (0: all at once), like conn_feed/conn_resume do:
 * after a request, the rest is held and parsed after the (simulated) answer. */
static void run(const uint8_t *data, size_t len, size_t cut, record *rec)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->srv = &fuzz_srv;
    parser_setup(c);
    size_t off = 0;
    while (off < len) {
        size_t n = len - off;
        if (cut && n > cut) n = cut;
        size_t used = parse_bytes(c, (const char *)data + off, n);
        CHECK(used <= n);
        if (c->ev == EV_ERROR) {
            check_error(c, rec);
            break;
        }
        off += used;
        if (c->ev == EV_REQUEST) {
            check_request(c, rec);
            if (!c->keep_alive) break;
            req_reset(c);
        } else {
            CHECK(used == n);
        }
    }
    conn_free(c);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    uv_loop_init(&fuzz_loop);
    fuzz_srv.loop = &fuzz_loop;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* First byte: low 4 bits choose the cut, the next 2 bits the limits. */
    static const http_limits sets[4] = {
        {.max_header_bytes = 512, .max_body_bytes = 256, .max_headers = 8},
        {.max_header_bytes = 64, .max_body_bytes = 16, .max_headers = 2},
        {.max_header_bytes = 4096, .max_body_bytes = 4096, .max_headers = 64},
        {.max_header_bytes = 40, .max_body_bytes = 1, .max_headers = 1},
    };
    fuzz_srv.lim = sets[(data[0] >> 4) & 3];
    http_limits_default(&fuzz_srv.lim);
    size_t cut = (data[0] % 16) + 1;
    record whole = {0}, pieces = {0};
    run(data + 1, size - 1, 0, &whole);
    run(data + 1, size - 1, cut, &pieces);
    CHECK(whole.requests == pieces.requests);
    CHECK(whole.len == pieces.len && (!whole.len || memcmp(whole.p, pieces.p, whole.len) == 0));
    CHECK((whole.error != 0) == (pieces.error != 0));
    if (whole.error != pieces.error) CHECK(whole.error == 431 || pieces.error == 431);
    free(whole.p);
    free(pieces.p);
    return 0;
}
