/*
 * device_port.c - the device API over HTTPS (device_port.h).
 *
 * A bootstrap is checked here as far as it can be without the tenant's ordered state: the factory
 * chain (against the in-memory factory CAs), the subject's serial, the CSR (signature and key
 * policy), the serial being in a manifest of a tenant that registered that CA. Then the
 * certificate is signed (signing is random, so it happens before the command, which carries the
 * result) and the command goes to the projector, which decides what depends on order: the CA
 * still registered, the device not decommissioned, the claim not used up. A key pair made here
 * goes back to the device in the answer and nowhere else.
 *
 * Authenticated requests go through devauth (in-process cache, shared cache, view) and are
 * refused when the certificate is revoked, expired or superseded past its overlap, or the device
 * is suspended or decommissioned.
 */
#define _GNU_SOURCE
#include "query/device_port.h"
#include "clock.h"
#include "err.h"
#include "keystore.h"
#include "ids.h"
#include "jsonbody.h"
#include "pki.h"
#include "projector/keys.h"
#include "projector/records.h"
#include "query/devauth.h"
#include "query/devices.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

enum {
    SERVER_CERT_DAYS = 3650,
    NOT_BEFORE_SLACK_MS = 5 * 60 * 1000, /* device clocks run a little behind */
    CSR_MAX = 16 * 1024,
    MAX_TENANTS_PER_CA = 64,
    ISSUING_CACHE = 64, /* tenants whose issuing CA is kept parsed (OpenSSL 3.0 decodes slowly) */
    JSON_DEPTH = 8,
};

#define DAY_MS 86400000LL

struct device_port {
    uv_loop_t *loop;
    device_port_deps deps;
    http_server *http;
    SSL_CTX *ctx;
    devauth *auth;
    uint64_t refused, activations;
    struct {
        reg_uuid tenant;
        X509 *cert;
    } issuing[ISSUING_CACHE]; /* parsed issuing CAs (immutable per tenant), round-robin */
    unsigned issuing_next;
    unsigned outstanding; /* authreqs alive: they hold dp */
    bool stopping;        /* device_port_stop was called: free dp with the last authreq */
    bool view_dirty;      /* a secondary: a commit was announced since the last catch-up */
};

/* An authenticated request on its way (waiting for devauth or an activation). */
enum action { ACT_GET_DEVICE, ACT_RENEW, ACT_GET_SHADOW, ACT_REPORT_SHADOW };
struct authreq {
    device_port *dp;
    http_req *req;
    enum action action;
    char id[40];
    char fp[PKI_FINGERPRINT_HEX];
    devauth_status st;
};

static void port_free(device_port *dp)
{
    for (unsigned i = 0; i < ISSUING_CACHE; i++)
        X509_free(dp->issuing[i].cert);
    devauth_free(dp->auth);
    SSL_CTX_free(dp->ctx); /* connections still closing hold their own references */
    free(dp);
}

static void authreq_free(struct authreq *ar)
{
    device_port *dp = ar->dp;
    free(ar);
    if (--dp->outstanding == 0 && dp->stopping) port_free(dp);
}

static const char *const LABEL_PROVISION = "device:/devices/provision";
static const char *const LABEL_CLAIM = "device:/devices/claim";
static const char *const LABEL_DEVICE = "device:/devices/{id}";
static const char *const LABEL_RENEW = "device:/devices/{id}/certificates/renew";
static const char *const LABEL_SHADOW = "device:/devices/{id}/shadow";
static const char *const LABEL_REPORT = "device:/devices/{id}/shadow/reported";

static const char *action_label(enum action a)
{
    switch (a) {
    case ACT_RENEW:
        return LABEL_RENEW;
    case ACT_GET_SHADOW:
        return LABEL_SHADOW;
    case ACT_REPORT_SHADOW:
        return LABEL_REPORT;
    default:
        return LABEL_DEVICE;
    }
}

static void problem(device_port *dp, http_req *req, const char *label, int status,
                    const char *detail)
{
    if (status == 401 || status == 403) dp->refused++;
    uint64_t start = http_req_request(req)->start_ns;
    metrics_request(dp->deps.metrics, label, status,
                    start ? (double)(clock_mono_ns() - start) / 1e9 : 0);
    http_respond_problem(req, status, detail);
}

/* ---- the server's own certificate ---- */

static int read_file(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? REG_ENOTFOUND : REG_EIO;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int err = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(buf, cap);
            if (!grown) {
                err = REG_ENOMEM;
                break;
            }
            buf = grown;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    fclose(f);
    if (err) {
        free(buf);
        return err;
    }
    buf[len] = 0;
    *out = buf;
    return 0;
}

