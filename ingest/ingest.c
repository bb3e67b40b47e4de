/*
 * ingest.c - the write side of the operator API (ingest.h).
 *
 * A request becomes a command and a `pending` entry keyed by the command id. Three things can
 * answer it, whichever comes first: the command's outcome on the bus (the normal case), a failed
 * append reported by the log (503: nothing was stored), or the request timeout (503: the command
 * may still be stored and decided, e.g. when Kafka comes back; the caller checks before retrying,
 * and a retry with the same effect is recognised by the rules, e.g. serial uniqueness). Log
 * callbacks arrive on the log's thread and are handed to the loop through a queue and a uv_async_t.
 */
#define _GNU_SOURCE
#include "ingest/ingest.h"
#include "clock.h"
#include "err.h"
#include "ids.h"
#include "jsonbody.h"
#include "pki.h"
#include "schemas/codec.h"
#include "jsonfast.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* PENDING_BUCKETS: commands waiting for their outcome are found by id in a table this wide. A
 * fleet reporting its shadows keeps tens of thousands waiting (10,000 devices with 8 each in the
 * shadow benchmark); at 4,096 buckets walking the chains took ~4% of the loop. */
enum { PENDING_BUCKETS = 65536, SWEEP_MS = 250, TENANT_CA_DAYS = 3650 };

struct pending {
    struct pending *next_in_bucket;
    struct pending *prev, *next; /* in arrival order, for the timeout sweep */
    reg_uuid cid;
    http_req *req; /* answered with the outcome; or NULL, and cb gets it */
    ingest_outcome_cb cb;
    void *cb_arg;
    json_t *extra;    /* members added to a successful answer (a token shown once); owned */
    bool status_only; /* cb takes an accepted outcome without its body (ingest_submit_cb_status) */
    const char *label;
    uint64_t start_ns, deadline_ns;
};

/* The report of one append, handed from the log's thread to the loop when it failed. */
struct append_failure {
    struct append_failure *next;
    struct ingest *in;
    reg_uuid cid;
    int err;
};

struct ingest {
    uv_loop_t *loop;
    elog *commands;
    bus *bus;
    metrics *metrics;
    api_limits limits;
    codec_registry *codec;
    codec_buf enc;
    keystore *keys;

    struct pending *buckets[PENDING_BUCKETS];
    struct pending *oldest, *newest;
    size_t npending;

    uv_timer_t sweep;
    uv_async_t wake;
    unsigned works; /* thread-pool jobs of this ingest side still to complete (ingest_work) */
    bool stopping;  /* ingest_free was called */
    bool handles_closed;
    pthread_mutex_t mu;
    struct append_failure *failures; /* guarded by mu */
};

static unsigned bucket_of(const reg_uuid *cid)
{
    unsigned h = 0;
    for (int i = 0; i < 16; i++)
        h = h * 31 + cid->b[i];
    return h % PENDING_BUCKETS;
}

static struct pending *pending_find(ingest *in, const reg_uuid *cid)
{
    for (struct pending *p = in->buckets[bucket_of(cid)]; p; p = p->next_in_bucket)
        if (!memcmp(p->cid.b, cid->b, 16)) return p;
    return NULL;
}

static void pending_remove(ingest *in, struct pending *p)
{
    struct pending **pp = &in->buckets[bucket_of(&p->cid)];
    while (*pp != p)
        pp = &(*pp)->next_in_bucket;
    *pp = p->next_in_bucket;
    if (p->prev)
        p->prev->next = p->next;
    else
        in->oldest = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        in->newest = p->prev;
    in->npending--;
}

static void record(ingest *in, struct pending *p, int status)
{
    metrics_request(in->metrics, p->label, status, (double)(clock_mono_ns() - p->start_ns) / 1e9);
}

/* Answers and frees a pending command with a problem document. */
static void pending_fail(ingest *in, struct pending *p, int status, const char *detail)
{
    pending_remove(in, p);
    if (p->req) {
        record(in, p, status);
        http_respond_problem(p->req, status, detail);
    } else {
        json_t *problem = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title",
                                    http_status_text(status), "status", status, "detail", detail);
        p->cb(p->cb_arg, status, problem);
        json_decref(problem);
    }
    json_decref(p->extra);
    free(p);
}

