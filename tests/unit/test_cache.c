/*
 * test_cache.c - the shared cache (common/cache.c) against a real Redis.
 *
 * The test starts its own redis-server (a free port found by binding port 0, no persistence) as
 * a child process, so that it can also stop it (SIGSTOP: a server that does not answer), kill
 * it (SIGKILL) and start it again on the same port. Without redis-server, the tests that need no
 * control of the server run against REDIS_ADDR if it is set, and everything else is skipped.
 *
 * Each test runs its own loop on the test's thread: commands are issued while the loop is not
 * running, then the loop runs until the expected callbacks came (or a time limit). Every
 * callback checks that it does not run inside cache_get and counts its calls, so "exactly
 * once" is checked everywhere. Closing a fixture checks that every handle was closed
 * (uv_loop_close succeeds); ASan, in the sanitized build, checks for leaks and use after free,
 * notably around late replies and closing with commands in flight.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "err.h"

#define REDIS_SERVER "/usr/bin/redis-server"

/* ---- the Redis server ---- */

static struct {
    pid_t pid; /* 0: not ours (REDIS_ADDR) or not running */
    int port;
    char addr[64]; /* "" : no server at all */
} srv;

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L}, NULL);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* A free TCP port on 127.0.0.1 (bind to 0, read it back). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool redis_ping(int port)
{
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, (struct timeval){0, 200000});
    bool ok = false;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
}

/* Starts redis-server on srv.port in the foreground, as our child; waits until it answers. */
static bool server_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        execl(REDIS_SERVER, "redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "",
              "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    srv.pid = pid;
    for (int i = 0; i < 200; i++, sleep_ms(25))
        if (redis_ping(srv.port)) return true;
    return false;
}

static void server_signal(int sig)
{
    assert_true(srv.pid > 0);
    assert_int_equal(kill(srv.pid, sig), 0);
}

static void server_kill(void)
{
    if (srv.pid <= 0) return;
    kill(srv.pid, SIGKILL);
    waitpid(srv.pid, NULL, 0);
    srv.pid = 0;
}

static int group_setup(void **state)
{
    if (access(REDIS_SERVER, X_OK) == 0) {
        srv.port = free_port();
        if (srv.port > 0 && server_start()) {
            snprintf(srv.addr, sizeof srv.addr, "127.0.0.1:%d", srv.port);
            return 0;
        }
        server_kill();
        fprintf(stderr, "test_cache: cannot start %s\n", REDIS_SERVER);
        return -1;
    }
    const char *addr = getenv("REDIS_ADDR");
    if (addr && *addr) snprintf(srv.addr, sizeof srv.addr, "%s", addr);
    return 0;
}

static int group_teardown(void **state)
{
    server_kill();
    return 0;
}

/* After each test: the server runs again, whatever the test did to it before it failed. */
static int server_restore(void **state)
{
    if (srv.port <= 0) return 0;
    if (srv.pid > 0) {
        kill(srv.pid, SIGCONT);
        return 0;
    }
    return server_start() ? 0 : -1;
}

static void need_server(void)
{
    if (!srv.addr[0]) skip();
}

static void need_own_server(void)
{
    if (!srv.addr[0] || srv.port <= 0) skip();
}

/* ---- the loop ---- */