static int write_file(const char *path, const char *text, mode_t mode)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) return REG_EIO;
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path)) return REG_EIO;
    return 0;
}

/* Loads the port's certificate and key, making them on first start. *cert_pem and *key_pem are
 * malloc'd (the key's PEM lives only in memory). */
static int server_identity(const device_port_deps *d, char **cert_pem, char **key_pem)
{
    char ca_path[4200], cert_path[4200];
    snprintf(ca_path, sizeof ca_path, "%s/server-ca.pem", d->data_dir);
    snprintf(cert_path, sizeof cert_path, "%s/server.pem", d->data_dir);
    EVP_PKEY *key = NULL, *ca_key = NULL;
    X509 *ca = NULL, *cert = NULL;
    char *ca_pem = NULL;
    int err = read_file(cert_path, cert_pem);
    if (!err) err = keystore_get(d->keys, "device-port", &key);
    if (!err) goto done;
    if (err != REG_ENOTFOUND) return err;
    free(*cert_pem);
    *cert_pem = NULL;
    int64_t now = clock_now_ms();
    err = pki_ca_new("registry device port CA", "registry", SERVER_CERT_DAYS, now, &ca_key, &ca);
    if (!err) err = pki_key_new_p256(&key);
    if (!err)
        err = pki_issue_server(ca, ca_key, key, "registry device port", NULL, 0, SERVER_CERT_DAYS,
                               now, &cert);
    if (!err) err = keystore_put(d->keys, "device-port-ca", ca_key);
    if (!err) err = keystore_put(d->keys, "device-port", key);
    if (!err) err = pki_cert_to_pem(ca, &ca_pem);
    if (!err) err = pki_cert_to_pem(cert, cert_pem);
    if (!err) err = write_file(ca_path, ca_pem, 0644);
    if (!err) err = write_file(cert_path, *cert_pem, 0644);
done:
    if (!err) err = pki_key_to_pem(key, key_pem);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    X509_free(cert);
    free(ca_pem);
    return err;
}

/* ---- signing ---- */

/* The tenant's issuing CA certificate, parsed once (borrowed: valid until the cache's slot is
 * reused, i.e. for the rest of the caller's synchronous work). NULL when the view lacks it. */
static X509 *issuing_ca(device_port *dp, const reg_uuid *tenant)
{
    for (unsigned i = 0; i < ISSUING_CACHE; i++)
        if (dp->issuing[i].cert && !memcmp(dp->issuing[i].tenant.b, tenant->b, 16))
            return dp->issuing[i].cert;
    reg_key k;
    key_tagged(&k, 'i', tenant->b, NULL);
    char *pem = NULL;
    size_t len = 0;
    X509 *cert = NULL;
    if (view_get(dp->deps.view, VIEW_CAS, k.b, k.len, &pem, &len) ||
        pki_cert_from_pem(pem, len, &cert)) {
        free(pem);
        return NULL;
    }
    free(pem);
    unsigned slot = dp->issuing_next++ % ISSUING_CACHE;
    X509_free(dp->issuing[slot].cert);
    dp->issuing[slot].tenant = *tenant;
    dp->issuing[slot].cert = cert;
    return cert;
}

/* Signs an operational certificate for device_id of tenant: for the CSR's key, or (csr NULL) for
 * a key pair made here, whose PEM goes to *key_pem (malloc'd; for the answer only). *out gets
 * the registry.IssuedCertificate JSON. */
