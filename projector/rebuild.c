/* rebuild.c - views from the events log, and comparing views (rebuild.h). */
#include "projector/rebuild.h"
#include "err.h"
#include "projector/apply.h"
#include "schemas/codec.h"

#include <stdio.h>
#include <string.h>

int rebuild_view(elog *events, view *into, int64_t until_ms, int64_t until_offset,
                 uint64_t *applied)
{
    codec_registry *codec = NULL;
    int err = codec_registry_new(&codec);
    if (err) return err;
    elog_reader *rd = NULL;
    int64_t end = elog_end_offset(events), next = 0;
    *applied = 0;
    if (end < 0) err = REG_EUNAVAILABLE;
    if (end > until_offset) end = until_offset;
    if (!err) err = elog_reader_open(events, 0, &rd);
    elog_record recs[1000];
    int done = 0;
    while (!err && !done && next < end) {
        int n = elog_reader_next(rd, recs, 1000, 5000);
        if (n <= 0) {
            err = n < 0 ? n : REG_ETIMEOUT;
            break;
        }
        view_txn *t = view_txn_begin(into, NULL);
        for (int i = 0; i < n && !err; i++) {
            if (recs[i].offset >= end) {
                done = 1;
                break;
            }
            json_t *ev = NULL;
            err = codec_decode(codec, "registry.Event", recs[i].value, recs[i].value_len, &ev);
            if (err) {
                fprintf(stderr, "rebuild: event at offset %lld: %s\n", (long long)recs[i].offset,
                        reg_strerror(err));
                break;
            }
            event e;
            err = event_from_json(codec, ev, &e);
            if (!err && e.time_ms > until_ms) {
                done = 1;
                event_clear(&e);
                json_decref(ev);
                break;
            }
            if (!err) err = apply_event(t, &e, NULL);
            if (err)
                fprintf(stderr, "rebuild: event at offset %lld does not apply: %s\n",
                        (long long)recs[i].offset, reg_strerror(err));
            event_clear(&e);
            json_decref(ev);
            if (!err) (*applied)++;
            next = recs[i].offset + 1;
        }
        if (!err) {
            view_meta_value meta = {VIEW_META_EVENTS_NEXT, next};
            err = view_txn_write(t, &meta, 1);
        }
        view_txn_free(t);
    }
    elog_reader_close(rd);
    codec_registry_free(codec);
    return err;
}

static void describe(const char *what, view_cf cf, const char *key, size_t klen)
{
    fprintf(stderr, "verify: column family %d: %s at key ", (int)cf, what);
    for (size_t i = 0; i < klen && i < 64; i++)
        fprintf(stderr, "%02x", (unsigned char)key[i]);
    fprintf(stderr, "\n");
}

int rebuild_compare(view *a, view *b)
{
    for (int cf = 0; cf < VIEW_CF_COUNT; cf++) {
        if (cf == VIEW_META || cf == VIEW_COMMANDS) continue;
        view_iter *ia = view_iter_prefix(a, (view_cf)cf, "", 0, NULL, 0);
        view_iter *ib = view_iter_prefix(b, (view_cf)cf, "", 0, NULL, 0);
        int err = 0;
        for (;;) {
            const char *ka, *va, *kb, *vb;
            size_t kla, vla, klb, vlb;
            int ha = view_iter_next(ia, &ka, &kla, &va, &vla);
            int hb = view_iter_next(ib, &kb, &klb, &vb, &vlb);
            if (!ha && !hb) break;
            if (ha != hb) {
                describe(ha ? "extra entry in the first" : "extra entry in the second", (view_cf)cf,
                         ha ? ka : kb, ha ? kla : klb);
                err = REG_EINVAL;
                break;
            }
            if (kla != klb || memcmp(ka, kb, kla)) {
                describe("keys differ", (view_cf)cf, ka, kla);
                err = REG_EINVAL;
                break;
            }
            if (vla != vlb || memcmp(va, vb, vla)) {
                describe("values differ", (view_cf)cf, ka, kla);
                err = REG_EINVAL;
                break;
            }
        }
        view_iter_free(ia);
        view_iter_free(ib);
        if (err) return err;
    }
    return 0;
}
