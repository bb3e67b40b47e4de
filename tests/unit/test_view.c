/*
 * test_view.c - unit tests of the projector's transactions (projector/view.c) on a real view in
 * a temporary directory, against a model: random puts, deletes and reads in batches chained as
 * the projector chains them (each batch reads through the one being committed), are checked
 * read by read, and after every commit the whole committed state is compared with the model.
 *
 * Two kinds of family: keyed ones (records, the last-seen index, the commands' outcomes, kept in
 * chunks by the first 6 bytes of their ids), a few thousand keys each, read key by key and
 * iterated, whose keys share a tenant prefix and some are prefixes of others, which the commit's
 * sort must order as RocksDB does; and the equality indexes, whose entries (tenant, value,
 * device id) are kept in chunks (chunked.h) and are written only, never read in a transaction:
 * iterated whole, by value, by the chunk, by a prefix longer than a chunk key, and from a
 * cursor. Index keys are written several times in a batch, where the last write must win. The
 * view is closed and opened again between commits, so that the chunks' merges also run in
 * RocksDB's flushes and compactions and over chunks read from table files. Batched reads ahead
 * (view_txn_prefetch) are mixed in: the reads after them must still see the batch's, its base's
 * and the committed values.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "projector/chunked.h"
#include "projector/view.h"

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { NKEYS = 3000, MAXVAL = 300, NFAM = 4, COMMANDS = 3 };
static const view_cf families[NFAM] = {VIEW_DEVICES, VIEW_SERIALS, VIEW_IDX_LASTSEEN,
                                       VIEW_COMMANDS};
static const bool is_index[NFAM] = {false, false, true, false};

/* The posting families' entries: NTEN tenants x NVAL values x NDEV devices. The devices' ids
 * fall into a few chunks (their first 5 bytes), as time-ordered ids do. */
enum { NPF = 2, NTEN = 2, NVAL = 5, NDEV = 240, NCHUNK = 4, NENTRY = NTEN * NVAL * NDEV };
static const view_cf posting_families[NPF] = {VIEW_IDX_META, VIEW_IDX_ATTR};
static const char *const values[NVAL] = {"a", "ab", "b", "thermostat", "z"};
static unsigned char device_ids[NDEV][16];

static char dir[] = "/tmp/test-view-XXXXXX";
static view *v;

/* A value as the model holds it: absent, or len bytes. */
struct value {
    bool present;
    size_t len;
    unsigned char b[MAXVAL];
};

/* committed[f][k]; batch[i] the writes of the two batches in flight (set: written there). */
static struct value committed[NFAM][NKEYS];
static bool posted[NPF][NENTRY]; /* the committed posting entries */
struct batch_model {
    bool set[NFAM][NKEYS];
    struct value val[NFAM][NKEYS];
    bool post_set[NPF][NENTRY], post_val[NPF][NENTRY];
};
static struct batch_model batches[2];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Key k of family f. The commands family's are 16-byte ids in five chunks (their first 6 bytes,
 * as the milliseconds of time-ordered ids), in key order as k ascends. The others': a shared
 * 16-byte prefix, two bytes of k / 4, then k % 4 zero bytes, so that keys k - k % 4 .. k - k %
 * 4 + 3 are each a prefix of the next. */
static size_t key_of(int f, int k, unsigned char *out)
{
    if (f == COMMANDS) {
        static const unsigned char chunk[5][6] = {{1, 2, 3, 4, 5, 6},
                                                  {1, 2, 3, 4, 5, 7},
                                                  {1, 2, 3, 4, 6, 0},
                                                  {1, 2, 3, 5, 0, 0},
                                                  {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
        memcpy(out, chunk[k * 5 / NKEYS], 6);
        memset(out + 6, 0x3c, 10);
        out[14] = (unsigned char)(k >> 8);
        out[15] = (unsigned char)k;
        return 16;
    }
    memset(out, 0xa5, 16);
    out[16] = (unsigned char)(k / 4 >> 8);
    out[17] = (unsigned char)(k / 4);
    memset(out + 18, 0, (size_t)(k % 4));
    return 18 + (size_t)(k % 4);
}

/* Posting entry e's key: tenant, value, 0, device id. */
static size_t posting_key(int e, unsigned char *out)
{
    int t = e / (NVAL * NDEV), val = e / NDEV % NVAL, d = e % NDEV;
    memset(out, 0xa5 + t, 16);
    size_t n = strlen(values[val]);
    memcpy(out + 16, values[val], n + 1);
    memcpy(out + 17 + n, device_ids[d], 16);
    return 33 + n;
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir)) return -1;
    for (int d = 0; d < NDEV; d++) {
        static const unsigned char chunk[NCHUNK][5] = {{0x01, 0x8f, 0x00, 0x00, 0x10},
                                                       {0x01, 0x8f, 0x00, 0x00, 0x11},
                                                       {0x01, 0x8f, 0x00, 0x01, 0x00},
                                                       {0x01, 0x90, 0xff, 0xff, 0xff}};
        memcpy(device_ids[d], chunk[d % NCHUNK], 5);
        for (int i = 5; i < 16; i++)
            device_ids[d][i] = (unsigned char)next_random();
    }
    return view_open(dir, VIEW_PRIMARY, 8, &v);
}

