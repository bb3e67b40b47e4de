/*
 * cache.c - the shared cache (cache.h) on Redis, through one hiredis async connection attached
 * to the caller's libuv loop.
 *
 * hiredis 0.14 has no async timeouts, so deadlines are ours. Every get sent to Redis is a
 * `cache_req` that hiredis holds as the privdata of its reply callback, and that also sits in
 * `pending`, a list in the order the gets were issued; all gets have the same timeout, so that is
 * also deadline order, and one uv_timer armed for the head's deadline serves them all. A get
 * answered by its deadline (or by cache_close) leaves `pending` and loses its callback, but its
 * memory stays with hiredis until the reply, or hiredis' NULL reply when the context goes away,
 * comes back: the reply callback is the only place a sent request is freed, so a late reply
 * always finds valid memory and nothing to call. Gets that cannot be sent (disconnected, too
 * many in flight, closing) go to `failed` and are answered from a zero-delay timer, never inside
 * cache_get.
 *
 * The connection: a second timer drives it as in bus.c. Disconnected, it is the reconnect
 * backoff (CACHE_BACKOFF_MIN_MS doubling to CACHE_BACKOFF_MAX_MS); connecting, the connect
 * deadline, which covers the TCP handshake and a first PING (a stopped server still completes
 * handshakes: only its answer shows it is up); connected, a periodic check that drops a connection
 * with commands in flight and no reply for connect_timeout_ms (a stalled or half-open peer
 * would otherwise hold max_inflight forever). Until the first connection attempt fails, commands
 * wait in hiredis' output buffer for the connection (within their deadline); after a failure, and
 * until a connection is made again, they fail at once. The adapter's event functions are replaced
 * by ours (see on_poll) so that a refused connect or a reset connection is noticed at once. A
 * host name is resolved on libuv's thread pool before each attempt (hiredis would call a blocking
 * getaddrinfo on the loop); while that runs there is no connection, so commands fail at once.
 *
 * Everything runs on the loop's thread. The process must ignore SIGPIPE (hiredis writes with
 * write(2)), as `registry` does.
 */
#include "cache.h"
#include "err.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>
#include <uv.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    CACHE_DEFAULT_TIMEOUT_MS = 50,
    CACHE_DEFAULT_MAX_INFLIGHT = 10000,
    CACHE_DEFAULT_CONNECT_TIMEOUT_MS = 1000,
    CACHE_BACKOFF_MIN_MS = 100,
    CACHE_BACKOFF_MAX_MS = 2000,
    CACHE_REDIS_DEFAULT_PORT = 6379,
};

/* A get. In `pending` while sent and unanswered (hiredis holds it as privdata and frees it in
 * the reply callback); in `failed` while waiting to be answered without having been sent (the
 * list owns it). cb is NULL once answered. */
typedef struct cache_req {
    struct cache_req *prev, *next;
    cache_get_cb cb;
    void *arg;
    uint64_t deadline; /* loop time, ms (pending) */
    int err;           /* the answer (failed) */
} cache_req;

typedef struct req_list {
    cache_req *head, *tail;
} req_list;

struct cache {
    uv_loop_t *loop;
    char *host;
    int port;
    cache_limits lim;

    redisAsyncContext *ac; /* NULL while disconnected or while hiredis tears it down */
    bool connected;        /* ac's connection is up and answered a PING */
    bool down;             /* a connection failed, none made since: commands fail at once */
    bool down_logged;      /* the outage was logged: log once, then once when back */
    bool closing;
    int backoff_ms;
    unsigned inflight;      /* commands handed to hiredis, reply not yet back */
    uint64_t last_progress; /* loop time of the last reply, or of the first command after idle */

    uv_timer_t conn_timer;     /* reconnect, connect deadline, stall check */
    uv_timer_t deadline_timer; /* the head of pending */
    uv_timer_t defer_timer;    /* answers failed */
    uv_getaddrinfo_t resolve;  /* the host's address, off the loop */
    bool resolving;
    int refs; /* the timers until closed, resolve while resolving: the last one frees c */

    req_list pending, failed;
    cache_stats stats;
};

/* ---- request lists ---- */

