/*
 * apply.h - the effect of an event on the view. The projector applies the events it has just
 * decided; a rebuild applies the events log from the start without deciding anything. Both go
 * through apply_event, so a rebuilt view equals the one the projector made.
 */
#ifndef REG_APPLY_H
#define REG_APPLY_H

#include "projector/event.h"
#include "projector/records.h"
#include "projector/view.h"

#include <jansson.h>

/* What deciding a command worked out that applying its event would work out again, handed from
 * the decision (decision.decided) to apply_event, which takes what it uses (and leaves it
 * empty). Each must be what applying would find: the decision read it through the same
 * transaction, and nothing changed it between the decision and its one event's apply. */
typedef struct apply_decided {
    json_t *shadow; /* ShadowUpdated: the shadow document the update leads to, stored as it is
                     * instead of merged again */
    record_device_meta device; /* MetadataChanged: the device record as the decision read it
                                * (text NULL: none), changed instead of read and parsed again */
    /* Back from apply_event: the text of the device record the last event stored (malloc'd;
     * NULL when it stored none that way), for the command's outcome, which would read it again
     * (a registration's and a metadata change's). */
    char *stored;
    size_t stored_len;
    reg_uuid stored_device;
    device_text stored_parts; /* a metadata change's: where the text's parts are */
    bool stored_parts_valid;
} apply_decided;

/* Releases what apply_event did not take. */
void apply_decided_clear(apply_decided *d);

/* Applies ev (borrowed) to t. Returns 0, or REG_EDECODE when the event does not fit the view
 * (ids that don't parse); then nothing was written. decided is NULL in a rebuild. */
int apply_event(view_txn *t, const event *ev, apply_decided *decided);

#endif