static void respond_json(http_req *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    http_respond(req, status, status >= 400 ? "application/problem+json" : "application/json", text,
                 strlen(text), NULL);
    free(text);
}

/* The command id and status at the head of an outcome's text, which the projector writes as
 * {"command_id":"<id>","status":<status>,"body":...}. 0, or REG_EINVAL for another text. */
static int outcome_head(const char *msg, size_t len, reg_uuid *cid, int *status)
{
    static const char id_key[] = "{\"command_id\":\"", status_key[] = "\",\"status\":";
    size_t at = sizeof id_key - 1;
    char id[REG_UUID_STRLEN + 1];
    if (len < at + REG_UUID_STRLEN + sizeof status_key || memcmp(msg, id_key, at))
        return REG_EINVAL;
    memcpy(id, msg + at, REG_UUID_STRLEN);
    id[REG_UUID_STRLEN] = 0;
    at += REG_UUID_STRLEN;
    if (reg_uuid_parse(id, cid) || memcmp(msg + at, status_key, sizeof status_key - 1))
        return REG_EINVAL;
    at += sizeof status_key - 1;
    int n = 0, digits = 0;
    for (; at < len && msg[at] >= '0' && msg[at] <= '9' && digits < 4; at++, digits++)
        n = n * 10 + (msg[at] - '0');
    if (!digits || at >= len || msg[at] != ',') return REG_EINVAL;
    *status = n;
    return 0;
}

static void on_outcome(void *arg, const char *channel, const char *msg, size_t len)
{
    ingest *in = arg;
    reg_uuid head_cid;
    int head_status = 0;
    if (!outcome_head(msg, len, &head_cid, &head_status) && head_status < 400) {
        struct pending *p = pending_find(in, &head_cid);
        if (!p) return; /* another ingest's command */
        if (p->status_only) {
            pending_remove(in, p);
            p->cb(p->cb_arg, head_status, NULL);
            free(p);
            return;
        }
    }
    json_t *o = json_loadb(msg, len, 0, NULL);
    if (!o) return;
    reg_uuid cid;
    struct pending *p = NULL;
    if (!reg_uuid_parse(json_string_value(json_object_get(o, "command_id")), &cid))
        p = pending_find(in, &cid);
    if (p) {
        int status = (int)json_integer_value(json_object_get(o, "status"));
        json_t *body = json_object_get(o, "body");
        if (status < 400 && p->extra && json_is_object(body)) json_object_update(body, p->extra);
        pending_remove(in, p);
        if (p->req) {
            record(in, p, status);
            respond_json(p->req, status, body);
        } else {
            p->cb(p->cb_arg, status, body);
        }
        json_decref(p->extra);
        free(p);
    }
    json_decref(o);
}

/* Runs on the log's thread: only failures matter to the loop (success is answered by the
 * outcome). */
static void on_appended(void *arg, int err, int64_t offset)
{
    struct append_failure *f = arg;
    ingest *owner = f->in;
    (void)offset;
    if (!err) {
        free(f);
        return;
    }
    f->err = err;
    pthread_mutex_lock(&owner->mu);
    f->next = owner->failures;
    owner->failures = f;
    pthread_mutex_unlock(&owner->mu);
    uv_async_send(&owner->wake);
}

static void on_wake(uv_async_t *h)
{
    ingest *in = h->data;
    pthread_mutex_lock(&in->mu);
    struct append_failure *f = in->failures;
    in->failures = NULL;
    pthread_mutex_unlock(&in->mu);
    while (f) {
        struct append_failure *next = f->next;
        struct pending *p = pending_find(in, &f->cid);
        if (p) {
            char msg[160];
            snprintf(msg, sizeof msg, "the command could not be stored (%s); nothing was changed",
                     reg_strerror(f->err));
            pending_fail(in, p, 503, msg);
        }
        metrics_count(in->metrics, "registry_log_append_failures_total", 1);
        free(f);
        f = next;
    }
}

