/*
 * notify.h - what devices are told when an event is committed: messages for a device's MQTT
 * topics, published by the projector on the bus channel "deliver" after the commit and sent by
 * whichever front end holds the device's connection. Today: certificate rotation notices
 * ($registry/devices/{id}/certificates/rotate); shadow deltas and job notifications join here.
 */
#ifndef REG_NOTIFY_H
#define REG_NOTIFY_H

#include "projector/view.h"

#include <jansson.h>

/* Appends to `out` (a JSON array) the deliveries an applied event calls for, each
 * {"tenant_id", "device_id", "topic", "payload" (a JSON text)}; reads the view through t (the
 * event already applied). */
void notify_event(view_txn *t, const json_t *ev, json_t *out);

#endif
