/*
 * bus.c - the two backends of the notification bus (bus.h).
 *
 * Both keep, per subscribed loop, a `bus_loop`: the loop's subscriptions (channel, callback)
 * and the handles that deliver to it. Callbacks always run on the subscribed loop.
 *
 *  - local: bus_publish, from any thread, copies the message into the queue of every loop that
 *    has a subscription to the channel and wakes that loop with its uv_async_t; the loop then
 *    hands each queued message to its subscriptions of that channel, in publish order. Each
 *    queue is bounded (BUS_QUEUE_MAX): past it, messages are dropped and counted (logged by the
 *    loop). Pub/sub is at-most-once by contract, so a subscriber that falls that far behind
 *    recovers from the view, as it does after a Redis outage.
 *  - redis: bus_publish runs PUBLISH on one synchronous connection guarded by a mutex (1 s
 *    connect and command timeouts), reconnecting once on error. Each subscribed loop has one
 *    async connection attached to it (hiredis' libuv adapter) carrying SUBSCRIBE for all of that
 *    loop's channels; "message" replies go to the callbacks. When that connection drops, a
 *    uv_timer retries with a backoff (BUS_BACKOFF_MIN_MS doubling to BUS_BACKOFF_MAX_MS) and
 *    subscribes again; messages published meanwhile are lost, as Redis pub/sub loses them.
 *
 * Threads: bus_publish may run on any thread. bus_subscribe and bus_unsubscribe_all touch the
 * loop's handles, which libuv allows only on the loop's own thread: call them there (a callback
 * may), or while the loop is not running. bus.mu guards the list of loops, each loop's
 * subscription list against publishers (local) and the local queues.
 */
#include "bus.h"
#include "err.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>
#include <uv.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    BUS_QUEUE_MAX = 100000,      /* messages waiting for one loop (local backend) */
    BUS_REDIS_TIMEOUT_MS = 1000, /* publisher's connect and command timeout */
    BUS_BACKOFF_MIN_MS = 100,    /* subscriber reconnect delays */
    BUS_BACKOFF_MAX_MS = 2000,
    BUS_CONNECT_TIMEOUT_MS = 1000, /* subscriber's connect */
    BUS_PROBE_MS = 5000,           /* subscriber's liveness probe period */
    BUS_REDIS_DEFAULT_PORT = 6379,
};

typedef struct bus_sub {
    struct bus_sub *next;
    char *channel;
    bus_msg_cb cb;
    void *arg;
} bus_sub;

/* A published message waiting in a loop's queue (local backend): one allocation holding the
 * channel and the message, both NUL-terminated. Owned by the queue, then by the loop's
 * dispatch, which frees it. */
typedef struct bus_msg {
    struct bus_msg *next;
    size_t len;
    char *msg; /* into data, after the channel */
    char data[];
} bus_msg;

typedef struct bus_loop {
    struct bus_loop *next; /* in bus.loops, under bus.mu */
    bus *b;
    uv_loop_t *loop;
    /* Appended (under bus.mu) only on the loop's thread; read there freely, and by publishers
     * under bus.mu. Freed with the bus_loop. */
    bus_sub *subs;
    bool closing; /* unsubscribed: handles closing, deliver nothing more (loop thread) */

    /* local backend; the queue is under bus.mu */
    uv_async_t async;
    bus_msg *head, *tail;
    size_t queued;
    unsigned long dropped;

    /* redis backend, loop thread only */
    redisAsyncContext *ac; /* NULL while disconnected; hiredis owns and frees it */
    uv_timer_t timer;      /* reconnect, connect deadline, probe (see below) */
    int backoff_ms;
    bool connected;
    bool probe_pending;
    bool down_logged; /* the outage was logged: log once, then once when back */
} bus_loop;

struct bus {
    bool redis;
    pthread_mutex_t mu;
    bus_loop *loops;

    /* redis backend */
    char *host;
    int port;
    pthread_mutex_t pub_mu;
    redisContext *pub; /* under pub_mu; NULL when not connected */
    bool pub_down_logged;
};

/* ---- common ---- */

