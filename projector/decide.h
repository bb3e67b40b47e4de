/*
 * decide.h - deciding a command against the view: accepted (a list of events, and the answer the
 * waiting caller gets) or rejected (a problem document). Deterministic: the result depends only on
 * the command and the view (time is the command's time_ms; ids were made by the sender).
 */
#ifndef REG_DECIDE_H
#define REG_DECIDE_H

#include "projector/view.h"

#include <jansson.h>

typedef struct decide_config {
    const char *region;
    unsigned max_metadata_keys; /* per device (default 100) */
    size_t shadow_max_bytes;    /* desired + reported after a merge (default 8192): else 413 */
} decide_config;

typedef struct decision {
    json_t *events; /* array of registry.Event JSON values; owned; empty when rejected */
    int status;     /* the HTTP status the caller answers with */
    json_t *reply;  /* owned: a problem document when rejected, else set by decide_reply */
    int reply_kind; /* internal: what decide_reply renders */
    json_t *shadow; /* owned: an accepted shadow update's merged document, for apply_event */
} decision;

/* Decides cmd (borrowed; registry.Command JSON) against t. Always fills d (the caller clears it
 * with decision_clear). Returns 0, or REG_E* on a storage failure (nothing decided). */
int decide_command(view_txn *t, const json_t *cmd, const decide_config *cfg, decision *d);

/* For an accepted command, after its events were applied to t: renders the answer body. */
int decide_reply(view_txn *t, const json_t *cmd, decision *d);

void decision_clear(decision *d);

/* The outcome message for the bus and the commands family, as JSON text: {"command_id",
 * "status", "body"}. A device answered as stored is not rendered again: its text is the one the
 * view will store (t encodes it once for both). The caller frees the text; NULL when out of
 * memory. */
char *decision_outcome(view_txn *t, const json_t *cmd, const decision *d, size_t *len);

#endif
