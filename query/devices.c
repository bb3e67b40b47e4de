/* devices.c - device reads from the view (devices.h). */
#include "query/devices.h"
#include "err.h"
#include "projector/keys.h"
#include "projector/records.h"
#include "projector/shadow_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void answer_json(http_req *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    http_respond(req, status, "application/json", text, strlen(text), NULL);
    free(text);
}

/* Parses the id or answers: 400 for a malformed id. Returns 0 when parsed. */
static int parse_id(const char *id, reg_uuid *out, http_req *req, int *status)
{
    if (reg_uuid_parse(id, out) == 0) return 0;
    char msg[96];
    snprintf(msg, sizeof msg, "'%.40s' is not a valid id (a UUID)", id);
    http_respond_problem(req, 400, msg);
    *status = 400;
    return -1;
}

static int answer_error(http_req *req, int err)
{
    if (err == REG_ENOTFOUND) {
        http_respond_problem(req, 404, "no such device");
        return 404;
    }
    http_respond_problem(req, 500, "the view could not be read");
    return 500;
}

int query_device(view *v, const auth_principal *who, const char *id, http_req *req)
{
    reg_uuid did;
    int status = 0;
    if (parse_id(id, &did, req, &status)) return status;
    /* The record is stored as the API shows it: answer with its bytes, no JSON work. */
    reg_key k;
    key_add(key_add(key_reset(&k), who->tenant.b, 16), did.b, 16);
    char *val = NULL;
    size_t len = 0;
    int err = view_get(v, VIEW_DEVICES, k.b, k.len, &val, &len);
    if (err) return answer_error(req, err);
    http_respond(req, 200, "application/json", val, len, NULL);
    free(val);
    return 200;
}

int query_device_metadata(view *v, const auth_principal *who, const char *id, http_req *req)
{
    reg_uuid did;
    int status = 0;
    if (parse_id(id, &did, req, &status)) return status;
    view_src src = {v, NULL};
    json_t *dev = NULL, *md = NULL;
    int err = record_device_load(src, &who->tenant, &did, &dev);
    if (!err) err = record_metadata(src, &who->tenant, &did, &md);
    json_decref(dev);
    if (err) return answer_error(req, err);
    answer_json(req, 200, md);
    json_decref(md);
    return 200;
}

static int shadow_record_once(view *v, const reg_uuid *tenant, const reg_uuid *device, json_t **out)
{
    reg_key k;
    key_add(key_add(key_reset(&k), tenant->b, 16), device->b, 16);
    char *val = NULL;
    int err = view_get(v, VIEW_DEVICES, k.b, k.len, &val, NULL);
    free(val);
    view_src src = {v, NULL};
    return err ? err : shadow_view_load(src, tenant, device, out);
}

int query_shadow_record(view *v, int secondary, const reg_uuid *tenant, const reg_uuid *device,
                        json_t **out)
{
    int err = shadow_record_once(v, tenant, device, out);
    if (err == REG_ENOTFOUND && secondary) {
        view_catch_up(v);
        err = shadow_record_once(v, tenant, device, out);
    }
    return err;
}

int query_shadow_document(view *v, int secondary, const reg_uuid *tenant, const reg_uuid *device,
                          json_t **out)
{
    json_t *rec = NULL;
    int err = query_shadow_record(v, secondary, tenant, device, &rec);
    if (err) return err;
    *out = shadow_view_http(rec);
    json_decref(rec);
    return *out ? 0 : REG_ENOMEM;
}

int query_device_shadow(view *v, const auth_principal *who, const char *id, http_req *req)
{
    reg_uuid did;
    int status = 0;
    if (parse_id(id, &did, req, &status)) return status;
    json_t *doc = NULL;
    int err = query_shadow_document(v, 0, &who->tenant, &did, &doc); /* api.c caught up */
    if (err) return answer_error(req, err);
    answer_json(req, 200, doc);
    json_decref(doc);
    return 200;
}