static void list_push(req_list *l, cache_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static void list_unlink(req_list *l, cache_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
}

/* Runs r's callback (once: it is cleared first, so a callback that re-enters the cache finds r
 * answered) and counts the outcome. r must be out of its list. */
static void answer(cache *c, cache_req *r, int err, const char *value, size_t len)
{
    cache_get_cb cb = r->cb;
    r->cb = NULL;
    if (!err)
        c->stats.hits++;
    else if (err == REG_ENOTFOUND)
        c->stats.misses++;
    else
        c->stats.errors++;
    cb(r->arg, err, value, len);
}

static void on_defer(uv_timer_t *t);

/* Answers r with err from the loop, soon (r was not sent; the failed list owns it). */
static void fail_later(cache *c, cache_req *r, int err)
{
    r->err = err;
    list_push(&c->failed, r);
    if (!c->closing && !uv_is_active((uv_handle_t *)&c->defer_timer))
        uv_timer_start(&c->defer_timer, on_defer, 0, 0);
}

static void on_defer(uv_timer_t *t)
{
    cache *c = t->data;
    /* Only those queued so far: a callback that issues another failing get does not keep this
     * one running. A callback may also close the cache, which answers the rest itself. */
    cache_req *last = c->failed.tail, *r;
    while (!c->closing && (r = c->failed.head)) {
        bool was_last = r == last;
        list_unlink(&c->failed, r);
        answer(c, r, r->err, NULL, 0);
        free(r);
        if (was_last) break;
    }
    if (!c->closing && c->failed.head) uv_timer_start(&c->defer_timer, on_defer, 0, 0);
}

static void on_deadline(uv_timer_t *t);

static void arm_deadline(cache *c)
{
    if (!c->pending.head || c->closing) return;
    uint64_t now = uv_now(c->loop), due = c->pending.head->deadline;
    uv_timer_start(&c->deadline_timer, on_deadline, due > now ? due - now : 0, 0);
}

/* Gets past their deadline are answered REG_EUNAVAILABLE; hiredis keeps their memory until the
 * late reply comes back. */
static void on_deadline(uv_timer_t *t)
{
    cache *c = t->data;
    uint64_t now = uv_now(c->loop);
    cache_req *r;
    while (!c->closing && (r = c->pending.head) && r->deadline <= now) {
        list_unlink(&c->pending, r);
        answer(c, r, REG_EUNAVAILABLE, NULL, 0);
    }
    arm_deadline(c);
}

/* ---- the connection ---- */

static void start_connect(cache *c);
static void on_conn_timer(uv_timer_t *t);

static void log_down(cache *c, const char *why)
{
    if (c->down_logged) return;
    fprintf(stderr, "cache(redis) %s:%d: unavailable (%s); reconnecting\n", c->host, c->port, why);
    c->down_logged = true;
}

static void schedule_reconnect(cache *c)
{
    uv_timer_start(&c->conn_timer, on_conn_timer, (uint64_t)c->backoff_ms, 0);
    c->backoff_ms =
        c->backoff_ms * 2 < CACHE_BACKOFF_MAX_MS ? c->backoff_ms * 2 : CACHE_BACKOFF_MAX_MS;
}

/* hiredis reports that ac failed or is going away (it frees ac itself). Several reports may
 * come for one context (the NULL replies, the connect or disconnect callback): the first one
 * wins. */
static void lost(cache *c, const redisAsyncContext *ac, const char *why)
{
    if (c->closing || c->ac != ac) return;
    c->ac = NULL;
    c->connected = false;
    c->down = true;
    log_down(c, why);
    schedule_reconnect(c);
}

/* Gives up on the current connection (ours to free) and schedules the next. Its gets are
 * answered REG_EUNAVAILABLE by their NULL replies, while it is freed; their callbacks may
 * re-enter, so c is not touched afterwards. */
static void drop_connection(cache *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    lost(c, ac, why);
    redisAsyncFree(ac);
}

static void on_conn_timer(uv_timer_t *t)
{
    cache *c = t->data;
    if (c->closing) return;
    if (!c->ac) {
        if (!c->resolving) start_connect(c);
    } else if (!c->connected)
        drop_connection(c, "connect timed out");
    else if (c->inflight && uv_now(c->loop) - c->last_progress >= c->lim.connect_timeout_ms)
        drop_connection(c, "no answer");
}

static void sent(cache *c)
{
    if (c->inflight++ == 0) c->last_progress = uv_now(c->loop);
}

/* A reply came back for a command of ac (NULL: ac is going away). c is NULL once the cache
 * closed; then there is nothing to update. */
static cache *replied(redisAsyncContext *ac, const redisReply *reply)
{
    cache *c = ac->data;
    if (!c) return NULL;
    c->inflight--;
    if (reply)
        c->last_progress = uv_now(c->loop);
    else
        lost(c, ac, ac->errstr[0] ? ac->errstr : "connection lost");
    return c;
}

/* The answer to the PING sent once connected: the server is up only when it answers (a
 * stopped process still completes TCP handshakes; a loading one answers with an error). Until
 * then the connect deadline runs. */
static void on_ping_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redisReply *reply = reply_;
    cache *c = replied(ac, reply);
    if (!c || !reply || c->closing || c->ac != ac) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_down(c, reply->str); /* the connect deadline retries */
        return;
    }
    c->connected = true;
    c->down = false;
    c->backoff_ms = CACHE_BACKOFF_MIN_MS;
    if (c->down_logged) fprintf(stderr, "cache(redis) %s:%d: reconnected\n", c->host, c->port);
    c->down_logged = false;
    uv_timer_start(&c->conn_timer, on_conn_timer, c->lim.connect_timeout_ms,
                   c->lim.connect_timeout_ms);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    cache *c = ac->data;
    if (!c || c->ac != ac) return;
    if (status != REDIS_OK) { /* hiredis frees ac after this call */
        lost(c, ac, ac->errstr);
        return;
    }
    /* Commands queued while connecting are already on their way, ahead of it. */
    if (redisAsyncCommand(c->ac, on_ping_reply, NULL, "PING") == REDIS_OK) sent(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    cache *c = ac->data;
    if (c) lost(c, ac, status == REDIS_OK ? "closed" : ac->errstr);
}