static int sign_device_cert(device_port *dp, const reg_uuid *tenant, const char *device_id,
                            X509_REQ *csr, json_t **out, char **key_pem)
{
    char tid_s[37], key_name[48], fp[PKI_FINGERPRINT_HEX], serial_hex[PKI_SERIAL_HEX], cid_s[37];
    reg_uuid_format(tenant, tid_s);
    snprintf(key_name, sizeof key_name, "ca-%s", tid_s);
    view_src src = {dp->deps.view, NULL};
    json_t *trec = NULL;
    char *pem = NULL;
    X509 *ca = NULL, *cert = NULL;
    EVP_PKEY *ca_key = NULL, *pub = NULL;
    int err = record_tenant_load(src, tenant, &trec);
    if (!err && !(ca = issuing_ca(dp, tenant))) err = REG_ENOTFOUND;
    if (!err) err = keystore_get(dp->deps.keys, key_name, &ca_key);
    if (!err) {
        if (csr) {
            pub = pki_csr_pubkey(csr);
            if (!pub) err = REG_EINVAL;
        } else {
            err = pki_key_new_p256(&pub);
            if (!err) err = pki_key_to_pem(pub, key_pem);
        }
    }
    uint8_t serial[16];
    if (!err && RAND_bytes(serial, sizeof serial) != 1) err = REG_EIO;
    int64_t now = clock_now_ms();
    json_int_t days = json_integer_value(json_object_get(trec, "cert_validity_days"));
    if (days <= 0) days = 365;
    int64_t nb = now - NOT_BEFORE_SLACK_MS, na = now + days * DAY_MS;
    if (!err) err = pki_issue_client(ca, ca_key, pub, device_id, serial, nb, na, &cert);
    if (!err) err = pki_cert_to_pem(cert, &pem);
    if (!err) {
        reg_uuid cid;
        reg_uuid_new(&cid);
        reg_uuid_format(&cid, cid_s);
        pki_cert_fingerprint(cert, fp);
        pki_cert_serial_hex(cert, serial_hex);
        *out = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "cert_id", cid_s, "fingerprint", fp,
                         "serial_hex", serial_hex, "pem", pem, "not_before_ms",
                         (json_int_t)pki_cert_not_before_ms(cert), "not_after_ms",
                         (json_int_t)pki_cert_not_after_ms(cert));
        if (!*out) err = REG_ENOMEM;
    }
    json_decref(trec);
    free(pem);
    X509_free(cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(pub);
    return err;
}

/* The device id for a serial in a tenant: the existing device's, or one derived from tenant and
 * serial, so that a retried bootstrap lands on the same device. */
static int device_for_serial(device_port *dp, const reg_uuid *tenant, const char *serial,
                             reg_uuid *out)
{
    reg_key k;
    key_str(key_add(key_reset(&k), tenant->b, 16), serial);
    char *val = NULL;
    size_t len = 0;
    int err = view_get(dp->deps.view, VIEW_SERIALS, k.b, k.len, &val, &len);
    if (!err && len == 16) {
        memcpy(out->b, val, 16);
        free(val);
        return 0;
    }
    free(val);
    if (err && err != REG_ENOTFOUND) return err;
    reg_uuid_derive(tenant, serial, strlen(serial), out);
    return 0;
}

/* A view read that, on a secondary, catches up once before taking "not found" for an answer. */
static int view_get_fresh(device_port *dp, view_cf cf, const reg_key *k, char **val, size_t *len)
{
    int err = view_get(dp->deps.view, cf, k->b, k->len, val, len);
    if (err == REG_ENOTFOUND && dp->deps.view_is_secondary) {
        view_catch_up(dp->deps.view);
        err = view_get(dp->deps.view, cf, k->b, k->len, val, len);
    }
    return err;
}

/* Parses the body of a bootstrap or renewal: the fields allowed, then an optional CSR (checked).
 * Returns the body or NULL after answering. */
static json_t *parse_body(device_port *dp, http_req *req, const http_request *r, const char *label,
                          const char *const *allowed, int empty_ok)
{
    if (empty_ok && r->body_len == 0) return json_object();
    jsonbody_err e = {{0}};
    json_t *body = jsonbody_parse_object(r->body, r->body_len, JSON_DEPTH, &e);
    if (!body || jsonbody_only(body, allowed, &e)) {
        json_decref(body);
        problem(dp, req, label, 400, e.detail);
        return NULL;
    }
    return body;
}

static int parse_csr(device_port *dp, http_req *req, const char *label, const json_t *body,
                     int required, X509_REQ **csr)
{
    jsonbody_err e = {{0}};
    const char *pem;
    *csr = NULL;
    if (jsonbody_text(body, "csr", required, CSR_MAX, &pem, &e)) {
        problem(dp, req, label, 400, e.detail);
        return -1;
    }
    if (!pem) return 0;
    char why[160] = "", detail[200];
    if (pki_csr_from_pem(pem, strlen(pem), csr, why, sizeof why) ||
        pki_csr_check(*csr, why, sizeof why)) {
        X509_REQ_free(*csr);
        *csr = NULL;
        snprintf(detail, sizeof detail, "'csr': %s", why[0] ? why : "not a valid CSR");
        problem(dp, req, label, 400, detail);
        return -1;
    }
    return 0;
}

