/*
 * projector.c - the projector's thread (projector.h).
 *
 * One batch: read up to batch_max commands; for each, skip it if its id is already in the view
 * (re-publishing its outcome from what the view kept), else decide it, apply its events to the
 * transaction and queue the events for appending (unless recovery found them in the events log
 * already); then, on the committer thread while the next batch is decided (projector_main), flush
 * the events log; write the transaction with the outcomes and offsets; publish outcomes. Any
 * failure before the commit (Kafka down, say) abandons the transaction, waits, rescans the events
 * log tail and redoes the batch: nothing is lost, nothing is applied twice.
 */
#define _GNU_SOURCE
#include "projector/projector.h"
#include "clock.h"
#include "err.h"
#include "jsonfast.h"
#include "ids.h"
#include "projector/apply.h"
#include "projector/keys.h"
#include "projector/notify.h"
#include "schemas/codec.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct projector {
    view *view;
    elog *commands, *events;
    bus *bus;
    projector_config cfg;
    pthread_t thread;
    atomic_int stopping;

    pthread_mutex_t stats_mu;
    projector_stats stats;

    codec_registry *codec; /* the thread's own */
    /* No command id above this one has an outcome in the view (or in the batches decided since
     * it was read): a command whose id is greater is new without a lookup, which is nearly
     * every command, since the ingest's UUIDv7s increase. valid: read from the view yet. */
    reg_uuid max_cid;
    bool max_cid_valid;
    json_t *in_events_log; /* set of command ids whose events are in the log beyond the view */
    atomic_int_fast64_t events_end; /* highest appended event offset + 1, from delivery reports */
    atomic_int append_error;

    /* The committer thread: one batch at a time (commit_batch), handed over by the projector's
     * thread, which waits for it before handing the next. */
    pthread_t committer;
    pthread_mutex_t commit_mu;
    pthread_cond_t commit_cv;
    struct batch *commit_todo; /* handed over, not committed yet */
    struct batch *free_todo;   /* committed and no longer read: the committer frees it */
    int commit_err;            /* the last commit's result */
    bool commit_stop;
};

static void on_event_appended(void *arg, int err, int64_t offset)
{
    projector *p = arg;
    if (err) {
        atomic_store(&p->append_error, err);
        return;
    }
    int_fast64_t cur = atomic_load(&p->events_end);
    while (offset + 1 > cur && !atomic_compare_exchange_weak(&p->events_end, &cur, offset + 1)) {
    }
}

/* Reads the events log from the offset the view last committed to its end and remembers the
 * command ids found there: their events must not be appended again. */
static int scan_events_tail(projector *p)
{
    json_decref(p->in_events_log);
    p->in_events_log = json_object();
    int64_t from = view_meta_get(p->view, VIEW_META_EVENTS_NEXT, 0);
    atomic_store(&p->events_end, from);
    int64_t end = elog_end_offset(p->events);
    if (end < 0) return REG_EUNAVAILABLE;
    if (from >= end) return 0;
    elog_reader *rd = NULL;
    int err = elog_reader_open(p->events, from, &rd);
    if (err) return err;
    elog_record recs[256];
    int64_t next = from;
    while (next < end) {
        int n = elog_reader_next(rd, recs, 256, 1000);
        if (n < 0) {
            err = n;
            break;
        }
        if (n == 0) {
            err = REG_ETIMEOUT;
            break;
        }
        for (int i = 0; i < n; i++) {
            json_t *ev = NULL;
            if (codec_decode(p->codec, "registry.Event", recs[i].value, recs[i].value_len, &ev))
                continue;
            const char *cid = json_string_value(json_object_get(ev, "command_id"));
            if (cid) json_object_set_new(p->in_events_log, cid, json_true());
            json_decref(ev);
        }
        next = recs[n - 1].offset + 1;
    }
    elog_reader_close(rd);
    if (!err) atomic_store(&p->events_end, end);
    if (!err && json_object_size(p->in_events_log))
        fprintf(stderr, "projector: %zu commands already have their events in the log\n",
                json_object_size(p->in_events_log));
    return err;
}