/* The libuv adapter ignores the error status of its poll handle, and libuv stops the handle
 * when it reports one: a refused connect or a reset connection would then go unnoticed until a
 * deadline (connect, or the stall check). These replace the adapter's event functions (same
 * code, our poll callback): on an error, hiredis is told the socket is ready, so that it reads
 * the error itself (getsockopt while connecting, read(2) after) and tears the context down. */
static void on_poll(uv_poll_t *h, int status, int events)
{
    redisLibuvEvents *p = h->data;
    redisLibuvPoll(h, 0, status < 0 ? p->events : events);
}

static void poll_set(redisLibuvEvents *p, int events)
{
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, on_poll);
    else
        uv_poll_stop(&p->handle);
}

static void ev_add_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    poll_set(p, p->events | UV_READABLE);
}

static void ev_del_read(void *privdata)
{
    redisLibuvEvents *p = privdata;
    poll_set(p, p->events & ~UV_READABLE);
}

static void ev_add_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    poll_set(p, p->events | UV_WRITABLE);
}

static void ev_del_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    poll_set(p, p->events & ~UV_WRITABLE);
}

/* Opens a connection to ip (numeric: hiredis resolves names with a blocking getaddrinfo) in the
 * background; on failure, retries later. */
static void redis_connect_async(cache *c, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, c->port);
    if (!ac || ac->err) { /* no socket, unresolvable host... */
        c->down = true;
        log_down(c, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        c->down = true;
        log_down(c, "cannot attach to the loop");
        redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    ac->ev.addRead = ev_add_read; /* before the first event is asked for */
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->data = c;
    /* Set after attaching: the connect callback asks the loop for the first write event. */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac; /* hiredis owns it; we drop it with redisAsyncFree */
    c->connected = false;
    uv_timer_start(&c->conn_timer, on_conn_timer, c->lim.connect_timeout_ms, 0);
}

static void release(cache *c)
{
    if (--c->refs) return;
    free(c->host);
    free(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cache *c = req->data;
    c->resolving = false;
    char ip[INET6_ADDRSTRLEN] = "";
    const struct addrinfo *pick = res; /* the first IPv4 address, else the first */
    for (const struct addrinfo *a = res; a && pick && pick->ai_family != AF_INET; a = a->ai_next)
        if (a->ai_family == AF_INET) pick = a;
    if (!status && pick && pick->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, ip, sizeof ip);
    else if (!status && pick && pick->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);
    bool closing = c->closing;
    release(c); /* the timers hold c unless it is closing */
    if (closing) return;
    if (!ip[0]) {
        c->down = true;
        log_down(c, status ? uv_strerror(status) : "no address");
        schedule_reconnect(c);
        return;
    }
    redis_connect_async(c, ip);
}

/* Connects to the host: at once to a numeric address, else after resolving it on libuv's
 * thread pool (while it resolves, commands fail at once: there is no connection to queue them
 * on). */
static void start_connect(cache *c)
{
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, c->host, addr) == 1 || inet_pton(AF_INET6, c->host, addr) == 1) {
        redis_connect_async(c, c->host);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->resolve.data = c;
    int err = uv_getaddrinfo(c->loop, &c->resolve, on_resolved, c->host, NULL, &hints);
    if (err) {
        c->down = true;
        log_down(c, uv_strerror(err));
        schedule_reconnect(c);
        return;
    }
    c->resolving = true;
    c->refs++;
}

/* Whether a command may be handed to hiredis now. */
static bool can_send(const cache *c)
{
    return c->ac && (c->connected || !c->down) && c->inflight < c->lim.max_inflight;
}

static void on_get_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redisReply *reply = reply_;
    cache_req *r = privdata;
    cache *c = replied(ac, reply);
    if (c && r->cb) { /* not answered yet (deadline, close) */
        list_unlink(&c->pending, r);
        if (!reply)
            answer(c, r, REG_EUNAVAILABLE, NULL, 0);
        else if (reply->type == REDIS_REPLY_STRING)
            answer(c, r, 0, reply->str, reply->len);
        else if (reply->type == REDIS_REPLY_NIL)
            answer(c, r, REG_ENOTFOUND, NULL, 0);
        else /* an error reply (LOADING, OOM, WRONGTYPE...): the caller asks the source */
            answer(c, r, REG_EUNAVAILABLE, NULL, 0);
    }
    free(r); /* hiredis' last use of it */
}