/* The loop's entry, or NULL; mu held. */
static bus_loop *find_loop(bus *b, uv_loop_t *loop)
{
    for (bus_loop *bl = b->loops; bl; bl = bl->next)
        if (bl->loop == loop) return bl;
    return NULL;
}

/* Whether the loop has a subscription to channel; mu held (or on the loop's thread). */
static bool loop_wants(const bus_loop *bl, const char *channel)
{
    for (const bus_sub *s = bl->subs; s; s = s->next)
        if (!strcmp(s->channel, channel)) return true;
    return false;
}

/* Runs the loop's callbacks for one message (loop thread). A callback may unsubscribe the
 * loop: then the rest are skipped (the bus_loop stays valid until its handle has closed). */
static void dispatch(bus_loop *bl, const char *channel, const char *msg, size_t len)
{
    for (bus_sub *s = bl->subs; s && !bl->closing; s = s->next)
        if (!strcmp(s->channel, channel)) s->cb(s->arg, channel, msg, len);
}

static void free_loop(bus_loop *bl)
{
    for (bus_sub *s = bl->subs, *next; s; s = next) {
        next = s->next;
        free(s->channel);
        free(s);
    }
    for (bus_msg *m = bl->head, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    free(bl);
}

/* Close callback of the bus_loop's own handle (async or timer): the last use of it. */
static void on_loop_handle_closed(uv_handle_t *h)
{
    free_loop(h->data);
}

/* ---- local backend ---- */

static int local_publish(bus *b, const char *channel, const char *msg, size_t len)
{
    size_t clen = strlen(channel);
    pthread_mutex_lock(&b->mu);
    for (bus_loop *bl = b->loops; bl; bl = bl->next) {
        if (!loop_wants(bl, channel)) continue;
        if (bl->queued >= BUS_QUEUE_MAX) {
            bl->dropped++; /* at-most-once: the subscriber catches up from the view */
            continue;
        }
        bus_msg *m = malloc(sizeof *m + clen + 1 + len + 1);
        if (!m) {
            bl->dropped++;
            continue;
        }
        m->next = NULL;
        m->len = len;
        memcpy(m->data, channel, clen + 1);
        m->msg = m->data + clen + 1;
        memcpy(m->msg, msg, len);
        m->msg[len] = '\0';
        if (bl->tail)
            bl->tail->next = m;
        else
            bl->head = m;
        bl->tail = m; /* the queue owns m */
        bl->queued++;
        uv_async_send(&bl->async); /* thread-safe; coalesces wake-ups */
    }
    pthread_mutex_unlock(&b->mu);
    return 0;
}

/* The loop was woken: take its whole queue and deliver it (loop thread). */
static void on_async(uv_async_t *h)
{
    bus_loop *bl = h->data;
    bus *b = bl->b;
    pthread_mutex_lock(&b->mu);
    bus_msg *m = bl->head; /* now ours */
    bl->head = bl->tail = NULL;
    bl->queued = 0;
    unsigned long dropped = bl->dropped;
    bl->dropped = 0;
    pthread_mutex_unlock(&b->mu);
    if (dropped)
        fprintf(stderr, "bus: a subscriber fell %d messages behind; %lu messages dropped\n",
                BUS_QUEUE_MAX, dropped);
    while (m) {
        bus_msg *next = m->next;
        dispatch(bl, m->data, m->msg, m->len);
        free(m);
        m = next;
    }
}

/* ---- redis backend: publisher ---- */

/* A synchronous connection with timeouts, or NULL (the reason logged once per outage); pub_mu
 * held. */
static redisContext *redis_connect_sync(bus *b)
{
    struct timeval tv = {.tv_sec = BUS_REDIS_TIMEOUT_MS / 1000,
                         .tv_usec = BUS_REDIS_TIMEOUT_MS % 1000 * 1000};
    redisContext *c = redisConnectWithTimeout(b->host, b->port, tv);
    if (c && !c->err && redisSetTimeout(c, tv) == REDIS_OK) return c;
    if (!b->pub_down_logged)
        fprintf(stderr, "bus(redis) %s:%d: publisher cannot connect: %s\n", b->host, b->port,
                c ? c->errstr : "out of memory");
    b->pub_down_logged = true;
    if (c) redisFree(c);
    return NULL;
}

/* PUBLISH, reconnecting once when the connection fails (a restarted server closed it). If the
 * server executed the first attempt but its reply was lost, the retry delivers the message
 * twice: subscribers take messages as hints (bus.h), so that is harmless. */
static int redis_publish(bus *b, const char *channel, const char *msg, size_t len)
{
    int rc = REG_EREDIS;
    pthread_mutex_lock(&b->pub_mu);
    for (int attempt = 0; attempt < 2 && rc; attempt++) {
        if (!b->pub && !(b->pub = redis_connect_sync(b))) continue;
        redisReply *r = redisCommand(b->pub, "PUBLISH %s %b", channel, msg, len);
        if (!r) { /* I/O error or timeout: the connection is unusable */
            if (!b->pub_down_logged)
                fprintf(stderr, "bus(redis) %s:%d: publish: %s\n", b->host, b->port,
                        b->pub->errstr);
            b->pub_down_logged = true;
            redisFree(b->pub);
            b->pub = NULL;
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) { /* refused by the server: retrying won't help */
            fprintf(stderr, "bus(redis) %s:%d: publish: %s\n", b->host, b->port, r->str);
            freeReplyObject(r);
            break;
        }
        freeReplyObject(r);
        rc = 0;
        if (b->pub_down_logged)
            fprintf(stderr, "bus(redis) %s:%d: publisher reconnected\n", b->host, b->port);
        b->pub_down_logged = false;
    }
    pthread_mutex_unlock(&b->pub_mu);
    return rc;
}

/* ---- redis backend: subscribers (all on the loop's thread) ----
 *
 * The loop's timer drives the connection: while disconnected it is the reconnect backoff; while
 * connecting, a deadline (hiredis 0.14 has no async connect timeout, and its libuv adapter drops
 * the error status libuv reports for a refused connect, so that would never end otherwise);
 * once connected, a probe every BUS_PROBE_MS. The probe repeats a SUBSCRIBE (one of the few
 * commands a subscribed connection accepts; Redis acknowledges it again) and a probe still
 * unanswered at the next tick drops the connection: that is how a peer gone silent, or a socket
 * error the adapter swallowed, is noticed. */

static void redis_connect_async(bus_loop *bl);

static void log_down(bus_loop *bl, const char *why)
{
    if (bl->down_logged) return;
    fprintf(stderr, "bus(redis) %s:%d: subscriber connection lost (%s); reconnecting\n",
            bl->b->host, bl->b->port, why);
    bl->down_logged = true;
}

static void on_timer(uv_timer_t *t);

static void schedule_reconnect(bus_loop *bl)
{
    uv_timer_start(&bl->timer, on_timer, (uint64_t)bl->backoff_ms, 0);
    bl->backoff_ms =
        bl->backoff_ms * 2 < BUS_BACKOFF_MAX_MS ? bl->backoff_ms * 2 : BUS_BACKOFF_MAX_MS;
}

/* Gives up on the current connection and schedules the next. */
static void drop_connection(bus_loop *bl, const char *why)
{
    redisAsyncContext *ac = bl->ac;
    bl->ac = NULL;
    bl->connected = bl->probe_pending = false;
    ac->data = NULL; /* its callbacks, run while it is freed, must find nothing */
    redisAsyncFree(ac);
    log_down(bl, why);
    schedule_reconnect(bl);
}

static void send_subscribe(bus_loop *bl, const char *channel);

static void on_timer(uv_timer_t *t)
{
    bus_loop *bl = t->data;
    if (bl->closing) return;
    if (!bl->ac)
        redis_connect_async(bl);
    else if (!bl->connected)
        drop_connection(bl, "connect timed out");
    else if (bl->probe_pending)
        drop_connection(bl, "no answer");
    else {
        bl->probe_pending = true;
        send_subscribe(bl, bl->subs->channel);
    }
}

/* Replies on the subscribed connection: "subscribe" acknowledgements and "message"s. hiredis
 * frees the reply after the call, and calls with a NULL reply when it drops the connection. */
static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_loop *bl = ac->data; /* NULL once dropped: the context is on its way out */
    redisReply *reply = r;
    if (!bl || !reply || bl->closing) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "bus(redis) %s:%d: subscribe: %s\n", bl->b->host, bl->b->port, reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;
    redisReply *kind = reply->element[0], *chan = reply->element[1], *msg = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING) return;
    if (!strcmp(kind->str, "subscribe")) {
        bl->probe_pending = false; /* alive */
        if (bl->down_logged)
            fprintf(stderr, "bus(redis) %s:%d: subscriber reconnected and resubscribed\n",
                    bl->b->host, bl->b->port);
        bl->down_logged = false;
        return;
    }
    if (strcmp(kind->str, "message") || msg->type != REDIS_REPLY_STRING) return;
    dispatch(bl, chan->str, msg->str, msg->len);
}