/* The greatest command id with an outcome in the view (all zeros when there is none). */
static int read_max_cid(projector *p)
{
    size_t len = 0;
    int err = view_last_key(p->view, VIEW_COMMANDS, p->max_cid.b, 16, &len);
    if (err == REG_ENOTFOUND) {
        memset(&p->max_cid, 0, sizeof p->max_cid);
        err = 0;
    } else if (!err && len != 16) {
        memset(p->max_cid.b, 0xff, 16); /* not an id: look every one up */
    }
    if (!err) p->max_cid_valid = true;
    return err;
}

/* An event encoded during a batch, appended after the batch's last decision: appending them in
 * one burst lets the log's writer take them as one group instead of waking per event. */
struct encoded_event {
    size_t at, len; /* in the batch's buffer */
    int64_t time_ms;
    char tenant[40];
};

/* An outcome message (JSON text, malloc'd) to publish after the commit. */
struct outcome {
    char *text;
    size_t len;
};

struct batch {
    view_txn *txn;
    struct outcome *outcomes; /* owned, with their texts */
    size_t noutcomes, outcomes_cap;
    json_t *auth; /* what the front ends' authentication caches must forget (see note_auth) */
    delivery_batch deliver; /* messages for devices (notify.h), published after the commit */
    codec_buf *enc;         /* the encoded events, back to back */
    struct encoded_event *events_out;
    size_t nevents, events_cap;
    uint64_t accepted, rejected, duplicates, malformed, events;
    int64_t next_offset; /* the commands log offset after the batch's last record */
    int ncommands;
    uint64_t decide_cpu_ns;   /* the projector thread's CPU time when the batch was handed over */
    bool serial_filter_ready; /* view_key_filter_ready then (asked on the projector's thread) */
};

/* Notes what an event changes for device authentication, for the "auth" notice published after
 * the commit: {"certs": [fingerprints whose status changed], "revoked": [fingerprints revoked:
 * close their connections], "devices": ["tenant/device" whose status changed], "trust": true
 * when a tenant's CAs changed (the TLS trust stores are rebuilt)}. */
static void note_auth(struct batch *bt, const event *ev)
{
    const char *kind = ev->kind;
    const json_t *b = ev->body;
    static const char *const relevant[] = {
        "CertificateRevoked", "CertificateIssued", "CertificateRotationDue", "DeviceStatusChanged",
        "FactoryCaAdded",     "FactoryCaRemoved",  "TenantCreated"};
    size_t i = 0;
    while (i < sizeof relevant / sizeof relevant[0] && strcmp(kind, relevant[i]))
        i++;
    if (i == sizeof relevant / sizeof relevant[0]) return;
    if (!bt->auth)
        bt->auth =
            jsonfast_pack("{s:[], s:[], s:[], s:b}", "certs", "revoked", "devices", "trust", 0);
    json_t *fp = json_object_get(b, "fingerprint");
    if (!strcmp(kind, "CertificateRevoked")) {
        json_array_append(json_object_get(bt->auth, "certs"), fp);
        json_array_append(json_object_get(bt->auth, "revoked"), fp);
    } else if (!strcmp(kind, "CertificateIssued")) {
        json_t *old = json_object_get(b, "supersedes_fingerprint");
        if (json_is_string(old)) json_array_append(json_object_get(bt->auth, "certs"), old);
    } else if (!strcmp(kind, "CertificateRotationDue")) {
        json_array_append(json_object_get(bt->auth, "certs"), fp);
    } else if (!strcmp(kind, "DeviceStatusChanged")) {
        char td[80];
        snprintf(td, sizeof td, "%s/%s", ev->tenant_id, ev->entity_id);
        json_array_append_new(json_object_get(bt->auth, "devices"), json_string(td));
    } else if (!strcmp(kind, "FactoryCaAdded") || !strcmp(kind, "FactoryCaRemoved") ||
               !strcmp(kind, "TenantCreated")) {
        json_object_set_new(bt->auth, "trust", json_true());
    }
}

/* Adds an outcome to publish; takes text, also on failure. */
static int add_outcome(struct batch *bt, char *text, size_t len)
{
    if (bt->noutcomes == bt->outcomes_cap) {
        size_t cap = bt->outcomes_cap ? bt->outcomes_cap * 2 : 1024;
        struct outcome *grown = realloc(bt->outcomes, cap * sizeof *grown);
        if (!grown) {
            free(text);
            return REG_ENOMEM;
        }
        bt->outcomes = grown;
        bt->outcomes_cap = cap;
    }
    bt->outcomes[bt->noutcomes++] = (struct outcome){text, len};
    return 0;
}

