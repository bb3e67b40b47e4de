/*
 * records.h - the entities as stored in the view and as the API shows them.
 *
 * Stored device JSON: {device_id, tenant_id, serial_number, device_type, status, registered_at
 * (ms), last_seen_at (ms|null), firmware_version, hardware_revision, version, shadow_version,
 * metadata {key: value}}. Metadata lives inside the record (at most max_metadata_keys small
 * strings) so that a device is one point read; the metadata index serves queries by value. The
 * API's device record (API.md) adds certificates and writes times as RFC 3339.
 */
#ifndef REG_RECORDS_H
#define REG_RECORDS_H

#include "ids.h"
#include "projector/view.h"

#include <jansson.h>

/* The stored device JSON. The caller owns *out. 0, REG_ENOTFOUND or REG_E*. */
int record_device_load(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* A device's metadata as an object {key: value}. The caller owns *out. */
int record_metadata(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* The API's device record. The caller owns *out. 0, REG_ENOTFOUND or REG_E*. */
int record_device_render(view_src src, const reg_uuid *tenant, const reg_uuid *device,
                         json_t **out);

/* Converts a stored device JSON (borrowed) into the API's form (new value). */
json_t *record_device_public(const json_t *stored);

/* The stored tenant JSON. The caller owns *out. */
int record_tenant_load(view_src src, const reg_uuid *tenant, json_t **out);

#endif
