/*
 * metrics.h - the counters and histograms a process exposes on GET /metrics (Prometheus text
 * format 0.0.4). Requests are counted by route template and status, and their latency goes into
 * a per-route histogram. Used from one loop thread only; gauges owned by other threads are read
 * through the callback given to metrics_render.
 */
#ifndef REG_METRICS_H
#define REG_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics;

metrics *metrics_new(void);
void metrics_free(metrics *m);

/* Records one answered request. `route` is a static string (a route template). */
void metrics_request(metrics *m, const char *route, int status, double seconds);

/* Adds to a named counter (a static string, e.g. "registry_log_appends_total"). */
void metrics_count(metrics *m, const char *name, uint64_t n);

/* Renders everything, then appends what `extra` writes (may be NULL) via metrics_printf. The
 * caller frees the returned string. */
typedef struct metrics_out metrics_out;
char *metrics_render(metrics *m, void (*extra)(void *arg, metrics_out *out), void *arg);
void metrics_printf(metrics_out *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