static void on_sweep(uv_timer_t *t)
{
    ingest *in = t->data;
    uint64_t now = clock_mono_ns();
    while (in->oldest && in->oldest->deadline_ns <= now)
        pending_fail(in, in->oldest, 503,
                     "the command was not decided in time; it may still be applied, so check "
                     "the entity before retrying");
}

int ingest_new(uv_loop_t *loop, elog *commands, bus *b, metrics *m, const api_limits *limits,
               keystore *keys, ingest **out)
{
    ingest *in = calloc(1, sizeof *in);
    if (!in) return REG_ENOMEM;
    in->loop = loop;
    in->commands = commands;
    in->bus = b;
    in->metrics = m;
    in->limits = *limits;
    in->keys = keys;
    int err = codec_registry_new(&in->codec);
    if (err) {
        free(in);
        return err;
    }
    pthread_mutex_init(&in->mu, NULL);
    uv_timer_init(loop, &in->sweep);
    in->sweep.data = in;
    uv_timer_start(&in->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_async_init(loop, &in->wake, on_wake);
    in->wake.data = in;
    err = bus_subscribe(b, loop, "outcome", on_outcome, in);
    if (err) {
        ingest_free(in);
        return err;
    }
    *out = in;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    ingest *in = h->data;
    if (h == (uv_handle_t *)&in->wake) {
        in->handles_closed = true;
        if (in->works == 0) {
            pthread_mutex_destroy(&in->mu);
            free(in);
        }
    }
}

void ingest_work_begin(ingest *in)
{
    in->works++;
}

bool ingest_stopping(const ingest *in)
{
    return in->stopping;
}

void ingest_work_end(ingest *in)
{
    if (--in->works == 0 && in->handles_closed) {
        pthread_mutex_destroy(&in->mu);
        free(in);
    }
}

uv_loop_t *ingest_loop(const ingest *in)
{
    return in->loop;
}

void ingest_free(ingest *in)
{
    if (!in) return;
    in->stopping = true;
    while (in->oldest)
        pending_fail(in, in->oldest, 503, "the server is stopping");
    codec_registry_free(in->codec);
    free(in->enc.data);
    struct append_failure *f = in->failures;
    while (f) {
        struct append_failure *next = f->next;
        free(f);
        f = next;
    }
    uv_close((uv_handle_t *)&in->sweep, NULL);
    uv_close((uv_handle_t *)&in->wake, on_handle_closed);
}

keystore *ingest_keys(const ingest *in)
{
    return in->keys;
}

const api_limits *ingest_limits(const ingest *in)
{
    return &in->limits;
}

metrics *ingest_metrics(const ingest *in)
{
    return in->metrics;
}

size_t ingest_pending(const ingest *in)
{
    return in->npending;
}

/* Sends the command and registers it as pending: answered through req (with label, from
 * start_ns) or cb. Takes cmd and extra. */
static void submit(ingest *in, http_req *req, ingest_outcome_cb cb, void *cb_arg, bool status_only,
                   uint64_t start_ns, json_t *cmd, json_t *extra, const char *label)
{
    struct pending *p = calloc(1, sizeof *p);
    struct append_failure *f = malloc(sizeof *f);
    if (!p || !f) {
        free(p);
        free(f);
        json_decref(cmd);
        json_decref(extra);
        if (req) {
            http_respond_problem(req, 503, "out of memory");
        } else {
            json_t *problem = json_pack("{s:i, s:s}", "status", 503, "detail", "out of memory");
            cb(cb_arg, 503, problem);
            json_decref(problem);
        }
        return;
    }
    reg_uuid_parse(json_string_value(json_object_get(cmd, "command_id")), &p->cid);
    p->req = req;
    p->cb = cb;
    p->cb_arg = cb_arg;
    p->extra = extra;
    p->status_only = status_only;
    p->label = label;
    p->start_ns = start_ns ? start_ns : clock_mono_ns();
    p->deadline_ns = clock_mono_ns() + (uint64_t)in->limits.request_timeout_ms * 1000000ull;

    /* Registered before the append: the outcome may arrive before the append's report. */
    unsigned b = bucket_of(&p->cid);
    p->next_in_bucket = in->buckets[b];
    in->buckets[b] = p;
    p->prev = in->newest;
    if (in->newest)
        in->newest->next = p;
    else
        in->oldest = p;
    in->newest = p;
    in->npending++;

    in->enc.len = 0;
    int err = codec_encode(in->codec, "registry.Command", cmd, &in->enc);
    char tenant[REG_UUID_STRLEN + 1];
    snprintf(tenant, sizeof tenant, "%s", json_string_value(json_object_get(cmd, "tenant_id")));
    int64_t time_ms = json_integer_value(json_object_get(cmd, "time_ms"));
    json_decref(cmd);
    if (err) {
        free(f);
        pending_fail(in, p, 500, "the command could not be encoded");
        return;
    }
    f->cid = p->cid;
    f->next = NULL;
    f->in = in;
    err = elog_append(in->commands, tenant, strlen(tenant), in->enc.data, in->enc.len, time_ms,
                      on_appended, f);
    if (err) {
        free(f);
        pending_fail(in, p, 503,
                     err == REG_EAGAIN ? "too many writes in flight; retry shortly"
                                       : "the commands log is not available");
        return;
    }
    metrics_count(in->metrics, "registry_log_appends_total", 1);
}

void ingest_submit(ingest *in, http_req *req, uint64_t start_ns, json_t *cmd, json_t *extra,
                   const char *label)
{
    submit(in, req, NULL, NULL, false, start_ns, cmd, extra, label);
}

void ingest_submit_cb(ingest *in, json_t *cmd, ingest_outcome_cb cb, void *arg)
{
    submit(in, NULL, cb, arg, false, 0, cmd, NULL, NULL);
}

void ingest_submit_cb_status(ingest *in, json_t *cmd, ingest_outcome_cb cb, void *arg)
{
    submit(in, NULL, cb, arg, true, 0, cmd, NULL, NULL);
}

json_t *ingest_command(const char *actor, const char *tenant_s, const char *kind, json_t *body)
{
    reg_uuid cid;
    char cid_s[37];
    reg_uuid_new(&cid);
    reg_uuid_format(&cid, cid_s);
    /* jsonfast_pack: the tenant is an id and the actor a device id or a token's name, both from
     * the view (a reported update is built here on the loop, tens of thousands a second) */
    return jsonfast_pack("{s:s, s:s, s:I, s:s, s:{s:o}}", "command_id", cid_s, "tenant_id",
                         tenant_s, "time_ms", (json_int_t)clock_now_ms(), "actor", actor, "body",
                         kind, body);
}

static char *patch_text(const json_t *patch)
{
    return patch ? jsonfast_dump(patch, NULL) : NULL;
}

json_t *ingest_shadow_command(const char *actor, const char *tenant_s, const char *device_s,
                              const shadow_update *u)
{
    char *desired = patch_text(u->desired), *reported = patch_text(u->reported);
    json_t *version = u->version >= 0 ? json_integer(u->version) : json_null();
    json_t *cmd = ingest_command(
        actor, tenant_s, "UpdateShadow",
        jsonfast_pack("{s:s, s:s?, s:s?, s:o, s:s?}", "device_id", device_s, "desired", desired,
                      "reported", reported, "version", version, "client_token", u->client_token));
    free(desired);
    free(reported);
    return cmd;
}

static void bad_request(ingest *in, http_req *req, const char *label, const char *detail)
{
    metrics_request(in->metrics, label, 400, 0);
    http_respond_problem(req, 400, detail);
}

/* Metadata keys: what the fleet query language can name after "metadata.". */
static int valid_metadata_key(const char *k, size_t max)
{
    size_t n = strlen(k);
    if (n == 0 || n > max) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

/* Checks a metadata value: a string of bounded length without control characters. */
static int check_metadata_value(const ingest *in, const char *key, const json_t *v, int allow_null,
                                jsonbody_err *e)
{
    if (json_is_null(v) && allow_null) return 0;
    if (!json_is_string(v)) {
        snprintf(e->detail, sizeof e->detail, "metadata '%.64s': the value must be a string%s", key,
                 allow_null ? " or null" : "");
        return -1;
    }
    if (json_string_length(v) > in->limits.max_metadata_value) {
        snprintf(e->detail, sizeof e->detail,
                 "metadata '%.64s': the value is longer than %zu bytes", key,
                 in->limits.max_metadata_value);
        return -1;
    }
    const char *s = json_string_value(v);
    for (size_t i = 0; i < json_string_length(v); i++)
        if ((unsigned char)s[i] < 0x20) {
            snprintf(e->detail, sizeof e->detail,
                     "metadata '%.64s': the value contains a control character", key);
            return -1;
        }
    return 0;
}

static int check_metadata_object(const ingest *in, const json_t *md, int allow_null,
                                 jsonbody_err *e)
{
    if (!json_is_object(md)) {
        snprintf(e->detail, sizeof e->detail, "'metadata' must be an object");
        return -1;
    }
    if (json_object_size(md) > in->limits.max_metadata_keys) {
        snprintf(e->detail, sizeof e->detail, "metadata: at most %u keys per device",
                 in->limits.max_metadata_keys);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)md, k, v)
    {
        if (!valid_metadata_key(k, in->limits.max_metadata_key)) {
            snprintf(e->detail, sizeof e->detail,
                     "metadata key '%.64s' is invalid: 1 to %zu characters of A-Z a-z 0-9 _ - . :",
                     k, in->limits.max_metadata_key);
            return -1;
        }
        if (check_metadata_value(in, k, v, allow_null, e)) return -1;
    }
    return 0;
}

/* The tenant's operational issuing CA: its key goes to the keystore (encrypted at rest) under
 * "ca-<tenant id>", its certificate into the command. Runs on the loop; the keystore's fsync
 * costs a few milliseconds, acceptable for the rare tenant creation. *pem is malloc'd. */
static int make_tenant_ca(ingest *in, const char *tid_s, const char *name, char **pem)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    char cn[256], org[64], key_name[48];
    snprintf(cn, sizeof cn, "%.200s issuing CA", name);
    snprintf(org, sizeof org, "registry tenant %s", tid_s);
    snprintf(key_name, sizeof key_name, "ca-%s", tid_s);
    int err = in->keys ? 0 : REG_EINVAL;
    if (!err) err = pki_ca_new(cn, org, TENANT_CA_DAYS, clock_now_ms(), &key, &cert);
    if (!err) err = keystore_put(in->keys, key_name, key);
    if (!err) err = pki_cert_to_pem(cert, pem);
    EVP_PKEY_free(key);
    X509_free(cert);
    return err;
}

