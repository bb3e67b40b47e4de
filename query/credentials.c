/*
 * credentials.c - the operator's credentials reads (credentials.h).
 *
 * The CRL is signed on demand from the view's revocation entries: it is small (one entry per
 * revoked certificate of the tenant), signing it costs one ECDSA signature, and so it is always
 * current: a revocation shows in the very next GET /crl. Its cRLNumber is the tenant's count of
 * revocations, so clients can tell a newer list from an older one.
 */
#define _GNU_SOURCE
#include "query/credentials.h"
#include "clock.h"
#include "err.h"
#include "pki.h"
#include "projector/keys.h"
#include "projector/records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PAGE_DEFAULT = 100, PAGE_MAX = 1000, CRL_NEXT_UPDATE_MS = 24 * 3600 * 1000 };

static int answer_json(http_req *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    http_respond(req, status, "application/json", text, strlen(text), NULL);
    free(text);
    json_decref(body);
    return status;
}

static int answer_problem(http_req *req, int status, const char *detail)
{
    http_respond_problem(req, status, detail);
    return status;
}

int query_issuing_ca(view *v, const auth_principal *who, http_req *req)
{
    reg_key k;
    char *pem = NULL;
    size_t len = 0;
    key_tagged(&k, 'i', who->tenant.b, NULL);
    int err = view_get(v, VIEW_CAS, k.b, k.len, &pem, &len);
    if (err == REG_ENOTFOUND) return answer_problem(req, 404, "the tenant has no issuing CA");
    if (err) return answer_problem(req, 500, "the view could not be read");
    http_respond(req, 200, "application/x-pem-file", pem, len, NULL);
    free(pem);
    return 200;
}