static int teardown(void **state)
{
    (void)state;
    view_close(v);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* What a read through the newest batch (cur) must see. */
static const struct value *expected(int cur, int f, int k, bool has_base)
{
    if (batches[cur].set[f][k]) return &batches[cur].val[f][k];
    if (has_base && batches[1 - cur].set[f][k]) return &batches[1 - cur].val[f][k];
    return &committed[f][k];
}

/* n random operations on t (batch model cur). */
static void random_ops(view_txn *t, int cur, bool has_base, int n)
{
    unsigned char key[64];
    for (int i = 0; i < n; i++) {
        if (next_random() % 2) { /* a posting family's entry */
            int f = (int)(next_random() % NPF), e = (int)(next_random() % NENTRY);
            size_t klen = posting_key(e, key);
            unsigned op = (unsigned)(next_random() % 10);
            if (op < 9) {
                batches[cur].post_set[f][e] = true;
                batches[cur].post_val[f][e] = op < 5;
                if (op < 5)
                    view_txn_put(t, posting_families[f], key, klen, "", 0);
                else
                    view_txn_delete(t, posting_families[f], key, klen);
            } else {
                char *val = NULL;
                assert_int_equal(view_txn_get(t, posting_families[f], key, klen, &val, NULL),
                                 REG_EINVAL);
            }
            continue;
        }
        if (next_random() % 64 == 0) { /* a batched read ahead of some keys */
            int f = (int)(next_random() % NFAM);
            unsigned char pk[8][64];
            const void *kp[8];
            size_t kl[8];
            for (int j = 0; j < 8; j++) {
                kl[j] = key_of(f, (int)(next_random() % NKEYS), pk[j]);
                kp[j] = pk[j];
            }
            bool refused = is_index[f] || f == COMMANDS; /* index and chunked families */
            assert_int_equal(view_txn_prefetch(t, families[f], kp, kl, 8),
                             refused ? REG_EINVAL : 0);
            continue;
        }
        int f = (int)(next_random() % NFAM), k = (int)(next_random() % NKEYS);
        /* Index keys come from a narrower range, so that one is written several times. */
        if (is_index[f]) k %= NKEYS / 8;
        size_t klen = key_of(f, k, key);
        unsigned op = (unsigned)(next_random() % 10);
        if (op < 5) {
            struct value *w = &batches[cur].val[f][k];
            w->present = true;
            w->len = next_random() % 4 == 0 ? 0 : (size_t)(next_random() % MAXVAL);
            for (size_t j = 0; j < w->len; j++)
                w->b[j] = (unsigned char)next_random();
            batches[cur].set[f][k] = true;
            view_txn_put(t, families[f], key, klen, w->b, w->len);
        } else if (op < 7) {
            batches[cur].val[f][k].present = false;
            batches[cur].set[f][k] = true;
            view_txn_delete(t, families[f], key, klen);
        } else {
            char *val = NULL;
            size_t len = 0;
            int err = view_txn_get(t, families[f], key, klen, &val, &len);
            if (is_index[f]) {
                assert_int_equal(err, REG_EINVAL);
                continue;
            }
            const struct value *want = expected(cur, f, k, has_base);
            if (!want->present) {
                assert_int_equal(err, REG_ENOTFOUND);
                continue;
            }
            assert_int_equal(err, 0);
            assert_int_equal(len, want->len);
            assert_memory_equal(val, want->b, len);
            free(val);
        }
    }
}

/* A posting entry's key as the model sorts them. */
struct model_key {
    size_t len;
    unsigned char b[64];
};

static int model_key_order(const void *a, const void *b)
{
    const struct model_key *x = a, *y = b;
    int c = memcmp(x->b, y->b, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Iterates cf from prefix (and start, if slen) and checks that it gives exactly the keys of
 * want (n, sorted) that start with prefix and are >= start. */
static void check_postings_iter(view_cf cf, const struct model_key *want, size_t n,
                                const unsigned char *prefix, size_t plen,
                                const unsigned char *start, size_t slen)
{
    view_iter *it = view_iter_prefix(v, cf, prefix, plen, slen ? start : NULL, slen);
    assert_non_null(it);
    const char *ik, *iv;
    size_t iklen, ivlen;
    struct model_key s = {.len = slen};
    if (slen) memcpy(s.b, start, slen);
    for (size_t i = 0; i < n; i++) {
        if (want[i].len < plen || (plen && memcmp(want[i].b, prefix, plen))) continue;
        if (slen && model_key_order(&want[i], &s) < 0) continue;
        assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 1);
        assert_int_equal(iklen, want[i].len);
        assert_memory_equal(ik, want[i].b, iklen);
        assert_int_equal(ivlen, 0);
    }
    assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 0);
    view_iter_free(it);
}

/* Compares a posting family with the model: whole tenants, a value, a value's chunk, a prefix
 * reaching into the suffixes, and from cursors (present entries and absent ones). */
static void check_postings(int f)
{
    static struct model_key want[NENTRY];
    size_t n = 0;
    for (int e = 0; e < NENTRY; e++)
        if (posted[f][e]) want[n].len = posting_key(e, want[n].b), n++;
    qsort(want, n, sizeof want[0], model_key_order);
    view_cf cf = posting_families[f];
    unsigned char k[64];
    for (int e = 0; e < NENTRY; e += 7) { /* read by key: in its chunk, or not */
        char *val = NULL;
        size_t len = 1;
        int err = view_get(v, cf, k, posting_key(e, k), &val, &len);
        assert_int_equal(err, posted[f][e] ? 0 : REG_ENOTFOUND);
        if (!err) assert_int_equal(len, 0);
        free(val);
    }
    for (int t = 0; t < NTEN; t++) {
        memset(k, 0xa5 + t, 16);
        check_postings_iter(cf, want, n, k, 16, NULL, 0);
    }
    check_postings_iter(cf, want, n, NULL, 0, NULL, 0);
    for (int round = 0; round < 8; round++) {
        int e = (int)(next_random() % NENTRY);
        size_t klen = posting_key(e, k), vend = klen - 16;
        check_postings_iter(cf, want, n, k, vend, NULL, 0);     /* the value */
        check_postings_iter(cf, want, n, k, vend + 5, NULL, 0); /* its chunk */
        check_postings_iter(cf, want, n, k, vend + 8, NULL, 0); /* into the suffixes */
        check_postings_iter(cf, want, n, k, 16, k, klen);       /* from an entry */
        check_postings_iter(cf, want, n, k, 16, k, vend + 7);   /* from a partial key */
        check_postings_iter(cf, want, n, k, vend, k, 10);       /* from before the prefix */
    }
}

/* Folds batch cur into the committed model and compares the view with it. */
static void commit_model(int cur)
{
    for (int f = 0; f < NFAM; f++)
        for (int k = 0; k < NKEYS; k++)
            if (batches[cur].set[f][k]) committed[f][k] = batches[cur].val[f][k];
    for (int f = 0; f < NPF; f++)
        for (int e = 0; e < NENTRY; e++)
            if (batches[cur].post_set[f][e]) posted[f][e] = batches[cur].post_val[f][e];
    memset(&batches[cur], 0, sizeof batches[cur]);
    for (int f = 0; f < NPF; f++)
        check_postings(f);

    unsigned char key[64];
    for (int f = 0; f < NFAM; f++) {
        for (int k = 0; k < NKEYS; k++) {
            char *val = NULL;
            size_t len = 0;
            int err = view_get(v, families[f], key, key_of(f, k, key), &val, &len);
            if (!committed[f][k].present) {
                assert_int_equal(err, REG_ENOTFOUND);
                continue;
            }
            assert_int_equal(err, 0);
            assert_int_equal(len, committed[f][k].len);
            assert_memory_equal(val, committed[f][k].b, len);
            free(val);
        }
        if (f == COMMANDS) { /* its greatest key: the last chunk's last entry */
            int last = NKEYS - 1;
            while (last >= 0 && !committed[f][last].present)
                last--;
            unsigned char lk[16];
            size_t lklen = 0;
            int err = view_last_key(v, families[f], lk, sizeof lk, &lklen);
            assert_int_equal(err, last < 0 ? REG_ENOTFOUND : 0);
            if (last >= 0) {
                assert_int_equal(lklen, key_of(f, last, key));
                assert_memory_equal(lk, key, 16);
            }
        }
        if (!is_index[f] && f != COMMANDS) continue;
        /* In key order: k ascending is key order (a key precedes those it is a prefix of). The
         * commands family whole (its chunks), the others under their shared prefix. */
        view_iter *it = view_iter_prefix(v, families[f], key, f == COMMANDS ? 0 : 16, NULL, 0);
        assert_non_null(it);
        const char *ik, *iv;
        size_t iklen, ivlen;
        for (int k = 0; k < NKEYS; k++) {
            if (!committed[f][k].present) continue;
            assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 1);
            size_t klen = key_of(f, k, key);
            assert_int_equal(iklen, klen);
            assert_memory_equal(ik, key, klen);
            assert_int_equal(ivlen, committed[f][k].len);
            assert_memory_equal(iv, committed[f][k].b, ivlen);
        }
        assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 0);
        view_iter_free(it);
    }
}

