/*
 * devices.h - the read side of the operator API for devices: a device record, its metadata.
 * Answers from the view; another tenant's device is simply not found (404).
 */
#ifndef REG_QUERY_DEVICES_H
#define REG_QUERY_DEVICES_H

#include "http_server.h"
#include "projector/view.h"
#include "query/auth.h"

/* GET /devices/{id}: answers req (taken) and returns the status it answered with. */
int query_device(view *v, const auth_principal *who, const char *id, http_req *req);

/* GET /devices/{id}/metadata. */
int query_device_metadata(view *v, const auth_principal *who, const char *id, http_req *req);

#endif