/* Reads ?limit=N&cursor=C. 0, or -1 after answering 400. */
static int page_args(const char *query, long *limit, char *cursor, size_t cap, http_req *req)
{
    *limit = PAGE_DEFAULT;
    cursor[0] = 0;
    const char *p = query;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > 6 && !strncmp(p, "limit=", 6)) {
            char num[16];
            size_t nl = n - 6 < sizeof num - 1 ? n - 6 : sizeof num - 1;
            memcpy(num, p + 6, nl);
            num[nl] = 0;
            char *end;
            *limit = strtol(num, &end, 10);
            if (*end || *limit < 1 || *limit > PAGE_MAX) {
                answer_problem(req, 400, "'limit' must be an integer from 1 to 1000");
                return -1;
            }
        } else if (n > 7 && !strncmp(p, "cursor=", 7)) {
            if (n - 7 >= cap) {
                answer_problem(req, 400, "'cursor' is not valid");
                return -1;
            }
            memcpy(cursor, p + 7, n - 7);
            cursor[n - 7] = 0;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

int query_factory_cas(view *v, const auth_principal *who, const char *query, http_req *req)
{
    long limit;
    char cursor[64];
    if (page_args(query, &limit, cursor, sizeof cursor, req)) return 400;
    reg_key prefix, start;
    reg_uuid after;
    key_tagged(&prefix, 'f', who->tenant.b, NULL);
    int has_start = 0;
    if (cursor[0]) {
        if (reg_uuid_parse(cursor, &after)) return answer_problem(req, 400, "'cursor' is not valid");
        key_byte(key_tagged(&start, 'f', who->tenant.b, after.b), 0); /* just after it */
        has_start = 1;
    }
    view_iter *it = view_iter_prefix(v, VIEW_CAS, prefix.b, prefix.len, has_start ? start.b : NULL,
                                     has_start ? start.len : 0);
    if (!it) return answer_problem(req, 500, "the view could not be read");
    json_t *items = json_array();
    const char *key, *val;
    size_t klen, vlen;
    json_t *next = json_null();
    while (view_iter_next(it, &key, &klen, &val, &vlen)) {
        json_t *ca = json_loadb(val, vlen, 0, NULL);
        if (!ca) continue;
        if ((long)json_array_size(items) == limit) {
            json_decref(next);
            next = json_incref(json_object_get(json_array_get(items, limit - 1), "ca_id"));
            json_decref(ca);
            break;
        }
        json_object_del(ca, "pem");
        json_object_del(ca, "not_after_ms");
        json_array_append_new(items, ca);
    }
    view_iter_free(it);
    return answer_json(req, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
}

int query_factory_ca(view *v, const auth_principal *who, const char *id, http_req *req)
{
    reg_uuid ca;
    if (reg_uuid_parse(id, &ca)) return answer_problem(req, 404, "no such factory CA");
    reg_key k;
    char *val = NULL;
    size_t len = 0;
    key_tagged(&k, 'f', who->tenant.b, ca.b);
    int err = view_get(v, VIEW_CAS, k.b, k.len, &val, &len);
    if (err == REG_ENOTFOUND) return answer_problem(req, 404, "no such factory CA");
    if (err) return answer_problem(req, 500, "the view could not be read");
    json_t *j = json_loadb(val, len, 0, NULL);
    free(val);
    if (!j) return answer_problem(req, 500, "the view could not be read");
    json_object_del(j, "not_after_ms");
    return answer_json(req, 200, j);
}

int query_device_certificates(view *v, const auth_principal *who, const char *id, http_req *req)
{
    reg_uuid did;
    json_t *dev = NULL;
    if (reg_uuid_parse(id, &did)) return answer_problem(req, 404, "no such device");
    view_src src = {v, NULL};
    int err = record_device_load(src, &who->tenant, &did, &dev);
    if (err == REG_ENOTFOUND) return answer_problem(req, 404, "no such device");
    if (err) return answer_problem(req, 500, "the view could not be read");
    json_t *list = json_object_get(dev, "certificates");
    int64_t now = clock_now_ms();
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        int64_t until = 0;
        const char *status = json_string_value(json_object_get(c, "status"));
        if (status && strcmp(status, "revoked") &&
            !clock_parse_rfc3339(json_string_value(json_object_get(c, "valid_until")), &until) &&
            until <= now)
            json_object_set_new(c, "status", json_string("expired"));
    }
    json_t *out = json_is_array(list) ? json_incref(list) : json_array();
    json_decref(dev);
    return answer_json(req, 200, out);
}

int query_crl(view *v, keystore *keys, const auth_principal *who, http_req *req)
{
    reg_key k;
    char *ca_pem = NULL, key_name[48];
    size_t ca_len = 0;
    X509 *ca = NULL;
    EVP_PKEY *key = NULL;
    json_t *tenant = NULL;
    pki_revoked *entries = NULL;
    json_t *rows = json_array();
    char *crl = NULL;
    int status = 500;
    const char *detail = "the CRL could not be made";
    key_tagged(&k, 'i', who->tenant.b, NULL);
    int err = view_get(v, VIEW_CAS, k.b, k.len, &ca_pem,
                       &ca_len);
    if (err == REG_ENOTFOUND) {
        status = 404;
        detail = "the tenant has no issuing CA";
        goto out;
    }
    snprintf(key_name, sizeof key_name, "ca-%s", who->tenant_s);
    view_src src = {v, NULL};
    if (err || pki_cert_from_pem(ca_pem, ca_len, &ca) || !keys ||
        keystore_get(keys, key_name, &key) || record_tenant_load(src, &who->tenant, &tenant))
        goto out;

    reg_key prefix;
    key_tagged(&prefix, 'r', who->tenant.b, NULL);
    view_iter *it = view_iter_prefix(v, VIEW_CERTS, prefix.b, prefix.len, NULL, 0);
    const char *ik, *iv;
    size_t ikl, ivl;
    while (it && view_iter_next(it, &ik, &ikl, &iv, &ivl)) {
        json_t *row = json_loadb(iv, ivl, 0, NULL);
        if (row) json_array_append_new(rows, row);
    }
    view_iter_free(it);
    size_t n = json_array_size(rows);
    entries = calloc(n ? n : 1, sizeof *entries);
    if (!entries) goto out;
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get(rows, i);
        entries[i].serial_hex = json_string_value(json_object_get(row, "serial_hex"));
        entries[i].revoked_ms = json_integer_value(json_object_get(row, "revoked_ms"));
        if (!entries[i].serial_hex) entries[i].serial_hex = "00";
    }
    int64_t now = clock_now_ms();
    if (pki_crl_new(ca, key, entries, n, json_integer_value(json_object_get(tenant, "crl_number")),
                    now, now + CRL_NEXT_UPDATE_MS, &crl))
        goto out;
    http_respond(req, 200, "application/x-pem-file", crl, strlen(crl), NULL);
    status = 200;
out:
    if (status != 200) http_respond_problem(req, status, detail);
    free(ca_pem);
    free(crl);
    free(entries);
    X509_free(ca);
    EVP_PKEY_free(key);
    json_decref(tenant);
    json_decref(rows);
    return status;
}