static int content_type_ok(const http_request *r)
{
    const char *ct = r->content_type;
    if (!ct) return 1;
    while (*ct == ' ')
        ct++;
    return !strncasecmp(ct, "application/json", 16) &&
           (ct[16] == 0 || ct[16] == ';' || ct[16] == ' ');
}

void ingest_handle(ingest *in, http_req *req, const http_request *r, const auth_principal *who,
                   enum ingest_route route, const char *id, const char *key, const char *label)
{
    if (route >= INGEST_ADD_FACTORY_CA) {
        ingest_credentials(in, req, r, who, route, id, label);
        return;
    }
    jsonbody_err e = {{0}};
    json_t *body = NULL, *cmd = NULL, *extra = NULL;
    int needs_body = route != INGEST_REVOKE_TOKEN && route != INGEST_DELETE_METADATA;
    if (needs_body) {
        if (!content_type_ok(r)) {
            metrics_request(in->metrics, label, 415, 0);
            http_respond_problem(req, 415, "the body must be application/json");
            return;
        }
        body = jsonbody_parse_object(r->body, r->body_len, in->limits.max_json_depth, &e);
        if (!body) goto bad;
    }
    reg_uuid uid;
    if (id && reg_uuid_parse(id, &uid)) {
        snprintf(e.detail, sizeof e.detail, "'%.40s' is not a valid id (a UUID)", id);
        goto bad;
    }

