/*
 * apply_util.h - helpers shared by the projector's apply files (apply.c: tenants, tokens,
 * devices, metadata; apply_pki.c: CAs, manifests, claims, certificates).
 */
#ifndef REG_APPLY_UTIL_H
#define REG_APPLY_UTIL_H

#include "ids.h"
#include "projector/event.h"
#include "projector/keys.h"
#include "projector/view.h"

#include <jansson.h>

/* Stores value (borrowed) as compact JSON under k. */
void apply_put_json(view_txn *t, view_cf cf, const reg_key *k, json_t *value);

/* Changes a loaded device record in place, as event ev says. */
typedef void (*apply_change_fn)(json_t *dev, const event *ev, view_txn *t);

/* Loads the device of a device event, applies change to it, and stores it back with the event's
 * version, keeping the attribute indexes in step. REG_EDECODE when the device does not exist. */
int apply_update_device(view_txn *t, const event *ev, apply_change_fn change);

/* The effects of the credentials events (apply_pki.c): returns 1 and applies when ev's kind is
 * one of them (*err gets 0 or REG_EDECODE), else 0. */
int apply_pki(view_txn *t, const event *ev, int *err);

#endif