/* Signs and sends a ProvisionDevice (or RenewCertificate when presented_fp is set). */
static void issue(device_port *dp, http_req *req, const char *label, const reg_uuid *tenant,
                  const reg_uuid *device, const char *serial, X509_REQ *csr, const char *factory_fp,
                  const char *claim_hash, const char *presented_fp)
{
    char tid_s[37], did_s[37], actor[48];
    reg_uuid_format(tenant, tid_s);
    reg_uuid_format(device, did_s);
    snprintf(actor, sizeof actor, "device:%s", did_s);
    json_t *cert = NULL;
    char *key_pem = NULL;
    int err = sign_device_cert(dp, tenant, did_s, csr, &cert, &key_pem);
    if (err) {
        problem(dp, req, label, 503, "the certificate could not be issued");
        free(key_pem);
        return;
    }
    json_t *cmd =
        presented_fp
            ? ingest_command(actor, tid_s, "RenewCertificate",
                             json_pack("{s:s, s:s, s:o}", "device_id", did_s,
                                       "presented_fingerprint", presented_fp, "certificate", cert))
            : ingest_command(actor, tid_s, "ProvisionDevice",
                             json_pack("{s:s, s:s, s:s?, s:s?, s:o}", "device_id", did_s,
                                       "serial_number", serial, "factory_ca_fingerprint",
                                       factory_fp, "claim_token_hash", claim_hash, "certificate",
                                       cert));
    json_t *extra = key_pem ? json_pack("{s:s}", "private_key_pem", key_pem) : NULL;
    if (key_pem) OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
    ingest_submit(dp->deps.ingest, req, http_req_request(req)->start_ns, cmd, extra, label);
}

/* ---- bootstrap ---- */

static void provision(device_port *dp, http_req *req, const http_request *r)
{
    const char *label = LABEL_PROVISION;
    if (!r->peer_cert)
        return problem(dp, req, label, 401,
                       "a factory certificate (TLS client certificate) is "
                       "required");
    static const char *const allowed[] = {"serial_number", "csr", NULL};
    json_t *body = parse_body(dp, req, r, label, allowed, 0);
    if (!body) return;
    X509_REQ *csr = NULL;
    jsonbody_err e = {{0}};
    const char *serial;
    if (jsonbody_string(body, "serial_number", 1, 1, 128, &serial, &e) ||
        !reg_serial_valid(serial, strlen(serial))) {
        problem(dp, req, label, 400,
                e.detail[0] ? e.detail : "'serial_number': 1 to 128 printable characters");
        goto out;
    }
    if (parse_csr(dp, req, label, body, 0, &csr)) goto out;

    char why[160] = "", detail[224], anchor[PKI_FINGERPRINT_HEX], subject_serial[160];
    reg_uuid tenants[MAX_TENANTS_PER_CA];
    size_t n = 0;
    int64_t now = clock_now_ms();
    if (devauth_factory_tenants(dp->auth, r->peer_cert, r->peer_chain, now, anchor, tenants,
                                MAX_TENANTS_PER_CA, &n, why, sizeof why)) {
        snprintf(detail, sizeof detail,
                 "the client certificate is not a valid factory "
                 "certificate: %s",
                 why);
        problem(dp, req, label, 403, detail);
        goto out;
    }
    if (pki_cert_subject_serial(r->peer_cert, subject_serial, sizeof subject_serial) ||
        strcmp(subject_serial, serial)) {
        problem(dp, req, label, 403,
                "the factory certificate's subject (serialNumber, else CN) does not match "
                "serial_number");
        goto out;
    }
    /* The tenant: the first that registered this CA and has the serial in a manifest. */
    size_t i;
    for (i = 0; i < n; i++) {
        reg_key k;
        key_str(key_add(key_reset(&k), tenants[i].b, 16), serial);
        char *val = NULL;
        size_t len = 0;
        int err = view_get_fresh(dp, VIEW_MANIFESTS, &k, &val, &len);
        free(val);
        if (!err) break;
    }
    if (i == n) {
        problem(dp, req, label, 403, "the serial number is not in the tenant's manifests");
        goto out;
    }
    if (!dp->deps.ingest) {
        problem(dp, req, label, 503, "this process does not accept writes");
        goto out;
    }
    reg_uuid did;
    if (device_for_serial(dp, &tenants[i], serial, &did)) {
        problem(dp, req, label, 503, "the view could not be read");
        goto out;
    }
    issue(dp, req, label, &tenants[i], &did, serial, csr, anchor, NULL, NULL);
out:
    X509_REQ_free(csr);
    json_decref(body);
}