static void on_stop_timer(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop for ms. */
static void run_ms(uv_loop_t *loop, int ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_stop_timer, (uint64_t)ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* the close callback */
}

typedef struct waiter {
    uv_timer_t t;
    const int *count;
    int target;
    uint64_t until;
} waiter;

static void on_wait_tick(uv_timer_t *t)
{
    waiter *w = t->data;
    if (*w->count >= w->target || now_ms() >= w->until) uv_stop(t->loop);
}

/* Runs the loop until *count reaches target or timeout_ms passed. */
static void run_until(uv_loop_t *loop, const int *count, int target, int timeout_ms)
{
    if (*count >= target) return;
    waiter w = {.count = count, .target = target, .until = now_ms() + (uint64_t)timeout_ms};
    uv_timer_init(loop, &w.t);
    w.t.data = &w;
    uv_timer_start(&w.t, on_wait_tick, 1, 1);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&w.t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- gets and their answers ---- */

static bool in_get;   /* set around cache_get: callbacks must never run inside it */
static int callbacks; /* every get callback, all tests */

typedef struct got {
    int calls; /* must end at exactly 1 */
    int err;
    char value[64];
    size_t len;
    uint64_t at_ms;
    cache *close_it; /* the callback closes this cache */
} got;

static void on_got(void *arg, int err, const char *value, size_t len)
{
    got *g = arg;
    assert_false(in_get);
    g->calls++;
    callbacks++;
    g->err = err;
    g->at_ms = now_ms();
    g->len = len;
    if (err) {
        assert_null(value);
        assert_int_equal(len, 0);
    } else {
        assert_true(len < sizeof g->value);
        memcpy(g->value, value, len);
    }
    if (g->close_it) cache_close(g->close_it);
}

static void get(cache *c, const char *key, got *g)
{
    memset(g, 0, sizeof *g);
    in_get = true;
    cache_get(c, key, on_got, g);
    in_get = false;
}

/* Issues a get and runs the loop until it is answered; the error. */
static int get_wait(uv_loop_t *loop, cache *c, const char *key, got *g)
{
    get(c, key, g);
    run_until(loop, &g->calls, 1, 10000);
    assert_int_equal(g->calls, 1);
    return g->err;
}

/* Runs the loop until the cache answers from Redis (hit or miss), up to timeout_ms. */
static bool wait_ready(uv_loop_t *loop, cache *c, int timeout_ms)
{
    uint64_t until = now_ms() + (uint64_t)timeout_ms;
    do {
        got g;
        int err = get_wait(loop, c, "test.cache.probe", &g);
        if (err == 0 || err == REG_ENOTFOUND) return true;
        run_ms(loop, 50);
    } while (now_ms() < until);
    return false;
}

/* ---- fixture ---- */

typedef struct fixture {
    uv_loop_t loop;
    cache *c;
} fixture;

static void fixture_open(fixture *f, unsigned timeout_ms, unsigned max_inflight)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    cache_limits lim = {.timeout_ms = timeout_ms, .max_inflight = max_inflight};
    assert_int_equal(cache_open(&f->loop, srv.addr, &lim, &f->c), 0);
}

/* Closes the cache (if the test did not), runs the loop until every handle has closed. */
static void fixture_close(fixture *f)
{
    if (f->c) cache_close(f->c);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static cache_stats stats(const fixture *f)
{
    cache_stats s;
    cache_get_stats(f->c, &s);
    return s;
}

/* A key of its own for each test (the server may be shared through REDIS_ADDR). */
static const char *key(const char *name)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "test.cache.%d.%s", (int)getpid(), name);
    return buf;
}

/* ---- tests ---- */

/* Commands issued before the connection is up wait for it; a binary value comes back intact;
 * an absent key is a miss. */
static void test_set_get_miss(void **state)
{
    need_server();
    fixture f;
    fixture_open(&f, 2000, 0);
    cache_set(f.c, key("a"), "v\0w", 3, 10000, 0);
    got g;
    assert_int_equal(get_wait(&f.loop, f.c, key("a"), &g), 0);
    assert_int_equal(g.len, 3);
    assert_memory_equal(g.value, "v\0w", 3);
    assert_int_equal(get_wait(&f.loop, f.c, key("absent"), &g), REG_ENOTFOUND);
    cache_stats s = stats(&f);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.errors, 0);
    assert_int_equal(s.dropped, 0);
    cache_del(f.c, key("a"));
    fixture_close(&f);
}

/* SET NX does not overwrite a value, and sets an absent one. */
static void test_only_if_absent(void **state)
{
    need_server();
    fixture f;
    fixture_open(&f, 2000, 0);
    char k2[128];
    snprintf(k2, sizeof k2, "%s", key("nx2"));
    cache_del(f.c, k2);
    cache_set(f.c, key("nx"), "first", 5, 10000, 0);
    cache_set(f.c, key("nx"), "second", 6, 10000, 1);
    cache_set(f.c, k2, "only", 4, 10000, 1);
    got g;
    assert_int_equal(get_wait(&f.loop, f.c, key("nx"), &g), 0);
    assert_int_equal(g.len, 5);
    assert_memory_equal(g.value, "first", 5);
    assert_int_equal(get_wait(&f.loop, f.c, k2, &g), 0);
    assert_int_equal(g.len, 4);
    assert_memory_equal(g.value, "only", 4);
    cache_del(f.c, key("nx"));
    cache_del(f.c, k2);
    fixture_close(&f);
}

