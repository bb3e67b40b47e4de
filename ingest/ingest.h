/*
 * ingest.h - the write side of the operator API: each write request is checked, turned into a
 * registry.Command (ids, token hashes and time made here, so the projector's decision is
 * deterministic), appended to the commands log, and answered when the command's outcome arrives
 * on the bus (read-your-writes: the answer carries the decided state and its version).
 */
#ifndef REG_INGEST_H
#define REG_INGEST_H

#include "bus.h"
#include <stdbool.h>
#include "eventlog.h"
#include "keystore.h"
#include "http_server.h"
#include "metrics.h"
#include "query/api.h"
#include "query/auth.h"
#include "shadow.h"

struct uv_loop_s;
typedef struct ingest ingest;

/* What a write route is, for ingest_handle. */
enum ingest_route {
    INGEST_CREATE_TENANT,
    INGEST_CREATE_TOKEN,
    INGEST_REVOKE_TOKEN,
    INGEST_REGISTER_DEVICE,
    INGEST_UPDATE_DEVICE,
    INGEST_PUT_METADATA,
    INGEST_DELETE_METADATA,
    INGEST_PATCH_METADATA,
    INGEST_PUT_SHADOW_DESIRED,
    /* From here on: the credentials routes (ingest/credentials.c). */
    INGEST_ADD_FACTORY_CA,
    INGEST_REMOVE_FACTORY_CA,
    INGEST_ADD_MANIFEST,
    INGEST_CREATE_CLAIM,
    INGEST_REVOKE_CERTIFICATE,
    INGEST_ROTATE_CERTIFICATE,
};

/* Creates the write side on loop (subscribes to "outcome" on the bus). Borrows everything;
 * keys holds the tenants' issuing CA keys (made here when a tenant is created). */
int ingest_new(struct uv_loop_s *loop, elog *commands, bus *b, metrics *m, const api_limits *limits,
               keystore *keys, ingest **out);
/* Answers every pending request with 503 and frees; run the loop afterwards to close handles. */
void ingest_free(ingest *in);

/* Handles a write. `id` is the path's entity id (device or token; NULL when none), `key` the
 * metadata key (NULL when none). Takes the pending request: it is answered exactly once, and the
 * answer is recorded in metrics under `route_label`. */
void ingest_handle(ingest *in, http_req *req, const http_request *r, const auth_principal *who,
                   enum ingest_route route, const char *id, const char *key,
                   const char *route_label);

/* A new command: a random command id, the time now, `actor` ("admin", "token:<id>",
 * "device:<id>"), the tenant, and the body of that kind (taken). The caller owns the result. */
json_t *ingest_command(const char *actor, const char *tenant_s, const char *kind, json_t *body);

/* The UpdateShadow command for a checked update u (the patches travel as JSON text). The caller
 * owns the result (NULL when out of memory). */
json_t *ingest_shadow_command(const char *actor, const char *tenant_s, const char *device_s,
                              const shadow_update *u);

/* Sends cmd (taken) and answers req (taken) with its outcome once decided, adding the members
 * of extra (taken; may be NULL) to a successful answer: secrets shown once never enter the log.
 * The answer is recorded in metrics under label with the latency from start_ns. */
void ingest_submit(ingest *in, http_req *req, uint64_t start_ns, json_t *cmd, json_t *extra,
                   const char *label);

/* Like ingest_submit, but the outcome goes to cb on the loop: the decided status and body
 * (borrowed; a problem document when status >= 400, including 503 when the command could not be
 * stored or was not decided in time). */
typedef void (*ingest_outcome_cb)(void *arg, int status, json_t *body);
void ingest_submit_cb(ingest *in, json_t *cmd, ingest_outcome_cb cb, void *arg);

/* Like ingest_submit_cb, for a caller that reads the body only when the command is refused: an
 * accepted command's outcome reaches cb with a NULL body, without being parsed (an MQTT shadow
 * update's answers are the projector's notices; parsing each outcome's merged document again
 * was a fifth of the loop). */
void ingest_submit_cb_status(ingest *in, json_t *cmd, ingest_outcome_cb cb, void *arg);

/* The credentials routes (ingest/credentials.c), called by ingest_handle; they parse their own
 * bodies (JSON, or CSV for manifests). Takes req and answers it. */
void ingest_credentials(ingest *in, http_req *req, const http_request *r, const auth_principal *who,
                        enum ingest_route route, const char *id, const char *label);

/* The keystore holding the tenants' CA keys. */
keystore *ingest_keys(const ingest *in);

/* The limits and metrics the ingest side was made with (for ingest/credentials.c). */
const api_limits *ingest_limits(const ingest *in);
metrics *ingest_metrics(const ingest *in);

/* Work done off the loop (a manifest parsed on libuv's thread pool) holds the ingest side: it
 * is freed only after the last ingest_work_end. When the work completes and ingest_stopping
 * says so, the caller answers 503 instead of submitting. */
void ingest_work_begin(ingest *in);
bool ingest_stopping(const ingest *in);
void ingest_work_end(ingest *in);
struct uv_loop_s *ingest_loop(const ingest *in);

/* Commands waiting for their outcome now. */
size_t ingest_pending(const ingest *in);

#endif
