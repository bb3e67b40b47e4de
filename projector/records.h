/*
 * records.h - the entities as stored in the view and as the API shows them.
 *
 * A device is stored exactly as the API shows it (API.md's device record: device_id, tenant_id,
 * serial_number, device_type, status, registered_at and last_seen_at as RFC 3339, firmware_version,
 * hardware_revision, version, shadow_version, metadata, certificates), so that GET /devices/{id}
 * is one point read answered with the stored bytes. Metadata lives inside the record (at most
 * max_metadata_keys small strings); the metadata index serves queries by value.
 */
#ifndef REG_RECORDS_H
#define REG_RECORDS_H

#include "ids.h"
#include "projector/device_text.h"
#include "projector/view.h"

#include <jansson.h>
#include <stdbool.h>

/* The parts every JSON record's view_codec shares: compact text (jsonfast), and jansson's
 * reference counting. */
char *record_codec_encode(const void *obj, size_t *len);
void record_codec_release(void *obj);
void *record_codec_retain(void *obj);

/* Any JSON value of the view under k (committed, or through a transaction). The caller owns
 * *out. 0, REG_ENOTFOUND, REG_EDECODE (not JSON) or REG_E*. */
struct reg_key;
int record_json(view_src src, view_cf cf, const struct reg_key *k, json_t **out);

/* The device record (stored as the API shows it). The caller owns *out. 0, REG_ENOTFOUND or
 * REG_E*. */
int record_device_load(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* The device record as t has it, for the caller to change and store back (record_device_store)
 * before t is read again: t's decoded record itself when nothing else refers to it or to a part
 * of it, else a copy. The caller owns *out. 0, REG_ENOTFOUND or REG_E*. */
int record_device_take(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* The same record for reading only: through a transaction it is parsed at most once per
 * transaction and *out is a reference to that parsed record, which the caller releases
 * (json_decref) and must not change. */
int record_device_hold(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* Writes the device record (taken; not to be changed after), rendered at the commit. */
void record_device_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, json_t *dev);

/* The device record's stored text through a transaction (malloc'd, NUL-terminated, *len its
 * length; the caller frees it), without decoding it. 0, REG_ENOTFOUND or REG_E*. */
int record_device_text(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, char **val,
                       size_t *len);

/* Writes the device record as its text (len bytes, copied), as rendered records are: compact,
 * members in the order record_device_store's records have. */
void record_device_store_text(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                              const char *text, size_t len);

/* A device's metadata as an object {key: value}. The caller owns *out. */
int record_metadata(view_src src, const reg_uuid *tenant, const reg_uuid *device, json_t **out);

/* Moves a device record's shadow_version to `version` in its stored text (the digits are
 * replaced; the record is not decoded, since every shadow update moves it). 0, REG_ENOTFOUND or
 * REG_E*. */
int record_device_set_shadow_version(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                                     int64_t version);

/* What a metadata change reads of a device record and writes back, from its stored text without
 * decoding the rest (a patch decoded and rendered the whole record, and freed it, a third of its
 * cost): the text, where its version and metadata are in it, the version, the metadata decoded
 * alone, and whether the device is decommissioned. A record not in the compact form this file
 * stores is rendered in it first. */
typedef struct record_device_meta {
    char *text; /* the record's text, malloc'd */
    size_t len;
    device_text parts; /* where its version and metadata are; the version; the status */
    json_t *metadata;  /* an object; the caller may change it before record_device_meta_store */
} record_device_meta;
/* The device record's text (*text, malloc'd, *len bytes) in the compact form this file stores,
 * and where its version and metadata are in it, nothing decoded. 0, REG_ENOTFOUND, REG_EDECODE
 * (no version or metadata) or REG_E*; on failure *text is not set to anything to free. */
int record_device_parts(view_txn *t, const reg_uuid *tenant, const reg_uuid *device, char **text,
                        size_t *len, device_text *parts);
/* Reads m (release it with record_device_meta_release). 0, REG_ENOTFOUND, REG_EDECODE (no
 * version or metadata object) or REG_E*. */
int record_device_meta_read(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                            record_device_meta *m);
/* Writes the record back with m->metadata and `version` in place of what it had; its text goes
 * to *stored (malloc'd, *stored_len bytes), and where its parts are to *stored_parts, when stored
 * is not NULL. */
int record_device_meta_store(view_txn *t, const reg_uuid *tenant, const reg_uuid *device,
                             const record_device_meta *m, int64_t version, char **stored,
                             size_t *stored_len, device_text *stored_parts);
void record_device_meta_release(record_device_meta *m);

/* Whether the device record's stored text (as the view keeps it) has this status, read from the
 * text without decoding it. */
int record_device_status_is(const char *json, size_t len, const char *status);

/* The stored tenant JSON. The caller owns *out. */
int record_tenant_load(view_src src, const reg_uuid *tenant, json_t **out);

/* A certificate's status record (certs 'f') by the tenant's cert_id (a UUID string); fp_key, when
 * not NULL, gets the record's key. The caller owns *out. 0, REG_ENOTFOUND or REG_E*. */
int record_cert_by_id(view_src src, const reg_uuid *tenant, const char *cert_id, json_t **out,
                      struct reg_key *fp_key);

#endif
