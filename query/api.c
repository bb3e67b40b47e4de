/*
 * api.c - the operator API's front door (api.h): routing, authentication and authorisation,
 * health, readiness and metrics. Reads are answered here from the view (query/devices.c); writes
 * go to the ingest side (ingest/ingest.c).
 *
 * On a secondary view (the distributed deployment) reads first catch up with the primary when a
 * commit notice has arrived since the last catch-up, and a device that is not found triggers one
 * more catch-up before the 404, so that a read following an answered write sees it.
 */
#define _GNU_SOURCE
#include "query/api.h"
#include "clock.h"
#include "err.h"
#include "ingest/ingest.h"
#include "projector/records.h"
#include "query/auth.h"
#include "query/credentials.h"
#include "query/device_port.h"
#include "query/mqtt_port.h"
#include "query/devices.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* The read routes (answered here, from the view). */
enum read_route {
    READ_NONE,
    READ_DEVICE,
    READ_METADATA,
    READ_CERTIFICATES,
    READ_SHADOW,
    READ_FACTORY_CAS,
    READ_FACTORY_CA,
    READ_ISSUING_CA,
    READ_CRL,
};

struct api {
    uv_loop_t *loop;
    http_server *http;
    api_deps deps;
    api_limits limits;
    metrics *metrics;
    ingest *ingest;
    int view_dirty; /* a commit notice arrived since the last catch-up */
    auth_cache *auth;
    uv_timer_t catch_up_timer;
    struct device_port *device_port; /* borrowed; its counters join /metrics */
    struct mqtt_port *mqtt_port;     /* borrowed; likewise */
};

void api_limits_default(api_limits *l)
{
    if (!l->max_json_depth) l->max_json_depth = 32;
    if (!l->max_metadata_key) l->max_metadata_key = 128;
    if (!l->max_metadata_value) l->max_metadata_value = 1024;
    if (!l->max_metadata_keys) l->max_metadata_keys = 100;
    if (!l->request_timeout_ms) l->request_timeout_ms = 30000;
    shadow_limits_default(&l->shadow);
}

/* A request path split into at most four segments. */
struct path {
    int n;
    char seg[4][512];
};

static int split_path(const char *path, struct path *p)
{
    p->n = 0;
    if (path[0] != '/') return -1;
    const char *s = path + 1;
    while (*s) {
        const char *slash = strchr(s, '/');
        size_t len = slash ? (size_t)(slash - s) : strlen(s);
        if (p->n == 4 || len >= sizeof p->seg[0] || len == 0) return -1;
        memcpy(p->seg[p->n], s, len);
        p->seg[p->n][len] = 0;
        p->n++;
        if (!slash) break;
        s = slash + 1;
        if (!*s) return -1; /* trailing slash */
    }
    return 0;
}

static void answer(api *a, http_req *req, const char *label, uint64_t start, int status,
                   const char *detail)
{
    metrics_request(a->metrics, label, status, (double)(clock_mono_ns() - start) / 1e9);
    http_respond_problem(req, status, detail);
}

static void method_not_allowed(api *a, http_req *req, const char *label, uint64_t start,
                               const char *allow)
{
    char hdr[96];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    metrics_request(a->metrics, label, 405, (double)(clock_mono_ns() - start) / 1e9);
    static const char body[] = "{\"type\":\"about:blank\",\"title\":\"Method Not Allowed\","
                               "\"status\":405,\"detail\":\"this method is not allowed here\"}";
    http_respond(req, 405, "application/problem+json", body, sizeof body - 1, hdr);
}

static void projector_gauges(void *arg, metrics_out *out)
{
    api *a = arg;
    if (a->ingest)
        metrics_printf(out, "# TYPE registry_ingest_pending gauge\nregistry_ingest_pending %zu\n",
                       ingest_pending(a->ingest));
    if (a->device_port) device_port_metrics(a->device_port, out);
    if (a->mqtt_port) mqtt_port_metrics(a->mqtt_port, out);
    if (!a->deps.projector) return;
    projector_stats st;
    projector_get_stats(a->deps.projector, &st);
    int64_t end = st.log_end;
    metrics_printf(out,
                   "# TYPE registry_projector_commands_total counter\n"
                   "registry_projector_commands_total{outcome=\"accepted\"} %llu\n"
                   "registry_projector_commands_total{outcome=\"rejected\"} %llu\n"
                   "registry_projector_commands_total{outcome=\"duplicate\"} %llu\n"
                   "registry_projector_commands_total{outcome=\"malformed\"} %llu\n"
                   "# TYPE registry_projector_events_total counter\n"
                   "registry_projector_events_total %llu\n"
                   "# TYPE registry_projector_lag gauge\n"
                   "registry_projector_lag %lld\n"
                   "# TYPE registry_projector_serial_filter_ready gauge\n"
                   "registry_projector_serial_filter_ready %d\n",
                   (unsigned long long)st.accepted, (unsigned long long)st.rejected,
                   (unsigned long long)st.duplicates, (unsigned long long)st.malformed,
                   (unsigned long long)st.events,
                   (long long)(end >= st.next_offset ? end - st.next_offset : 0),
                   st.serial_filter_ready ? 1 : 0);
}

