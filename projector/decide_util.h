/*
 * decide_util.h - helpers shared by the projector's rule files (decide.c: tenants, tokens,
 * devices, metadata; decide_pki.c: CAs, manifests, claims, certificates).
 */
#ifndef REG_DECIDE_UTIL_H
#define REG_DECIDE_UTIL_H

#include "projector/decide.h"

#include <jansson.h>

/* The string member `field` of obj, or "" (never NULL). */
const char *decide_str(const json_t *obj, const char *field);

/* Rejects the command: d gets the status and a problem document with that title and detail. */
void decide_reject(decision *d, int status, const char *title, const char *detail);

/* Appends an event of this command to d (its id derived from the command id and its index, so a
 * re-decided command produces identical events). Takes body. */
void decide_emit(decision *d, const command *cmd, const decide_config *cfg, const char *entity_id,
                 json_int_t version, const char *kind, json_t *body);

/* decide_emit for a body held as fields (n of them: DeviceRegistered, MetadataChanged), their
 * strings borrowed from the command or from held (taken: the event keeps it, or NULL), their
 * maps' pairs taken. */
void decide_emit_fields(decision *d, const command *cmd, const decide_config *cfg,
                        const char *entity_id, size_t entity_len, json_int_t version,
                        const char *kind, codec_field *fields, size_t n, json_t *held);

/* A string field of the JSON value v (borrowed): a string, or a null (also for a non-string). */
codec_field decide_string_field(const json_t *v);

/* The device named by the command body's "device_id" within its tenant, or NULL after rejecting
 * with 404 (or setting *err on a storage failure). The result is a reference to the batch's
 * parsed record (record_device_hold): the caller releases it and does not change it. */
json_t *decide_load_device(view_txn *t, const command *cmd, decision *d, int *err);

/* The rules for credentials (decide_pki.c): returns 1 and decides when kind is one of its
 * commands (*err gets 0 or a storage failure), else 0. */
int decide_pki(view_txn *t, const command *cmd, const char *kind, const json_t *b,
               const decide_config *cfg, decision *d, int *err);

/* For an accepted credentials command: renders its answer into d->reply (decide_reply calls it
 * when d->reply_kind is at least DECIDE_REPLY_PKI). */
int decide_pki_reply(view_txn *t, const command *cmd, const json_t *b, decision *d);

#define DECIDE_REPLY_PKI 100

/* The shadow rules (decide_shadow.c): UpdateShadow. Renders its answer while deciding. */
int decide_shadow_update(view_txn *t, const command *cmd, const json_t *b, const decide_config *cfg,
                         decision *d);

#endif
