/*
 * api.h - the operator API (API.md, "Operator API"): one HTTP listener that authenticates the
 * caller, routes reads to the query side (query/devices.c, answered from the view) and writes to
 * the ingest side (ingest/ingest.c, answered once the command has been decided), and serves
 * /healthz, /readyz and /metrics.
 */
#ifndef REG_API_H
#define REG_API_H

#include "bus.h"
#include "eventlog.h"
#include "http_server.h"
#include "keystore.h"
#include "metrics.h"
#include "projector/projector.h"
#include "projector/view.h"
#include "shadow.h"

struct uv_loop_s;

typedef struct api_limits {
    int max_json_depth;          /* default 32 */
    size_t max_metadata_key;     /* bytes; default 128 */
    size_t max_metadata_value;   /* bytes; default 1024 */
    unsigned max_metadata_keys;  /* per device; default 100 */
    unsigned request_timeout_ms; /* a write not decided by then answers 503; default 30000 */
    shadow_limits shadow;        /* depth and client token of shadow updates (the size is the
                                    projector's: decide_config.shadow_max_bytes) */
} api_limits;

typedef struct api_deps {
    view *view;             /* borrowed; read */
    int view_is_secondary;  /* catch up with the primary before reads after a commit notice */
    elog *commands;         /* borrowed; NULL: this process refuses writes (503) */
    bus *bus;               /* borrowed */
    projector *projector;   /* borrowed; NULL when the projector runs elsewhere */
    const char *admin_hash; /* hex SHA-256 of the admin token */
    keystore *keys;         /* borrowed; the tenants' CA keys (NULL: no signing here) */
} api_deps;

typedef struct api api;

void api_limits_default(api_limits *l);

/* Starts the API on host:port of loop. The caller owns *out. */
int api_start(struct uv_loop_s *loop, const char *host, int port, const api_limits *limits,
              const http_limits *http, const api_deps *deps, api **out);
int api_port(const api *a);

/* The API's write side (NULL when this process refuses writes) and its metrics, shared with the
 * device port of the same process. */
struct ingest;
struct ingest *api_ingest(api *a);
metrics *api_metrics(api *a);

/* Adds the device port's counters to /metrics. dp is borrowed; detach by passing NULL. */
struct device_port;
void api_attach_device_port(api *a, struct device_port *dp);
/* Adds the MQTT port's counters to /metrics (borrowed; NULL detaches). */
struct mqtt_port;
void api_attach_mqtt_port(api *a, struct mqtt_port *mp);
void api_stop(api *a);

#endif
