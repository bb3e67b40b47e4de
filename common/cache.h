/*
 * cache.h - the shared cache of the distributed deployment (ARCHITECTURE.md: "a cache (get, set
 * with TTL, delete)"), on Redis through hiredis's libuv adapter. The front ends keep the
 * authentication status of device certificates here, so that a device reconnecting to another
 * front end costs no view read.
 *
 * Everything runs on one libuv loop and never blocks it. A cache is a help, never a dependency:
 * when Redis is down, slow (each command has a deadline) or too busy (a bounded number of
 * commands in flight), a get reports REG_EUNAVAILABLE at once or at its deadline and the caller
 * goes to the source of truth; sets and deletes are dropped (counted). The connection is
 * re-established in the background with a backoff.
 *
 * Ownership: keys and values are copied; the value handed to a get callback is valid only during
 * the callback.
 */
#ifndef REG_CACHE_H
#define REG_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
typedef struct cache cache;

typedef struct cache_limits {
    unsigned timeout_ms;     /* per command; default 50 */
    unsigned max_inflight;   /* commands waiting for a reply; default 10000 */
    unsigned connect_timeout_ms; /* default 1000 */
} cache_limits;

typedef struct cache_stats {
    uint64_t hits, misses, errors, dropped; /* errors: failed/timed-out gets; dropped: sets/dels not sent */
} cache_stats;

/* Connects to Redis at "host:port" on loop (asynchronously: commands issued before the
 * connection is up wait for it within their deadline). limits may be NULL (defaults). */
int cache_open(struct uv_loop_s *loop, const char *redis_addr, const cache_limits *limits,
               cache **out);
/* Closes the connection; callbacks of commands in flight run with REG_ECLOSED before this
 * returns or on the loop shortly after (run the loop to let handles close). */
void cache_close(cache *c);

/* The value of key: cb(arg, 0, value, len) on a hit, cb(arg, REG_ENOTFOUND, NULL, 0) on a miss,
 * cb(arg, REG_EUNAVAILABLE, NULL, 0) when Redis did not answer in time or is unreachable.
 * cb runs exactly once, on the loop, never inside cache_get itself. */
typedef void (*cache_get_cb)(void *arg, int err, const char *value, size_t len);
void cache_get(cache *c, const char *key, cache_get_cb cb, void *arg);

/* Sets key to value with a time to live (ms, at least 1). only_if_absent: SET NX (a fill from
 * the view must not overwrite a newer fact, such as a revocation). Fire and forget. */
void cache_set(cache *c, const char *key, const char *value, size_t len, uint64_t ttl_ms,
               int only_if_absent);
/* Deletes key. Fire and forget. */
void cache_del(cache *c, const char *key);

void cache_get_stats(const cache *c, cache_stats *out);

#endif
