/*
 * devauth.c - device authentication: trust stores and the certificate status tiers (devauth.h).
 *
 * The in-process cache is two chained hash tables: certificates by fingerprint, and device
 * statuses by (tenant, device), so that a device's suspension forgets one entry however many
 * certificates it has. Both are bounded: when a table is full, the chain an insert lands in is
 * dropped first (cheap, and fair enough for a cache in front of a view read).
 *
 * Shared cache values: "reg:cert:<fingerprint>" holds the certificate's status as compact JSON
 * with a TTL of its remaining validity; "reg:dev:<tenant>/<device>" the device status, for a
 * minute (a status change rewrites it, the TTL only bounds a missed notice).
 */
#define _GNU_SOURCE
#include "query/devauth.h"
#include "clock.h"
#include "err.h"
#include "pki.h"
#include "projector/keys.h"
#include "projector/records.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    TABLE_BUCKETS = 1 << 16,
    TABLE_MAX_ENTRIES = 1 << 21, /* per table; ~2M devices' worth */
    DEVICE_TTL_MS = 60000,
};

struct cert_entry {
    struct cert_entry *next;
    uint8_t fp[32];
    reg_uuid tenant, device;
    char cert_id[37];
    int64_t not_before_ms, valid_until_ms, revoked_ms;
};

struct dev_entry {
    struct dev_entry *next;
    uint8_t key[32]; /* tenant, device */
    char status[16];
    int64_t touched_ms; /* when last_seen_at was last sent from here */
};

/* A factory CA the trust store holds, and the tenant that registered it. */
struct factory_ca {
    char fp[PKI_FINGERPRINT_HEX];
    reg_uuid tenant;
};

struct devauth {
    view *view;
    int secondary;
    cache *shared;
    SSL_CTX *ctx;
    X509_STORE *factory_store;
    struct factory_ca *factory;
    size_t nfactory;
    struct cert_entry *certs[TABLE_BUCKETS];
    struct dev_entry *devs[TABLE_BUCKETS];
    size_t ncerts, ndevs;
    devauth_stats stats;
    unsigned lookups; /* waiting for the shared cache: they hold the authenticator */
    bool freeing;     /* devauth_free was called while lookups were waiting */
};

static void devauth_release(devauth *a);

/* A lookup that went past the in-process cache. */
struct lookup {
    devauth *a;
    devauth_cb cb;
    void *arg;
    uint8_t fp[32];
    char fp_hex[PKI_FINGERPRINT_HEX];
    devauth_status st;
};

static unsigned bucket(const uint8_t *k)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 32; i++)
        h = (h ^ k[i]) * 16777619u;
    return h % TABLE_BUCKETS;
}

static void dev_key(const reg_uuid *t, const reg_uuid *d, uint8_t out[32])
{
    memcpy(out, t->b, 16);
    memcpy(out + 16, d->b, 16);
}

static struct cert_entry *cert_find(devauth *a, const uint8_t fp[32])
{
    for (struct cert_entry *e = a->certs[bucket(fp)]; e; e = e->next)
        if (!memcmp(e->fp, fp, 32)) return e;
    return NULL;
}

static void cert_forget(devauth *a, const uint8_t fp[32])
{
    struct cert_entry **pp = &a->certs[bucket(fp)];
    while (*pp && memcmp((*pp)->fp, fp, 32))
        pp = &(*pp)->next;
    if (!*pp) return;
    struct cert_entry *e = *pp;
    *pp = e->next;
    free(e);
    a->ncerts--;
}

static void cert_remember(devauth *a, const uint8_t fp[32], const devauth_status *st)
{
    unsigned b = bucket(fp);
    cert_forget(a, fp);
    if (a->ncerts >= TABLE_MAX_ENTRIES) {
        while (a->certs[b]) {
            struct cert_entry *e = a->certs[b];
            a->certs[b] = e->next;
            free(e);
            a->ncerts--;
        }
    }
    struct cert_entry *e = calloc(1, sizeof *e);
    if (!e) return;
    memcpy(e->fp, fp, 32);
    e->tenant = st->tenant;
    e->device = st->device;
    memcpy(e->cert_id, st->cert_id, sizeof e->cert_id);
    e->not_before_ms = st->not_before_ms;
    e->valid_until_ms = st->valid_until_ms;
    e->revoked_ms = st->revoked_ms;
    e->next = a->certs[b];
    a->certs[b] = e;
    a->ncerts++;
}

