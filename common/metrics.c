/* metrics.c - Prometheus counters and latency histograms (metrics.h). */
#define _GNU_SOURCE
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ROUTES = 64, MAX_STATUSES = 24, MAX_COUNTERS = 32, NBUCKETS = 12 };

static const double bucket_bounds[NBUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                               0.01,   0.025,   0.05,   0.1,   0.5,    1.0};

struct route_stats {
    const char *route;
    int statuses[MAX_STATUSES];
    uint64_t counts[MAX_STATUSES];
    uint64_t buckets[NBUCKETS];
    uint64_t total;
    double sum;
};

struct metrics {
    struct route_stats routes[MAX_ROUTES];
    size_t nroutes;
    struct {
        const char *name;
        uint64_t value;
    } counters[MAX_COUNTERS];
    size_t ncounters;
};

struct metrics_out {
    char *buf;
    size_t len, cap;
};

metrics *metrics_new(void)
{
    return calloc(1, sizeof(metrics));
}

void metrics_free(metrics *m)
{
    free(m);
}

static struct route_stats *route_of(metrics *m, const char *route)
{
    for (size_t i = 0; i < m->nroutes; i++)
        if (m->routes[i].route == route || !strcmp(m->routes[i].route, route)) return &m->routes[i];
    if (m->nroutes == MAX_ROUTES) return NULL;
    struct route_stats *r = &m->routes[m->nroutes++];
    r->route = route;
    return r;
}

void metrics_request(metrics *m, const char *route, int status, double seconds)
{
    struct route_stats *r = route_of(m, route);
    if (!r) return;
    for (int i = 0; i < MAX_STATUSES; i++) {
        if (r->statuses[i] == status || r->statuses[i] == 0) {
            r->statuses[i] = status;
            r->counts[i]++;
            break;
        }
    }
    for (int b = 0; b < NBUCKETS; b++)
        if (seconds <= bucket_bounds[b]) r->buckets[b]++;
    r->total++;
    r->sum += seconds;
}

void metrics_count(metrics *m, const char *name, uint64_t n)
{
    for (size_t i = 0; i < m->ncounters; i++) {
        if (!strcmp(m->counters[i].name, name)) {
            m->counters[i].value += n;
            return;
        }
    }
    if (m->ncounters == MAX_COUNTERS) return;
    m->counters[m->ncounters].name = name;
    m->counters[m->ncounters++].value = n;
}

void metrics_printf(metrics_out *out, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = out->cap - out->len;
        va_start(ap, fmt);
        int n = vsnprintf(out->buf + out->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < room) {
            out->len += (size_t)n;
            return;
        }
        size_t cap = out->cap * 2 + (size_t)n;
        char *nb = realloc(out->buf, cap);
        if (!nb) return;
        out->buf = nb;
        out->cap = cap;
    }
}

char *metrics_render(metrics *m, void (*extra)(void *arg, metrics_out *out), void *arg)
{
    metrics_out out = {malloc(8192), 0, 8192};
    if (!out.buf) return NULL;
    out.buf[0] = 0;
    metrics_printf(&out, "# HELP registry_http_requests_total HTTP requests answered.\n"
                         "# TYPE registry_http_requests_total counter\n");
    for (size_t i = 0; i < m->nroutes; i++)
        for (int s = 0; s < MAX_STATUSES && m->routes[i].statuses[s]; s++)
            metrics_printf(&out, "registry_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                           m->routes[i].route, m->routes[i].statuses[s],
                           (unsigned long long)m->routes[i].counts[s]);
    metrics_printf(&out, "# HELP registry_http_request_duration_seconds Time to answer.\n"
                         "# TYPE registry_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < m->nroutes; i++) {
        struct route_stats *r = &m->routes[i];
        for (int b = 0; b < NBUCKETS; b++)
            metrics_printf(&out,
                           "registry_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                           "%llu\n",
                           r->route, bucket_bounds[b], (unsigned long long)r->buckets[b]);
        metrics_printf(&out,
                       "registry_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
                       "%llu\n"
                       "registry_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                       "registry_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                       r->route, (unsigned long long)r->total, r->route, r->sum, r->route,
                       (unsigned long long)r->total);
    }
    for (size_t i = 0; i < m->ncounters; i++)
        metrics_printf(&out, "# TYPE %s counter\n%s %llu\n", m->counters[i].name,
                       m->counters[i].name, (unsigned long long)m->counters[i].value);
    if (extra) extra(arg, &out);
    return out.buf;
}