/* The record's command, decoded into *cmd (borrowing the record's bytes); false (counted, said
 * on stderr) when it is not one, or its id is not an id. */
static bool decode_command(projector *p, struct batch *bt, const elog_record *rec, command *cmd)
{
    int err = command_decode(p->codec, rec->value, rec->value_len, cmd);
    if (!err && cmd->id_valid) return true;
    if (err)
        fprintf(stderr, "projector: command at offset %lld skipped: %s\n", (long long)rec->offset,
                reg_strerror(err));
    command_clear(cmd);
    bt->malformed++;
    return false;
}

/* Decides one command (taken: cleared). */
static int decide_one(projector *p, struct batch *bt, command *cmd)
{
    int err = 0;
    const char *cid_s = cmd->command_id;
    reg_uuid cid = cmd->id;
    char *stored = NULL;
    size_t stored_len = 0;
    bool above = p->max_cid_valid && memcmp(cid.b, p->max_cid.b, 16) > 0;
    err = above ? REG_ENOTFOUND
                : view_txn_get(bt->txn, VIEW_COMMANDS, cid.b, 16, &stored, &stored_len);
    if (err == 0) {
        size_t text_len = 0;
        char *text = decision_replayed_outcome(bt->txn, cmd, stored, stored_len, &text_len);
        free(stored);
        command_clear(cmd);
        if (!text) return REG_ENOMEM;
        bt->duplicates++;
        return add_outcome(bt, text, text_len);
    }
    if (err != REG_ENOTFOUND) goto out;

    decision d;
    err = decide_command(bt->txn, cmd, &p->cfg.decide, &d);
    if (err) goto out_decision;
    int already_logged = json_object_get(p->in_events_log, cid_s) != NULL;
    for (size_t i = 0; i < d.nevents; i++) {
        const event *ev = &d.events[i];
        json_t *before = notify_before(bt->txn, ev);
        err = apply_event(bt->txn, ev, &d.decided);
        if (err) {
            fprintf(stderr, "projector: an event of command %s does not apply: %s\n", cid_s,
                    reg_strerror(err));
            json_decref(before);
            goto out_decision;
        }
        note_auth(bt, ev);
        notify_event(bt->txn, ev, before, &bt->deliver);
        json_decref(before);
        if (already_logged) continue;
        if (bt->nevents == bt->events_cap) {
            size_t cap = bt->events_cap ? bt->events_cap * 2 : 1024;
            struct encoded_event *grown = realloc(bt->events_out, cap * sizeof *grown);
            if (!grown) {
                err = REG_ENOMEM;
                goto out_decision;
            }
            bt->events_out = grown;
            bt->events_cap = cap;
        }
        struct encoded_event *out = &bt->events_out[bt->nevents];
        out->at = bt->enc->len;
        err = event_encode(p->codec, ev, bt->enc);
        if (err) goto out_decision;
        out->len = bt->enc->len - out->at;
        out->time_ms = ev->time_ms;
        size_t tlen = strnlen(ev->tenant_id, sizeof out->tenant - 1);
        memcpy(out->tenant, ev->tenant_id, tlen); /* an id: 36 characters */
        out->tenant[tlen] = 0;
        bt->nevents++;
    }
    err = decide_reply(bt->txn, cmd, &d);
    if (err) goto out_decision;
    if (d.nevents)
        bt->accepted++;
    else if (d.status >= 400)
        bt->rejected++;
    else
        bt->accepted++;
    size_t text_len = 0;
    char *text = decision_outcome(bt->txn, cmd, &d, &text_len);
    if (!text) {
        err = REG_ENOMEM;
        goto out_decision;
    }
    char kept[DECISION_KEPT_MAX];
    size_t kept_len = decision_kept_outcome(&d, kept);
    if (kept_len)
        view_txn_put(bt->txn, VIEW_COMMANDS, cid.b, 16, kept, kept_len);
    else
        view_txn_put(bt->txn, VIEW_COMMANDS, cid.b, 16, text, text_len);
    if (above) p->max_cid = cid;
    err = add_outcome(bt, text, text_len);
out_decision:
    decision_clear(&d);
out:
    command_clear(cmd);
    return err;
}