static struct dev_entry *dev_find(devauth *a, const uint8_t key[32])
{
    for (struct dev_entry *e = a->devs[bucket(key)]; e; e = e->next)
        if (!memcmp(e->key, key, 32)) return e;
    return NULL;
}

static void dev_forget(devauth *a, const uint8_t key[32])
{
    struct dev_entry **pp = &a->devs[bucket(key)];
    while (*pp && memcmp((*pp)->key, key, 32))
        pp = &(*pp)->next;
    if (!*pp) return;
    struct dev_entry *e = *pp;
    *pp = e->next;
    free(e);
    a->ndevs--;
}

static void dev_remember(devauth *a, const uint8_t key[32], const char *status)
{
    struct dev_entry *e = dev_find(a, key);
    if (!e) {
        unsigned b = bucket(key);
        if (a->ndevs >= TABLE_MAX_ENTRIES) {
            while (a->devs[b]) {
                struct dev_entry *x = a->devs[b];
                a->devs[b] = x->next;
                free(x);
                a->ndevs--;
            }
        }
        if (!(e = calloc(1, sizeof *e))) return;
        memcpy(e->key, key, 32);
        e->next = a->devs[b];
        a->devs[b] = e;
        a->ndevs++;
    }
    snprintf(e->status, sizeof e->status, "%s", status);
}

static void fill_ids(devauth_status *st)
{
    reg_uuid_format(&st->tenant, st->tenant_s);
    reg_uuid_format(&st->device, st->device_s);
}

/* ---- the shared cache's values ---- */

static void cert_cache_key(const char *fp_hex, char *out, size_t cap)
{
    snprintf(out, cap, "reg:cert:%s", fp_hex);
}

static void dev_cache_key(const devauth_status *st, char *out, size_t cap)
{
    snprintf(out, cap, "reg:dev:%s/%s", st->tenant_s, st->device_s);
}

/* Parses a certificate status (the view's record or the shared cache's value: same fields). */
static int parse_cert(const char *text, size_t len, devauth_status *st)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    if (!j) return REG_EDECODE;
    int err = 0;
    if (reg_uuid_parse(json_string_value(json_object_get(j, "tenant_id")), &st->tenant) ||
        reg_uuid_parse(json_string_value(json_object_get(j, "device_id")), &st->device) ||
        !json_is_string(json_object_get(j, "cert_id")))
        err = REG_EDECODE;
    if (!err) {
        snprintf(st->cert_id, sizeof st->cert_id, "%s",
                 json_string_value(json_object_get(j, "cert_id")));
        st->not_before_ms = json_integer_value(json_object_get(j, "not_before_ms"));
        st->valid_until_ms = json_integer_value(json_object_get(j, "valid_until_ms"));
        st->revoked_ms = json_integer_value(json_object_get(j, "revoked_ms"));
        fill_ids(st);
    }
    json_decref(j);
    return err;
}

/* Writes the certificate's status to the shared cache, for its remaining validity. A fill after
 * a view read must not replace a newer fact written by a notice: only_if_absent. */
static void share_cert(devauth *a, const char *fp_hex, const devauth_status *st, int only_if_absent)
{
    if (!a->shared) return;
    int64_t ttl = st->valid_until_ms - clock_now_ms();
    if (ttl <= 0) ttl = 60000; /* an expired or revoked certificate is refused from the cache too */
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "tenant_id", st->tenant_s, "device_id",
                          st->device_s, "cert_id", st->cert_id, "not_before_ms",
                          (json_int_t)st->not_before_ms, "valid_until_ms",
                          (json_int_t)st->valid_until_ms, "revoked_ms", (json_int_t)st->revoked_ms);
    char *text = json_dumps(j, JSON_COMPACT), key[96];
    cert_cache_key(fp_hex, key, sizeof key);
    if (text) cache_set(a->shared, key, text, strlen(text), (uint64_t)ttl, only_if_absent);
    free(text);
    json_decref(j);
}

static void share_device(devauth *a, const devauth_status *st)
{
    if (!a->shared) return;
    char key[96];
    dev_cache_key(st, key, sizeof key);
    cache_set(a->shared, key, st->device_status, strlen(st->device_status), DEVICE_TTL_MS, 0);
}

