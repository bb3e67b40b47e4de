/*
 * credentials.c - the operator's credentials writes (ingest.h): factory CAs, manifests, claims,
 * certificate revocation and rotation by hand.
 *
 * What can be checked without state is checked here, before anything is sent: a factory CA must
 * parse and be a currently valid CA certificate (its id is derived from the tenant and its
 * fingerprint, so registering it twice is a conflict, not a second copy); a claim's token is made
 * here and only its hash travels. A manifest (JSON, or CSV with a row per serial) may hold a
 * million serials: it is split into parts of bounded size, each its own command, and the request
 * is answered once every part has been decided, with the totals. Parts are idempotent per serial,
 * so uploading the same manifest again (after a 503, say) only reports duplicates.
 */
#define _GNU_SOURCE
#include "clock.h"
#include "err.h"
#include "ids.h"
#include "ingest/ingest.h"
#include "jsonbody.h"
#include "pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

enum {
    MANIFEST_PART_SERIALS = 5000,     /* serials per part (command) at most */
    MANIFEST_PART_BYTES = 256 * 1024, /* ... and bytes of serials per part */
    CA_PEM_MAX = 64 * 1024,
    CLAIM_MAX_USES = 10000000,
    CLAIM_MAX_TTL_S = 10 * 365 * 86400,
};

static void problem(ingest *in, http_req *req, const char *label, int status, const char *detail)
{
    metrics_request(ingest_metrics(in), label, status, 0);
    http_respond_problem(req, status, detail);
}