/* Batches as the projector runs them: batch N+1 is decided while N is written, reading
 * through it; N+1 drops its base once N is written. Their sizes grow the overlay's table. */
static void test_chained_batches_match_model(void **state)
{
    (void)state;
    view_txn *inflight = NULL;
    int inflight_model = 0;
    for (int round = 0; round < 12; round++) {
        int cur = round % 2;
        view_txn *t = view_txn_begin(v, inflight);
        assert_non_null(t);
        random_ops(t, cur, inflight != NULL, 500 + round * 1500);
        if (inflight) {
            assert_int_equal(view_txn_write(inflight, NULL, 0), 0);
            commit_model(inflight_model);
            view_txn_drop_base(t);
            view_txn_free(inflight);
        }
        random_ops(t, cur, false, 200); /* with the base gone, the reads see what it wrote */
        assert_int_equal(view_txn_seal(t), 0);
        inflight = t;
        inflight_model = cur;
    }
    assert_int_equal(view_txn_write(inflight, NULL, 0), 0);
    commit_model(inflight_model);
    view_txn_free(inflight);
}

/* Batches one after another, the view closed and opened again after each: the lists' merges
 * then also run in flushes, in compactions (four flushes make one) and over lists read from
 * table files. Goes on from the state the test before left. */
static void test_batches_across_reopens(void **state)
{
    (void)state;
    for (int round = 0; round < 8; round++) {
        view_txn *t = view_txn_begin(v, NULL);
        assert_non_null(t);
        random_ops(t, 0, false, 4000);
        assert_int_equal(view_txn_write(t, NULL, 0), 0);
        view_txn_free(t);
        commit_model(0);
        view_close(v);
        v = NULL;
        assert_int_equal(view_open(dir, VIEW_PRIMARY, 8, &v), 0);
        commit_model(0); /* nothing new: the same state read back */
    }
}