static void send_subscribe(bus_loop *bl, const char *channel)
{
    if (redisAsyncCommand(bl->ac, on_sub_reply, NULL, "SUBSCRIBE %s", channel) != REDIS_OK)
        fprintf(stderr, "bus(redis) %s:%d: subscribe %s: %s\n", bl->b->host, bl->b->port, channel,
                bl->ac->errstr);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    bus_loop *bl = ac->data;
    if (!bl) return;
    if (status != REDIS_OK) { /* hiredis frees ac after this call */
        bl->ac = NULL;
        log_down(bl, ac->errstr);
        schedule_reconnect(bl);
        return;
    }
    bl->connected = true;
    bl->backoff_ms = BUS_BACKOFF_MIN_MS;
    uv_timer_start(&bl->timer, on_timer, BUS_PROBE_MS, BUS_PROBE_MS);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    bus_loop *bl = ac->data;
    if (!bl) return;
    bl->ac = NULL; /* hiredis frees ac after this call */
    bl->connected = bl->probe_pending = false;
    log_down(bl, status == REDIS_OK ? "closed" : ac->errstr);
    schedule_reconnect(bl);
}

/* Opens the loop's subscriber connection and subscribes to its channels (the SUBSCRIBEs wait
 * in hiredis' buffer until connected). On failure, retries later. */