/* The commit notice goes first so that readers on secondaries start catching up before the
 * writers' callers get their answers and come to read. */
static void publish_outcomes(projector *p, const struct batch *bt)
{
    const json_t *auth = bt->auth;
    if (bt->noutcomes) bus_publish(p->bus, "commit", "1", 1);
    if (auth && (json_array_size(json_object_get(auth, "certs")) ||
                 json_array_size(json_object_get(auth, "devices")) ||
                 json_is_true(json_object_get(auth, "trust")))) {
        char *text = json_dumps(auth, JSON_COMPACT);
        bus_publish(p->bus, "auth", text, strlen(text));
        free(text);
    }
    if (bt->deliver.count) bus_publish(p->bus, "deliver", bt->deliver.data, bt->deliver.len);
    for (size_t i = 0; i < bt->noutcomes; i++)
        bus_publish(p->bus, "outcome", bt->outcomes[i].text, bt->outcomes[i].len);
}

/* Appends the batch's encoded events to the events log. */
static int append_events(projector *p, struct batch *bt)
{
    for (size_t i = 0; i < bt->nevents; i++) {
        struct encoded_event *e = &bt->events_out[i];
        int err;
        while ((err = elog_append(p->events, e->tenant, strlen(e->tenant), bt->enc->data + e->at,
                                  e->len, e->time_ms, on_event_appended, p)) == REG_EAGAIN)
            usleep(1000); /* the log's queue is full: let it drain */
        if (err) return err;
        bt->events++;
    }
    return 0;
}

static void batch_free(struct batch *bt)
{
    if (!bt) return;
    view_txn_free(bt->txn);
    for (size_t i = 0; i < bt->noutcomes; i++)
        free(bt->outcomes[i].text);
    free(bt->outcomes);
    json_decref(bt->auth);
    delivery_batch_clear(&bt->deliver);
    free(bt->events_out);
    free(bt);
}

/* A new batch whose transaction reads through base (the batch being committed, or NULL). *out
 * is the batch, also on failure (the caller frees it). */
static int batch_new(projector *p, view_txn *base, codec_buf *enc, struct batch **out)
{
    struct batch *bt = calloc(1, sizeof *bt);
    *out = bt;
    if (!bt) return REG_ENOMEM;
    enc->len = 0;
    bt->enc = enc;
    bt->txn = view_txn_begin(p->view, base);
    return bt->txn ? 0 : REG_ENOMEM;
}

enum { DECIDE_WINDOW = 64 }; /* decide_records */

/* Reads the records of the devices that the n commands change (every command that names a
 * device_id but a registration, whose device is new) in one batched lookup (view_txn_prefetch):
 * one lookup each, as deciding them one by one made, was a fifth of the deciding thread in a
 * stream of metadata patches. */
static int prefetch_devices(view_txn *t, const command *cmds, const bool *decoded, int n)
{
    unsigned char keys[DECIDE_WINDOW][32];
    const void *kp[DECIDE_WINDOW];
    size_t klens[DECIDE_WINDOW], m = 0;
    for (int i = 0; i < n && i < DECIDE_WINDOW; i++) {
        reg_uuid did;
        if (!decoded[i] || !strcmp(cmds[i].kind, "RegisterDevice") || !cmds[i].tenant_valid ||
            command_device(&cmds[i], &did))
            continue;
        memcpy(keys[m], cmds[i].tenant.b, 16);
        memcpy(keys[m] + 16, did.b, 16);
        kp[m] = keys[m];
        klens[m++] = 32;
    }
    return m ? view_txn_prefetch(t, VIEW_DEVICES, kp, klens, m) : 0;
}

/* The view keys a command will likely touch, hinted to the transaction (view_txn_expect) this
 * many commands before it is decided: its outcome, its device's record, a registration's serial. */