/* RocksDB opened directly on a view (every family with default options): for writing what an
 * older view held. */
static rocksdb_t *raw_open(const char *path, rocksdb_column_family_handle_t **cfs, size_t *ncf,
                           char ***names)
{
    rocksdb_options_t *o = rocksdb_options_create();
    char *err = NULL;
    *names = rocksdb_list_column_families(o, path, ncf, &err);
    assert_null(err);
    const rocksdb_options_t *cf_opts[32];
    assert_true(*ncf <= 32);
    for (size_t i = 0; i < *ncf; i++)
        cf_opts[i] = o;
    rocksdb_t *db = rocksdb_open_column_families(o, path, (int)*ncf, (const char *const *)*names,
                                                 cf_opts, cfs, &err);
    assert_null(err);
    rocksdb_options_destroy(o);
    return db;
}

/* A view from before chunks: its index entries are keys with empty values and its commands'
 * outcomes are under their ids, and the conversion at open moves them into chunks, also when an
 * earlier conversion stopped midway (some entries already in a chunk, the format not yet
 * marked). */
static void test_old_entries_converted(void **state)
{
    (void)state;
    char odir[] = "/tmp/test-view-old-XXXXXX", path[64], cmd[96];
    assert_non_null(mkdtemp(odir));
    view *ov = NULL;
    assert_int_equal(view_open(odir, VIEW_PRIMARY, 8, &ov), 0);
    view_close(ov);

    snprintf(path, sizeof path, "%s/view", odir);
    rocksdb_column_family_handle_t *cfs[32];
    size_t ncf = 0;
    char **names = NULL;
    rocksdb_t *db = raw_open(path, cfs, &ncf, &names);
    rocksdb_column_family_handle_t *meta = NULL, *idx = NULL, *commands = NULL;
    for (size_t i = 0; i < ncf; i++) {
        if (!strcmp(names[i], "default")) meta = cfs[i];
        if (!strcmp(names[i], "idx_meta")) idx = cfs[i];
        if (!strcmp(names[i], "commands")) commands = cfs[i];
    }
    assert_non_null(meta);
    assert_non_null(idx);
    assert_non_null(commands);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    char *err = NULL;
    rocksdb_delete_cf(db, wo, meta, "view.format", 11, &err);
    assert_null(err);
    static bool want_set[NENTRY];
    memset(want_set, 0, sizeof want_set);
    unsigned char k[64];
    for (int e = 0; e < NENTRY; e += 3) { /* old entries */
        size_t klen = posting_key(e, k);
        rocksdb_put_cf(db, wo, idx, (const char *)k, klen, "", 0, &err);
        assert_null(err);
        want_set[e] = true;
    }
    /* One list an earlier conversion wrote: entry 1's, holding entry 1. */
    size_t klen = posting_key(1, k);
    char list[CHUNK_HEADER + 11 + 1] = {CHUNK_LIST, 11};
    memcpy(list + CHUNK_HEADER, k + klen - 11, 11); /* and its value's length, 0 */
    rocksdb_put_cf(db, wo, idx, (const char *)k, klen - 11, list, sizeof list, &err);
    assert_null(err);
    want_set[1] = true;
    enum { OLD_COMMANDS = 50 }; /* old outcomes under their command ids */
    for (int c = 0; c < OLD_COMMANDS; c++) {
        char outcome[64];
        int olen = snprintf(outcome, sizeof outcome, "{\"status\":%d}", 200 + c);
        key_of(COMMANDS, c * (NKEYS / OLD_COMMANDS), k);
        rocksdb_put_cf(db, wo, commands, (const char *)k, 16, outcome, (size_t)olen, &err);
        assert_null(err);
    }
    rocksdb_writeoptions_destroy(wo);
    for (size_t i = 0; i < ncf; i++) {
        rocksdb_column_family_handle_destroy(cfs[i]);
        rocksdb_free(names[i]);
    }
    rocksdb_free(names);
    rocksdb_close(db);

    for (int reopen = 0; reopen < 2; reopen++) { /* converted, then opened as it is */
        assert_int_equal(view_open(odir, VIEW_PRIMARY, 8, &ov), 0);
        assert_int_equal(view_meta_get(ov, "view.format", 0), 2);
        view_iter *it = view_iter_prefix(ov, VIEW_IDX_META, NULL, 0, NULL, 0);
        const char *ik, *iv;
        size_t iklen, ivlen;
        static struct model_key want[NENTRY];
        size_t n = 0;
        for (int e = 0; e < NENTRY; e++)
            if (want_set[e]) want[n].len = posting_key(e, want[n].b), n++;
        qsort(want, n, sizeof want[0], model_key_order);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 1);
            assert_int_equal(iklen, want[i].len);
            assert_memory_equal(ik, want[i].b, iklen);
        }
        assert_int_equal(view_iter_next(it, &ik, &iklen, &iv, &ivlen), 0);
        view_iter_free(it);
        for (int c = 0; c < OLD_COMMANDS; c++) {
            char *val = NULL, want_outcome[64];
            size_t len = 0;
            snprintf(want_outcome, sizeof want_outcome, "{\"status\":%d}", 200 + c);
            key_of(COMMANDS, c * (NKEYS / OLD_COMMANDS), k);
            assert_int_equal(view_get(ov, VIEW_COMMANDS, k, 16, &val, &len), 0);
            assert_string_equal(val, want_outcome);
            free(val);
        }
        unsigned char lk[16];
        size_t lklen = 0;
        assert_int_equal(view_last_key(ov, VIEW_COMMANDS, lk, sizeof lk, &lklen), 0);
        key_of(COMMANDS, (OLD_COMMANDS - 1) * (NKEYS / OLD_COMMANDS), k);
        assert_memory_equal(lk, k, 16);
        view_close(ov);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", odir);
    assert_int_equal(system(cmd), 0);
}