/* Ready when the projector (if it runs here) has decided everything the log held when it last
 * looked: a restarted registry answers 503 until it has caught up. */
static int is_ready(api *a)
{
    if (!a->deps.projector) return 1;
    projector_stats st;
    projector_get_stats(a->deps.projector, &st);
    return st.next_offset >= st.log_end;
}

static void catch_up(api *a)
{
    if (!a->deps.view_is_secondary) return;
    a->view_dirty = 0;
    view_catch_up(a->deps.view);
}

/* The projector committed: tokens may have changed, and a secondary is behind. The bus delivers
 * in publish order and the notice precedes the batch's outcomes, so a revoked token is refused
 * here before its revocation is answered (in one process; across processes, within the time
 * Redis takes to deliver the notice). */
static void on_commit(void *arg, const char *channel, const char *msg, size_t len)
{
    api *a = arg;
    a->view_dirty = 1;
    auth_cache_clear(a->auth);
}

static void on_catch_up_timer(uv_timer_t *t)
{
    catch_up(t->data);
}

/* Reads of a device, with the one retry a secondary needs after a fresh write. */
static int read_device(api *a, const auth_principal *who, const char *id, int route, http_req *req)
{
    int (*fn)(view *, const auth_principal *, const char *, http_req *) =
        route == READ_METADATA       ? query_device_metadata
        : route == READ_CERTIFICATES ? query_device_certificates
        : route == READ_SHADOW       ? query_device_shadow
                                     : query_device;
    if (a->view_dirty) catch_up(a);
    if (a->deps.view_is_secondary) {
        /* Peek for existence first so that a 404 can be retried after catching up. */
        reg_uuid did;
        json_t *dev = NULL;
        view_src src = {a->deps.view, NULL};
        if (!reg_uuid_parse(id, &did) &&
            record_device_load(src, &who->tenant, &did, &dev) == REG_ENOTFOUND)
            catch_up(a);
        json_decref(dev);
    }
    return fn(a->deps.view, who, id, req);
}

/* Answers a read route from the view; returns the status. */
static int read_route_answer(api *a, const auth_principal *who, int route, const char *id,
                             const char *query, http_req *req)
{
    if (route == READ_DEVICE || route == READ_METADATA || route == READ_CERTIFICATES ||
        route == READ_SHADOW)
        return read_device(a, who, id, route, req);
    if (a->view_dirty) catch_up(a);
    switch (route) {
    case READ_FACTORY_CAS:
        return query_factory_cas(a->deps.view, who, query, req);
    case READ_FACTORY_CA:
        return query_factory_ca(a->deps.view, who, id, req);
    case READ_ISSUING_CA:
        return query_issuing_ca(a->deps.view, who, req);
    default:
        return query_crl(a->deps.view, a->deps.keys, who, req);
    }
}

