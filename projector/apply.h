/*
 * apply.h - the effect of an event on the view. The projector applies the events it has just
 * decided; a rebuild applies the events log from the start without deciding anything. Both go
 * through apply_event, so a rebuilt view equals the one the projector made.
 */
#ifndef REG_APPLY_H
#define REG_APPLY_H

#include "projector/view.h"

#include <jansson.h>

/* Applies event (borrowed; the JSON form of registry.Event) to t. Returns 0, or REG_EDECODE when
 * the event does not fit the view (ids that don't parse); then nothing was written.
 * shadow (NULL in a rebuild) may point at the shadow document a ShadowUpdated event leads to,
 * as deciding it computed it (decision.shadow): that document is then stored as it is (the
 * reference is taken: *shadow becomes NULL) instead of merged again. It must be what the merge
 * would give. */
int apply_event(view_txn *t, const json_t *event, json_t **shadow);

#endif