/* A commit of the crash test: record i (big, so that the memtables fill and flush) in one
 * family, its index entry in another, and the offset i in the meta family. */
static void commit_numbered(view *uv, uint32_t i)
{
    static char big[16384];
    unsigned char key[20] = {0xc0};
    key[16] = (unsigned char)(i >> 24), key[17] = (unsigned char)(i >> 16);
    key[18] = (unsigned char)(i >> 8), key[19] = (unsigned char)i;
    memset(big, (int)(i & 0x7f), sizeof big);
    view_txn *t = view_txn_begin(uv, NULL);
    assert_non_null(t);
    view_txn_put(t, VIEW_DEVICES, key, sizeof key, big, sizeof big);
    view_txn_put(t, VIEW_SERIALS, key, sizeof key, key + 16, 4);
    view_meta_value meta = {"test.next", (int64_t)i};
    assert_int_equal(view_txn_write(t, &meta, 1), 0);
    view_txn_free(t);
}

/* The crash test's writer: commits 1, 2, ... to an unlogged view in dir, writing each number
 * to stdout once it is committed, until it is killed. */
static int write_unlogged(const char *udir)
{
    view *uv = NULL;
    if (view_open(udir, VIEW_PRIMARY_UNLOGGED, 8, &uv)) return 1;
    for (uint32_t i = 1;; i++) {
        commit_numbered(uv, i);
        if (write(STDOUT_FILENO, &i, sizeof i) != sizeof i) return 1;
    }
}

