/*
 * devices.h - the read side of the operator API for devices: a device record, its metadata.
 * Answers from the view; another tenant's device is simply not found (404).
 */
#ifndef REG_QUERY_DEVICES_H
#define REG_QUERY_DEVICES_H

#include "http_server.h"
#include "projector/view.h"
#include "query/auth.h"

#include <jansson.h>

/* GET /devices/{id}: answers req (taken) and returns the status it answered with. */
int query_device(view *v, const auth_principal *who, const char *id, http_req *req);

/* GET /devices/{id}/metadata. */
int query_device_metadata(view *v, const auth_principal *who, const char *id, http_req *req);

/* GET /devices/{id}/shadow: {desired, reported, delta, version, metadata, last_updated_at}. */
int query_device_shadow(view *v, const auth_principal *who, const char *id, http_req *req);

/* The stored shadow record (projector/shadow_view.h) of a device that exists: REG_ENOTFOUND when
 * the device does not (in this tenant). On a secondary (`secondary` non-zero) a missing device
 * is looked for once more after catching up. The caller owns *out. 0, REG_ENOTFOUND or REG_E*. */
int query_shadow_record(view *v, int secondary, const reg_uuid *tenant, const reg_uuid *device,
                        json_t **out);

/* The same as GET /devices/{id}/shadow shows it. The caller owns *out. */
int query_shadow_document(view *v, int secondary, const reg_uuid *tenant, const reg_uuid *device,
                          json_t **out);

#endif
