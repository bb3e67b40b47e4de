/*
 * rotation.c - the certificate rotation scheduler (rotation.h).
 *
 * The view keeps the certificates nobody has marked due yet in expiry order (cert_expiry). Every
 * interval the scheduler walks that order up to the longest rotation window any tenant may have,
 * and for each certificate inside its own tenant's window (rotate_before_days) sends a
 * RotateCertificate command. The projector decides it like one sent by hand: the certificate gets
 * its CertificateRotationDue event and leaves cert_expiry. A command sent again before the first
 * was decided changes nothing (the rule is idempotent); a short memory of what was sent keeps the
 * log from filling with such repeats.
 */
#include "projector/rotation.h"
#include "clock.h"
#include "err.h"
#include "ids.h"
#include "ingest/ingest.h"
#include "projector/keys.h"
#include "projector/records.h"
#include "schemas/codec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define DAY_MS 86400000LL
enum { MAX_WINDOW_DAYS = 3650, MAX_PER_SCAN = 10000 };

struct rotation {
    uv_timer_t timer;
    view *view;
    elog *commands;
    codec_registry *codec;
    codec_buf enc;
    json_t *sent; /* cert_id -> time sent (ms): not sent again within an interval's worth */
    unsigned interval_ms;
    uint64_t sent_total;
};

static void send_rotation(rotation *r, const char *tid_s, const char *device_id,
                          const char *cert_id)
{
    json_t *cmd = ingest_command("scheduler", tid_s, "RotateCertificate",
                                 json_pack("{s:s, s:s, s:s}", "device_id", device_id, "cert_id",
                                           cert_id, "reason", "expiring"));
    r->enc.len = 0;
    if (cmd && !codec_encode(r->codec, "registry.Command", cmd, &r->enc) &&
        !elog_append(r->commands, tid_s, strlen(tid_s), r->enc.data, r->enc.len,
                     json_integer_value(json_object_get(cmd, "time_ms")), NULL, NULL)) {
        json_object_set_new(r->sent, cert_id, json_integer(clock_now_ms()));
        r->sent_total++;
    }
    json_decref(cmd);
}

static void scan(rotation *r)
{
    int64_t now = clock_now_ms();
    /* Forget what was sent long enough ago to try again (a command lost with the log, say). */
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(r->sent, tmp, k,
                             v) if (now - json_integer_value(v) > 10 * (int64_t)r->interval_ms)
        json_object_del(r->sent, k);

    view_iter *it = view_iter_prefix(r->view, VIEW_CERT_EXPIRY, NULL, 0, NULL, 0);
    const char *key, *val;
    size_t klen, vlen;
    json_t *windows = json_object(); /* tenant id -> rotate_before_days */
    int budget = MAX_PER_SCAN;
    while (it && budget > 0 && view_iter_next(it, &key, &klen, &val, &vlen)) {
        if (klen != 40) continue;
        int64_t not_after = 0;
        for (int i = 0; i < 8; i++)
            not_after = (not_after << 8) | (unsigned char)key[i];
        if (not_after > now + MAX_WINDOW_DAYS * DAY_MS) break;
        reg_uuid tid, cid;
        memcpy(tid.b, key + 8, 16);
        memcpy(cid.b, key + 24, 16);
        char tid_s[37], cid_s[37];
        reg_uuid_format(&tid, tid_s);
        reg_uuid_format(&cid, cid_s);
        if (json_object_get(r->sent, cid_s)) continue;
        json_t *w = json_object_get(windows, tid_s);
        if (!w) {
            json_t *tenant = NULL;
            view_src src = {r->view, NULL};
            json_int_t days = 30;
            if (!record_tenant_load(src, &tid, &tenant))
                days = json_integer_value(json_object_get(tenant, "rotate_before_days"));
            json_decref(tenant);
            json_object_set_new(windows, tid_s, w = json_integer(days));
        }
        if (not_after - now > json_integer_value(w) * DAY_MS) continue;
        /* Due: find the certificate's device. */
        reg_key ck;
        key_tagged(&ck, 'c', tid.b, cid.b);
        char *fp = NULL, *rec = NULL;
        size_t fplen = 0, reclen = 0;
        if (!view_get(r->view, VIEW_CERTS, ck.b, ck.len, &fp, &fplen) && fplen == 32) {
            reg_key fk;
            key_hash(&fk, 'f', (uint8_t *)fp);
            if (!view_get(r->view, VIEW_CERTS, fk.b, fk.len, &rec, &reclen)) {
                json_t *j = json_loadb(rec, reclen, 0, NULL);
                const char *device = json_string_value(json_object_get(j, "device_id"));
                if (device) {
                    send_rotation(r, tid_s, device, cid_s);
                    budget--;
                }
                json_decref(j);
            }
        }
        free(fp);
        free(rec);
    }
    json_decref(windows);
    view_iter_free(it);
}

static void on_timer(uv_timer_t *t)
{
    scan(t->data);
}

int rotation_start(uv_loop_t *loop, view *v, elog *commands, unsigned interval_ms, rotation **out)
{
    rotation *r = calloc(1, sizeof *r);
    if (!r) return REG_ENOMEM;
    int err = codec_registry_new(&r->codec);
    if (err) {
        free(r);
        return err;
    }
    r->view = v;
    r->commands = commands;
    r->interval_ms = interval_ms ? interval_ms : 60000;
    r->sent = json_object();
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, r->interval_ms, r->interval_ms);
    *out = r;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    rotation *r = h->data;
    codec_registry_free(r->codec);
    free(r->enc.data);
    json_decref(r->sent);
    free(r);
}

void rotation_stop(rotation *r)
{
    if (r) uv_close((uv_handle_t *)&r->timer, on_closed);
}

uint64_t rotation_sent(const rotation *r)
{
    return r ? r->sent_total : 0;
}
