/* notify.c - device notifications from committed events (notify.h). */
#include "projector/notify.h"
#include "ids.h"
#include "projector/records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* $registry/devices/{id}/certificates/rotate: {"cert_id", "expires_at", "renew_url"}. */
static void rotation_notice(view_txn *t, const json_t *ev, const json_t *b, json_t *out)
{
    reg_uuid tid, did;
    json_t *dev = NULL;
    view_src src = {NULL, t};
    const char *tenant = json_string_value(json_object_get(ev, "tenant_id"));
    const char *device = json_string_value(json_object_get(ev, "entity_id"));
    if (reg_uuid_parse(tenant, &tid) || reg_uuid_parse(device, &did) ||
        record_device_load(src, &tid, &did, &dev))
        return;
    const char *cert_id = json_string_value(json_object_get(b, "cert_id"));
    json_t *expires = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(dev, "certificates"), i, c) if (
        cert_id && !strcmp(cert_id, json_string_value(json_object_get(c, "cert_id"))
                                        ? json_string_value(json_object_get(c, "cert_id"))
                                        : "")) expires = json_object_get(c, "expires_at");
    char topic[128], url[128];
    snprintf(topic, sizeof topic, "$registry/devices/%s/certificates/rotate", device);
    snprintf(url, sizeof url, "/devices/%s/certificates/renew", device);
    json_t *payload = json_pack("{s:s, s:O, s:s}", "cert_id", cert_id ? cert_id : "",
                                "expires_at", expires ? expires : json_null(), "renew_url", url);
    char *text = json_dumps(payload, JSON_COMPACT);
    json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s}", "tenant_id", tenant, "device_id",
                                         device, "topic", topic, "payload", text));
    free(text);
    json_decref(payload);
    json_decref(dev);
}

void notify_event(view_txn *t, const json_t *ev, json_t *out)
{
    const char *kind = NULL;
    json_t *b = NULL;
    json_object_foreach(json_object_get(ev, "body"), kind, b) break;
    if (kind && !strcmp(kind, "CertificateRotationDue")) rotation_notice(t, ev, b, out);
}