static void redis_connect_async(bus_loop *bl)
{
    redisAsyncContext *ac = redisAsyncConnect(bl->b->host, bl->b->port);
    if (!ac || ac->err) {
        log_down(bl, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(bl);
        return;
    }
    if (redisLibuvAttach(ac, bl->loop) != REDIS_OK) {
        log_down(bl, "cannot attach to the loop");
        redisAsyncFree(ac);
        schedule_reconnect(bl);
        return;
    }
    ac->data = bl;
    /* Set after attaching: the connect callback asks the loop for the first write event. */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    bl->ac = ac; /* hiredis owns it; we drop it with redisAsyncFree */
    for (bus_sub *s = bl->subs; s; s = s->next) {
        bool first = true; /* one SUBSCRIBE per channel */
        for (bus_sub *t = bl->subs; t != s; t = t->next)
            if (!strcmp(t->channel, s->channel)) first = false;
        if (first) send_subscribe(bl, s->channel);
    }
    uv_timer_start(&bl->timer, on_timer, BUS_CONNECT_TIMEOUT_MS, 0);
}

/* ---- public calls ---- */

/* Splits "host:port" (port optional). 0 or REG_EINVAL. */
static int parse_addr(bus *b, const char *addr)
{
    const char *colon = strrchr(addr, ':');
    size_t hlen = colon ? (size_t)(colon - addr) : strlen(addr);
    b->port = BUS_REDIS_DEFAULT_PORT;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port > 65535) return REG_EINVAL;
        b->port = (int)port;
    }
    if (hlen == 0) return REG_EINVAL;
    b->host = strndup(addr, hlen);
    return b->host ? 0 : REG_ENOMEM;
}

