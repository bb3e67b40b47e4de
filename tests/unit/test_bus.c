/*
 * test_bus.c - the notification bus (common/bus.c).
 *
 * Local backend: messages published from another thread arrive on the subscribed loop, in
 * order; channels are kept apart; two loops subscribed to one channel both get every message; a
 * loop that falls too far behind loses the excess (counted), not the order.
 *
 * Redis backend, when REDIS_ADDR is set (ops/redis.sh start): a publish/subscribe round trip on
 * that server; and, when redis-server is on the PATH, a restart of a private server (started by
 * the test on another port, so the shared one is left alone) in the middle of a subscription,
 * which the subscriber survives. Both are skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "err.h"

/* What one subscription received. Written on its loop's thread; read by the test's thread
 * under mu. */
typedef struct inbox {
    pthread_mutex_t mu;
    char channel[32];
    char **msgs;
    int n, cap;
    int wrong;      /* messages of another channel: must stay 0 */
    int stop_after; /* unsubscribe the loop once this many arrived (0: never) */
    bus *b;
    uv_loop_t *loop;
} inbox;

static void inbox_init(inbox *in, bus *b, uv_loop_t *loop, const char *channel, int stop_after)
{
    memset(in, 0, sizeof *in);
    pthread_mutex_init(&in->mu, NULL);
    snprintf(in->channel, sizeof in->channel, "%s", channel);
    in->stop_after = stop_after;
    in->b = b;
    in->loop = loop;
}

static void inbox_free(inbox *in)
{
    assert_int_equal(in->wrong, 0);
    for (int i = 0; i < in->n; i++)
        free(in->msgs[i]);
    free(in->msgs);
    pthread_mutex_destroy(&in->mu);
}

static int inbox_count(inbox *in)
{
    pthread_mutex_lock(&in->mu);
    int n = in->n;
    pthread_mutex_unlock(&in->mu);
    return n;
}

/* Whether msg has arrived (test's thread). */
static bool inbox_has(inbox *in, const char *msg)
{
    bool found = false;
    pthread_mutex_lock(&in->mu);
    for (int i = 0; i < in->n && !found; i++)
        found = !strcmp(in->msgs[i], msg);
    pthread_mutex_unlock(&in->mu);
    return found;
}

static void on_msg(void *arg, const char *channel, const char *msg, size_t len)
{
    inbox *in = arg;
    pthread_mutex_lock(&in->mu);
    /* (This may run on another thread than the test's: count, assert later.) */
    if (strcmp(channel, in->channel)) in->wrong++;
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 64;
        in->msgs = realloc(in->msgs, (size_t)in->cap * sizeof *in->msgs);
    }
    in->msgs[in->n++] = strndup(msg, len); /* msg is valid during the call only */
    bool stop = in->stop_after && in->n == in->stop_after;
    pthread_mutex_unlock(&in->mu);
    if (stop) bus_unsubscribe_all(in->b, in->loop); /* from inside a callback: allowed */
}

static void publish_seq(bus *b, const char *channel, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        char m[64];
        snprintf(m, sizeof m, "%s%d", prefix, i);
        assert_int_equal(bus_publish(b, channel, m, strlen(m)), 0);
    }
}

static void expect_seq(inbox *in, const char *prefix, int first, int n)
{
    assert_true(in->n >= first + n);
    for (int i = 0; i < n; i++) {
        char m[64];
        snprintf(m, sizeof m, "%s%d", prefix, i);
        assert_string_equal(in->msgs[first + i], m);
    }
}

/* ---- local ---- */

typedef struct publisher {
    bus *b;
    const char *channels[3];
    int n;
} publisher;

/* Publishes "<i>" on each channel in turn, n rounds. */
static void *publisher_main(void *arg)
{
    publisher *p = arg;
    for (int i = 0; i < p->n; i++)
        for (int c = 0; c < 3 && p->channels[c]; c++) {
            char m[32];
            snprintf(m, sizeof m, "%d", i);
            if (bus_publish(p->b, p->channels[c], m, strlen(m))) return "publish failed";
        }
    return NULL;
}

