/*
 * test_http_server.c - unit tests of common/http_server.c over real loopback sockets.
 *
 * Each test starts a server on 127.0.0.1:0 with its own limits, in its own uv loop run by a
 * second thread; the test thread talks to it with plain blocking sockets (5 s receive timeout,
 * so a broken server fails a test instead of hanging it). The handler answers by path:
 * "/hold" keeps the request until the test asks for a late answer, "/delay" answers from a
 * uv_timer 50 ms later, "/problem" answers with a problem document, "/close-then-respond" closes
 * the server and then answers, anything else echoes what the handler saw. The test thread drives
 * the loop thread through one uv_async_t and a command counter. Stopping a fixture checks that
 * every handle was closed (uv_loop_close succeeds); ASan, when built with it, checks that no
 * memory is leaked or used after free on any of the orderings exercised here.
 */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* ---------------------------------------------------------------------------------------------
 * Server fixture (the loop runs on its own thread)
 */

/* cmocka's assertions longjmp and must stay on the test thread; the loop thread aborts. */
#define LOOP_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: loop thread check failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum { CMD_NONE, CMD_RESPOND_HELD, CMD_CLOSE_SERVER, CMD_STOP };

typedef struct fixture {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    http_server *srv;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cmd;            /* under mu: the command for the loop thread */
    unsigned cmd_seq;   /* under mu: commands issued */
    unsigned ack_seq;   /* under mu: commands carried out */
    http_req *held[16]; /* under mu */
    int nheld;          /* under mu */
    bool server_closed; /* loop thread only */
} fixture;

typedef struct delayed {
    uv_timer_t timer;
    http_req *req;
} delayed;

static void on_delay_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_delay(uv_timer_t *t)
{
    delayed *d = t->data;
    http_respond(d->req, 200, "text/plain", "delayed", 7, NULL);
    uv_close((uv_handle_t *)&d->timer, on_delay_closed);
}

static void echo(http_req *req, const http_request *r)
{
    size_t cap = 512 + strlen(r->path) + strlen(r->query) + r->body_len;
    char *out = malloc(cap);
    LOOP_CHECK(out);
    int n = snprintf(out, cap, "%s %s ?%s auth=%s ct=%s len=%zu body=", r->method, r->path,
                     r->query, r->authorization ? r->authorization : "-",
                     r->content_type ? r->content_type : "-", r->body_len);
    memcpy(out + n, r->body, r->body_len);
    http_respond(req, 200, "text/plain", out, (size_t)n + r->body_len, "X-Test: 1\r\n");
    free(out);
}

static void handler(void *app, http_req *req, const http_request *r)
{
    fixture *f = app;
    LOOP_CHECK(http_req_request(req) == r);
    LOOP_CHECK(r->body[r->body_len] == '\0');
    if (strcmp(r->path, "/hold") == 0) {
        pthread_mutex_lock(&f->mu);
        f->held[f->nheld++] = req;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    } else if (strcmp(r->path, "/delay") == 0) {
        delayed *d = calloc(1, sizeof *d);
        LOOP_CHECK(d);
        d->req = req;
        d->timer.data = d;
        uv_timer_init(&f->loop, &d->timer);
        uv_timer_start(&d->timer, on_delay, 50, 0);
    } else if (strcmp(r->path, "/problem") == 0) {
        http_respond_problem(req, 409, "a \"quoted\" detail\nline");
    } else if (strcmp(r->path, "/close-then-respond") == 0) {
        /* The connection is closing but not closed when the answer comes. */
        http_server_close(f->srv);
        f->server_closed = true;
        http_respond(req, 200, "text/plain", "bye", 3, NULL);
    } else {
        echo(req, r);
    }
}

static void on_async(uv_async_t *a)
{
    fixture *f = a->data;
    pthread_mutex_lock(&f->mu);
    int cmd = f->cmd;
    pthread_mutex_unlock(&f->mu);
    if (cmd == CMD_RESPOND_HELD) {
        pthread_mutex_lock(&f->mu);
        int n = f->nheld;
        http_req *held[16];
        memcpy(held, f->held, sizeof held);
        f->nheld = 0;
        pthread_mutex_unlock(&f->mu);
        for (int i = 0; i < n; i++)
            http_respond(held[i], 200, "text/plain", "late", 4, NULL);
    } else if (cmd == CMD_CLOSE_SERVER || cmd == CMD_STOP) {
        if (!f->server_closed) http_server_close(f->srv);
        f->server_closed = true;
        if (cmd == CMD_STOP) uv_close((uv_handle_t *)&f->async, NULL);
    }
    pthread_mutex_lock(&f->mu);
    f->ack_seq = f->cmd_seq;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void *loop_thread(void *arg)
{
    fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static fixture *fx_start(const http_limits *lim)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->async, on_async), 0);
    f->async.data = f;
    assert_int_equal(http_server_start(&f->loop, "127.0.0.1", 0, lim, handler, f, &f->srv), 0);
    f->port = http_server_port(f->srv);
    assert_true(f->port > 0);
    assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
    return f;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Runs a command on the loop thread and waits until it has been carried out. */