static void claim(device_port *dp, http_req *req, const http_request *r)
{
    const char *label = LABEL_CLAIM;
    static const char *const allowed[] = {"claim_token", "csr", "serial_number", NULL};
    json_t *body = parse_body(dp, req, r, label, allowed, 0);
    if (!body) return;
    X509_REQ *csr = NULL;
    json_t *ref = NULL;
    jsonbody_err e = {{0}};
    const char *token, *serial;
    if (jsonbody_string(body, "claim_token", 1, 1, 128, &token, &e) ||
        jsonbody_string(body, "serial_number", 0, 1, 128, &serial, &e)) {
        problem(dp, req, label, 400, e.detail);
        goto out;
    }
    if (serial && !reg_serial_valid(serial, strlen(serial))) {
        problem(dp, req, label, 400, "'serial_number': 1 to 128 printable characters");
        goto out;
    }
    if (parse_csr(dp, req, label, body, 1, &csr)) goto out;
    char hash[65];
    uint8_t h[32];
    reg_token_hash(token, hash);
    reg_hex_decode(hash, h, 32);
    reg_key k;
    key_hash(&k, 'h', h);
    char *val = NULL;
    size_t len = 0;
    reg_uuid tenant;
    if (view_get_fresh(dp, VIEW_CLAIMS, &k, &val, &len) || !(ref = json_loadb(val, len, 0, NULL)) ||
        reg_uuid_parse(json_string_value(json_object_get(ref, "tenant_id")), &tenant)) {
        free(val);
        problem(dp, req, label, 403, "unknown claim token");
        goto out;
    }
    free(val);
    if (!dp->deps.ingest) {
        problem(dp, req, label, 503, "this process does not accept writes");
        goto out;
    }
    reg_uuid did;
    char did_s[37];
    if (serial) {
        if (device_for_serial(dp, &tenant, serial, &did)) {
            problem(dp, req, label, 503, "the view could not be read");
            goto out;
        }
    } else {
        reg_uuid_new(&did);
        reg_uuid_format(&did, did_s);
        serial = did_s; /* a device without a serial number goes by its id */
    }
    issue(dp, req, label, &tenant, &did, serial, csr, NULL, hash, NULL);
out:
    json_decref(ref);
    X509_REQ_free(csr);
    json_decref(body);
}

/* ---- authenticated requests ---- */

static void on_touched(void *arg, int status, json_t *body)
{
    (void)arg, (void)status, (void)body; /* best effort: the next interval tries again */
}

void device_port_touch(device_port *dp, const devauth_status *st)
{
    int64_t now = clock_now_ms();
    if (!dp->deps.ingest ||
        !devauth_should_touch(dp->auth, &st->tenant, &st->device, now, dp->deps.seen_interval_ms))
        return;
    char actor[48];
    snprintf(actor, sizeof actor, "device:%s", st->device_s);
    ingest_submit_cb(dp->deps.ingest,
                     ingest_command(actor, st->tenant_s, "TouchDevice",
                                    json_pack("{s:s, s:I}", "device_id", st->device_s, "seen_ms",
                                              (json_int_t)now)),
                     on_touched, NULL);
}

static void answer_json(device_port *dp, http_req *req, const char *label, int status,
                        const json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text) return problem(dp, req, label, 503, "out of memory");
    uint64_t start = http_req_request(req)->start_ns;
    metrics_request(dp->deps.metrics, label, status, (double)(clock_mono_ns() - start) / 1e9);
    http_respond(req, status, status >= 400 ? "application/problem+json" : "application/json", text,
                 strlen(text), NULL);
    free(text);
}

/* GET /devices/{id}/shadow by the device itself. */
static void get_shadow(device_port *dp, http_req *req, const devauth_status *st)
{
    json_t *doc = NULL;
    int err = query_shadow_document(device_port_view(dp), dp->deps.view_is_secondary, &st->tenant,
                                    &st->device, &doc);
    if (err)
        return problem(dp, req, LABEL_SHADOW, err == REG_ENOTFOUND ? 404 : 503,
                       err == REG_ENOTFOUND ? "no such device" : "the view could not be read");
    answer_json(dp, req, LABEL_SHADOW, 200, doc);
    json_decref(doc);
}

/* The outcome of a device's reported update: {version, delta}, or the problem document (409s
 * carry current_version). */
static void on_reported(void *arg, int status, json_t *body)
{
    struct authreq *ar = arg;
    if (status < 400) {
        json_t *answer = json_pack("{s:O?, s:O?}", "version", json_object_get(body, "version"),
                                   "delta", json_object_get(body, "delta"));
        answer_json(ar->dp, ar->req, LABEL_REPORT, status, answer);
        json_decref(answer);
    } else {
        answer_json(ar->dp, ar->req, LABEL_REPORT, status, body);
    }
    authreq_free(ar);
}

