/*
 * shadow_view.h - a device's shadow as the view stores it and as the API and MQTT show it.
 *
 * Stored under shadows T D (view.h) as {"desired": {...}, "reported": {...}, "metadata":
 * {"desired": {...}, "reported": {...}}, "version": n, "last_updated_ms": t}. A device that was
 * never written has the empty shadow at version 0. The rules (merge, delta, limits) are
 * common/shadow.h's; this file only loads, stores and renders.
 *
 * Renderings (API.md): the HTTP document {desired, reported, delta, version, metadata,
 * last_updated_at}; the MQTT messages on $registry/devices/{id}/shadow/...: get/accepted
 * {state: {desired, reported, delta?}, metadata, version, timestamp, clientToken?}, update/delta
 * {state: delta, metadata, version, timestamp, clientToken?}, update/accepted {state: the patches,
 * metadata of what they wrote, version, timestamp, clientToken?} and update/documents {previous,
 * current, timestamp, clientToken?}. Timestamps in messages are seconds since the epoch, as AWS.
 */
#ifndef REG_SHADOW_VIEW_H
#define REG_SHADOW_VIEW_H

#include "ids.h"
#include "projector/view.h"

#include <jansson.h>
#include <stdint.h>

/* The stored shadow of a device, or the empty one (version 0) when none was written. The
 * caller owns *out and may change it. Through a transaction, the record is parsed once per
 * transaction (view_txn_get_decoded) and *out is a copy. 0, REG_EDECODE or REG_E* (a storage
 * failure). */
int shadow_view_load(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);
/* The same, read-only: the caller owns a reference to *out but must not change it (through a
 * transaction it is the transaction's parsed record, kept alive by the reference). */
int shadow_view_hold(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* Stores rec as the device's shadow in t; rec must not be changed after (the transaction keeps
 * a reference and encodes it at the commit). */
void shadow_view_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, json_t *rec);

/* A patch as UpdateShadow and ShadowUpdated carry it, the JSON text under `field` of body: *out
 * NULL when absent, else the parsed object or JSON null (clear the section; the caller owns it).
 * 0, or REG_EDECODE when the text is not an object or null. */
int shadow_view_patch(const json_t *body, const char *field, json_t **out);

/* Applies an accepted update to rec (owned by the caller, changed in place): merges the patches
 * (NULL: that section unchanged) with their leaves stamped time_ms / 1000, and sets version and
 * last_updated_ms. What decide computes and what apply stores are this same function's result,
 * so a rebuilt view holds the same documents. 0 or REG_ENOMEM. */
int shadow_view_update(json_t *rec, const json_t *desired, const json_t *reported, int64_t time_ms,
                       int64_t version);

/* The stored shadow's version (0 when none). */
int64_t shadow_view_version(const json_t *rec);

/* GET /devices/{id}/shadow. New value. */
json_t *shadow_view_http(const json_t *rec);

/* The MQTT messages. client_token may be NULL; now_s is the message's timestamp. New values;
 * shadow_view_delta_message returns NULL when desired and reported agree. */
json_t *shadow_view_get_accepted(const json_t *rec, const char *client_token, int64_t now_s);
json_t *shadow_view_delta_message(const json_t *rec, const char *client_token, int64_t now_s);
json_t *shadow_view_accepted(const json_t *rec, const json_t *desired_patch,
                             const json_t *reported_patch, const char *client_token, int64_t now_s);
json_t *shadow_view_documents(const json_t *before, const json_t *after, const char *client_token,
                              int64_t now_s);

/* The topic of a device's shadow message: "$registry/devices/<device>/shadow/<suffix>". */
void shadow_view_topic(const char *device_s, const char *suffix, char *out, size_t cap);

#endif