int bus_open(const char *redis_addr, bus **out)
{
    if (!out) return REG_EINVAL;
    bus *b = calloc(1, sizeof *b);
    if (!b) return REG_ENOMEM;
    if (redis_addr) {
        b->redis = true;
        int rc = parse_addr(b, redis_addr);
        if (rc) {
            if (rc == REG_EINVAL) fprintf(stderr, "bus: bad redis address '%s'\n", redis_addr);
            free(b->host);
            free(b);
            return rc;
        }
        pthread_mutex_init(&b->pub_mu, NULL);
    }
    pthread_mutex_init(&b->mu, NULL);
    *out = b; /* the caller owns the bus */
    return 0;
}

void bus_close(bus *b)
{
    if (!b) return;
    if (b->loops) /* their handles can only be closed on their loops: leave them */
        fprintf(stderr, "bus: closed with subscriptions left (bus_unsubscribe_all first)\n");
    if (b->redis) {
        if (b->pub) redisFree(b->pub);
        pthread_mutex_destroy(&b->pub_mu);
        free(b->host);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int bus_publish(bus *b, const char *channel, const char *msg, size_t len)
{
    if (!b || !channel || (!msg && len)) return REG_EINVAL;
    if (!msg) msg = "";
    return b->redis ? redis_publish(b, channel, msg, len) : local_publish(b, channel, msg, len);
}

int bus_subscribe(bus *b, struct uv_loop_s *loop, const char *channel, bus_msg_cb cb, void *arg)
{
    if (!b || !loop || !channel || !cb) return REG_EINVAL;
    bus_sub *s = calloc(1, sizeof *s);
    if (!s || !(s->channel = strdup(channel))) {
        free(s);
        return REG_ENOMEM;
    }
    s->cb = cb;
    s->arg = arg;

    pthread_mutex_lock(&b->mu);
    bus_loop *bl = find_loop(b, loop);
    bool fresh = !bl;
    if (fresh) {
        if (!(bl = calloc(1, sizeof *bl))) {
            pthread_mutex_unlock(&b->mu);
            free(s->channel);
            free(s);
            return REG_ENOMEM;
        }
        bl->b = b;
        bl->loop = loop;
        bl->backoff_ms = BUS_BACKOFF_MIN_MS;
        int err =
            b->redis ? uv_timer_init(loop, &bl->timer) : uv_async_init(loop, &bl->async, on_async);
        if (err) {
            pthread_mutex_unlock(&b->mu);
            fprintf(stderr, "bus: %s\n", uv_strerror(err));
            free(bl);
            free(s->channel);
            free(s);
            return REG_ENOMEM;
        }
        bl->timer.data = bl;
        bl->async.data = bl;
        bl->next = b->loops;
        b->loops = bl;
    }
    bool known = loop_wants(bl, channel);
    bus_sub **tail = &bl->subs; /* append: callbacks run in subscription order */
    while (*tail)
        tail = &(*tail)->next;
    *tail = s; /* the bus_loop owns s */
    pthread_mutex_unlock(&b->mu);

    if (b->redis) {
        if (fresh)
            redis_connect_async(bl);
        else if (bl->ac && !known)
            send_subscribe(bl, channel);
        /* else: subscribed when the connection is (re)made */
    }
    return 0;
}

void bus_unsubscribe_all(bus *b, struct uv_loop_s *loop)
{
    if (!b || !loop) return;
    pthread_mutex_lock(&b->mu);
    bus_loop **pp = &b->loops;
    while (*pp && (*pp)->loop != loop)
        pp = &(*pp)->next;
    bus_loop *bl = *pp;
    if (bl) *pp = bl->next; /* publishers no longer see it */
    pthread_mutex_unlock(&b->mu);
    if (!bl) return;

    bl->closing = true;
    if (!b->redis) {
        uv_close((uv_handle_t *)&bl->async, on_loop_handle_closed);
        return;
    }
    if (bl->ac) {
        /* Detach first: hiredis may free the context later (when called from one of its
         * callbacks), and its callbacks must then find nothing to touch. Its poll handle
         * closes on the loop by itself. */
        bl->ac->data = NULL;
        redisAsyncFree(bl->ac);
        bl->ac = NULL;
    }
    uv_close((uv_handle_t *)&bl->timer, on_loop_handle_closed);
}
