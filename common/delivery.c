/* delivery.c - the batch of device messages the projector publishes (delivery.h). */
#include "delivery.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

enum { VERSION = 1, ITEM_HEADER = 16 + 16 + 2 + 4 };

int delivery_append(delivery_batch *b, const reg_uuid *tenant, const reg_uuid *device,
                    const char *topic, const char *payload, size_t payload_len)
{
    size_t tlen = strlen(topic);
    if (tlen > DELIVERY_MAX_TOPIC || payload_len > UINT32_MAX) return REG_EINVAL;
    size_t need = (b->len ? b->len : 1) + ITEM_HEADER + tlen + payload_len;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return REG_ENOMEM;
        b->data = grown;
        b->cap = cap;
    }
    if (!b->len) b->data[b->len++] = VERSION;
    uint8_t *p = (uint8_t *)b->data + b->len;
    memcpy(p, tenant->b, 16);
    memcpy(p + 16, device->b, 16);
    p[32] = (uint8_t)(tlen >> 8);
    p[33] = (uint8_t)tlen;
    for (int i = 0; i < 4; i++)
        p[34 + i] = (uint8_t)(payload_len >> (24 - 8 * i));
    memcpy(p + ITEM_HEADER, topic, tlen);
    memcpy(p + ITEM_HEADER + tlen, payload, payload_len);
    b->len += ITEM_HEADER + tlen + payload_len;
    b->count++;
    return 0;
}

void delivery_batch_clear(delivery_batch *b)
{
    free(b->data);
    *b = (delivery_batch){0};
}

int delivery_next(const char *msg, size_t len, size_t *pos, delivery *out)
{
    if (!len || (uint8_t)msg[0] != VERSION) return REG_EDECODE;
    if (*pos == 0) *pos = 1;
    if (*pos == len) return 0;
    if (*pos > len || len - *pos < ITEM_HEADER) return REG_EDECODE;
    const uint8_t *p = (const uint8_t *)msg + *pos;
    size_t tlen = (size_t)p[32] << 8 | p[33];
    size_t plen = 0;
    for (int i = 0; i < 4; i++)
        plen = plen << 8 | p[34 + i];
    size_t rest = len - *pos - ITEM_HEADER;
    if (tlen > DELIVERY_MAX_TOPIC || tlen > rest || plen > rest - tlen) return REG_EDECODE;
    memcpy(out->tenant.b, p, 16);
    memcpy(out->device.b, p + 16, 16);
    out->topic = (const char *)p + ITEM_HEADER;
    out->topic_len = tlen;
    out->payload = out->topic + tlen;
    out->payload_len = plen;
    *pos += ITEM_HEADER + tlen + plen;
    return 1;
}