    switch (route) {
    case INGEST_CREATE_TENANT: {
        static const char *const allowed[] = {"name", "cert_validity_days", "rotate_before_days",
                                              "overlap_days", NULL};
        const char *name;
        long long validity = 365, rotate = 30, overlap = 7;
        if (jsonbody_only(body, allowed, &e) ||
            jsonbody_string(body, "name", 1, 1, 200, &name, &e) ||
            jsonbody_int(body, "cert_validity_days", 1, 3650, &validity, &e) ||
            jsonbody_int(body, "rotate_before_days", 0, 3650, &rotate, &e) ||
            jsonbody_int(body, "overlap_days", 0, 3650, &overlap, &e))
            goto bad;
        reg_uuid tid, token_id;
        char tid_s[37], token_id_s[37], token[64], hash[65];
        reg_uuid_new(&tid);
        reg_uuid_new(&token_id);
        reg_uuid_format(&tid, tid_s);
        reg_uuid_format(&token_id, token_id_s);
        reg_token_new(token, sizeof token);
        reg_token_hash(token, hash);
        char *ca_pem = NULL;
        int err = make_tenant_ca(in, tid_s, name, &ca_pem);
        if (err) {
            json_decref(body);
            metrics_request(in->metrics, label, 503, 0);
            http_respond_problem(req, 503, "the tenant's issuing CA could not be made");
            return;
        }
        cmd = ingest_command(who->actor, tid_s, "CreateTenant",
                             json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:s}", "name", name,
                                       "cert_validity_days", (int)validity, "rotate_before_days",
                                       (int)rotate, "overlap_days", (int)overlap, "token_id",
                                       token_id_s, "token_hash", hash, "issuing_ca_pem", ca_pem));
        free(ca_pem);
        extra = json_pack("{s:s}", "token", token);
        break;
    }
    case INGEST_CREATE_TOKEN: {
        static const char *const allowed[] = {"role", "name", NULL};
        const char *role, *name;
        if (jsonbody_only(body, allowed, &e) ||
            jsonbody_string(body, "role", 1, 1, 16, &role, &e) ||
            jsonbody_string(body, "name", 1, 1, 200, &name, &e))
            goto bad;
        if (strcmp(role, "operator") && strcmp(role, "viewer")) {
            snprintf(e.detail, sizeof e.detail, "'role' must be \"operator\" or \"viewer\"");
            goto bad;
        }
        reg_uuid token_id;
        char token_id_s[37], token[64], hash[65];
        reg_uuid_new(&token_id);
        reg_uuid_format(&token_id, token_id_s);
        reg_token_new(token, sizeof token);
        reg_token_hash(token, hash);
        cmd = ingest_command(who->actor, who->tenant_s, "CreateToken",
                             json_pack("{s:s, s:s, s:s, s:s}", "token_id", token_id_s, "role", role,
                                       "name", name, "token_hash", hash));
        extra = json_pack("{s:s}", "token", token);
        break;
    }
    case INGEST_REVOKE_TOKEN:
        cmd = ingest_command(who->actor, who->tenant_s, "RevokeToken",
                             json_pack("{s:s}", "token_id", id));
        break;
    case INGEST_REGISTER_DEVICE: {
        static const char *const allowed[] = {"serial_number",     "device_type",
                                              "hardware_revision", "firmware_version",
                                              "metadata",          NULL};
        const char *serial, *type, *hw, *fw;
        if (jsonbody_only(body, allowed, &e) ||
            jsonbody_string(body, "serial_number", 1, 1, 128, &serial, &e) ||
            jsonbody_string(body, "device_type", 1, 1, 64, &type, &e) ||
            jsonbody_string(body, "hardware_revision", 0, 1, 64, &hw, &e) ||
            jsonbody_string(body, "firmware_version", 0, 1, 64, &fw, &e))
            goto bad;
        json_t *md = json_object_get(body, "metadata");
        if (md && check_metadata_object(in, md, 0, &e)) goto bad;
        reg_uuid did;
        char did_s[37];
        reg_uuid_new(&did);
        reg_uuid_format(&did, did_s);
        cmd = ingest_command(who->actor, who->tenant_s, "RegisterDevice",
                             json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:o}", "device_id", did_s,
                                       "serial_number", serial, "device_type", type,
                                       "hardware_revision", hw, "firmware_version", fw, "metadata",
                                       md ? json_incref(md) : json_object()));
        break;
    }
    case INGEST_UPDATE_DEVICE: {
        static const char *const allowed[] = {"status", "firmware_version", "hardware_revision",
                                              NULL};
        const char *status, *hw, *fw;
        if (jsonbody_only(body, allowed, &e) ||
            jsonbody_string(body, "status", 0, 1, 32, &status, &e) ||
            jsonbody_string(body, "hardware_revision", 0, 1, 64, &hw, &e) ||
            jsonbody_string(body, "firmware_version", 0, 1, 64, &fw, &e))
            goto bad;
        if (!status && !hw && !fw) {
            snprintf(e.detail, sizeof e.detail,
                     "nothing to change: give status, firmware_version or hardware_revision");
            goto bad;
        }
        if (status && strcmp(status, "provisioning") && strcmp(status, "active") &&
            strcmp(status, "suspended") && strcmp(status, "decommissioned")) {
            snprintf(e.detail, sizeof e.detail,
                     "'status' must be provisioning, active, suspended or decommissioned");
            goto bad;
        }
        cmd = ingest_command(who->actor, who->tenant_s, "UpdateDevice",
                             json_pack("{s:s, s:s?, s:s?, s:s?}", "device_id", id, "status", status,
                                       "firmware_version", fw, "hardware_revision", hw));
        break;
    }
    case INGEST_PUT_METADATA:
    case INGEST_DELETE_METADATA: {
        if (!valid_metadata_key(key, in->limits.max_metadata_key)) {
            snprintf(e.detail, sizeof e.detail,
                     "metadata key '%.64s' is invalid: 1 to %zu characters of A-Z a-z 0-9 _ - . :",
                     key, in->limits.max_metadata_key);
            goto bad;
        }
        json_t *changes = json_object();
        if (route == INGEST_PUT_METADATA) {
            static const char *const allowed[] = {"value", NULL};
            json_t *v = json_object_get(body, "value");
            if (jsonbody_only(body, allowed, &e)) {
                json_decref(changes);
                goto bad;
            }
            if (!v) {
                snprintf(e.detail, sizeof e.detail, "'value' is required");
                json_decref(changes);
                goto bad;
            }
            if (check_metadata_value(in, key, v, 0, &e)) {
                json_decref(changes);
                goto bad;
            }
            json_object_set(changes, key, v);
        } else {
            json_object_set_new(changes, key, json_null());
        }
        cmd = ingest_command(who->actor, who->tenant_s, "PatchMetadata",
                             json_pack("{s:s, s:o, s:b}", "device_id", id, "changes", changes,
                                       "require_existing", route == INGEST_DELETE_METADATA));
        break;
    }
    case INGEST_PATCH_METADATA:
        if (json_object_size(body) == 0) {
            snprintf(e.detail, sizeof e.detail, "nothing to change: give {key: value|null, ...}");
            goto bad;
        }
        if (check_metadata_object(in, body, 1, &e)) goto bad;
        cmd = ingest_command(
            who->actor, who->tenant_s, "PatchMetadata",
            json_pack("{s:s, s:O, s:b}", "device_id", id, "changes", body, "require_existing", 0));
        break;
    case INGEST_PUT_SHADOW_DESIRED: {
        shadow_update u;
        const char *why = NULL;
        if (shadow_parse_http_update(body, "desired", &in->limits.shadow, &u, &why)) {
            snprintf(e.detail, sizeof e.detail, "%s", why);
            goto bad;
        }
        cmd = ingest_shadow_command(who->actor, who->tenant_s, id, &u);
        break;
    }
    default: /* the credentials routes, handled above */
        break;
    }
    json_decref(body);
    if (!cmd) {
        json_decref(extra);
        metrics_request(in->metrics, label, 500, 0);
        http_respond_problem(req, 500, "the command could not be built");
        return;
    }
    ingest_submit(in, req, r->start_ns, cmd, extra, label);
    return;
bad:
    json_decref(body);
    bad_request(in, req, label, e.detail);
}
