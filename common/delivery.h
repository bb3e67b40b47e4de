/*
 * delivery.h - messages for devices on their way from the projector to the front ends.
 *
 * After each commit the projector publishes one batch of deliveries on the bus channel
 * "deliver" (in-process, or Redis pub/sub across processes); every front end walks the batch and
 * sends each message to its connections of that device whose subscriptions match. A delivery is
 * the tenant and device ids, an MQTT topic and a payload (the JSON text the device receives),
 * laid out in binary: neither side escapes, wraps or parses JSON for a message it only forwards,
 * and a batch is one bus message however many devices it serves.
 *
 * Layout: a version byte (1), then per delivery: tenant id (16 bytes), device id (16), topic
 * length (2, big-endian), payload length (4, big-endian), the topic, the payload.
 */
#ifndef REG_DELIVERY_H
#define REG_DELIVERY_H

#include "ids.h"

#include <stddef.h>
#include <stdint.h>

enum { DELIVERY_MAX_TOPIC = 1024 };

/* A batch being built. Zero-initialised; delivery_batch_clear frees it. */
typedef struct delivery_batch {
    char *data;
    size_t len, cap;
    unsigned count;
} delivery_batch;

/* Appends one delivery (topic at most DELIVERY_MAX_TOPIC bytes). 0, REG_ENOMEM or REG_EINVAL. */
int delivery_append(delivery_batch *b, const reg_uuid *tenant, const reg_uuid *device,
                    const char *topic, const char *payload, size_t payload_len);
void delivery_batch_clear(delivery_batch *b);

/* One delivery read from a batch: views into the batch's bytes (the topic is not
 * NUL-terminated). */
typedef struct delivery {
    reg_uuid tenant, device;
    const char *topic, *payload;
    size_t topic_len, payload_len;
} delivery;

/* Reads the delivery at *pos (start at 0) and moves *pos past it: 1, 0 at the end of the
 * batch, or REG_EDECODE when the bytes are not a batch (nothing more is read from it then). */
int delivery_next(const char *msg, size_t len, size_t *pos, delivery *out);

#endif