/* POST /devices/{id}/shadow/reported. Takes ar (freed when the outcome has been answered). */
static void report_shadow(struct authreq *ar)
{
    device_port *dp = ar->dp;
    const http_request *r = http_req_request(ar->req);
    jsonbody_err e = {{0}};
    /* Deep enough for the shadow's own depth rule to name the section that is too deep. */
    json_t *body = jsonbody_parse_object(r->body, r->body_len, dp->deps.shadow.max_depth + 2, &e);
    shadow_update u;
    const char *why = e.detail;
    if (!body || shadow_parse_http_update(body, "reported", &dp->deps.shadow, &u, &why)) {
        problem(dp, ar->req, LABEL_REPORT, 400, why);
        json_decref(body);
        authreq_free(ar);
        return;
    }
    if (!dp->deps.ingest) {
        problem(dp, ar->req, LABEL_REPORT, 503, "this process does not accept writes");
        json_decref(body);
        authreq_free(ar);
        return;
    }
    device_port_update_shadow(dp, &ar->st, &u, true, on_reported, ar);
    json_decref(body);
}

static void serve_authenticated(struct authreq *ar)
{
    device_port *dp = ar->dp;
    http_req *req = ar->req;
    device_port_touch(dp, &ar->st);
    if (ar->action == ACT_REPORT_SHADOW) return report_shadow(ar);
    if (ar->action == ACT_GET_SHADOW) {
        get_shadow(dp, req, &ar->st);
    } else if (ar->action == ACT_GET_DEVICE) {
        reg_key k;
        key_add(key_add(key_reset(&k), ar->st.tenant.b, 16), ar->st.device.b, 16);
        char *val = NULL;
        size_t len = 0;
        if (view_get(dp->deps.view, VIEW_DEVICES, k.b, k.len, &val, &len)) {
            problem(dp, req, LABEL_DEVICE, 503, "the view could not be read");
        } else {
            uint64_t start = http_req_request(req)->start_ns;
            metrics_request(dp->deps.metrics, LABEL_DEVICE, 200,
                            (double)(clock_mono_ns() - start) / 1e9);
            http_respond(req, 200, "application/json", val, len, NULL);
        }
        free(val);
    } else {
        static const char *const allowed[] = {"csr", NULL};
        const http_request *r = http_req_request(req);
        json_t *body = parse_body(dp, req, r, LABEL_RENEW, allowed, 1);
        X509_REQ *csr = NULL;
        if (body && !parse_csr(dp, req, LABEL_RENEW, body, 0, &csr))
            issue(dp, req, LABEL_RENEW, &ar->st.tenant, &ar->st.device, NULL, csr, NULL, NULL,
                  ar->fp);
        X509_REQ_free(csr);
        json_decref(body);
    }
    authreq_free(ar);
}

void device_port_activate(device_port *dp, const devauth_status *st, const char *fingerprint,
                          ingest_outcome_cb cb, void *arg)
{
    char actor[48];
    snprintf(actor, sizeof actor, "device:%s", st->device_s);
    json_t *cmd = ingest_command(
        actor, st->tenant_s, "ActivateDevice",
        json_pack("{s:s, s:s}", "device_id", st->device_s, "fingerprint", fingerprint));
    ingest_submit_cb(dp->deps.ingest, cmd, cb, arg);
}

static void on_activated(void *arg, int status, json_t *body)
{
    struct authreq *ar = arg;
    if (status >= 400) {
        const char *detail = json_string_value(json_object_get(body, "detail"));
        problem(ar->dp, ar->req, action_label(ar->action),
                status == 403 || status == 404 ? 403 : 503,
                detail ? detail : "the device could not be activated");
        authreq_free(ar);
        return;
    }
    ar->dp->activations++;
    devauth_device_activated(ar->dp->auth, &ar->st.tenant, &ar->st.device);
    snprintf(ar->st.device_status, sizeof ar->st.device_status, "active");
    serve_authenticated(ar);
}