static void on_write_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    replied(ac, reply);
}

/* ---- public calls ---- */

/* Splits "host:port" (port optional). 0, REG_EINVAL or REG_ENOMEM. */
static int parse_addr(cache *c, const char *addr)
{
    const char *colon = strrchr(addr, ':');
    size_t hlen = colon ? (size_t)(colon - addr) : strlen(addr);
    c->port = CACHE_REDIS_DEFAULT_PORT;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port > 65535) return REG_EINVAL;
        c->port = (int)port;
    }
    if (hlen == 0) return REG_EINVAL;
    c->host = strndup(addr, hlen);
    return c->host ? 0 : REG_ENOMEM;
}

int cache_open(struct uv_loop_s *loop, const char *redis_addr, const cache_limits *limits,
               cache **out)
{
    if (!loop || !redis_addr || !out) return REG_EINVAL;
    cache *c = calloc(1, sizeof *c);
    if (!c) return REG_ENOMEM;
    int rc = parse_addr(c, redis_addr);
    if (rc) {
        if (rc == REG_EINVAL) fprintf(stderr, "cache: bad redis address '%s'\n", redis_addr);
        free(c->host);
        free(c);
        return rc;
    }
    c->loop = loop;
    if (limits) c->lim = *limits;
    if (!c->lim.timeout_ms) c->lim.timeout_ms = CACHE_DEFAULT_TIMEOUT_MS;
    if (!c->lim.max_inflight) c->lim.max_inflight = CACHE_DEFAULT_MAX_INFLIGHT;
    if (!c->lim.connect_timeout_ms) c->lim.connect_timeout_ms = CACHE_DEFAULT_CONNECT_TIMEOUT_MS;
    c->backoff_ms = CACHE_BACKOFF_MIN_MS;
    /* uv_timer_init cannot fail on a valid loop. */
    uv_timer_init(loop, &c->conn_timer);
    uv_timer_init(loop, &c->deadline_timer);
    uv_timer_init(loop, &c->defer_timer);
    c->conn_timer.data = c->deadline_timer.data = c->defer_timer.data = c;
    c->refs = 3; /* the timers */
    start_connect(c);
    *out = c; /* the caller owns the cache; cache_close frees it */
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    release(h->data);
}

