/*
 * devauth.h - authenticating devices on the device ports (ARCHITECTURE.md, "Authentication hot
 * path").
 *
 * 1. Trust: the TLS handshake verifies a client chain against one in-memory store holding every
 *    tenant's factory CAs and issuing CAs; a second store of factory CAs alone tells, after the
 *    handshake, which factory CA (and so which tenants) vouched for a bootstrap certificate. Both
 *    are rebuilt from the view when a notice says the CAs changed, and swapped into the TLS
 *    context between handshakes: no restart.
 * 2. Status of an operational certificate by its SHA-256 fingerprint, with its device's status:
 *    from the in-process cache, else the shared cache (Redis; TTL = the certificate's remaining
 *    validity), else the view, which fills both caches. The metrics count each tier.
 * 3. Forgetting: a notice names the certificates and devices whose status changed; their
 *    in-process entries are dropped and the shared cache is rewritten from the (caught-up) view,
 *    overwriting whatever another front end may have filled in meanwhile.
 *
 * One loop thread only.
 */
#ifndef REG_DEVAUTH_H
#define REG_DEVAUTH_H

#include "cache.h"
#include "ids.h"
#include "projector/view.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

struct uv_loop_s;
typedef struct devauth devauth;

/* What authentication knows about an operational certificate and its device. */
typedef struct devauth_status {
    reg_uuid tenant, device;
    char tenant_s[37], device_s[37], cert_id[37];
    int64_t not_before_ms, valid_until_ms, revoked_ms;
    char device_status[16]; /* provisioning, active, suspended, decommissioned */
} devauth_status;

typedef struct devauth_stats {
    uint64_t memory_hits, shared_hits, view_reads, unknown;
    uint64_t trust_reloads;
} devauth_stats;

/* Makes the authenticator over view v (a secondary is caught up before it is read after a
 * notice), with the shared cache c (NULL in the embedded deployment). Borrows both. The TLS
 * context ctx (borrowed; may be NULL) gets the combined trust store now and on every reload. */
int devauth_new(view *v, int view_is_secondary, cache *c, SSL_CTX *ctx, devauth **out);
/* Frees it, or, while lookups wait for the shared cache, marks it so that the last one does
 * (their callbacks still run, with the view as their answer or an error). */
void devauth_free(devauth *a);

/* Rebuilds the trust stores from the view. */
int devauth_reload_trust(devauth *a);

/* For a bootstrap: verifies leaf (with the chain the client sent, may be NULL) against the
 * factory CAs at now_ms. On success fills tenants[0..*n) with the tenants that registered the
 * anchor CA (at most max) and anchor_fp with its fingerprint. REG_EINVAL with why otherwise. */
int devauth_factory_tenants(devauth *a, X509 *leaf, STACK_OF(X509) *chain, int64_t now_ms,
                            char anchor_fp[65], reg_uuid *tenants, size_t max, size_t *n,
                            char *why, size_t why_cap);

/* The status of the certificate with this fingerprint (hex): cb(arg, 0, status) or
 * cb(arg, REG_ENOTFOUND, NULL) for a certificate the registry did not issue, or another REG_E*.
 * cb may run before devauth_lookup returns (an in-process hit) or later on the loop. */
typedef void (*devauth_cb)(void *arg, int err, const devauth_status *st);
void devauth_lookup(devauth *a, const char *fingerprint, devauth_cb cb, void *arg);

/* Whether an operational certificate's status lets it in now: 0, or 401 (revoked, expired,
 * superseded past its overlap, not yet valid) or 403 (device suspended or decommissioned) with
 * *why a static reason. */
int devauth_refusal(const devauth_status *st, int64_t now_ms, const char **why);

/* Applies an "auth" notice of the projector (see projector.c): forgets what changed and
 * rebuilds trust when asked. The caller closes the connections of revoked certificates. */
void devauth_notice(devauth *a, const char *msg, size_t len);

/* Parses a device as "auth" notices name it, "<tenant id>/<device id>". 0 or REG_EINVAL. */
int devauth_device_ref(const char *ref, reg_uuid *tenant, reg_uuid *device);

/* Marks the device active in the in-process cache (after its activation was decided). */
void devauth_device_activated(devauth *a, const reg_uuid *tenant, const reg_uuid *device);

/* Whether the device's last_seen_at should be written now: true at most once per interval_ms per
 * device (per process), remembering now_ms when it says so. */
bool devauth_should_touch(devauth *a, const reg_uuid *tenant, const reg_uuid *device, int64_t now_ms,
                          int64_t interval_ms);

void devauth_get_stats(const devauth *a, devauth_stats *out);

#endif