static int media_is(const http_request *r, const char *type)
{
    const char *ct = r->content_type;
    if (!ct) return !strcmp(type, "application/json");
    while (*ct == ' ')
        ct++;
    size_t n = strlen(type);
    return !strncasecmp(ct, type, n) && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* A JSON object body, or NULL after answering (415/400). An empty body is {} when allowed. */
static json_t *json_body(ingest *in, http_req *req, const http_request *r, const char *label,
                         int empty_ok)
{
    if (empty_ok && r->body_len == 0) return json_object();
    if (!media_is(r, "application/json")) {
        problem(in, req, label, 415, "the body must be application/json");
        return NULL;
    }
    jsonbody_err e = {{0}};
    json_t *body =
        jsonbody_parse_object(r->body, r->body_len, ingest_limits(in)->max_json_depth, &e);
    if (!body) problem(in, req, label, 400, e.detail);
    return body;
}

static void add_factory_ca(ingest *in, http_req *req, const http_request *r,
                           const auth_principal *who, const char *label)
{
    json_t *body = json_body(in, req, r, label, 0);
    if (!body) return;
    static const char *const allowed[] = {"pem", NULL};
    jsonbody_err e = {{0}};
    const char *pem;
    X509 *ca = NULL;
    char why[160] = "";
    if (jsonbody_only(body, allowed, &e) || jsonbody_text(body, "pem", 1, CA_PEM_MAX, &pem, &e)) {
        problem(in, req, label, 400, e.detail);
        goto out;
    }
    if (pki_cert_from_pem(pem, strlen(pem), &ca)) {
        problem(in, req, label, 400, "'pem': not a PEM certificate");
        goto out;
    }
    if (pki_check_ca(ca, clock_now_ms(), why, sizeof why)) {
        char detail[224];
        snprintf(detail, sizeof detail, "'pem': not an acceptable CA certificate: %s", why);
        problem(in, req, label, 400, detail);
        goto out;
    }
    char fp_hex[PKI_FINGERPRINT_HEX], ca_id[37];
    uint8_t fp[32];
    pki_cert_fingerprint(ca, fp_hex);
    reg_hex_decode(fp_hex, fp, 32);
    reg_uuid id;
    reg_uuid_derive(&who->tenant, fp, 32, &id);
    reg_uuid_format(&id, ca_id);
    char *subject = pki_cert_subject(ca), *clean = NULL;
    if (pki_cert_to_pem(ca, &clean)) {
        free(subject);
        problem(in, req, label, 500, "the certificate could not be stored");
        goto out;
    }
    json_t *cmd =
        ingest_command(who->actor, who->tenant_s, "AddFactoryCa",
                       json_pack("{s:s, s:s, s:s, s:s, s:I}", "ca_id", ca_id, "pem", clean,
                                 "fingerprint", fp_hex, "subject", subject ? subject : "",
                                 "not_after_ms", (json_int_t)pki_cert_not_after_ms(ca)));
    free(subject);
    free(clean);
    ingest_submit(in, req, r->start_ns, cmd, NULL, label);
out:
    X509_free(ca);
    json_decref(body);
}

static void create_claim(ingest *in, http_req *req, const http_request *r,
                         const auth_principal *who, const char *label)
{
    json_t *body = json_body(in, req, r, label, 0);
    if (!body) return;
    static const char *const allowed[] = {"device_type", "max_uses", "expires_at", "ttl_seconds",
                                          NULL};
    jsonbody_err e = {{0}};
    const char *type, *expires_at;
    long long max_uses = -1, ttl = -1;
    int64_t now = clock_now_ms(), expires_ms = 0;
    if (jsonbody_only(body, allowed, &e) ||
        jsonbody_string(body, "device_type", 1, 1, 64, &type, &e) ||
        jsonbody_int(body, "max_uses", 1, CLAIM_MAX_USES, &max_uses, &e) ||
        jsonbody_string(body, "expires_at", 0, 1, 64, &expires_at, &e) ||
        jsonbody_int(body, "ttl_seconds", 1, CLAIM_MAX_TTL_S, &ttl, &e))
        goto bad;
    if (max_uses < 0) {
        snprintf(e.detail, sizeof e.detail, "'max_uses' is required");
        goto bad;
    }
    if ((expires_at != NULL) == (ttl >= 0)) {
        snprintf(e.detail, sizeof e.detail, "give exactly one of 'expires_at' and 'ttl_seconds'");
        goto bad;
    }
    if (expires_at) {
        if (clock_parse_rfc3339(expires_at, &expires_ms)) {
            snprintf(e.detail, sizeof e.detail, "'expires_at' must be an RFC 3339 time");
            goto bad;
        }
        if (expires_ms <= now) {
            snprintf(e.detail, sizeof e.detail, "'expires_at' is in the past");
            goto bad;
        }
    } else {
        expires_ms = now + ttl * 1000;
    }
    reg_uuid cid;
    char cid_s[37], token[64], hash[65];
    reg_uuid_new(&cid);
    reg_uuid_format(&cid, cid_s);
    reg_token_new(token, sizeof token);
    reg_token_hash(token, hash);
    json_t *cmd = ingest_command(who->actor, who->tenant_s, "CreateClaim",
                                 json_pack("{s:s, s:s, s:s, s:i, s:I}", "claim_id", cid_s,
                                           "token_hash", hash, "device_type", type, "max_uses",
                                           (int)max_uses, "expires_ms", (json_int_t)expires_ms));
    ingest_submit(in, req, r->start_ns, cmd, json_pack("{s:s}", "claim_token", token), label);
    json_decref(body);
    return;
bad:
    problem(in, req, label, 400, e.detail);
    json_decref(body);
}

/* ---- manifests ---- */

/* One upload: its parts' outcomes are summed, and the request is answered after the last. */
struct upload {
    ingest *in;
    http_req *req;
    const char *label;
    uint64_t start_ns;
    char manifest_id[37];
    int parts, outstanding;
    long long count, duplicates;
    int fail_status;
    char fail_detail[200];
};

static void on_part(void *arg, int status, json_t *body)
{
    struct upload *u = arg;
    if (status >= 400) {
        if (!u->fail_status) {
            u->fail_status = status;
            snprintf(u->fail_detail, sizeof u->fail_detail, "%s",
                     json_string_value(json_object_get(body, "detail"))
                         ? json_string_value(json_object_get(body, "detail"))
                         : "a part was refused");
        }
    } else {
        u->count += json_integer_value(json_object_get(body, "count"));
        u->duplicates += json_integer_value(json_object_get(body, "duplicates"));
    }
    if (--u->outstanding) return;
    int answered = u->fail_status ? u->fail_status : 201;
    metrics_request(ingest_metrics(u->in), u->label, answered,
                    (double)(clock_mono_ns() - u->start_ns) / 1e9);
    json_t *reply;
    if (u->fail_status)
        reply = json_pack("{s:s, s:s, s:i, s:s, s:s, s:I, s:I}", "type", "about:blank", "title",
                          http_status_text(u->fail_status), "status", u->fail_status, "detail",
                          u->fail_detail, "manifest_id", u->manifest_id, "count",
                          (json_int_t)u->count, "stored_duplicates", (json_int_t)u->duplicates);
    else
        reply = json_pack("{s:s, s:I, s:I, s:i}", "manifest_id", u->manifest_id, "count",
                          (json_int_t)u->count, "duplicates", (json_int_t)u->duplicates, "parts",
                          u->parts);
    char *text = json_dumps(reply, JSON_COMPACT);
    http_respond(u->req, answered, u->fail_status ? "application/problem+json" : "application/json",
                 text, strlen(text), NULL);
    free(text);
    json_decref(reply);
    free(u);
}

/* The serials of one (device_type, hardware_revision) group, cut into parts as they come. */
struct group {
    char device_type[65], hardware_revision[65];
    int has_hw;
    json_t *serials; /* the part being filled */
    size_t bytes;
    json_t *parts; /* finished parts: arrays of serials */
};

struct manifest {
    struct group *groups;
    size_t ngroups, cap;
};

static struct group *group_for(struct manifest *m, const char *type, size_t tlen, const char *hw,
                               size_t hwlen, int has_hw)
{
    for (size_t i = 0; i < m->ngroups; i++) {
        struct group *g = &m->groups[i];
        if (strlen(g->device_type) == tlen && !memcmp(g->device_type, type, tlen) &&
            g->has_hw == has_hw &&
            (!has_hw ||
             (strlen(g->hardware_revision) == hwlen && !memcmp(g->hardware_revision, hw, hwlen))))
            return g;
    }
    if (m->ngroups == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        struct group *grown = realloc(m->groups, cap * sizeof *grown);
        if (!grown) return NULL;
        m->groups = grown;
        m->cap = cap;
    }
    struct group *g = &m->groups[m->ngroups++];
    memset(g, 0, sizeof *g);
    memcpy(g->device_type, type, tlen);
    if (has_hw) memcpy(g->hardware_revision, hw, hwlen);
    g->has_hw = has_hw;
    g->serials = json_array();
    g->parts = json_array();
    return g;
}

static void group_add(struct group *g, const char *serial, size_t n)
{
    if (json_array_size(g->serials) == MANIFEST_PART_SERIALS ||
        g->bytes + n > MANIFEST_PART_BYTES) {
        json_array_append_new(g->parts, g->serials);
        g->serials = json_array();
        g->bytes = 0;
    }
    json_array_append_new(g->serials, json_stringn(serial, n));
    g->bytes += n;
}

static void manifest_free(struct manifest *m)
{
    for (size_t i = 0; i < m->ngroups; i++) {
        json_decref(m->groups[i].serials);
        json_decref(m->groups[i].parts);
    }
    free(m->groups);
}

static int type_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == ',' || s[i] == '"') return 0;
    return 1;
}