enum { EXPECT_AHEAD = 2 };
static void expect_keys(view_txn *t, const command *cmd)
{
    view_txn_expect(t, VIEW_COMMANDS, cmd->id.b, 16);
    if (!cmd->tenant_valid) return;
    reg_uuid did;
    if (!command_device(cmd, &did)) {
        unsigned char key[32];
        memcpy(key, cmd->tenant.b, 16);
        memcpy(key + 16, did.b, 16);
        view_txn_expect(t, VIEW_DEVICES, key, sizeof key);
    }
    if (cmd->nfields > REGISTER_SERIAL && !strcmp(cmd->kind, "RegisterDevice")) {
        reg_key k;
        key_tenant_str(&k, cmd->tenant.b, cmd->fields[REGISTER_SERIAL].str,
                       cmd->fields[REGISTER_SERIAL].len);
        view_txn_expect(t, VIEW_SERIALS, k.b, k.len);
    }
}

/* Decides n records into the batch, a window at a time: its commands decoded, the devices they
 * change read in one lookup, then decided. A window, not the whole batch: thousands of decoded
 * commands held at once pushed each other out of the caches (the deciding thread +15%). */
static int decide_records(projector *p, struct batch *bt, const elog_record *recs, int n)
{
    command cmds[DECIDE_WINDOW];
    bool decoded[DECIDE_WINDOW];
    int err = 0;
    for (int at = 0; at < n && !err; at += DECIDE_WINDOW) {
        int w = n - at < DECIDE_WINDOW ? n - at : DECIDE_WINDOW;
        for (int i = 0; i < w; i++)
            decoded[i] = decode_command(p, bt, &recs[at + i], &cmds[i]);
        err = prefetch_devices(bt->txn, cmds, decoded, w);
        for (int i = 0; i < w; i++) {
            if (i + EXPECT_AHEAD < w && decoded[i + EXPECT_AHEAD])
                expect_keys(bt->txn, &cmds[i + EXPECT_AHEAD]);
            if (!decoded[i]) continue;
            if (!err)
                err = decide_one(p, bt, &cmds[i]);
            else
                command_clear(&cmds[i]); /* what an error left */
        }
    }
    bt->next_offset = recs[n - 1].offset + 1;
    bt->ncommands += n;
    return err;
}

/* The committer's part of a batch: waits until its events are in the log, then writes the
 * view's changes with the consumed offsets, and publishes what the batch tells the rest. */
static int commit_batch(projector *p, struct batch *bt)
{
    int err = bt->nevents ? elog_flush(p->events, 60000) : 0;
    if (!err) err = atomic_load(&p->append_error);
    if (err) return err;
    view_meta_value meta[2] = {{VIEW_META_COMMANDS_NEXT, bt->next_offset},
                               {VIEW_META_EVENTS_NEXT, atomic_load(&p->events_end)}};
    if ((err = view_txn_write(bt->txn, meta, 2))) return err;
    publish_outcomes(p, bt);
    pthread_mutex_lock(&p->stats_mu);
    p->stats.accepted += bt->accepted;
    p->stats.rejected += bt->rejected;
    p->stats.commands += bt->accepted + bt->rejected;
    p->stats.duplicates += bt->duplicates;
    p->stats.malformed += bt->malformed;
    p->stats.events += bt->events;
    p->stats.batches++;
    p->stats.next_offset = bt->next_offset;
    p->stats.commit_cpu_ns = clock_thread_cpu_ns();
    p->stats.decide_cpu_ns = bt->decide_cpu_ns;
    p->stats.serial_filter_ready = bt->serial_filter_ready;
    pthread_mutex_unlock(&p->stats_mu);
    return 0;
}

static void *committer_main(void *arg)
{
    projector *p = arg;
    view_thread_init();
    pthread_mutex_lock(&p->commit_mu);
    for (;;) {
        while (!p->commit_todo && !p->commit_stop)
            pthread_cond_wait(&p->commit_cv, &p->commit_mu);
        if (!p->commit_todo) break;
        struct batch *bt = p->commit_todo, *done = p->free_todo;
        p->free_todo = NULL;
        pthread_mutex_unlock(&p->commit_mu);
        int err = commit_batch(p, bt);
        pthread_mutex_lock(&p->commit_mu);
        p->commit_todo = NULL;
        p->commit_err = err;
        pthread_cond_broadcast(&p->commit_cv);
        if (done) { /* once the projector's thread, which waits for the commit, has gone on */
            pthread_mutex_unlock(&p->commit_mu);
            batch_free(done);
            pthread_mutex_lock(&p->commit_mu);
        }
    }
    pthread_mutex_unlock(&p->commit_mu);
    return NULL;
}

