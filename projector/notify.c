/* notify.c - device notifications from committed events (notify.h). */
#include "projector/notify.h"
#include "ids.h"
#include "projector/records.h"
#include "projector/shadow_view.h"
#include "jsonfast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_delivery(delivery_batch *out, const reg_uuid *tenant, const reg_uuid *device,
                         const char *topic, json_t *payload /* taken */)
{
    size_t len = 0;
    char *text = payload ? jsonfast_dump(payload, &len) : NULL;
    if (text) delivery_append(out, tenant, device, topic, text, len);
    free(text);
    json_decref(payload);
}

/* $registry/devices/{id}/certificates/rotate: {"cert_id", "expires_at", "renew_url"}. */
static void rotation_notice(view_txn *t, const event *ev, delivery_batch *out)
{
    const reg_uuid *tid = &ev->tenant, *did = &ev->entity;
    const json_t *b = ev->body;
    json_t *dev = NULL;
    view_src src = {NULL, t};
    const char *device = ev->entity_id;
    if (!ev->ids_valid || record_device_hold(src, tid, did, &dev)) return;
    const char *cert_id = json_string_value(json_object_get(b, "cert_id"));
    json_t *expires = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(
        json_object_get(dev, "certificates"), i,
        c) if (cert_id && !strcmp(cert_id, json_string_value(json_object_get(c, "cert_id"))
                                               ? json_string_value(json_object_get(c, "cert_id"))
                                               : "")) expires = json_object_get(c, "expires_at");
    char topic[128], url[128];
    snprintf(topic, sizeof topic, "$registry/devices/%s/certificates/rotate", device);
    snprintf(url, sizeof url, "/devices/%s/certificates/renew", device);
    add_delivery(out, tid, did, topic,
                 jsonfast_pack("{s:s, s:O, s:s}", "cert_id", cert_id ? cert_id : "", "expires_at",
                               expires ? expires : json_null(), "renew_url", url));
    json_decref(dev);
}

json_t *notify_before(view_txn *t, const event *ev)
{
    json_t *rec = NULL;
    view_src src = {NULL, t};
    if (strcmp(ev->kind, "ShadowUpdated") || !ev->ids_valid ||
        shadow_view_hold(src, &ev->tenant, &ev->entity, &rec))
        return NULL;
    return rec;
}

/* update/accepted, update/documents and, when desired and reported differ, update/delta. */
static void shadow_notices(view_txn *t, const event *ev, const json_t *before, delivery_batch *out)
{
    const reg_uuid *tid = &ev->tenant, *did = &ev->entity;
    const json_t *b = ev->body;
    json_t *rec = NULL;
    view_src src = {NULL, t};
    if (!before || !ev->ids_valid || shadow_view_hold(src, tid, did, &rec)) return;
    const char *device = ev->entity_id;
    const char *token = json_string_value(json_object_get(b, "client_token"));
    int64_t now_s = ev->time_ms / 1000;
    json_t *desired = NULL, *reported = NULL;
    shadow_view_patch(b, "desired", &desired);
    shadow_view_patch(b, "reported", &reported);
    char topic[128];
    shadow_view_topic(device, "update/accepted", topic, sizeof topic);
    add_delivery(out, tid, did, topic, shadow_view_accepted(rec, desired, reported, token, now_s));
    shadow_view_topic(device, "update/documents", topic, sizeof topic);
    add_delivery(out, tid, did, topic, shadow_view_documents(before, rec, token, now_s));
    json_t *delta = shadow_view_delta_message(rec, token, now_s);
    if (delta) {
        shadow_view_topic(device, "update/delta", topic, sizeof topic);
        add_delivery(out, tid, did, topic, delta);
    }
    json_decref(desired);
    json_decref(reported);
    json_decref(rec);
}

void notify_event(view_txn *t, const event *ev, const json_t *before, delivery_batch *out)
{
    if (!strcmp(ev->kind, "CertificateRotationDue")) rotation_notice(t, ev, out);
    if (!strcmp(ev->kind, "ShadowUpdated")) shadow_notices(t, ev, before, out);
}