/* Reads a CSV manifest: rows "serial_number,device_type[,hardware_revision]", an optional header
 * row naming those columns, blank lines ignored. 0, or -1 with detail naming the row. */
static int parse_csv(const char *text, size_t len, struct manifest *m, char *detail, size_t cap)
{
    size_t row = 0, at = 0;
    while (at < len) {
        const char *line = text + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + (nl ? 1 : 0);
        row++;
        if (n && line[n - 1] == '\r') n--;
        if (n == 0) continue;
        if (row == 1 && n >= 13 && !strncasecmp(line, "serial_number", 13)) continue;
        const char *f[4] = {0};
        size_t fl[4] = {0};
        int nf = 0;
        const char *p = line, *end = line + n;
        while (nf < 4) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            f[nf] = p;
            fl[nf] = c ? (size_t)(c - p) : (size_t)(end - p);
            nf++;
            if (!c) break;
            p = c + 1;
        }
        if (nf < 2 || nf > 3) {
            snprintf(detail, cap, "row %zu: expected serial_number,device_type[,hardware_revision]",
                     row);
            return -1;
        }
        if (!reg_serial_valid(f[0], fl[0])) {
            snprintf(detail, cap, "row %zu: invalid serial_number (1 to %d printable characters)",
                     row, REG_SERIAL_MAX);
            return -1;
        }
        if (!type_ok(f[1], fl[1]) || (nf == 3 && !type_ok(f[2], fl[2]))) {
            snprintf(detail, cap, "row %zu: invalid device_type or hardware_revision", row);
            return -1;
        }
        struct group *g =
            group_for(m, f[1], fl[1], nf == 3 ? f[2] : NULL, nf == 3 ? fl[2] : 0, nf == 3);
        if (!g) {
            snprintf(detail, cap, "out of memory");
            return -1;
        }
        group_add(g, f[0], fl[0]);
    }
    return 0;
}

