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
#include "projector/event.h"
#include "projector/view.h"

#include <jansson.h>

/* What an event's notifications need from the view before the event is applied (the shadow as
 * it was, for update/documents), or NULL. The caller owns it and hands it to notify_event. */
json_t *notify_before(view_txn *t, const event *ev);

/* Appends to `out` the deliveries an applied event calls for (delivery.h; the payloads are JSON
 * texts); reads the view through t (the event already applied). `before` is notify_before's
 * result for the event (borrowed). */
void notify_event(view_txn *t, const event *ev, const json_t *before, delivery_batch *out);

#endif