static void fx_cmd(fixture *f, int cmd)
{
    struct timespec ts;
    deadline_in(&ts, 5000);
    pthread_mutex_lock(&f->mu);
    f->cmd = cmd;
    unsigned seq = ++f->cmd_seq;
    uv_async_send(&f->async);
    while (f->ack_seq < seq)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0) break;
    bool done = f->ack_seq >= seq;
    pthread_mutex_unlock(&f->mu);
    assert_true(done);
}

static void fx_wait_held(fixture *f, int n)
{
    struct timespec ts;
    deadline_in(&ts, 5000);
    pthread_mutex_lock(&f->mu);
    while (f->nheld < n)
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0) break;
    int got = f->nheld;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(got, n);
}

static void fx_stop(fixture *f)
{
    fx_cmd(f, CMD_STOP);
    pthread_join(f->thread, NULL);
    /* Every handle (listener, timer, connections) must be closed by now. */
    assert_int_equal(uv_loop_close(&f->loop), 0);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* ---------------------------------------------------------------------------------------------
 * Client side: blocking sockets
 */

typedef struct client {
    int fd;
    size_t len;
    char buf[1 << 20];
} client;

typedef struct resp {
    int status;
    char head[4096];
    char *body; /* malloc'd, NUL-terminated */
    size_t body_len;
} resp;

static client *cl_open(int port)
{
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return c;
}

static void cl_close(client *c)
{
    if (c->fd >= 0) close(c->fd);
    free(c);
}

/* Closes with a reset (SO_LINGER 0) instead of a FIN. */
static void cl_reset(client *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    c->fd = -1;
}

static void cl_send(client *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void cl_sends(client *c, const char *s)
{
    cl_send(c, s, strlen(s));
}

/* Reads more bytes into c->buf; false on EOF, reset or timeout. */
static bool cl_fill(client *c)
{
    if (c->len == sizeof c->buf) return false;
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r <= 0) return false;
    c->len += (size_t)r;
    return true;
}

static void cl_consume(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Reads one response (skipping interim 1xx unless want_interim). `head_only` for HEAD. Returns
 * false on EOF/timeout before a whole response. */
static bool cl_read_full(client *c, resp *r, bool head_only, bool want_interim)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        char *end = NULL;
        while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
            if (!cl_fill(c)) return false;
        size_t hlen = (size_t)(end - c->buf) + 4;
        assert_true(hlen < sizeof r->head);
        memcpy(r->head, c->buf, hlen);
        r->head[hlen] = '\0';
        assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
        cl_consume(c, hlen);
        if (r->status >= 200 || want_interim) break;
    }
    size_t blen = 0;
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    if (cl) blen = strtoul(cl + 18, NULL, 10);
    if (head_only) blen = 0;
    while (c->len < blen)
        if (!cl_fill(c)) return false;
    r->body = malloc(blen + 1);
    assert_non_null(r->body);
    memcpy(r->body, c->buf, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    cl_consume(c, blen);
    return true;
}

static bool cl_read(client *c, resp *r)
{
    return cl_read_full(c, r, false, false);
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* True when the server has closed the connection (EOF or reset) within the receive timeout. */
static bool cl_closed(client *c)
{
    char b[256];
    for (;;) {
        ssize_t r = recv(c->fd, b, sizeof b, 0);
        if (r == 0) return true;
        if (r < 0) return errno == ECONNRESET;
    }
}

static bool has_header(const resp *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

/* One request on a fresh connection; returns the status and the body (caller frees). */
static int one_shot(int port, const char *req, size_t len, char **body, bool *closed)
{
    client *c = cl_open(port);
    cl_send(c, req, len);
    resp r;
    int status = cl_read(c, &r) ? r.status : -1;
    if (body)
        *body = r.body;
    else
        resp_free(&r);
    if (closed) *closed = status > 0 && cl_closed(c);
    cl_close(c);
    return status;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

static void test_keepalive_get_twice(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    for (int i = 0; i < 2; i++) {
        resp r;
        cl_sends(c, "GET /hello?a=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_true(cl_read(c, &r));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "GET /hello ?a=1 auth=- ct=- len=0 body=");
        assert_true(has_header(&r, "\r\nX-Test: 1\r\n"));
        assert_true(has_header(&r, "\r\nContent-Type: text/plain\r\n"));
        assert_false(has_header(&r, "Connection: close"));
        resp_free(&r);
    }
    cl_close(c);
    fx_stop(f);
}

static void test_post_body(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    cl_sends(c, "POST /items?x=1 HTTP/1.1\r\nHost: x\r\naUtHoRiZaTiOn: Bearer t0k  \r\n"
                "CONTENT-TYPE: application/json\r\nX-Other: y\r\nContent-Length: 7\r\n\r\n"
                "{\"a\":1}");
    resp r;
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /items ?x=1 auth=Bearer t0k ct=application/json len=7 "
                                "body={\"a\":1}");
    resp_free(&r);

    /* A body larger than one read, echoed back whole. */
    size_t n = 300000;
    char *big = malloc(n + 128);
    assert_non_null(big);
    int h = sprintf(big, "PUT /big HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
    for (size_t i = 0; i < n; i++)
        big[h + (int)i] = (char)('a' + i % 26);
    cl_send(c, big, (size_t)h + n);
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 200);
    const char *prefix = "PUT /big ? auth=- ct=- len=300000 body=";
    assert_int_equal(r.body_len, strlen(prefix) + n);
    assert_memory_equal(r.body + strlen(prefix), big + h, n);
    resp_free(&r);
    free(big);
    cl_close(c);
    fx_stop(f);
}

static void test_delayed_response(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    for (int i = 0; i < 2; i++) { /* the connection goes on after a late answer */
        double t0 = now_ms();
        cl_sends(c, "GET /delay HTTP/1.1\r\n\r\n");
        resp r;
        assert_true(cl_read(c, &r));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "delayed");
        assert_true(now_ms() - t0 >= 40);
        resp_free(&r);
    }
    cl_close(c);
    fx_stop(f);
}

static void test_pipelined_in_order(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    /* The first is answered late; the others must wait for it. */
    cl_sends(c, "GET /delay HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n"
                "POST /three HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /four HTTP/1.1\r\n\r\n");
    const char *want[] = {
        "delayed", "GET /two ? auth=- ct=- len=0 body=", "POST /three ? auth=- ct=- len=3 body=abc",
        "GET /four ? auth=- ct=- len=0 body="};
    for (int i = 0; i < 4; i++) {
        resp r;
        assert_true(cl_read(c, &r));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, want[i]);
        resp_free(&r);
    }

    /* Many at once, answered inline one after another (the server loops, it does not recurse). */
    enum { N = 2000 };
    const char *one = "GET /p HTTP/1.1\r\n\r\n";
    size_t len = strlen(one);
    char *burst = malloc(N * len);
    assert_non_null(burst);
    for (int i = 0; i < N; i++)
        memcpy(burst + (size_t)i * len, one, len);
    cl_send(c, burst, N * len);
    free(burst);
    for (int i = 0; i < N; i++) {
        resp r;
        assert_true(cl_read(c, &r));
        assert_string_equal(r.body, "GET /p ? auth=- ct=- len=0 body=");
        resp_free(&r);
    }
    cl_close(c);
    fx_stop(f);
}

/* A head of exactly `size` bytes: "GET / HTTP/1.1\r\nX: aaaa...\r\n\r\n". */
static char *head_of_size(size_t size)
{
    const char *pre = "GET /h HTTP/1.1\r\nX: ";
    size_t fixed = strlen(pre) + 4;
    assert_true(size > fixed);
    char *s = malloc(size + 1);
    assert_non_null(s);
    strcpy(s, pre);
    memset(s + strlen(pre), 'a', size - fixed);
    strcpy(s + size - 4, "\r\n\r\n");
    return s;
}

static void test_header_limits(void **state)
{
    http_limits lim = {.max_header_bytes = 1024, .max_headers = 8};
    fixture *f = fx_start(&lim);
    char *body = NULL;
    bool closed = false;

    /* The limit is exact: 1024 bytes pass, 1025 do not. */
    char *h = head_of_size(1024);
    assert_int_equal(one_shot(f->port, h, 1024, NULL, NULL), 200);
    free(h);
    h = head_of_size(1025);
    assert_int_equal(one_shot(f->port, h, 1025, &body, &closed), 431);
    assert_non_null(strstr(body, "\"status\":431"));
    assert_non_null(strstr(body, "exceeds 1024 bytes"));
    assert_true(closed);
    free(body);
    free(h);

    /* Much larger, in one write: caught before it is all buffered. */
    h = head_of_size(200000);
    assert_int_equal(one_shot(f->port, h, 200000, NULL, &closed), 431);
    assert_true(closed);
    free(h);

    const char *eight = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n"
                        "H: 8\r\n\r\n";
    assert_int_equal(one_shot(f->port, eight, strlen(eight), NULL, NULL), 200);
    const char *nine = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n"
                       "H: 8\r\nI: 9\r\n\r\n";
    assert_int_equal(one_shot(f->port, nine, strlen(nine), &body, &closed), 431);
    assert_non_null(strstr(body, "more than 8 header fields"));
    assert_true(closed);
    free(body);
    fx_stop(f);
}

static void test_body_limits(void **state)
{
    http_limits lim = {.max_body_bytes = 1000};
    fixture *f = fx_start(&lim);
    char *body = NULL;
    bool closed = false;

    /* Content-Length over the limit: answered before the body is sent. */
    const char *r1 = "POST /x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n";
    assert_int_equal(one_shot(f->port, r1, strlen(r1), &body, &closed), 413);
    assert_non_null(strstr(body, "\"title\":\"Content Too Large\""));
    assert_true(closed);
    free(body);

    /* The whole body at the limit passes. */
    char *req = malloc(2000);
    assert_non_null(req);
    int n = sprintf(req, "POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
    memset(req + n, 'z', 1000);
    assert_int_equal(one_shot(f->port, req, (size_t)n + 1000, NULL, NULL), 200);

    /* Chunked: caught while streaming. */
    n = sprintf(req, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n");
    memset(req + n, 'y', 600);
    n += 600;
    n += sprintf(req + n, "\r\n258\r\n");
    client *c = cl_open(f->port);
    cl_send(c, req, (size_t)n);
    resp r;
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 413);
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    assert_true(has_header(&r, "\r\nContent-Type: application/problem+json\r\n"));
    resp_free(&r);
    assert_true(cl_closed(c));
    cl_close(c);

    /* Chunked within the limit, sent as two chunks plus a trailer. */
    const char *ch = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                     "6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    assert_int_equal(one_shot(f->port, ch, strlen(ch), &body, NULL), 200);
    assert_string_equal(body, "POST /c ? auth=- ct=- len=11 body=hello world");
    free(body);
    free(req);
    fx_stop(f);
}

static void test_chunked_in_pieces(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    const char *parts[] = {"POST /c HTTP/1.1\r\nTransfer-", "Encoding: chunked\r\n\r\n3\r",
                           "\nabc\r\n", "1\r\nd\r\n0\r\n", "\r\n"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        cl_sends(c, parts[i]);
        usleep(10000);
    }
    resp r;
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /c ? auth=- ct=- len=4 body=abcd");
    resp_free(&r);
    cl_close(c);
    fx_stop(f);
}

static void test_garbage_closes_only_that_connection(void **state)
{
    fixture *f = fx_start(NULL);
    client *good = cl_open(f->port);
    resp r;
    cl_sends(good, "GET /a HTTP/1.1\r\n\r\n");
    assert_true(cl_read(good, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);

    client *bad = cl_open(f->port);
    cl_sends(bad, "\x01\x02 garbage\r\n\r\n");
    assert_true(cl_read(bad, &r));
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "HPE_INVALID_METHOD"));
    assert_non_null(strstr(r.body, "{\"type\":\"about:blank\",\"title\":\"Bad Request\","
                                   "\"status\":400,\"detail\":"));
    resp_free(&r);
    assert_true(cl_closed(bad));
    cl_close(bad);

    cl_sends(good, "GET /b HTTP/1.1\r\n\r\n");
    assert_true(cl_read(good, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "GET /b ? auth=- ct=- len=0 body=");
    resp_free(&r);
    cl_close(good);

    /* Conflicting framing is http-parser's call: both are errors. */
    const char *dup = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    char *body = NULL;
    assert_int_equal(one_shot(f->port, dup, strlen(dup), &body, NULL), 400);
    assert_non_null(strstr(body, "HPE_"));
    free(body);
    const char *both = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "0\r\n\r\n";
    assert_int_equal(one_shot(f->port, both, strlen(both), NULL, NULL), 400);
    const char *two_auth = "GET / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n";
    assert_int_equal(one_shot(f->port, two_auth, strlen(two_auth), &body, NULL), 400);
    assert_non_null(strstr(body, "duplicate Authorization header"));
    free(body);
    fx_stop(f);
}

static void test_percent_decoding(void **state)
{
    fixture *f = fx_start(NULL);
    char *body = NULL;
    const char *ok = "GET /a%20b/c%2Fd%41%c3%a9?q=%20x&r=1#frag HTTP/1.1\r\n\r\n";
    assert_int_equal(one_shot(f->port, ok, strlen(ok), &body, NULL), 200);
    assert_string_equal(body, "GET /a b/c/dA\xc3\xa9 ?q=%20x&r=1 auth=- ct=- len=0 body=");
    free(body);

    const char *absolute = "GET http://example.org/p%3f?x HTTP/1.1\r\n\r\n";
    assert_int_equal(one_shot(f->port, absolute, strlen(absolute), &body, NULL), 200);
    assert_string_equal(body, "GET /p? ?x auth=- ct=- len=0 body=");
    free(body);

    const char *bad[] = {"GET /x%00y HTTP/1.1\r\n\r\n", "GET /x%zz HTTP/1.1\r\n\r\n",
                         "GET /x%4 HTTP/1.1\r\n\r\n", "GET /x%4?q HTTP/1.1\r\n\r\n"};
    const char *why[] = {"encoded NUL in path", "invalid percent-encoding in path",
                         "invalid percent-encoding in path", "invalid percent-encoding in path"};
    for (int i = 0; i < 4; i++) {
        bool closed = false;
        assert_int_equal(one_shot(f->port, bad[i], strlen(bad[i]), &body, &closed), 400);
        assert_non_null(strstr(body, why[i]));
        assert_true(closed);
        free(body);
    }
    fx_stop(f);
}

static void test_connection_close_and_http10(void **state)
{
    fixture *f = fx_start(NULL);
    resp r;

    client *c = cl_open(f->port);
    cl_sends(c, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(cl_read(c, &r));
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    resp_free(&r);
    assert_true(cl_closed(c));
    cl_close(c);

    c = cl_open(f->port);
    cl_sends(c, "GET / HTTP/1.0\r\n\r\n");
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    resp_free(&r);
    assert_true(cl_closed(c));
    cl_close(c);

    c = cl_open(f->port);
    for (int i = 0; i < 2; i++) {
        cl_sends(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_true(cl_read(c, &r));
        assert_int_equal(r.status, 200);
        assert_true(has_header(&r, "\r\nConnection: keep-alive\r\n"));
        resp_free(&r);
    }
    cl_close(c);

    /* A request after a Connection: close one in the same packet is not answered. */
    c = cl_open(f->port);
    cl_sends(c, "GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
    assert_true(cl_read(c, &r));
    assert_string_equal(r.body, "GET /1 ? auth=- ct=- len=0 body=");
    resp_free(&r);
    assert_true(cl_closed(c));
    assert_int_equal(c->len, 0);
    cl_close(c);
    fx_stop(f);
}

static void test_head_and_expect(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    resp r;
    cl_sends(c, "HEAD /h HTTP/1.1\r\n\r\n");
    assert_true(cl_read_full(c, &r, true, false));
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "\r\nContent-Length: 33\r\n")); /* "HEAD /h ? auth=- ..." */
    resp_free(&r);

    /* Expect: 100-continue gets the interim answer before the body is sent. */
    cl_sends(c, "POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_true(cl_read_full(c, &r, false, true));
    assert_int_equal(r.status, 100);
    resp_free(&r);
    cl_sends(c, "hello");
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /e ? auth=- ct=- len=5 body=hello");
    resp_free(&r);
    cl_close(c);
    fx_stop(f);
}

static void test_problem_document(void **state)
{
    fixture *f = fx_start(NULL);
    char *body = NULL;
    const char *req = "GET /problem HTTP/1.1\r\n\r\n";
    assert_int_equal(one_shot(f->port, req, strlen(req), &body, NULL), 409);
    assert_string_equal(body, "{\"type\":\"about:blank\",\"title\":\"Conflict\",\"status\":409,"
                              "\"detail\":\"a \\\"quoted\\\" detail\\nline\"}");
    free(body);
    fx_stop(f);

    assert_string_equal(http_status_text(404), "Not Found");
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_text(599), "Server Error");
}

static void test_client_reset_while_pending(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    cl_sends(c, "GET /hold HTTP/1.1\r\n\r\n");
    fx_wait_held(f, 1);
    cl_reset(c); /* the server sees ECONNRESET and closes: the request becomes an orphan */
    cl_close(c);
    usleep(200000);
    fx_cmd(f, CMD_RESPOND_HELD); /* only frees */

    /* The server is unaffected. */
    char *body = NULL;
    const char *req = "GET /after HTTP/1.1\r\n\r\n";
    assert_int_equal(one_shot(f->port, req, strlen(req), &body, NULL), 200);
    free(body);
    fx_stop(f);
}

static void test_client_fin_while_pending(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    /* Two requests: the second is held by the server until the first is answered. */
    cl_sends(c, "GET /hold HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    fx_wait_held(f, 1);
    shutdown(c->fd, SHUT_WR); /* half-close: the answers are still wanted */
    usleep(100000);
    fx_cmd(f, CMD_RESPOND_HELD);
    resp r;
    assert_true(cl_read(c, &r));
    assert_string_equal(r.body, "late");
    resp_free(&r);
    assert_true(cl_read(c, &r));
    assert_string_equal(r.body, "GET /next ? auth=- ct=- len=0 body=");
    resp_free(&r);
    assert_true(cl_closed(c));
    cl_close(c);

    /* Full close while pending, answered late. */
    c = cl_open(f->port);
    cl_sends(c, "GET /hold HTTP/1.1\r\n\r\n");
    fx_wait_held(f, 1);
    cl_close(c);
    usleep(100000);
    fx_cmd(f, CMD_RESPOND_HELD);
    fx_stop(f);
}

/* Bytes that arrive while a request is pending are held (up to a bound, then reading stops) and
 * parsed once the answer is out. */
static void test_input_while_pending(void **state)
{
    fixture *f = fx_start(NULL);
    client *c = cl_open(f->port);
    cl_sends(c, "GET /hold HTTP/1.1\r\n\r\n");
    fx_wait_held(f, 1);
    size_t n = 100000; /* more than the server holds */
    char *req = malloc(n + 256);
    assert_non_null(req);
    int h = sprintf(req, "POST /big HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
    memset(req + h, 'q', n);
    strcpy(req + h + n, "GET /last HTTP/1.1\r\n\r\n");
    cl_send(c, req, strlen(req));
    usleep(100000);
    fx_cmd(f, CMD_RESPOND_HELD);
    resp r;
    assert_true(cl_read(c, &r));
    assert_string_equal(r.body, "late");
    resp_free(&r);
    assert_true(cl_read(c, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen("POST /big ? auth=- ct=- len=100000 body=") + n);
    resp_free(&r);
    assert_true(cl_read(c, &r));
    assert_string_equal(r.body, "GET /last ? auth=- ct=- len=0 body=");
    resp_free(&r);
    free(req);
    cl_close(c);
    fx_stop(f);
}

static void test_server_close_while_pending(void **state)
{
    fixture *f = fx_start(NULL);
    client *a = cl_open(f->port);
    client *b = cl_open(f->port);
    cl_sends(a, "GET /hold HTTP/1.1\r\n\r\n");
    cl_sends(b, "GET /hold HTTP/1.1\r\n\r\n");
    fx_wait_held(f, 2);
    fx_cmd(f, CMD_CLOSE_SERVER);
    assert_true(cl_closed(a)); /* connections closed while their requests are pending */
    assert_true(cl_closed(b));
    usleep(50000);
    fx_cmd(f, CMD_RESPOND_HELD); /* after the server itself may be gone */
    cl_close(a);
    cl_close(b);
    fx_stop(f);

    /* Closed from inside the handler, answered before the close completes. */
    f = fx_start(NULL);
    client *c = cl_open(f->port);
    cl_sends(c, "GET /close-then-respond HTTP/1.1\r\n\r\n");
    assert_true(cl_closed(c));
    cl_close(c);
    fx_stop(f);
}

static void test_idle_and_slowloris(void **state)
{
    http_limits lim = {.idle_timeout_ms = 200};
    fixture *f = fx_start(&lim);

    client *c = cl_open(f->port);
    double t0 = now_ms();
    assert_true(cl_closed(c));
    double dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 2000);
    cl_close(c);

    /* Idle after a request, too. */
    c = cl_open(f->port);
    resp r;
    cl_sends(c, "GET / HTTP/1.1\r\n\r\n");
    assert_true(cl_read(c, &r));
    resp_free(&r);
    assert_true(cl_closed(c));
    cl_close(c);

    /* A head trickled a header at a time never completes in time. */
    c = cl_open(f->port);
    t0 = now_ms();
    cl_sends(c, "GET / HTTP/1.1\r\n");
    bool closed = false;
    while (!closed && now_ms() - t0 < 3000) {
        usleep(40000);
        if (send(c->fd, "X-A: b\r\n", 8, MSG_NOSIGNAL) < 0) closed = true;
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
    }
    assert_true(closed);
    assert_true(now_ms() - t0 < 1500);
    cl_close(c);
    fx_stop(f);
}

static void test_max_connections(void **state)
{
    http_limits lim = {.max_connections = 2};
    fixture *f = fx_start(&lim);
    client *a = cl_open(f->port), *b = cl_open(f->port);
    resp r;
    cl_sends(a, "GET /a HTTP/1.1\r\n\r\n");
    assert_true(cl_read(a, &r));
    resp_free(&r);
    cl_sends(b, "GET /b HTTP/1.1\r\n\r\n");
    assert_true(cl_read(b, &r));
    resp_free(&r);

    client *c = cl_open(f->port); /* the third: closed at once */
    assert_true(cl_closed(c));
    cl_close(c);

    /* Room again once the server has seen a go (retried: that takes a loop iteration). */
    cl_close(a);
    bool ok = false;
    for (int i = 0; i < 50 && !ok; i++) {
        usleep(50000);
        c = cl_open(f->port);
        send(c->fd, "GET /c HTTP/1.1\r\n\r\n", 19, MSG_NOSIGNAL);
        ok = cl_read(c, &r) && r.status == 200;
        resp_free(&r);
        cl_close(c);
    }
    assert_true(ok);
    cl_close(b);
    fx_stop(f);
}

static void test_start_errors(void **state)
{
    uv_loop_t loop;
    http_server *s = NULL, *s2 = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(http_server_start(&loop, "not-an-ip", 0, NULL, handler, NULL, &s), REG_EINVAL);
    assert_null(s);
    assert_int_equal(http_server_start(&loop, "127.0.0.1", 70000, NULL, handler, NULL, &s),
                     REG_EINVAL);
    assert_int_equal(http_server_start(&loop, "::1", 0, NULL, handler, NULL, &s), 0);
    assert_true(http_server_port(s) > 0);
    int port = http_server_port(s);
    assert_int_equal(http_server_start(&loop, "::1", port, NULL, handler, NULL, &s2), REG_EEXISTS);
    assert_null(s2);
    http_server_close(s);
    uv_run(&loop, UV_RUN_DEFAULT); /* frees both */
    assert_int_equal(uv_loop_close(&loop), 0);

    http_limits l = {.max_body_bytes = 5};
    http_limits_default(&l);
    assert_int_equal(l.max_body_bytes, 5);
    assert_int_equal(l.max_header_bytes, 16 * 1024);
    assert_int_equal(l.max_headers, 64);
    assert_int_equal(l.idle_timeout_ms, 60000);
    assert_int_equal(l.max_connections, 10000);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_get_twice),
        cmocka_unit_test(test_post_body),
        cmocka_unit_test(test_delayed_response),
        cmocka_unit_test(test_pipelined_in_order),
        cmocka_unit_test(test_header_limits),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_chunked_in_pieces),
        cmocka_unit_test(test_garbage_closes_only_that_connection),
        cmocka_unit_test(test_percent_decoding),
        cmocka_unit_test(test_connection_close_and_http10),
        cmocka_unit_test(test_head_and_expect),
        cmocka_unit_test(test_problem_document),
        cmocka_unit_test(test_client_reset_while_pending),
        cmocka_unit_test(test_client_fin_while_pending),
        cmocka_unit_test(test_input_while_pending),
        cmocka_unit_test(test_server_close_while_pending),
        cmocka_unit_test(test_idle_and_slowloris),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