/* ---- the view ---- */

static int view_cert(devauth *a, const uint8_t fp[32], devauth_status *st)
{
    reg_key k;
    key_hash(&k, 'f', fp);
    char *val = NULL;
    size_t len = 0;
    int err = view_get(a->view, VIEW_CERTS, k.b, k.len, &val, &len);
    if (err == REG_ENOTFOUND && a->secondary) {
        /* Issued a moment ago through another process: catch up once before saying no. */
        view_catch_up(a->view);
        err = view_get(a->view, VIEW_CERTS, k.b, k.len, &val, &len);
    }
    if (err) return err;
    err = parse_cert(val, len, st);
    free(val);
    return err;
}

static int view_device(devauth *a, devauth_status *st)
{
    json_t *dev = NULL;
    view_src src = {a->view, NULL};
    int err = record_device_load(src, &st->tenant, &st->device, &dev);
    if (err) return err;
    snprintf(st->device_status, sizeof st->device_status, "%s",
             json_string_value(json_object_get(dev, "status"))
                 ? json_string_value(json_object_get(dev, "status"))
                 : "");
    json_decref(dev);
    return 0;
}

/* ---- lookups ---- */

static void finish(struct lookup *l, int err)
{
    devauth *a = l->a;
    l->cb(l->arg, err, err ? NULL : &l->st);
    free(l);
    if (--a->lookups == 0 && a->freeing) devauth_release(a);
}

/* The whole status from the view (both caches missed). */
static void from_view(struct lookup *l)
{
    devauth *a = l->a;
    a->stats.view_reads++;
    int err = view_cert(a, l->fp, &l->st);
    if (err == REG_ENOTFOUND) a->stats.unknown++;
    if (!err) err = view_device(a, &l->st);
    if (!err) {
        cert_remember(a, l->fp, &l->st);
        uint8_t dk[32];
        dev_key(&l->st.tenant, &l->st.device, dk);
        dev_remember(a, dk, l->st.device_status);
        share_cert(a, l->fp_hex, &l->st, 1);
        share_device(a, &l->st);
    }
    finish(l, err);
}

static void on_shared_device(void *arg, int err, const char *value, size_t len)
{
    struct lookup *l = arg;
    devauth *a = l->a;
    if (err || len == 0 || len >= sizeof l->st.device_status) {
        /* The certificate came from the shared cache; its device from the view. */
        a->stats.view_reads++;
        err = view_device(a, &l->st);
        if (!err) share_device(a, &l->st);
    } else {
        memcpy(l->st.device_status, value, len);
        l->st.device_status[len] = 0;
        a->stats.shared_hits++;
    }
    if (!err) {
        uint8_t dk[32];
        dev_key(&l->st.tenant, &l->st.device, dk);
        dev_remember(a, dk, l->st.device_status);
    }
    finish(l, err);
}

static void on_shared_cert(void *arg, int err, const char *value, size_t len)
{
    struct lookup *l = arg;
    devauth *a = l->a;
    if (err || parse_cert(value, len, &l->st)) {
        from_view(l);
        return;
    }
    cert_remember(a, l->fp, &l->st);
    uint8_t dk[32];
    dev_key(&l->st.tenant, &l->st.device, dk);
    struct dev_entry *d = dev_find(a, dk);
    if (d) {
        memcpy(l->st.device_status, d->status, sizeof d->status);
        a->stats.shared_hits++;
        finish(l, 0);
        return;
    }
    char key[96];
    dev_cache_key(&l->st, key, sizeof key);
    cache_get(a->shared, key, on_shared_device, l);
}