/* Ends the committer thread (after the projector's thread, which waits for its last batch). */
static void committer_stop(projector *p)
{
    pthread_mutex_lock(&p->commit_mu);
    p->commit_stop = true;
    pthread_cond_broadcast(&p->commit_cv);
    pthread_mutex_unlock(&p->commit_mu);
    pthread_join(p->committer, NULL);
    pthread_mutex_destroy(&p->commit_mu);
    pthread_cond_destroy(&p->commit_cv);
}

/* Hands bt to the committer, with the batch committed before it (done, or NULL), which nothing
 * reads any more: freeing a batch (its records' parsed JSON) took ~12% of this thread. */
static void commit_start(projector *p, struct batch *bt, struct batch *done)
{
    pthread_mutex_lock(&p->commit_mu);
    p->commit_todo = bt;
    p->free_todo = done;
    pthread_cond_broadcast(&p->commit_cv);
    pthread_mutex_unlock(&p->commit_mu);
}

/* Waits for the batch handed to the committer: its commit's result. The batch moves to *done,
 * for the caller to free, or hand to the committer to free, once nothing reads through it. */
static int commit_finish(projector *p, struct batch **inflight, struct batch **done)
{
    *done = NULL;
    if (!*inflight) return 0;
    pthread_mutex_lock(&p->commit_mu);
    while (p->commit_todo)
        pthread_cond_wait(&p->commit_cv, &p->commit_mu);
    int err = p->commit_err;
    pthread_mutex_unlock(&p->commit_mu);
    *done = *inflight;
    *inflight = NULL;
    return err;
}

/* The projector's thread. Batch N+1 is decided while the committer thread waits for batch N's
 * events to be durable and writes N to the view (the log fsync and the view write took about a
 * fifth of this thread); N+1 reads N's writes through N's sealed transaction. N+1's events are
 * appended only once N is committed, so that the events log keeps the commands' order and N's
 * recorded events offset covers exactly its own. A failed commit of N discards N+1 too (it
 * was decided on N's writes): both are redone from the view's committed offset. */
static void *projector_main(void *arg)
{
    projector *p = arg;
    view_thread_init();
    elog_record *recs = calloc((size_t)p->cfg.batch_max, sizeof *recs);
    codec_buf enc = {0};
    elog_reader *rd = NULL;
    struct batch *inflight = NULL;
    int backoff_ms = 100;
    uint64_t next_end_check = 0;
    while (!atomic_load(&p->stopping)) {
        if (!rd) {
            int err = scan_events_tail(p);
            int64_t next = view_meta_get(p->view, VIEW_META_COMMANDS_NEXT, 0);
            if (!err && !p->max_cid_valid) err = read_max_cid(p);
            if (!err) err = elog_reader_open(p->commands, next, &rd);
            if (err) {
                fprintf(stderr, "projector: cannot start reading (%s); retrying\n",
                        reg_strerror(err));
                usleep((useconds_t)backoff_ms * 1000);
                continue;
            }
            pthread_mutex_lock(&p->stats_mu);
            p->stats.next_offset = next;
            pthread_mutex_unlock(&p->stats_mu);
        }
        int n = elog_reader_next(rd, recs, p->cfg.batch_max, inflight ? 0 : 200);
        /* The end of the log, for lag and readiness; a broker round trip with Kafka, so it is
         * asked here on the projector's thread, never on a loop, and at most twice a second. */
        if (clock_mono_ns() >= next_end_check) {
            int64_t end = elog_end_offset(p->commands);
            pthread_mutex_lock(&p->stats_mu);
            if (end >= 0) p->stats.log_end = end;
            pthread_mutex_unlock(&p->stats_mu);
            next_end_check = clock_mono_ns() + 500000000ull;
        }
        struct batch *bt = NULL;
        int err = n < 0 ? n : 0;
        if (n > 0) err = batch_new(p, inflight ? inflight->txn : NULL, &enc, &bt);
        if (n > 0 && !err) err = decide_records(p, bt, recs, n);
        struct batch *done = NULL;
        int committed = commit_finish(p, &inflight, &done);
        if (bt) view_txn_drop_base(bt->txn);
        if (!err) err = committed;
        /* What arrived while the last batch committed joins this one, which is written next,
         * rather than waiting a commit longer in the batch after it. */
        while (!err && bt && bt->ncommands < p->cfg.batch_max) {
            int more = elog_reader_next(rd, recs, p->cfg.batch_max - bt->ncommands, 0);
            if (more <= 0) {
                err = more;
                break;
            }
            err = decide_records(p, bt, recs, more);
        }
        if (!err && bt) {
            atomic_store(&p->append_error, 0);
            err = append_events(p, bt);
            if (!err) err = view_txn_seal(bt->txn);
            if (!err) {
                bt->decide_cpu_ns = clock_thread_cpu_ns();
                bt->serial_filter_ready = view_key_filter_ready(p->view);
                commit_start(p, bt, done);
                inflight = bt;
                bt = done = NULL;
            }
        }
        batch_free(done);
        batch_free(bt);
        if (err) {
            fprintf(stderr, "projector: batch failed (%s); redoing it\n", reg_strerror(err));
            elog_reader_close(rd);
            rd = NULL;
            usleep((useconds_t)backoff_ms * 1000);
            if (backoff_ms < 2000) backoff_ms *= 2;
            continue;
        }
        if (n > 0) backoff_ms = 100;
    }
    struct batch *done = NULL;
    commit_finish(p, &inflight, &done);
    batch_free(done);
    elog_reader_close(rd);
    free(enc.data);
    free(recs);
    return NULL;
}