/* Publisher thread -> this loop, two channels subscribed and one not, in order. */
static void test_local_order_and_channels(void **state)
{
    enum { N = 5000 };
    bus *b;
    assert_int_equal(bus_open(NULL, &b), 0);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    inbox outcome, commit;
    inbox_init(&outcome, b, &loop, "outcome", 0);
    inbox_init(&commit, b, &loop, "commit", N); /* "commit" comes last each round: stop there */
    assert_int_equal(bus_subscribe(b, &loop, "outcome", on_msg, &outcome), 0);
    assert_int_equal(bus_subscribe(b, &loop, "commit", on_msg, &commit), 0);

    publisher p = {.b = b, .channels = {"outcome", "other", "commit"}, .n = N};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, publisher_main, &p), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the callback unsubscribed */
    void *res;
    pthread_join(t, &res);
    assert_null(res);

    assert_int_equal(outcome.n, N);
    assert_int_equal(commit.n, N);
    expect_seq(&outcome, "", 0, N);
    expect_seq(&commit, "", 0, N);
    assert_int_equal(uv_loop_close(&loop), 0);
    bus_close(b);
    inbox_free(&outcome);
    inbox_free(&commit);
}

static void *run_loop(void *arg)
{
    uv_run(arg, UV_RUN_DEFAULT);
    return NULL;
}

/* Two loops on their own threads, both subscribed to one channel: both get every message. */
static void test_local_two_loops(void **state)
{
    enum { N = 3000 };
    bus *b;
    assert_int_equal(bus_open(NULL, &b), 0);
    uv_loop_t loops[2];
    inbox in[2];
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(uv_loop_init(&loops[i]), 0);
        inbox_init(&in[i], b, &loops[i], "commit", N);
        /* Subscribed before the loop runs (its handles may be touched only on its thread). */
        assert_int_equal(bus_subscribe(b, &loops[i], "commit", on_msg, &in[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, run_loop, &loops[i]), 0);
    publish_seq(b, "commit", "c", N);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(in[i].n, N);
        expect_seq(&in[i], "c", 0, N);
        assert_int_equal(uv_loop_close(&loops[i]), 0);
        inbox_free(&in[i]);
    }
    bus_close(b);
}

/* A loop that doesn't run while 100k+ messages are published gets the first 100k. */
static void test_local_bounded_queue(void **state)
{
    enum { MAX = 100000, EXTRA = 50 };
    bus *b;
    assert_int_equal(bus_open(NULL, &b), 0);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    inbox in;
    inbox_init(&in, b, &loop, "commit", MAX);
    assert_int_equal(bus_subscribe(b, &loop, "commit", on_msg, &in), 0);
    publish_seq(b, "commit", "", MAX + EXTRA); /* no error: the excess is dropped */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(in.n, MAX);
    expect_seq(&in, "", 0, MAX);
    assert_int_equal(uv_loop_close(&loop), 0);
    bus_close(b);
    inbox_free(&in);
}

/* Publishing on a channel nobody subscribed to, and unsubscribing a loop that never subscribed,
 * are no-ops; bad arguments are refused. */
static void test_local_edges(void **state)
{
    bus *b;
    assert_int_equal(bus_open(NULL, &b), 0);
    assert_int_equal(bus_publish(b, "nobody", "x", 1), 0);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    bus_unsubscribe_all(b, &loop);
    assert_int_equal(bus_subscribe(b, &loop, "c", NULL, NULL), REG_EINVAL);
    assert_int_equal(bus_publish(b, NULL, "x", 1), REG_EINVAL);
    assert_int_equal(uv_loop_close(&loop), 0);
    bus_close(b);
    assert_int_equal(bus_open("nohost:notaport", &b), REG_EINVAL);
}

/* ---- redis ---- */

/* A subscriber loop on its own thread, stopped from the test's thread through an async. */
typedef struct sub_thread {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    bus *b;
    inbox in;
} sub_thread;

static void on_stop(uv_async_t *h)
{
    sub_thread *st = h->data;
    bus_unsubscribe_all(st->b, &st->loop);
    uv_close((uv_handle_t *)&st->stop, NULL);
}