void devauth_lookup(devauth *a, const char *fingerprint, devauth_cb cb, void *arg)
{
    uint8_t fp[32];
    if (reg_hex_decode(fingerprint, fp, 32)) {
        cb(arg, REG_EINVAL, NULL);
        return;
    }
    struct cert_entry *e = cert_find(a, fp);
    devauth_status st;
    if (e) {
        uint8_t dk[32];
        dev_key(&e->tenant, &e->device, dk);
        struct dev_entry *d = dev_find(a, dk);
        if (d) {
            memset(&st, 0, sizeof st);
            st.tenant = e->tenant;
            st.device = e->device;
            memcpy(st.cert_id, e->cert_id, sizeof st.cert_id);
            st.not_before_ms = e->not_before_ms;
            st.valid_until_ms = e->valid_until_ms;
            st.revoked_ms = e->revoked_ms;
            memcpy(st.device_status, d->status, sizeof st.device_status);
            fill_ids(&st);
            a->stats.memory_hits++;
            cb(arg, 0, &st);
            return;
        }
    }
    struct lookup *l = calloc(1, sizeof *l);
    if (!l) {
        cb(arg, REG_ENOMEM, NULL);
        return;
    }
    l->a = a;
    a->lookups++;
    l->cb = cb;
    l->arg = arg;
    memcpy(l->fp, fp, 32);
    snprintf(l->fp_hex, sizeof l->fp_hex, "%s", fingerprint);
    if (!a->shared) {
        from_view(l);
        return;
    }
    char key[96];
    cert_cache_key(fingerprint, key, sizeof key);
    cache_get(a->shared, key, on_shared_cert, l);
}

/* ---- trust ---- */

static void free_trust(devauth *a)
{
    X509_STORE_free(a->factory_store);
    a->factory_store = NULL;
    free(a->factory);
    a->factory = NULL;
    a->nfactory = 0;
}

int devauth_reload_trust(devauth *a)
{
    X509_STORE *factory = X509_STORE_new(), *all = X509_STORE_new();
    struct factory_ca *list = NULL;
    size_t n = 0, cap = 0;
    int err = factory && all ? 0 : REG_ENOMEM;
    static const char tags[2] = {'f', 'i'};
    for (int t = 0; t < 2 && !err; t++) {
        view_iter *it = view_iter_prefix(a->view, VIEW_CAS, &tags[t], 1, NULL, 0);
        const char *k, *v;
        size_t kl, vl;
        while (it && view_iter_next(it, &k, &kl, &v, &vl)) {
            const char *pem = v;
            size_t pem_len = vl;
            json_t *j = NULL;
            if (tags[t] == 'f') {
                if (!(j = json_loadb(v, vl, 0, NULL))) continue;
                pem = json_string_value(json_object_get(j, "pem"));
                pem_len = pem ? strlen(pem) : 0;
            }
            X509 *cert = NULL;
            if (pem && kl >= 17 && !pki_cert_from_pem(pem, pem_len, &cert)) {
                X509_STORE_add_cert(all, cert);
                if (tags[t] == 'f') {
                    X509_STORE_add_cert(factory, cert);
                    if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        struct factory_ca *grown = realloc(list, cap * sizeof *grown);
                        if (!grown)
                            err = REG_ENOMEM;
                        else
                            list = grown;
                    }
                    if (!err) {
                        pki_cert_fingerprint(cert, list[n].fp);
                        memcpy(list[n].tenant.b, k + 1, 16);
                        n++;
                    }
                }
                X509_free(cert);
            }
            json_decref(j);
        }
        view_iter_free(it);
    }
    if (err) {
        X509_STORE_free(factory);
        X509_STORE_free(all);
        free(list);
        return err;
    }
    free_trust(a);
    a->factory_store = factory;
    a->factory = list;
    a->nfactory = n;
    /* Handshakes in progress keep a reference to the old store; new ones take this one. */
    if (a->ctx) SSL_CTX_set1_cert_store(a->ctx, all);
    X509_STORE_free(all);
    a->stats.trust_reloads++;
    return 0;
}

int devauth_factory_tenants(devauth *a, X509 *leaf, STACK_OF(X509) *chain, int64_t now_ms,
                            char anchor_fp[65], reg_uuid *tenants, size_t max, size_t *n, char *why,
                            size_t why_cap)
{
    X509 *anchor = NULL;
    *n = 0;
    int err = pki_verify(a->factory_store, leaf, chain, now_ms, &anchor, why, why_cap);
    if (err) return err;
    pki_cert_fingerprint(anchor, anchor_fp);
    X509_free(anchor);
    for (size_t i = 0; i < a->nfactory && *n < max; i++)
        if (!strcmp(a->factory[i].fp, anchor_fp)) tenants[(*n)++] = a->factory[i].tenant;
    if (*n == 0) {
        snprintf(why, why_cap, "the certificate's CA is not a registered factory CA");
        return REG_EINVAL;
    }
    return 0;
}

/* ---- notices ---- */