/* A value set with a 100 ms TTL is there at once and gone 200 ms later. */
static void test_ttl(void **state)
{
    need_server();
    fixture f;
    fixture_open(&f, 2000, 0);
    cache_set(f.c, key("ttl"), "x", 1, 100, 0);
    got g;
    assert_int_equal(get_wait(&f.loop, f.c, key("ttl"), &g), 0);
    run_ms(&f.loop, 200);
    assert_int_equal(get_wait(&f.loop, f.c, key("ttl"), &g), REG_ENOTFOUND);
    fixture_close(&f);
}

static void test_del(void **state)
{
    need_server();
    fixture f;
    fixture_open(&f, 2000, 0);
    cache_set(f.c, key("del"), "x", 1, 10000, 0);
    got g;
    assert_int_equal(get_wait(&f.loop, f.c, key("del"), &g), 0);
    cache_del(f.c, key("del"));
    assert_int_equal(get_wait(&f.loop, f.c, key("del"), &g), REG_ENOTFOUND);
    cache_del(f.c, key("never-set")); /* harmless */
    assert_int_equal(stats(&f).dropped, 0);
    fixture_close(&f);
}

/* A server that does not answer (SIGSTOP): the get gets REG_EUNAVAILABLE at its deadline; the
 * reply that comes after SIGCONT is ignored, and the connection keeps working (the set issued
 * during the stall was delivered). */
static void test_deadline_and_late_reply(void **state)
{
    need_own_server();
    enum { TIMEOUT = 100 };
    fixture f;
    fixture_open(&f, TIMEOUT, 0);
    assert_true(wait_ready(&f.loop, f.c, 5000));
    cache_stats before = stats(&f);

    server_signal(SIGSTOP);
    got g, g2;
    uint64_t t0 = now_ms();
    get(f.c, key("slow"), &g);
    cache_set(f.c, key("slow"), "late", 4, 10000, 0);
    get(f.c, key("slow"), &g2);
    run_until(&f.loop, &g2.calls, 1, 5000);
    server_signal(SIGCONT);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.err, REG_EUNAVAILABLE);
    assert_int_equal(g2.err, REG_EUNAVAILABLE);
    assert_true(g.at_ms - t0 >= TIMEOUT - 5);
    assert_true(g.at_ms - t0 < TIMEOUT + 400); /* slack for a slow (sanitized) build */
    assert_int_equal(stats(&f).errors, before.errors + 2);

    /* Asked before the late replies are read: they come first and must not answer it. */
    got g3;
    assert_int_equal(get_wait(&f.loop, f.c, key("slow"), &g3), 0);
    assert_memory_equal(g3.value, "late", 4);
    run_ms(&f.loop, 100);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g2.calls, 1);
    assert_int_equal(stats(&f).hits, before.hits + 1);
    cache_del(f.c, key("slow"));
    fixture_close(&f);
}

/* A server that stays silent longer than connect_timeout_ms with commands in flight: the
 * connection is dropped (commands then fail at once) and made again once it answers. */
static void test_stalled_connection_dropped(void **state)
{
    need_own_server();
    fixture f;
    assert_int_equal(uv_loop_init(&f.loop), 0);
    cache_limits lim = {.timeout_ms = 50, .connect_timeout_ms = 200};
    assert_int_equal(cache_open(&f.loop, srv.addr, &lim, &f.c), 0);
    assert_true(wait_ready(&f.loop, f.c, 5000));

    server_signal(SIGSTOP);
    got g;
    assert_int_equal(get_wait(&f.loop, f.c, key("k"), &g), REG_EUNAVAILABLE); /* deadline */
    run_ms(&f.loop, 600); /* the stall check drops the connection */
    uint64_t t0 = now_ms();
    get(f.c, key("k"), &g);
    run_until(&f.loop, &g.calls, 1, 5000);
    assert_int_equal(g.err, REG_EUNAVAILABLE);
    assert_true(g.at_ms - t0 < 40); /* at once: not sent */
    cache_set(f.c, key("k"), "x", 1, 1000, 0);
    assert_int_equal(stats(&f).dropped, 1);

    server_signal(SIGCONT);
    assert_true(wait_ready(&f.loop, f.c, 10000));
    fixture_close(&f);
}