static void sub_start(sub_thread *st, bus *b, const char *channel)
{
    st->b = b;
    assert_int_equal(uv_loop_init(&st->loop), 0);
    assert_int_equal(uv_async_init(&st->loop, &st->stop, on_stop), 0);
    st->stop.data = st;
    inbox_init(&st->in, b, &st->loop, channel, 0);
    assert_int_equal(bus_subscribe(b, &st->loop, channel, on_msg, &st->in), 0);
    assert_int_equal(pthread_create(&st->thread, NULL, run_loop, &st->loop), 0);
}

static void sub_stop(sub_thread *st)
{
    uv_async_send(&st->stop);
    pthread_join(st->thread, NULL);
    assert_int_equal(uv_loop_close(&st->loop), 0);
    inbox_free(&st->in);
}

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L}, NULL);
}

/* Publishes msg every 50 ms until it arrives (a subscription is live only once Redis processed
 * the SUBSCRIBE; before that, messages are lost by design). False after timeout_ms. */
static bool publish_until_received(bus *b, sub_thread *st, const char *msg, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        bus_publish(b, st->in.channel, msg, strlen(msg)); /* may fail while redis restarts */
        sleep_ms(50);
        if (inbox_has(&st->in, msg)) return true;
    }
    return false;
}

static void test_redis_round_trip(void **state)
{
    enum { N = 500 };
    const char *addr = getenv("REDIS_ADDR");
    if (!addr || !*addr) skip();
    bus *b;
    assert_int_equal(bus_open(addr, &b), 0);
    sub_thread st;
    char channel[32];
    snprintf(channel, sizeof channel, "test.bus.%d", (int)getpid());
    sub_start(&st, b, channel);
    assert_true(publish_until_received(b, &st, "hello", 10000));
    int before = inbox_count(&st.in);
    publish_seq(b, channel, "m", N);
    for (int waited = 0; inbox_count(&st.in) < before + N && waited < 10000; waited += 10)
        sleep_ms(10);
    pthread_mutex_lock(&st.in.mu);
    int first = before;
    while (first < st.in.n && !strcmp(st.in.msgs[first], "hello")) /* late hellos */
        first++;
    expect_seq(&st.in, "m", first, N);
    pthread_mutex_unlock(&st.in.mu);
    sub_stop(&st);
    bus_close(b);
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

static bool redis_start(int port)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "redis-server --bind 127.0.0.1 --port %d --save '' --appendonly no --daemonize yes "
             "--dir /tmp --pidfile /tmp/test_bus_redis_%d.pid --logfile /dev/null",
             port, port);
    if (system(cmd) != 0) return false;
    for (int i = 0; i < 100; i++, sleep_ms(50))
        if (redis_ping(port)) return true;
    return false;
}

/* SHUTDOWN NOSAVE, then waits for the port to stop answering. */
static void redis_shutdown(int port)
{
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, (struct timeval){1, 0});
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "SHUTDOWN NOSAVE"); /* no reply: the server exits */
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    for (int i = 0; i < 100 && redis_ping(port); i++)
        sleep_ms(50);
}

/* The server restarts while a loop is subscribed: the subscription comes back by itself. */
static void test_redis_restart(void **state)
{
    const char *addr = getenv("REDIS_ADDR");
    if (!addr || !*addr || system("command -v redis-server >/dev/null 2>&1") != 0) skip();
    int port = free_port();
    assert_true(port > 0);
    assert_true(redis_start(port));
    char own[64];
    snprintf(own, sizeof own, "127.0.0.1:%d", port);
    bus *b;
    assert_int_equal(bus_open(own, &b), 0);
    sub_thread st;
    sub_start(&st, b, "commit");
    bool ok = publish_until_received(b, &st, "before", 10000);

    redis_shutdown(port);
    assert_false(redis_ping(port));
    sleep_ms(300); /* the subscriber notices and starts retrying */
    ok = ok && redis_start(port);
    /* The publisher reconnects on its own too (one retry per publish). */
    ok = ok && publish_until_received(b, &st, "after", 15000);

    sub_stop(&st);
    bus_close(b);
    redis_shutdown(port);
    assert_true(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_order_and_channels), cmocka_unit_test(test_local_two_loops),
        cmocka_unit_test(test_local_bounded_queue),      cmocka_unit_test(test_local_edges),
        cmocka_unit_test(test_redis_round_trip),         cmocka_unit_test(test_redis_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
