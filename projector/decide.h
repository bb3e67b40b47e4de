/*
 * decide.h - deciding a command against the view: accepted (a list of events, and the answer the
 * waiting caller gets) or rejected (a problem document). Deterministic: the result depends only on
 * the command and the view (time is the command's time_ms; ids were made by the sender).
 */
#ifndef REG_DECIDE_H
#define REG_DECIDE_H

#include "projector/apply.h"
#include "projector/command.h"
#include "projector/event.h"
#include "projector/view.h"

#include <jansson.h>

typedef struct decide_config {
    const char *region;
    unsigned max_metadata_keys; /* per device (default 100) */
    size_t shadow_max_bytes;    /* desired + reported after a merge (default 8192): else 413 */
} decide_config;

typedef struct decision {
    event *events; /* owned, nevents of them; none when rejected */
    size_t nevents, events_cap;
    int emit_err;   /* an event could not be made: REG_ENOMEM (decide_command fails) or REG_EINVAL
                     * (the command is rejected) */
    int status;     /* the HTTP status the caller answers with */
    json_t *reply;  /* owned: a problem document when rejected, else set by decide_reply */
    int reply_kind; /* internal: what decide_reply renders */
    apply_decided decided; /* owned: what applying its events takes over (apply.h) */
} decision;

/* Decides cmd (borrowed) against t. Always fills d (the caller clears it
 * with decision_clear). Returns 0, or REG_E* on a storage failure (nothing decided). */
int decide_command(view_txn *t, const command *cmd, const decide_config *cfg, decision *d);

/* For an accepted command, after its events were applied to t: renders the answer body. */
int decide_reply(view_txn *t, const command *cmd, decision *d);

void decision_clear(decision *d);

/* The outcome message for the bus, as JSON text: {"command_id", "status", "body"}. A body that
 * is a device, or a device's metadata, is not rendered again: it is the device record's text, or
 * its metadata's, as t holds it. The caller frees the text; NULL when out of memory or the
 * record cannot be read. */
char *decision_outcome(view_txn *t, const command *cmd, const decision *d, size_t *len);

/* What the commands family keeps of the outcome, for a duplicate of the command: 0 when it
 * keeps decision_outcome's text whole, else (an accepted command answered with a device or its
 * metadata) the length of the text {"status", "reply": "device" | "metadata"} written to out,
 * the body left to be rebuilt from the record and the command id taken from the key it is kept
 * under (decision_replayed_outcome). The device's text in every outcome had made the commands
 * family the view's largest, a third of what a commit wrote. */
enum { DECISION_KEPT_MAX = 64 };
size_t decision_kept_outcome(const decision *d, char out[DECISION_KEPT_MAX]);

/* The outcome message for a duplicate of cmd, from what the commands family kept (kept_len
 * bytes): as kept, or with its body rendered from the record as t has it now, which a change
 * made since the first decision shows. The caller frees the text; NULL when out of memory. */
char *decision_replayed_outcome(view_txn *t, const command *cmd, const char *kept, size_t kept_len,
                                size_t *len);

#endif