/* The server dies: a get in flight is answered at once (not at its deadline); while it is
 * down, gets fail at once and sets and deletes are dropped; when it is back on the same port,
 * the cache reconnects by itself. */
static void test_server_killed_and_restarted(void **state)
{
    need_own_server();
    enum { TIMEOUT = 2000 };
    fixture f;
    fixture_open(&f, TIMEOUT, 0);
    assert_true(wait_ready(&f.loop, f.c, 5000));

    server_signal(SIGSTOP);
    got g;
    uint64_t t0 = now_ms();
    get(f.c, key("k"), &g);
    run_ms(&f.loop, 20); /* sent, unanswered */
    server_kill();       /* the kernel resets the connection */
    run_until(&f.loop, &g.calls, 1, 5000);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.err, REG_EUNAVAILABLE);
    assert_true(g.at_ms - t0 < TIMEOUT / 2);

    cache_stats before = stats(&f);
    for (int i = 0; i < 3; i++) {
        t0 = now_ms();
        get(f.c, key("k"), &g);
        run_until(&f.loop, &g.calls, 1, 5000);
        assert_int_equal(g.calls, 1);
        assert_int_equal(g.err, REG_EUNAVAILABLE);
        assert_true(g.at_ms - t0 < 100); /* at once, not at the 2 s deadline */
        cache_set(f.c, key("k"), "x", 1, 10000, 0);
        cache_del(f.c, key("k"));
        run_ms(&f.loop, 150); /* across a reconnect attempt or two */
    }
    cache_stats after = stats(&f);
    assert_int_equal(after.dropped, before.dropped + 6);
    assert_int_equal(after.errors, before.errors + 3);

    assert_true(server_start());
    assert_true(wait_ready(&f.loop, f.c, 10000)); /* backoff at most 2 s */
    cache_set(f.c, key("k"), "back", 4, 10000, 0);
    assert_int_equal(get_wait(&f.loop, f.c, key("k"), &g), 0);
    assert_memory_equal(g.value, "back", 4);
    cache_del(f.c, key("k"));
    fixture_close(&f);
}

/* No server at all: gets fail at once, the cache closes cleanly while retrying. */
static void test_no_server(void **state)
{
    int port = free_port();
    assert_true(port > 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    fixture f;
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(cache_open(&f.loop, addr, &(cache_limits){.timeout_ms = 2000}, &f.c), 0);
    run_ms(&f.loop, 20);
    got g;
    uint64_t t0 = now_ms();
    assert_int_equal(get_wait(&f.loop, f.c, "k", &g), REG_EUNAVAILABLE);
    assert_true(g.at_ms - t0 < 100); /* the refusal is noticed at once */
    cache_set(f.c, "k", "v", 1, 1000, 0);
    assert_int_equal(stats(&f).dropped, 1);
    fixture_close(&f);
}

/* Past max_inflight, gets fail (answered on the loop) and sets are dropped. */
static void test_max_inflight(void **state)
{
    need_server();
    enum { MAX = 4, N = 10 };
    fixture f;
    fixture_open(&f, 2000, MAX);
    assert_true(wait_ready(&f.loop, f.c, 5000));
    cache_stats before = stats(&f);
    got g[N];
    for (int i = 0; i < MAX; i++)
        get(f.c, key("absent"), &g[i]);
    cache_set(f.c, key("absent"), "x", 1, 1000, 0);
    for (int i = MAX; i < N; i++)
        get(f.c, key("absent"), &g[i]);
    for (int i = 0; i < N; i++)
        run_until(&f.loop, &g[i].calls, 1, 5000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].err, i < MAX ? REG_ENOTFOUND : REG_EUNAVAILABLE);
    }
    cache_stats s = stats(&f);
    assert_int_equal(s.dropped, before.dropped + 1);
    assert_int_equal(s.misses, before.misses + MAX);
    assert_int_equal(s.errors, before.errors + N - MAX);
    fixture_close(&f);
}

