/*
 * device_port.h - the device API (API.md, "Device API"): HTTPS on the device port, client
 * certificates requested.
 *
 * Bootstrap with a factory certificate (POST /devices/provision) or a claim token
 * (POST /devices/claim); then, authenticated with the operational certificate: the device's own
 * record (GET /devices/{id}, a read API.md leaves implicit and devices need to see their status)
 * and renewal (POST /devices/{id}/certificates/renew). The first authenticated request of a
 * device still `provisioning` activates it before it is answered. A revoked certificate's live
 * connections are closed as soon as the revocation's notice arrives.
 *
 * On first start the port's server certificate is made: a CA written to DATA/server-ca.pem (what
 * devices trust), a server certificate in DATA/server.pem, both keys in the keystore.
 */
#ifndef REG_DEVICE_PORT_H
#define REG_DEVICE_PORT_H

#include "bus.h"
#include <stdbool.h>
#include "cache.h"
#include "http_server.h"
#include "ingest/ingest.h"
#include "keystore.h"
#include "metrics.h"
#include "projector/view.h"
#include "shadow.h"

struct uv_loop_s;
typedef struct device_port device_port;

typedef struct device_port_deps {
    const char *data_dir;      /* where server-ca.pem and server.pem live */
    view *view;                /* borrowed; read */
    int view_is_secondary;     /* catch up before reading after a notice */
    ingest *ingest;            /* borrowed; NULL: bootstrap, renewal and activation answer 503 */
    keystore *keys;            /* borrowed; the tenants' CA keys and the port's own */
    bus *bus;                  /* borrowed; "auth" notices */
    cache *shared;             /* borrowed; NULL in the embedded deployment */
    metrics *metrics;          /* borrowed */
    unsigned seen_interval_ms; /* last_seen_at is written at most this often per device; 300000 */
    shadow_limits shadow;      /* depth and client token of shadow updates (filled: api_limits) */
} device_port_deps;

/* Starts the device port on host:port (port 0 picks one). deps is copied. The caller owns *out
 * and stops it with device_port_stop (then runs the loop so its handles close). */
int device_port_start(struct uv_loop_s *loop, const char *host, int port, const http_limits *limits,
                      const device_port_deps *deps, device_port **out);
int device_port_port(const device_port *dp);
void device_port_stop(device_port *dp);

/* What the MQTT port shares with this one: the TLS context (server certificate, the trust store
 * devauth keeps current) and the authenticator. Borrowed; valid until device_port_stop. */
struct ssl_ctx_st *device_port_tls(device_port *dp);
struct devauth *device_port_auth(device_port *dp);

/* For the MQTT port, what an authenticated device connection sets off: activation (a device
 * still `provisioning`: cb gets the decided outcome; needs a port with writes) and the
 * last_seen_at write (at most once per interval per device). */
struct devauth_status;
void device_port_activate(device_port *dp, const struct devauth_status *st, const char *fingerprint,
                          ingest_outcome_cb cb, void *arg);
void device_port_touch(device_port *dp, const struct devauth_status *st);
/* For the MQTT port's shadow topics: the view (a secondary caught up first when a commit was
 * announced since the last read; borrowed), the limits, and a device's own shadow update (u
 * checked; cb gets the decided outcome, with its body only when refused unless with_body;
 * needs a port with writes). */
view *device_port_view(device_port *dp);
bool device_port_view_is_secondary(const device_port *dp);
const shadow_limits *device_port_shadow_limits(const device_port *dp);
void device_port_update_shadow(device_port *dp, const struct devauth_status *st,
                               const shadow_update *u, bool with_body, ingest_outcome_cb cb,
                               void *arg);

/* Whether the port can send commands (bootstraps, activations). */
bool device_port_writes(const device_port *dp);

/* Appends the port's counters (authentication tiers, view reads per authentication) to a
 * /metrics page. */
void device_port_metrics(device_port *dp, metrics_out *out);

#endif