static int parse_json_manifest(ingest *in, const http_request *r, struct manifest *m, char *detail,
                               size_t cap)
{
    jsonbody_err e = {{0}};
    json_t *body =
        jsonbody_parse_object(r->body, r->body_len, ingest_limits(in)->max_json_depth, &e);
    const char *type, *hw;
    static const char *const allowed[] = {"device_type", "hardware_revision", "serials", NULL};
    if (!body || jsonbody_only(body, allowed, &e) ||
        jsonbody_string(body, "device_type", 1, 1, 64, &type, &e) ||
        jsonbody_string(body, "hardware_revision", 0, 1, 64, &hw, &e)) {
        snprintf(detail, cap, "%s", e.detail);
        json_decref(body);
        return -1;
    }
    json_t *serials = json_object_get(body, "serials");
    if (!json_is_array(serials)) {
        snprintf(detail, cap, "'serials' must be an array of strings");
        json_decref(body);
        return -1;
    }
    struct group *g = group_for(m, type, strlen(type), hw, hw ? strlen(hw) : 0, hw != NULL);
    size_t i;
    json_t *sv;
    json_array_foreach(serials, i, sv)
    {
        if (!json_is_string(sv) ||
            !reg_serial_valid(json_string_value(sv), json_string_length(sv))) {
            snprintf(detail, cap,
                     "serials[%zu]: invalid serial number (a string of 1 to %d printable "
                     "characters)",
                     i, REG_SERIAL_MAX);
            json_decref(body);
            return -1;
        }
        group_add(g, json_string_value(sv), json_string_length(sv));
    }
    json_decref(body);
    return 0;
}

/* A manifest being parsed on the thread pool: a million serials take a good part of a second
 * to parse and split, which must not stall the loop's other connections. */
struct manifest_job {
    uv_work_t work;
    ingest *in;
    http_req *req;
    const http_request *r; /* the pending request's; valid until req is answered */
    auth_principal who;
    const char *label;
    int csv, failed;
    struct manifest m;
    char detail[256];
};

static void parse_manifest(uv_work_t *w)
{
    struct manifest_job *j = w->data;
    j->failed = j->csv ? parse_csv(j->r->body, j->r->body_len, &j->m, j->detail, sizeof j->detail)
                       : parse_json_manifest(j->in, j->r, &j->m, j->detail, sizeof j->detail);
}

