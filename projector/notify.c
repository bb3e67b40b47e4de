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
static void rotation_notice(view_txn *t, const json_t *ev, const json_t *b, delivery_batch *out)
{
    reg_uuid tid, did;
    json_t *dev = NULL;
    view_src src = {NULL, t};
    const char *tenant = json_string_value(json_object_get(ev, "tenant_id"));
    const char *device = json_string_value(json_object_get(ev, "entity_id"));
    if (reg_uuid_parse(tenant, &tid) || reg_uuid_parse(device, &did) ||
        record_device_hold(src, &tid, &did, &dev))
        return;
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
    add_delivery(out, &tid, &did, topic,
                 jsonfast_pack("{s:s, s:O, s:s}", "cert_id", cert_id ? cert_id : "", "expires_at",
                               expires ? expires : json_null(), "renew_url", url));
    json_decref(dev);
}

static int event_device(const json_t *ev, reg_uuid *tid, reg_uuid *did)
{
    return reg_uuid_parse(json_string_value(json_object_get(ev, "tenant_id")), tid) ||
           reg_uuid_parse(json_string_value(json_object_get(ev, "entity_id")), did);
}

static const char *event_kind(const json_t *ev, json_t **body)
{
    const char *kind = NULL;
    json_t *b = NULL;
    json_object_foreach(json_object_get(ev, "body"), kind, b) break;
    if (body) *body = b;
    return kind;
}

json_t *notify_before(view_txn *t, const json_t *ev)
{
    const char *kind = event_kind(ev, NULL);
    reg_uuid tid, did;
    json_t *rec = NULL;
    view_src src = {NULL, t};
    if (!kind || strcmp(kind, "ShadowUpdated") || event_device(ev, &tid, &did) ||
        shadow_view_hold(src, &tid, &did, &rec))
        return NULL;
    return rec;
}

/* update/accepted, update/documents and, when desired and reported differ, update/delta. */
static void shadow_notices(view_txn *t, const json_t *ev, const json_t *b, const json_t *before,
                           delivery_batch *out)
{
    reg_uuid tid, did;
    json_t *rec = NULL;
    view_src src = {NULL, t};
    if (!before || event_device(ev, &tid, &did) || shadow_view_hold(src, &tid, &did, &rec)) return;
    const char *device = json_string_value(json_object_get(ev, "entity_id"));
    const char *token = json_string_value(json_object_get(b, "client_token"));
    int64_t now_s = json_integer_value(json_object_get(ev, "time_ms")) / 1000;
    json_t *desired = NULL, *reported = NULL;
    shadow_view_patch(b, "desired", &desired);
    shadow_view_patch(b, "reported", &reported);
    char topic[128];
    shadow_view_topic(device, "update/accepted", topic, sizeof topic);
    add_delivery(out, &tid, &did, topic,
                 shadow_view_accepted(rec, desired, reported, token, now_s));
    shadow_view_topic(device, "update/documents", topic, sizeof topic);
    add_delivery(out, &tid, &did, topic, shadow_view_documents(before, rec, token, now_s));
    json_t *delta = shadow_view_delta_message(rec, token, now_s);
    if (delta) {
        shadow_view_topic(device, "update/delta", topic, sizeof topic);
        add_delivery(out, &tid, &did, topic, delta);
    }
    json_decref(desired);
    json_decref(reported);
    json_decref(rec);
}

void notify_event(view_txn *t, const json_t *ev, const json_t *before, delivery_batch *out)
{
    json_t *b = NULL;
    const char *kind = event_kind(ev, &b);
    if (!kind) return;
    if (!strcmp(kind, "CertificateRotationDue")) rotation_notice(t, ev, b, out);
    if (!strcmp(kind, "ShadowUpdated")) shadow_notices(t, ev, b, before, out);
}
