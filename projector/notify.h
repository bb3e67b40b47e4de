/*
 * notify.h - what devices are told when an event is committed: messages for a device's MQTT
 * topics, published by the projector on the bus channel "deliver" after the commit and sent by
 * whichever front end holds the device's connection: certificate rotation notices
 * ($registry/devices/{id}/certificates/rotate) and, for every accepted shadow update,
 * shadow/update/accepted, shadow/update/documents and (when desired and reported differ after
 * it) shadow/update/delta. Job notifications join here.
 */
#ifndef REG_NOTIFY_H
#define REG_NOTIFY_H

#include "delivery.h"
#include "projector/view.h"

#include <jansson.h>

/* What an event's notifications need from the view before the event is applied (the shadow as
 * it was, for update/documents), or NULL. The caller owns it and hands it to notify_event. */
json_t *notify_before(view_txn *t, const json_t *ev);

/* The shadow notices of a batch, kept as references to the event and the documents before and
 * after it until notify_render writes their messages: the projector renders them on its
 * committer thread, after the commit (rendering took a fifth of the deciding thread). The
 * documents are the batch's parsed ones, which nothing changes any more. */
typedef struct notify_list {
    struct notify_shadow *items;
    size_t count, cap;
} notify_list;

/* For an applied event: appends to `out` the deliveries it calls for now (delivery.h; JSON
 * texts), or to `later` what notify_render writes; reads the view through t (the event already
 * applied). `before` is notify_before's result for the event (borrowed). */
void notify_event(view_txn *t, const json_t *ev, const json_t *before, delivery_batch *out,
                  notify_list *later);

/* Writes the messages of `later`'s notices to `out`, in order, and empties `later`. */
void notify_render(notify_list *later, delivery_batch *out);

/* Drops `later`'s notices unwritten. */
void notify_list_clear(notify_list *later);

#endif