/* cache_close with gets in flight and gets waiting to be failed: each callback runs once, with
 * REG_ECLOSED. */
static void test_close_pending(void **state)
{
    need_server();
    enum { MAX = 3, N = 6 };
    fixture f;
    fixture_open(&f, 2000, MAX);
    assert_true(wait_ready(&f.loop, f.c, 5000));
    got g[N];
    for (int i = 0; i < N; i++)
        get(f.c, key("absent"), &g[i]);
    cache_close(f.c);
    f.c = NULL;
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].err, REG_ECLOSED);
    }
    fixture_close(&f);
    for (int i = 0; i < N; i++)
        assert_int_equal(g[i].calls, 1);
}

/* Closing from inside a get callback (inside hiredis' reply callback), with more gets in flight,
 * and closing while the server stalls; the replies that follow touch nothing. */
static void test_close_from_callback_and_stalled(void **state)
{
    need_own_server();
    fixture f;
    fixture_open(&f, 2000, 0);
    cache_set(f.c, key("c"), "x", 1, 10000, 0);
    got g[4];
    get(f.c, key("c"), &g[0]);
    g[0].close_it = f.c;
    for (int i = 1; i < 4; i++)
        get(f.c, key("c"), &g[i]);
    run_until(&f.loop, &g[0].calls, 1, 5000);
    assert_int_equal(g[0].err, 0);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].err, REG_ECLOSED);
    }
    f.c = NULL;
    fixture_close(&f);

    fixture_open(&f, 2000, 0);
    assert_true(wait_ready(&f.loop, f.c, 5000));
    server_signal(SIGSTOP);
    for (int i = 0; i < 4; i++)
        get(f.c, key("c"), &g[i]);
    run_ms(&f.loop, 50);
    cache_close(f.c);
    f.c = NULL;
    server_signal(SIGCONT);
    fixture_close(&f);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].err, REG_ECLOSED);
    }
}

/* A host name is resolved off the loop; closing while it resolves is safe. */
static void test_host_name(void **state)
{
    need_own_server();
    char addr[64];
    snprintf(addr, sizeof addr, "localhost:%d", srv.port);
    fixture f;
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(cache_open(&f.loop, addr, NULL, &f.c), 0);
    assert_true(wait_ready(&f.loop, f.c, 5000));
    fixture_close(&f);

    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(cache_open(&f.loop, addr, NULL, &f.c), 0);
    fixture_close(&f); /* at once: the lookup is cancelled or its result dropped */
}

static void test_bad_args(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    cache *c = NULL;
    assert_int_equal(cache_open(&loop, "nohost:notaport", NULL, &c), REG_EINVAL);
    assert_int_equal(cache_open(&loop, ":6379", NULL, &c), REG_EINVAL);
    assert_int_equal(cache_open(&loop, NULL, NULL, &c), REG_EINVAL);
    assert_null(c);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* hiredis writes to sockets the server may have reset */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bad_args, server_restore),
        cmocka_unit_test_teardown(test_set_get_miss, server_restore),
        cmocka_unit_test_teardown(test_only_if_absent, server_restore),
        cmocka_unit_test_teardown(test_ttl, server_restore),
        cmocka_unit_test_teardown(test_del, server_restore),
        cmocka_unit_test_teardown(test_max_inflight, server_restore),
        cmocka_unit_test_teardown(test_close_pending, server_restore),
        cmocka_unit_test_teardown(test_deadline_and_late_reply, server_restore),
        cmocka_unit_test_teardown(test_close_from_callback_and_stalled, server_restore),
        cmocka_unit_test_teardown(test_stalled_connection_dropped, server_restore),
        cmocka_unit_test_teardown(test_no_server, server_restore),
        cmocka_unit_test_teardown(test_host_name, server_restore),
        cmocka_unit_test_teardown(test_server_killed_and_restarted, server_restore),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    server_kill(); /* also when a test failed mid-way */
    return failed;
}