static void on_status(void *arg, int err, const devauth_status *st)
{
    struct authreq *ar = arg;
    device_port *dp = ar->dp;
    const char *label = action_label(ar->action);
    const char *refusal = NULL;
    int status = 401;
    if (err == REG_ENOTFOUND)
        refusal = "the client certificate is not an operational certificate of this registry";
    else if (err)
        status = 503, refusal = "the certificate's status could not be checked";
    else if ((status = devauth_refusal(st, clock_now_ms(), &refusal)) == 0 &&
             strcmp(st->device_s, ar->id))
        status = 403, refusal = "a device may only act on itself";
    if (refusal) {
        problem(dp, ar->req, label, status, refusal);
        authreq_free(ar);
        return;
    }
    ar->st = *st;
    if (!strcmp(st->device_status, "provisioning")) {
        if (!dp->deps.ingest) {
            problem(dp, ar->req, label, 503, "this process does not accept writes");
            authreq_free(ar);
            return;
        }
        /* The first authentication with an operational certificate activates the device. */
        device_port_activate(dp, st, ar->fp, on_activated, ar);
        return;
    }
    serve_authenticated(ar);
}

static void authenticated(device_port *dp, http_req *req, const http_request *r, enum action action,
                          const char *id, const char *label)
{
    if (!r->peer_cert || !r->peer_fingerprint)
        return problem(dp, req, label, 401,
                       "an operational certificate (TLS client certificate) "
                       "is required");
    struct authreq *ar = calloc(1, sizeof *ar);
    if (!ar) return problem(dp, req, label, 503, "out of memory");
    ar->dp = dp;
    dp->outstanding++;
    ar->req = req;
    ar->action = action;
    snprintf(ar->id, sizeof ar->id, "%s", id);
    snprintf(ar->fp, sizeof ar->fp, "%s", r->peer_fingerprint);
    devauth_lookup(dp->auth, ar->fp, on_status, ar);
}

/* ---- routing ---- */

static void handle(void *arg, http_req *req, const http_request *r)
{
    device_port *dp = arg;
    const char *p = r->path;
    int post = !strcmp(r->method, "POST"), get = !strcmp(r->method, "GET");
    char id[40];
    if (!strcmp(p, "/healthz") && get) {
        http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
        return;
    }
    if (!strcmp(p, "/devices/provision")) {
        if (!post) return problem(dp, req, LABEL_PROVISION, 405, "use POST");
        return provision(dp, req, r);
    }
    if (!strcmp(p, "/devices/claim")) {
        if (!post) return problem(dp, req, LABEL_CLAIM, 405, "use POST");
        return claim(dp, req, r);
    }
    if (!strncmp(p, "/devices/", 9) && strlen(p + 9) >= 36) {
        memcpy(id, p + 9, 36);
        id[36] = 0;
        const char *rest = p + 9 + 36;
        if (!*rest) {
            if (!get) return problem(dp, req, LABEL_DEVICE, 405, "use GET");
            return authenticated(dp, req, r, ACT_GET_DEVICE, id, LABEL_DEVICE);
        }
        if (!strcmp(rest, "/certificates/renew")) {
            if (!post) return problem(dp, req, LABEL_RENEW, 405, "use POST");
            return authenticated(dp, req, r, ACT_RENEW, id, LABEL_RENEW);
        }
        if (!strcmp(rest, "/shadow")) {
            if (!get) return problem(dp, req, LABEL_SHADOW, 405, "use GET");
            return authenticated(dp, req, r, ACT_GET_SHADOW, id, LABEL_SHADOW);
        }
        if (!strcmp(rest, "/shadow/reported")) {
            if (!post) return problem(dp, req, LABEL_REPORT, 405, "use POST");
            return authenticated(dp, req, r, ACT_REPORT_SHADOW, id, LABEL_REPORT);
        }
    }
    metrics_request(dp->deps.metrics, "device:unknown", 404, 0);
    http_respond_problem(req, 404, "no such route");
}

/* A secondary catches up before the next shadow read after a commit notice, so that a device
 * reads what was written through any process. */
static void on_commit(void *arg, const char *channel, const char *msg, size_t len)
{
    device_port *dp = arg;
    dp->view_dirty = dp->deps.view_is_secondary;
}

view *device_port_view(device_port *dp)
{
    if (dp->view_dirty) {
        dp->view_dirty = false;
        view_catch_up(dp->deps.view);
    }
    return dp->deps.view;
}

bool device_port_view_is_secondary(const device_port *dp)
{
    return dp->deps.view_is_secondary;
}

const shadow_limits *device_port_shadow_limits(const device_port *dp)
{
    return &dp->deps.shadow;
}