int devauth_device_ref(const char *ref, reg_uuid *tenant, reg_uuid *device)
{
    char t[37];
    if (!ref || strlen(ref) != 73 || ref[36] != '/') return REG_EINVAL;
    memcpy(t, ref, 36);
    t[36] = 0;
    return reg_uuid_parse(t, tenant) || reg_uuid_parse(ref + 37, device) ? REG_EINVAL : 0;
}

void devauth_notice(devauth *a, const char *msg, size_t len)
{
    json_t *j = json_loadb(msg, len, 0, NULL);
    if (!j) return;
    if (a->secondary) view_catch_up(a->view);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "certs"), i, v)
    {
        uint8_t fp[32];
        const char *hex = json_string_value(v);
        if (!hex || reg_hex_decode(hex, fp, 32)) continue;
        cert_forget(a, fp);
        devauth_status st;
        memset(&st, 0, sizeof st);
        /* Rewrite the shared entry with the new truth (or drop it if the view lacks it). */
        if (a->shared && !view_cert(a, fp, &st)) {
            share_cert(a, hex, &st, 0);
        } else if (a->shared) {
            char key[96];
            cert_cache_key(hex, key, sizeof key);
            cache_del(a->shared, key);
        }
    }
    json_array_foreach(json_object_get(j, "devices"), i, v)
    {
        devauth_status st;
        memset(&st, 0, sizeof st);
        if (devauth_device_ref(json_string_value(v), &st.tenant, &st.device)) continue;
        fill_ids(&st);
        uint8_t dk[32];
        dev_key(&st.tenant, &st.device, dk);
        dev_forget(a, dk);
        if (a->shared && !view_device(a, &st)) share_device(a, &st);
    }
    if (json_is_true(json_object_get(j, "trust"))) devauth_reload_trust(a);
    json_decref(j);
}

int devauth_refusal(const devauth_status *st, int64_t now_ms, const char **why)
{
    if (st->revoked_ms) return *why = "the certificate has been revoked", 401;
    if (now_ms >= st->valid_until_ms)
        return *why = "the certificate has expired or was superseded and its overlap has ended",
               401;
    if (now_ms < st->not_before_ms) return *why = "the certificate is not valid yet", 401;
    if (!strcmp(st->device_status, "suspended") || !strcmp(st->device_status, "decommissioned"))
        return *why = "the device is suspended or decommissioned", 403;
    return 0;
}

void devauth_device_activated(devauth *a, const reg_uuid *tenant, const reg_uuid *device)
{
    uint8_t dk[32];
    dev_key(tenant, device, dk);
    dev_remember(a, dk, "active");
}

bool devauth_should_touch(devauth *a, const reg_uuid *tenant, const reg_uuid *device,
                          int64_t now_ms, int64_t interval_ms)
{
    uint8_t dk[32];
    dev_key(tenant, device, dk);
    struct dev_entry *e = dev_find(a, dk);
    if (!e) return false; /* looked up a moment ago; absent only when evicted: next time */
    if (e->touched_ms && now_ms - e->touched_ms < interval_ms) return false;
    e->touched_ms = now_ms;
    return true;
}

void devauth_get_stats(const devauth *a, devauth_stats *out)
{
    *out = a->stats;
}

int devauth_new(view *v, int view_is_secondary, cache *c, SSL_CTX *ctx, devauth **out)
{
    devauth *a = calloc(1, sizeof *a);
    if (!a) return REG_ENOMEM;
    a->view = v;
    a->secondary = view_is_secondary;
    a->shared = c;
    a->ctx = ctx;
    int err = devauth_reload_trust(a);
    if (err) {
        devauth_free(a);
        return err;
    }
    *out = a;
    return 0;
}

void devauth_free(devauth *a)
{
    if (!a) return;
    if (a->lookups) {
        a->freeing = true; /* the last waiting lookup frees it */
        return;
    }
    devauth_release(a);
}

static void devauth_release(devauth *a)
{
    for (size_t b = 0; b < TABLE_BUCKETS; b++) {
        while (a->certs[b]) {
            struct cert_entry *e = a->certs[b];
            a->certs[b] = e->next;
            free(e);
        }
        while (a->devs[b]) {
            struct dev_entry *e = a->devs[b];
            a->devs[b] = e->next;
            free(e);
        }
    }
    free_trust(a);
    free(a);
}