static void handle(void *arg, http_req *req, const http_request *r)
{
    api *a = arg;
    uint64_t start = r->start_ns ? r->start_ns : clock_mono_ns();
    struct path p;
    const char *m = r->method;
    int get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), put = !strcmp(m, "PUT"),
        patch = !strcmp(m, "PATCH"), del = !strcmp(m, "DELETE");

    if (split_path(r->path, &p)) {
        answer(a, req, "unknown", start, 404, "no such route");
        return;
    }
    /* Unauthenticated routes. */
    if (p.n == 1 && !strcmp(p.seg[0], "healthz")) {
        if (!get) return method_not_allowed(a, req, "/healthz", start, "GET");
        metrics_request(a->metrics, "/healthz", 200, 0);
        http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
        return;
    }
    if (p.n == 1 && !strcmp(p.seg[0], "readyz")) {
        if (!get) return method_not_allowed(a, req, "/readyz", start, "GET");
        if (!is_ready(a)) return answer(a, req, "/readyz", start, 503, "catching up with the log");
        metrics_request(a->metrics, "/readyz", 200, 0);
        http_respond(req, 200, "application/json", "{\"status\":\"ready\"}", 18, NULL);
        return;
    }
    if (p.n == 1 && !strcmp(p.seg[0], "metrics")) {
        if (!get) return method_not_allowed(a, req, "/metrics", start, "GET");
        metrics_request(a->metrics, "/metrics", 200, 0);
        char *text = metrics_render(a->metrics, projector_gauges, a);
        http_respond(req, 200, "text/plain; version=0.0.4", text, strlen(text), NULL);
        free(text);
        return;
    }

    /* Route templates: the metrics label, the methods, and what each method does. */
    const char *label = NULL, *allow = NULL;
    const char *id = p.n >= 2 ? p.seg[1] : NULL, *key = p.n == 4 ? p.seg[3] : NULL;
    int route = -1, is_read = 0, admin_only = 0;
    if (p.n == 1 && !strcmp(p.seg[0], "tenants")) {
        label = "/tenants", allow = "POST", admin_only = 1;
        if (post) route = INGEST_CREATE_TENANT;
    } else if (p.n == 1 && !strcmp(p.seg[0], "tokens")) {
        label = "/tokens", allow = "POST";
        if (post) route = INGEST_CREATE_TOKEN;
    } else if (p.n == 2 && !strcmp(p.seg[0], "tokens")) {
        label = "/tokens/{id}", allow = "DELETE";
        if (del) route = INGEST_REVOKE_TOKEN;
    } else if (p.n == 1 && !strcmp(p.seg[0], "devices")) {
        label = "/devices", allow = "POST";
        if (post) route = INGEST_REGISTER_DEVICE;
    } else if (p.n == 2 && !strcmp(p.seg[0], "devices")) {
        label = "/devices/{id}", allow = "GET, PATCH";
        if (patch) route = INGEST_UPDATE_DEVICE;
        is_read = get ? READ_DEVICE : 0;
    } else if (p.n == 3 && !strcmp(p.seg[0], "devices") && !strcmp(p.seg[2], "metadata")) {
        label = "/devices/{id}/metadata", allow = "GET, PATCH";
        if (patch) route = INGEST_PATCH_METADATA;
        is_read = get ? READ_METADATA : 0;
    } else if (p.n == 4 && !strcmp(p.seg[0], "devices") && !strcmp(p.seg[2], "metadata")) {
        label = "/devices/{id}/metadata/{key}", allow = "PUT, DELETE";
        if (put) route = INGEST_PUT_METADATA;
        if (del) route = INGEST_DELETE_METADATA;
    } else if (p.n == 3 && !strcmp(p.seg[0], "devices") && !strcmp(p.seg[2], "shadow")) {
        label = "/devices/{id}/shadow", allow = "GET";
        is_read = get ? READ_SHADOW : 0;
    } else if (p.n == 4 && !strcmp(p.seg[0], "devices") && !strcmp(p.seg[2], "shadow") &&
               !strcmp(p.seg[3], "desired")) {
        label = "/devices/{id}/shadow/desired", allow = "PUT";
        if (put) route = INGEST_PUT_SHADOW_DESIRED;
    } else if (p.n == 3 && !strcmp(p.seg[0], "devices") && !strcmp(p.seg[2], "certificates")) {
        label = "/devices/{id}/certificates", allow = "GET";
        is_read = get ? READ_CERTIFICATES : 0;
    } else if (p.n == 4 && !strcmp(p.seg[0], "devices") && !strcmp(p.seg[2], "certificates") &&
               !strcmp(p.seg[3], "rotate")) {
        label = "/devices/{id}/certificates/rotate", allow = "POST";
        if (post) route = INGEST_ROTATE_CERTIFICATE;
    } else if (p.n == 3 && !strcmp(p.seg[0], "certificates") && !strcmp(p.seg[2], "revoke")) {
        label = "/certificates/{id}/revoke", allow = "POST";
        if (post) route = INGEST_REVOKE_CERTIFICATE;
    } else if (p.n == 1 && !strcmp(p.seg[0], "factory-cas")) {
        label = "/factory-cas", allow = "GET, POST";
        if (post) route = INGEST_ADD_FACTORY_CA;
        is_read = get ? READ_FACTORY_CAS : 0;
    } else if (p.n == 2 && !strcmp(p.seg[0], "factory-cas")) {
        label = "/factory-cas/{id}", allow = "GET, DELETE";
        if (del) route = INGEST_REMOVE_FACTORY_CA;
        is_read = get ? READ_FACTORY_CA : 0;
    } else if (p.n == 1 && !strcmp(p.seg[0], "issuing-ca")) {
        label = "/issuing-ca", allow = "GET";
        is_read = get ? READ_ISSUING_CA : 0;
    } else if (p.n == 1 && !strcmp(p.seg[0], "crl")) {
        label = "/crl", allow = "GET";
        is_read = get ? READ_CRL : 0;
    } else if (p.n == 1 && !strcmp(p.seg[0], "manifests")) {
        label = "/manifests", allow = "POST";
        if (post) route = INGEST_ADD_MANIFEST;
    } else if (p.n == 1 && !strcmp(p.seg[0], "claims")) {
        label = "/claims", allow = "POST";
        if (post) route = INGEST_CREATE_CLAIM;
    } else {
        answer(a, req, "unknown", start, 404, "no such route");
        return;
    }
    if (route < 0 && !is_read) return method_not_allowed(a, req, label, start, allow);

    auth_principal who;
    int err = auth_bearer(a->deps.view, a->auth, a->deps.admin_hash, r->authorization, &who);
    if (err == REG_ENOTFOUND && a->deps.view_is_secondary && r->authorization) {
        catch_up(a); /* a token created a moment ago through another process */
        err = auth_bearer(a->deps.view, a->auth, a->deps.admin_hash, r->authorization, &who);
    }
    if (err == REG_ENOTFOUND)
        return answer(a, req, label, start, 401, "a valid bearer token is required");
    if (err) return answer(a, req, label, start, 503, "credentials could not be checked");
    if (admin_only && who.role != AUTH_ADMIN)
        return answer(a, req, label, start, 403, "only the admin token manages tenants");
    if (!admin_only && who.role == AUTH_ADMIN)
        return answer(a, req, label, start, 403,
                      "the admin token manages tenants; use a tenant's token for this");
    if (!is_read && who.role == AUTH_VIEWER)
        return answer(a, req, label, start, 403, "a viewer token cannot write");

    if (is_read) {
        int status = read_route_answer(a, &who, is_read, id, r->query, req);
        metrics_request(a->metrics, label, status, (double)(clock_mono_ns() - start) / 1e9);
        return;
    }
    if (!a->ingest) return answer(a, req, label, start, 503, "this process does not accept writes");
    ingest_handle(a->ingest, req, r, &who, (enum ingest_route)route, id, key, label);
}