void device_port_update_shadow(device_port *dp, const devauth_status *st, const shadow_update *u,
                               bool with_body, ingest_outcome_cb cb, void *arg)
{
    char actor[48];
    snprintf(actor, sizeof actor, "device:%s", st->device_s);
    json_t *cmd = ingest_shadow_command(actor, st->tenant_s, st->device_s, u);
    if (with_body)
        ingest_submit_cb(dp->deps.ingest, cmd, cb, arg);
    else
        ingest_submit_cb_status(dp->deps.ingest, cmd, cb, arg);
}

/* Revocations close live connections; every notice updates the authentication caches. */
static void on_auth_notice(void *arg, const char *channel, const char *msg, size_t len)
{
    device_port *dp = arg;
    devauth_notice(dp->auth, msg, len);
    json_t *j = json_loadb(msg, len, 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "revoked"), i, v) if (json_is_string(v)) if (dp->http)
        http_server_close_peer(dp->http, json_string_value(v));
    json_decref(j);
}

int device_port_start(uv_loop_t *loop, const char *host, int port, const http_limits *limits,
                      const device_port_deps *deps, device_port **out)
{
    device_port *dp = calloc(1, sizeof *dp);
    if (!dp) return REG_ENOMEM;
    dp->loop = loop;
    dp->deps = *deps;
    if (!dp->deps.seen_interval_ms) dp->deps.seen_interval_ms = 300000;
    shadow_limits_default(&dp->deps.shadow);
    char *cert_pem = NULL, *key_pem = NULL;
    int err = server_identity(deps, &cert_pem, &key_pem);
    if (!err) err = http_tls_server_ctx(cert_pem, key_pem, &dp->ctx);
    if (!err) { /* every front end on this master key opens every other's tickets */
        unsigned char secret[32];
        err = keystore_derive(deps->keys, "tls session tickets", secret, sizeof secret);
        if (!err) err = http_tls_share_tickets(dp->ctx, secret);
        OPENSSL_cleanse(secret, sizeof secret);
    }
    if (key_pem) OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
    free(cert_pem);
    if (!err)
        err = devauth_new(deps->view, deps->view_is_secondary, deps->shared, dp->ctx, &dp->auth);
    if (!err) err = bus_subscribe(deps->bus, loop, "auth", on_auth_notice, dp);
    if (!err) err = bus_subscribe(deps->bus, loop, "commit", on_commit, dp);
    if (!err) err = http_server_start_tls(loop, host, port, limits, dp->ctx, handle, dp, &dp->http);
    if (err) {
        device_port_stop(dp);
        return err;
    }
    *out = dp;
    return 0;
}

int device_port_port(const device_port *dp)
{
    return http_server_port(dp->http);
}

void device_port_stop(device_port *dp)
{
    if (!dp) return;
    if (dp->http) http_server_close(dp->http);
    dp->http = NULL;
    dp->stopping = true;
    if (dp->outstanding == 0) port_free(dp);
}

bool device_port_writes(const device_port *dp)
{
    return dp->deps.ingest != NULL;
}

SSL_CTX *device_port_tls(device_port *dp)
{
    return dp->ctx;
}

devauth *device_port_auth(device_port *dp)
{
    return dp->auth;
}

void device_port_metrics(device_port *dp, metrics_out *out)
{
    devauth_stats st;
    devauth_get_stats(dp->auth, &st);
    uint64_t lookups = st.memory_hits + st.shared_hits + st.view_reads;
    metrics_printf(out,
                   "# TYPE registry_device_auth_total counter\n"
                   "registry_device_auth_total{tier=\"memory\"} %llu\n"
                   "registry_device_auth_total{tier=\"shared\"} %llu\n"
                   "registry_device_auth_total{tier=\"view\"} %llu\n"
                   "# TYPE registry_device_auth_view_reads_per_auth gauge\n"
                   "registry_device_auth_view_reads_per_auth %.6f\n"
                   "# TYPE registry_device_auth_unknown_total counter\n"
                   "registry_device_auth_unknown_total %llu\n"
                   "# TYPE registry_device_auth_refused_total counter\n"
                   "registry_device_auth_refused_total %llu\n"
                   "# TYPE registry_device_activations_total counter\n"
                   "registry_device_activations_total %llu\n"
                   "# TYPE registry_trust_reloads_total counter\n"
                   "registry_trust_reloads_total %llu\n",
                   (unsigned long long)st.memory_hits, (unsigned long long)st.shared_hits,
                   (unsigned long long)st.view_reads,
                   lookups ? (double)st.view_reads / (double)lookups : 0.0,
                   (unsigned long long)st.unknown, (unsigned long long)dp->refused,
                   (unsigned long long)dp->activations, (unsigned long long)st.trust_reloads);
}