static void submit_manifest(uv_work_t *w, int status)
{
    struct manifest_job *j = w->data;
    ingest *in = j->in;
    size_t parts = 0;
    struct upload *u = NULL;
    if (ingest_stopping(in)) {
        /* The metrics may be gone with the API: answer without them. */
        http_respond_problem(j->req, 503, "the server is stopping");
        goto out;
    }
    if (j->failed) {
        problem(in, j->req, j->label, 400, j->detail);
        goto out;
    }
    for (size_t i = 0; i < j->m.ngroups; i++) {
        struct group *g = &j->m.groups[i];
        if (json_array_size(g->serials)) json_array_append(g->parts, g->serials);
        parts += json_array_size(g->parts);
    }
    if (parts == 0) {
        problem(in, j->req, j->label, 400, "the manifest holds no serial numbers");
        goto out;
    }
    if (!(u = calloc(1, sizeof *u))) {
        problem(in, j->req, j->label, 503, "out of memory");
        goto out;
    }
    reg_uuid mid;
    reg_uuid_new(&mid);
    reg_uuid_format(&mid, u->manifest_id);
    u->in = in;
    u->req = j->req;
    u->label = j->label;
    u->start_ns = j->r->start_ns;
    u->parts = u->outstanding = (int)parts;
    int part = 0;
    for (size_t i = 0; i < j->m.ngroups; i++) {
        struct group *g = &j->m.groups[i];
        size_t k;
        json_t *serials;
        json_array_foreach(g->parts, k, serials)
        {
            json_t *cmd = ingest_command(
                j->who.actor, j->who.tenant_s, "AddManifest",
                json_pack("{s:s, s:s, s:s?, s:O, s:i, s:i}", "manifest_id", u->manifest_id,
                          "device_type", g->device_type, "hardware_revision",
                          g->has_hw ? g->hardware_revision : NULL, "serials", serials, "part",
                          part++, "parts", (int)parts));
            ingest_submit_cb(in, cmd, on_part, u); /* the last outcome frees u */
        }
    }
out:
    manifest_free(&j->m);
    free(j);
    ingest_work_end(in);
}

static void add_manifest(ingest *in, http_req *req, const http_request *r,
                         const auth_principal *who, const char *label)
{
    int csv = media_is(r, "text/csv");
    if (!csv && !media_is(r, "application/json")) {
        problem(in, req, label, 415, "a manifest is application/json or text/csv");
        return;
    }
    struct manifest_job *j = calloc(1, sizeof *j);
    if (!j) {
        problem(in, req, label, 503, "out of memory");
        return;
    }
    j->work.data = j;
    j->in = in;
    j->req = req;
    j->r = r;
    j->who = *who;
    j->label = label;
    j->csv = csv;
    ingest_work_begin(in);
    if (uv_queue_work(ingest_loop(in), &j->work, parse_manifest, submit_manifest)) {
        ingest_work_end(in);
        free(j);
        problem(in, req, label, 503, "the manifest could not be queued");
    }
}

void ingest_credentials(ingest *in, http_req *req, const http_request *r, const auth_principal *who,
                        enum ingest_route route, const char *id, const char *label)
{
    json_t *body = NULL, *cmd = NULL;
    reg_uuid uid;
    if (id && reg_uuid_parse(id, &uid)) {
        char detail[96];
        snprintf(detail, sizeof detail, "'%.40s' is not a valid id (a UUID)", id);
        problem(in, req, label, 400, detail);
        return;
    }
    switch (route) {
    case INGEST_ADD_FACTORY_CA:
        add_factory_ca(in, req, r, who, label);
        return;
    case INGEST_ADD_MANIFEST:
        add_manifest(in, req, r, who, label);
        return;
    case INGEST_CREATE_CLAIM:
        create_claim(in, req, r, who, label);
        return;
    case INGEST_REMOVE_FACTORY_CA:
        cmd = ingest_command(who->actor, who->tenant_s, "RemoveFactoryCa",
                             json_pack("{s:s}", "ca_id", id));
        break;
    case INGEST_REVOKE_CERTIFICATE: {
        if (!(body = json_body(in, req, r, label, 1))) return;
        static const char *const allowed[] = {"reason", NULL};
        jsonbody_err e = {{0}};
        const char *reason;
        if (jsonbody_only(body, allowed, &e) ||
            jsonbody_string(body, "reason", 0, 1, 200, &reason, &e)) {
            problem(in, req, label, 400, e.detail);
            json_decref(body);
            return;
        }
        cmd = ingest_command(who->actor, who->tenant_s, "RevokeCertificate",
                             json_pack("{s:s, s:s?}", "cert_id", id, "reason", reason));
        break;
    }
    case INGEST_ROTATE_CERTIFICATE:
        cmd = ingest_command(
            who->actor, who->tenant_s, "RotateCertificate",
            json_pack("{s:s, s:n, s:s}", "device_id", id, "cert_id", "reason", "operator"));
        break;
    default:
        problem(in, req, label, 404, "no such route");
        return;
    }
    json_decref(body);
    ingest_submit(in, req, r->start_ns, cmd, NULL, label);
}