int api_start(uv_loop_t *loop, const char *host, int port, const api_limits *limits,
              const http_limits *hl, const api_deps *deps, api **out)
{
    api *a = calloc(1, sizeof *a);
    if (!a) return REG_ENOMEM;
    a->loop = loop;
    a->deps = *deps;
    a->limits = *limits;
    api_limits_default(&a->limits);
    a->metrics = metrics_new();
    a->auth = auth_cache_new();
    int err = a->auth ? 0 : REG_ENOMEM;
    if (!err && deps->commands)
        err = ingest_new(loop, deps->commands, deps->bus, a->metrics, &a->limits, deps->keys,
                         &a->ingest);
    if (!err) err = bus_subscribe(deps->bus, loop, "commit", on_commit, a);
    if (!err && deps->view_is_secondary) {
        uv_timer_init(loop, &a->catch_up_timer);
        a->catch_up_timer.data = a;
        uv_timer_start(&a->catch_up_timer, on_catch_up_timer, 1000, 1000);
    }
    if (!err) err = http_server_start(loop, host, port, hl, handle, a, &a->http);
    if (err) {
        api_stop(a);
        return err;
    }
    *out = a;
    return 0;
}

int api_port(const api *a)
{
    return http_server_port(a->http);
}

struct ingest *api_ingest(api *a)
{
    return a->ingest;
}

metrics *api_metrics(api *a)
{
    return a->metrics;
}

void api_attach_device_port(api *a, struct device_port *dp)
{
    a->device_port = dp;
}

void api_attach_mqtt_port(api *a, struct mqtt_port *mp)
{
    a->mqtt_port = mp;
}

static void api_free(api *a)
{
    metrics_free(a->metrics);
    auth_cache_free(a->auth);
    free(a);
}

static void on_timer_closed(uv_handle_t *h)
{
    api_free(h->data);
}

void api_stop(api *a)
{
    if (!a) return;
    if (a->http) http_server_close(a->http);
    ingest_free(a->ingest);
    if (a->deps.view_is_secondary) {
        uv_close((uv_handle_t *)&a->catch_up_timer, on_timer_closed);
    } else {
        api_free(a);
    }
}