void cache_close(cache *c)
{
    if (!c || c->closing) return;
    c->closing = true;
    /* Answer everything first, while the context still holds the sent requests' memory. A
     * callback may issue another get: it joins `failed` (cache_get while closing) and is
     * answered by this loop too. */
    for (;;) {
        cache_req *r = c->pending.head;
        if (r) {
            list_unlink(&c->pending, r);
            answer(c, r, REG_ECLOSED, NULL, 0); /* hiredis frees it */
        } else if ((r = c->failed.head)) {
            list_unlink(&c->failed, r);
            answer(c, r, REG_ECLOSED, NULL, 0);
            free(r);
        } else
            break;
    }
    if (c->ac) {
        /* Detach first: its callbacks, run while it is freed (now, or once the hiredis callback
         * we may be inside of returns), must find nothing to touch but their own requests. Its
         * poll handle closes on the loop by itself. */
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (c->resolving) uv_cancel((uv_req_t *)&c->resolve); /* its callback releases c */
    uv_close((uv_handle_t *)&c->conn_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->deadline_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->defer_timer, on_handle_closed);
}

void cache_get(cache *c, const char *key, cache_get_cb cb, void *arg)
{
    if (!c || !cb) return; /* nobody to answer */
    cache_req *r = calloc(1, sizeof *r);
    if (!r) {
        /* No memory even to defer the answer: answering here breaks the "never inside
         * cache_get" promise, which is better than never answering. */
        c->stats.errors++;
        cb(arg, REG_ENOMEM, NULL, 0);
        return;
    }
    r->cb = cb;
    r->arg = arg;
    if (c->closing) {
        fail_later(c, r, REG_ECLOSED); /* only from a callback run by cache_close, which answers */
        return;
    }
    if (!key) {
        fail_later(c, r, REG_EINVAL);
        return;
    }
    if (!can_send(c) ||
        redisAsyncCommand(c->ac, on_get_reply, r, "GET %b", key, strlen(key)) != REDIS_OK) {
        fail_later(c, r, REG_EUNAVAILABLE);
        return;
    }
    sent(c); /* hiredis holds r now */
    r->deadline = uv_now(c->loop) + c->lim.timeout_ms;
    list_push(&c->pending, r);
    if (!uv_is_active((uv_handle_t *)&c->deadline_timer)) arm_deadline(c);
}

void cache_set(cache *c, const char *key, const char *value, size_t len, uint64_t ttl_ms,
               int only_if_absent)
{
    if (!c || c->closing) return;
    if (!key || (!value && len) || !ttl_ms || !can_send(c)) {
        c->stats.dropped++;
        return;
    }
    if (!value) value = "";
    unsigned long long ttl = ttl_ms;
    int rc = only_if_absent ? redisAsyncCommand(c->ac, on_write_reply, NULL, "SET %b %b PX %llu NX",
                                                key, strlen(key), value, len, ttl)
                            : redisAsyncCommand(c->ac, on_write_reply, NULL, "SET %b %b PX %llu",
                                                key, strlen(key), value, len, ttl);
    if (rc != REDIS_OK) {
        c->stats.dropped++;
        return;
    }
    sent(c);
}

void cache_del(cache *c, const char *key)
{
    if (!c || c->closing) return;
    if (!key || !can_send(c) ||
        redisAsyncCommand(c->ac, on_write_reply, NULL, "DEL %b", key, strlen(key)) != REDIS_OK) {
        c->stats.dropped++;
        return;
    }
    sent(c);
}

void cache_get_stats(const cache *c, cache_stats *out)
{
    if (!out) return;
    if (!c) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = c->stats;
}
