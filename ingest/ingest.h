/*
 * ingest.h - the write side of the operator API: each write request is checked, turned into a
 * registry.Command (ids, token hashes and time made here, so the projector's decision is
 * deterministic), appended to the commands log, and answered when the command's outcome arrives
 * on the bus (read-your-writes: the answer carries the decided state and its version).
 */
#ifndef REG_INGEST_H
#define REG_INGEST_H

#include "bus.h"
#include "eventlog.h"
#include "http_server.h"
#include "metrics.h"
#include "query/api.h"
#include "query/auth.h"

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
};

/* Creates the write side on loop (subscribes to "outcome" on the bus). Borrows everything. */
int ingest_new(struct uv_loop_s *loop, elog *commands, bus *b, metrics *m, const api_limits *limits,
               ingest **out);
/* Answers every pending request with 503 and frees; run the loop afterwards to close handles. */
void ingest_free(ingest *in);

/* Handles a write. `id` is the path's entity id (device or token; NULL when none), `key` the
 * metadata key (NULL when none). Takes the pending request: it is answered exactly once, and the
 * answer is recorded in metrics under `route_label`. */
void ingest_handle(ingest *in, http_req *req, const http_request *r, const auth_principal *who,
                   enum ingest_route route, const char *id, const char *key,
                   const char *route_label);

/* Commands waiting for their outcome now. */
size_t ingest_pending(const ingest *in);

#endif