int projector_start(view *v, elog *commands, elog *events, bus *b, const projector_config *cfg,
                    projector **out)
{
    projector *p = calloc(1, sizeof *p);
    if (!p) return REG_ENOMEM;
    p->view = v;
    p->commands = commands;
    p->events = events;
    p->bus = b;
    p->cfg = *cfg;
    if (p->cfg.batch_max <= 0) p->cfg.batch_max = 4000;
    if (!p->cfg.decide.max_metadata_keys) p->cfg.decide.max_metadata_keys = 100;
    if (!p->cfg.decide.shadow_max_bytes) p->cfg.decide.shadow_max_bytes = 8192;
    if (!p->cfg.shadow_cache) p->cfg.shadow_cache = 65536;
    view_set_record_cache(v, 1u << VIEW_SHADOWS,
                          p->cfg.shadow_cache < 0 ? 0 : (size_t)p->cfg.shadow_cache);
    if (!p->cfg.serial_filter_mb) p->cfg.serial_filter_mb = 64;
    /* without one (out of memory, a view it may not have), serials are looked up in the store */
    view_set_key_filter(v, VIEW_SERIALS,
                        p->cfg.serial_filter_mb < 0 ? 0 : (size_t)p->cfg.serial_filter_mb << 20);
    int err = codec_registry_new(&p->codec);
    if (err) {
        free(p);
        return err;
    }
    pthread_mutex_init(&p->stats_mu, NULL);
    pthread_mutex_init(&p->commit_mu, NULL);
    pthread_cond_init(&p->commit_cv, NULL);
    if (pthread_create(&p->committer, NULL, committer_main, p) != 0) {
        codec_registry_free(p->codec);
        free(p);
        return REG_ENOMEM;
    }
    if (pthread_create(&p->thread, NULL, projector_main, p) != 0) {
        committer_stop(p);
        codec_registry_free(p->codec);
        free(p);
        return REG_ENOMEM;
    }
    *out = p;
    return 0;
}

void projector_stop(projector *p)
{
    if (!p) return;
    atomic_store(&p->stopping, 1);
    pthread_join(p->thread, NULL); /* it waited for its last batch's commit */
    committer_stop(p);
    view_set_record_cache(p->view, 0, 0);
    view_set_key_filter(p->view, VIEW_SERIALS, 0);
    codec_registry_free(p->codec);
    json_decref(p->in_events_log);
    pthread_mutex_destroy(&p->stats_mu);
    free(p);
}

void projector_get_stats(projector *p, projector_stats *out)
{
    pthread_mutex_lock(&p->stats_mu);
    *out = p->stats;
    pthread_mutex_unlock(&p->stats_mu);
}