/* An unlogged view killed (SIGKILL) while it is written is, opened again, as it was at one
 * commit: every family up to the same commit as its meta offset, nothing after (the families
 * flushed together), and it has lost the commits its memtables held (no log). A clean close
 * keeps everything. A secondary is told the view is unlogged. */
static void test_unlogged_view_killed(void **state)
{
    (void)state;
    char udir[64];
    snprintf(udir, sizeof udir, "%s/unlogged", dir);
    assert_int_equal(mkdir(udir, 0700), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    /* The writer is this program run afresh (write_unlogged): RocksDB's background threads
     * are not forked, and a forked child's flushes would never run. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        dup2(fds[1], STDOUT_FILENO);
        execl("/proc/self/exe", "test_view", "--write-unlogged", udir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    uint32_t last = 0, got = 0;
    while (last < 4000 && read(fds[0], &got, sizeof got) == sizeof got)
        last = got; /* 64 MiB of records: the memtables have filled and flushed */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(fds[0]);
    assert_int_equal(last, 4000);

    view *uv = NULL;
    assert_int_equal(view_open(udir, VIEW_SECONDARY, 8, &uv), 0);
    assert_true(view_is_unlogged(uv));
    view_close(uv);
    assert_int_equal(view_open(udir, VIEW_PRIMARY_UNLOGGED, 8, &uv), 0);
    int64_t kept = view_meta_get(uv, "test.next", 0);
    fprintf(stderr, "unlogged view killed after commit %u: kept up to %lld\n", last,
            (long long)kept);
    assert_true(kept > 0 && kept < (int64_t)last);
    for (uint32_t i = 1; i <= last + 1; i++) {
        unsigned char key[20] = {0xc0};
        key[16] = (unsigned char)(i >> 24), key[17] = (unsigned char)(i >> 16);
        key[18] = (unsigned char)(i >> 8), key[19] = (unsigned char)i;
        char *val = NULL;
        size_t len = 0;
        bool want = i <= (uint32_t)kept;
        int err = view_get(uv, VIEW_DEVICES, key, sizeof key, &val, &len);
        assert_int_equal(err, want ? 0 : REG_ENOTFOUND);
        if (!err) assert_int_equal(len, 16384);
        free(val);
        err = view_get(uv, VIEW_SERIALS, key, sizeof key, &val, &len);
        assert_int_equal(err, want ? 0 : REG_ENOTFOUND);
        free(val);
    }
    /* Closed cleanly, the commits after the last flush are kept. */
    commit_numbered(uv, (uint32_t)kept + 1);
    view_close(uv);
    assert_int_equal(view_open(udir, VIEW_PRIMARY, 8, &uv), 0);
    assert_int_equal(view_meta_get(uv, "test.next", 0), kept + 1);
    assert_false(view_is_unlogged(uv)); /* opened logged, it says so */
    view_close(uv);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write-unlogged")) return write_unlogged(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chained_batches_match_model),
        cmocka_unit_test(test_batches_across_reopens),
        cmocka_unit_test(test_old_entries_converted),
        cmocka_unit_test(test_unlogged_view_killed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
