/*
 * view.c - the RocksDB view (view.h): opening the column families as primary or secondary,
 * committed reads, prefix iteration, and the projector's transactions (an overlay hash of the
 * batch's writes over the committed view, so that deciding a command sees the effects of the
 * commands before it in the same batch; written as one WriteBatch at the commit, which
 * view_batch.c builds), and the chunked families' side of reads (chunked.h): an entry read in
 * its chunk, iterators that walk chunks' entries, and the conversion of older views.
 *
 * Durability: view writes are not synced. The logs are the durable record; after a crash the
 * projector re-applies from the offsets the view last committed, which are written in the same
 * atomic batch as the state they describe.
 */
#define _GNU_SOURCE
#include "projector/view.h"
#include "err.h"
#include "projector/keys.h"
#include "projector/chunked.h"
#include "projector/view_filter.h"
#include "projector/view_batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const cf_names[VIEW_CF_COUNT] = {
    "default",   "tenants",    "tokens",       "devices",      "serials",  "idx_meta",
    "idx_attr",  "idx_status", "idx_firmware", "idx_lastseen", "commands", "cas",
    "manifests", "claims",     "certs",        "cert_expiry",  "shadows",
};

/* The index families: only ever iterated (fleet queries), never read by key, and write-only in
 * a transaction (view.h). */
enum {
    INDEX_FAMILIES = 1u << VIEW_IDX_META | 1u << VIEW_IDX_ATTR | 1u << VIEW_IDX_STATUS |
                     1u << VIEW_IDX_FIRMWARE | 1u << VIEW_IDX_LASTSEEN
};
/* The chunked families (chunked.h) and the length of their keys' suffix, the part of the key
 * kept in the chunk: the equality indexes (the last 11 bytes of the device id: a chunk per value
 * and 256 ms of registrations) and the commands' outcomes (the last 10 of the command id: a chunk
 * per millisecond of commands). The last-seen index stays an entry per device: a device's
 * last-seen time moves on its own, so its entries share no key to gather under. */
static const uint8_t chunk_suffix[VIEW_CF_COUNT] = {
    [VIEW_IDX_META] = 11,     [VIEW_IDX_ATTR] = 11, [VIEW_IDX_STATUS] = 11,
    [VIEW_IDX_FIRMWARE] = 11, [VIEW_COMMANDS] = 10,
};

/* The overlay's table: the entries back to back in the order their keys were first touched,
 * and an open-addressing index of them (an index family's entries are not in it: overlay_set),
 * each slot the key's hash (high half) and the entry's number + 1 (low half; 0 is an empty
 * slot), at most half full. Why not the entries themselves in the slots: at 40 bytes each a
 * batch's table was 5 MiB, and finding a key's slot was a cache miss in nearly every probe,
 * ~90% of the time spent putting a key. The index of 8-byte slots is a fifth of that, the
 * entries fill cache lines in order, and walks over the entries (the seal, the commit's sort)
 * read them without gaps. */
struct overlay_table {
    uint64_t *index;
    struct overlay_entry *entries;
    size_t cap;         /* index slots, a power of two, at least twice the entries in it */
    size_t entries_cap; /* room for entries: an index family's are not in the index, and are
                         * two thirds of a batch's, so the index is sized for the others only */
};

static void table_release(struct overlay_table *tab)
{
    free(tab->index);
    free(tab->entries);
    *tab = (struct overlay_table){0};
}

struct view {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_options_t *warm_opts;  /* opts with a table factory of its own (view_open) */
    rocksdb_options_t *index_opts; /* the index families' (view_open) */
    rocksdb_block_based_table_options_t *topts, *index_topts;
    rocksdb_cache_t *cache;
    rocksdb_filterpolicy_t *bloom; /* owned by topts once set */
    rocksdb_readoptions_t *ropts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_column_family_handle_t *cf[VIEW_CF_COUNT];
    uint32_t cf_id[VIEW_CF_COUNT];
    view_batch_target batch_target; /* where commits go (view_batch.h; set at open) */
    /* What freed transactions leave for the next ones (txn_alloc, table_new): a batch's
     * overlay is a few MiB, and taking it fresh from the allocator each batch cost the
     * projector's thread ~10% in page faults and TLB shootdowns. */
    pthread_mutex_t spare_mu;
    struct arena_chunk *spare_chunks;
    size_t nspare_chunks;
    struct overlay_table spare_tables[2]; /* two batches are in flight */
    size_t index_hint, entries_hint;      /* the largest table a transaction needed */
    /* The record cache (view_set_record_cache): decoded committed values, a hash table of
     * entries on a list in recency order; updated by view_txn_write (the committer's thread),
     * read by transactions (the projector's). */
    pthread_mutex_t rc_mu;
    unsigned rc_cf_mask;
    size_t rc_max, rc_count, rc_nbuckets;
    struct rc_entry **rc_buckets;
    struct rc_entry *rc_newest, *rc_oldest;
    enum view_mode mode;
    /* The filter of one family's keys (view_set_key_filter), or NULL. Its scan waits for the
     * transactions begun before it was made (they may have put keys it was not given): each
     * transaction keeps the filter's generation it began in, and txns_older counts the open
     * ones of an earlier generation. Under spare_mu. */
    view_filter *key_filter;
    view_cf key_filter_cf;
    unsigned filter_gen;
    size_t txns_open, txns_older;
};

/* A transaction: a hash table of its writes (the overlay), holding the last
 * value (or deletion) of every key it touched, so that its reads see them. The commit writes the
 * overlay as one WriteBatch in key order. An entry may also hold a value's decoded form (a
 * view_codec's object), for a key written that way or only read that way (ENTRY_READ: nothing
 * to write), so that a record touched several times in a batch is decoded once and encoded
 * once, at the commit; a committed value read through the txn stays in its ENTRY_READ entry
 * too, so that it is looked up in RocksDB once per batch. Why not RocksDB's WriteBatchWithIndex:
 * measured here it cost ~15 us per read or write, the overlay a hash and a memcmp. Why key order:
 * the memtable inserts a sorted batch about 4x faster than the same keys in arrival order (random
 * UUIDs), and a key rewritten several times in a batch (a device's record) is written once. */
enum entry_state { ENTRY_PUT, ENTRY_DELETE, ENTRY_READ };

struct overlay_entry {
    uint32_t hash; /* overlay_hash of cf and key; 0 for an index family's (not in the index) */
    uint8_t cf;
    uint8_t state;   /* enum entry_state */
    uint8_t encoded; /* the value's bytes (ENTRY_READ: the committed one) follow the key */
    uint32_t klen, vlen;
    char *data; /* key (then value) */
    void *obj;  /* the value decoded by codec, or NULL */
    const view_codec *codec;
};

/* A cached decoded value (the view holds one reference to obj). */
struct rc_entry {
    struct rc_entry *hash_next;
    struct rc_entry *newer, *older;
    uint32_t hash;
    uint8_t cf;
    uint32_t klen;
    void *obj;
    const view_codec *codec;
    unsigned char key[];
};

/* The entries' keys and values live in chunks owned by their transaction, freed with it: an
 * entry written again leaves its old bytes there until then. */
enum { ARENA_CHUNK = 256 * 1024, SPARE_CHUNKS_MAX = 64 };
struct arena_chunk {
    struct arena_chunk *next;
    size_t size, used;
    char data[];
};

struct view_txn {
    view *v;
    view_txn *base; /* sealed, being committed: its writes are read through until dropped */
    struct overlay_table tab;
    size_t used;                /* entries in tab */
    size_t indexed;             /* of them, in tab's index */
    unsigned filter_gen;        /* the view's when t began */
    struct arena_chunk *chunks; /* the one being filled first */
};

struct view_iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro;
    char *upper; /* the prefix's successor, the iteration's upper bound */
    size_t upper_len;
    int started;
    /* A chunked family's iterator gives the entries of its chunks (chunked.h): the current
     * chunk (RocksDB's bytes, valid until `it` moves), where its next entry is, and the entry's
     * key built in `key` (the chunk key, then the suffix). Entries before `start` or outside
     * the prefix are passed over. */
    size_t suffix; /* the family's suffix length; 0 for a family not chunked */
    const char *chunk;
    size_t chunk_len, at;
    char *key;
    size_t chunk_klen;
    char *prefix, *start;
    size_t plen, slen;
};

void view_thread_init(void)
{
    rocksdb_set_perf_level(rocksdb_disable);
}

/* ---- The entries of a chunked family in a view older than chunks (an index entry's empty value,
 * a command's outcome, under the entry's whole key) are moved into chunks when the primary
 * opens it, once: each old entry is deleted and merged into its chunk, in batches. A crash
 * midway is finished on the next open (a chunk is told apart from an old entry's value, and
 * putting an entry again is harmless). VIEW_FORMAT_KEY in the meta family says it is done. */

static const char VIEW_FORMAT_KEY[] = "view.format";
enum { VIEW_FORMAT_CHUNKS = 2, CONVERT_BATCH = 10000, CONVERT_RUN_BYTES = 1 << 20 };

/* Writes wb and empties it; 0 or REG_ESTORE. */
static int convert_flush(view *v, rocksdb_writebatch_t *wb)
{
    char *errptr = NULL;
    if (rocksdb_writebatch_count(wb)) rocksdb_write(v->db, v->wopts, wb, &errptr);
    rocksdb_writebatch_clear(wb);
    if (!errptr) return 0;
    fprintf(stderr, "view: converting to chunks failed: %s\n", errptr);
    free(errptr);
    return REG_ESTORE;
}

/* An operand being gathered from old entries of one chunk. */
struct convert_run {
    char key[REG_KEY_MAX];
    size_t klen, len, cap, n;
    char *op;
};

/* Merges the run into its chunk (when it has entries) and empties it. */
static void convert_run_end(view *v, view_cf cf, rocksdb_writebatch_t *wb, struct convert_run *r)
{
    if (r->n) rocksdb_writebatch_merge_cf(wb, v->cf[cf], r->key, r->klen, r->op, r->len);
    r->n = 0;
}

/* Moves one family's old entries into chunks; *moved counts them. */
static int convert_family(view *v, view_cf cf, rocksdb_writebatch_t *wb, size_t *moved)
{
    size_t s = chunk_suffix[cf];
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(v->db, v->ropts, v->cf[cf]);
    struct convert_run run = {0};
    int err = it ? 0 : REG_ENOMEM;
    for (rocksdb_iter_seek_to_first(it); !err && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen), *val = rocksdb_iter_value(it, &vlen);
        bool chunk = vlen >= CHUNK_HEADER && val[0] == CHUNK_LIST && (unsigned char)val[1] == s;
        if (chunk || klen < s || klen - s > REG_KEY_MAX || vlen >= CHUNK_VALUE_MAX) continue;
        size_t ck = klen - s, need = chunk_op_size(s, vlen);
        if (run.n && (ck != run.klen || memcmp(k, run.key, ck) || run.len >= CONVERT_RUN_BYTES))
            convert_run_end(v, cf, wb, &run);
        if (rocksdb_writebatch_count(wb) >= CONVERT_BATCH) { /* a run's deletes go with it */
            convert_run_end(v, cf, wb, &run);
            if ((err = convert_flush(v, wb))) break;
        }
        if (!run.n) {
            memcpy(run.key, k, ck);
            run.klen = ck;
            run.len = CHUNK_HEADER;
        }
        if (run.len + need > run.cap) {
            size_t cap = (run.len + need) * 2;
            char *grown = realloc(run.op, cap);
            if (!grown) {
                err = REG_ENOMEM;
                break;
            }
            run.op = grown;
            run.cap = cap;
        }
        if (!run.n) chunk_op_header(run.op, s);
        run.len = (size_t)(chunk_op_entry(run.op + run.len, true, k + ck, s, val, vlen) - run.op);
        run.n++;
        rocksdb_writebatch_delete_cf(wb, v->cf[cf], k, klen);
        (*moved)++;
    }
    if (!err) convert_run_end(v, cf, wb, &run);
    char *errptr = NULL;
    if (it) rocksdb_iter_get_error(it, &errptr);
    if (errptr) {
        fprintf(stderr, "view: reading %s failed: %s\n", cf_names[cf], errptr);
        free(errptr);
        err = REG_ESTORE;
    }
    if (!err) err = convert_flush(v, wb);
    if (it) rocksdb_iter_destroy(it);
    free(run.op);
    return err;
}

static int convert_to_chunks(view *v)
{
    if (view_meta_get(v, VIEW_FORMAT_KEY, 0) >= VIEW_FORMAT_CHUNKS) return 0;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    size_t moved = 0;
    int err = 0;
    for (int cf = 0; cf < VIEW_CF_COUNT && !err; cf++)
        if (chunk_suffix[cf]) err = convert_family(v, (view_cf)cf, wb, &moved);
    if (!err) {
        unsigned char format[8];
        view_put_be64(format, VIEW_FORMAT_CHUNKS);
        rocksdb_writebatch_put_cf(wb, v->cf[VIEW_META], VIEW_FORMAT_KEY, sizeof VIEW_FORMAT_KEY - 1,
                                  (const char *)format, 8);
        err = convert_flush(v, wb);
    }
    rocksdb_writebatch_destroy(wb);
    if (moved) fprintf(stderr, "view: moved %zu entries into chunks\n", moved);
    return err;
}

#define VIEW_UNLOGGED_KEY "view.unlogged"

/* Records in the meta family whether this primary writes without RocksDB's log. The one write
 * that goes through the log, so that a secondary opened now sees it. */
static int mark_unlogged(view *v, bool unlogged)
{
    if (view_meta_get(v, VIEW_UNLOGGED_KEY, 0) == unlogged) return 0;
    unsigned char flag[8];
    view_put_be64(flag, unlogged);
    rocksdb_writeoptions_t *logged = rocksdb_writeoptions_create();
    char *errptr = NULL;
    rocksdb_put_cf(v->db, logged, v->cf[VIEW_META], VIEW_UNLOGGED_KEY, sizeof VIEW_UNLOGGED_KEY - 1,
                   (const char *)flag, 8, &errptr);
    rocksdb_writeoptions_destroy(logged);
    if (!errptr) return 0;
    fprintf(stderr, "view: cannot mark the view: %s\n", errptr);
    free(errptr);
    return REG_ESTORE;
}

bool view_is_unlogged(view *v)
{
    return view_meta_get(v, VIEW_UNLOGGED_KEY, 0) == 1;
}

int view_open(const char *dir, enum view_mode mode, unsigned cache_mb, view **out)
{
    view_thread_init();
    char path[4096], sec[4096];
    if (snprintf(path, sizeof path, "%s/view", dir) >= (int)sizeof path) return REG_EINVAL;
    bool primary = mode != VIEW_SECONDARY;
    if (primary && mkdir(path, 0700) != 0 && errno != EEXIST) return REG_EIO;

    view *v = calloc(1, sizeof *v);
    if (!v) return REG_ENOMEM;
    pthread_mutex_init(&v->spare_mu, NULL);
    pthread_mutex_init(&v->rc_mu, NULL);
    v->mode = mode;
    v->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(v->opts, 1);
    rocksdb_options_set_create_missing_column_families(v->opts, 1);
    rocksdb_options_set_compression(v->opts, rocksdb_lz4_compression);
    /* The chunked families' merges (a secondary folds them too when it reads); every family's
     * options are copies of these, and only the chunked ones ever have a merge. */
    rocksdb_options_set_merge_operator(v->opts, chunk_merge_operator());
    rocksdb_options_increase_parallelism(v->opts, 2);
    rocksdb_options_set_write_buffer_size(v->opts, 32 << 20);
    /* All column families' memtables together, and the WALs they pin: each secondary (a front
     * end) replays the primary's unflushed writes into memtables of its own, so this bounds every
     * front end's memory too (17 families x 32 MiB would not be). */
    rocksdb_options_set_db_write_buffer_size(v->opts, 64 << 20);
    rocksdb_options_set_max_total_wal_size(v->opts, 128 << 20);
    if (mode == VIEW_SECONDARY) {
        rocksdb_options_set_max_open_files(v->opts, -1);
        /* A catch-up that finds new table files opens them with this many threads, created and
         * joined each time (RocksDB's default 16): on a front end catching up after every commit
         * notice, that thread churn took most of its CPU. */
        rocksdb_options_set_max_file_opening_threads(v->opts, 1);
    } else {
        /* The projector's reads mostly miss the memtables (a command id never seen, a device's
         * record long flushed): a whole-key bloom filter per memtable answers those without
         * searching the skip list. Its bits are allocated with each memtable (2% of 32 MiB per
         * family), so only the primary has them: a secondary's replayed memtables would carry
         * their own into every front end. */
        rocksdb_options_set_memtable_prefix_bloom_size_ratio(v->opts, 0.02);
        rocksdb_options_set_memtable_whole_key_filtering(v->opts, 1);
    }
    v->topts = rocksdb_block_based_options_create();
    v->cache =
        rocksdb_cache_create_lru((size_t)(cache_mb ? cache_mb : VIEW_CACHE_MB_DEFAULT) << 20);
    rocksdb_block_based_options_set_block_cache(v->topts, v->cache);
    /* Whole-key bloom filters: most reads are point lookups (device, token, serial). */
    v->bloom = rocksdb_filterpolicy_create_bloom_full(10);
    rocksdb_block_based_options_set_filter_policy(v->topts, v->bloom);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(v->topts, 1);
    /* Point reads (a device's record, most of all) went through the block cache for the filter
     * and index blocks of every level-0 file they look in, and binary-searched the data block:
     * the level-0 files' filter and index blocks are pinned while the files live, and data
     * blocks carry a hash index of their keys (the deciding thread -3% in three of four pairs). */
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(v->topts, 1);
    rocksdb_block_based_options_set_data_block_index_type(
        v->topts, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
    rocksdb_block_based_options_set_data_block_hash_ratio(v->topts, 0.75);
    rocksdb_options_set_block_based_table_factory(v->opts, v->topts);
    v->ropts = rocksdb_readoptions_create();
    v->wopts = rocksdb_writeoptions_create();
    if (mode == VIEW_PRIMARY_UNLOGGED) {
        rocksdb_writeoptions_disable_WAL(v->wopts, 1);
        rocksdb_options_set_atomic_flush(v->opts, 1);
    }

    /* The projector reads a device's record (and shadow) soon after writing it, when the device
     * next changes, mostly from the newest table files, so a flush of those two families puts
     * the blocks it writes into the block cache: reading and uncompressing them from the file
     * on the first read was ~4% of the projector's thread. Not for the other families: their
     * blocks (outcomes, index entries) are rarely read back, and putting every flushed block
     * into the cache cost the flush thread twice what it saved. The two get a table factory of
     * their own, set so once the view is open (the C API's table options lack the setting). */
    /* A commit inserts its keys in order, and a memtable insert starts from where the last one
     * went: but where that does not bracket the key (a batch's device records lie between the
     * memtable's), RocksDB searches again from the top, unless the insert goes by a hint, kept
     * per key prefix (the tenant's 16 bytes), which it only mends from the bottom: the
     * committer's instructions -9% (callgrind). The C API lacks the setting. */
    if (primary) {
        rocksdb_options_t *hinted = rocksdb_options_create();
        char *herr = NULL;
        rocksdb_get_options_from_string(
            v->opts, "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.16", hinted,
            &herr);
        if (herr) { /* inserts only search more */
            fprintf(stderr, "view: memtable insert hints not set: %s\n", herr);
            free(herr);
            rocksdb_options_destroy(hinted);
        } else {
            rocksdb_options_destroy(v->opts);
            v->opts = hinted;
        }
    }
    static const view_cf warm[] = {VIEW_DEVICES, VIEW_SHADOWS};
    v->warm_opts = rocksdb_options_create_copy(v->opts);
    rocksdb_options_set_block_based_table_factory(v->warm_opts, v->topts);
    /* The index families have no bloom filters, in the memtables or the table files: nothing
     * reads them by key. Their entries are most of what a commit writes (six of a registration's
     * nine), and adding each to a memtable's filter was a cache miss: the committer thread
     * spends ~12% less without. */
    v->index_opts = rocksdb_options_create_copy(v->opts);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(v->index_opts, 0);
    v->index_topts = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(v->index_topts, v->cache);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(v->index_topts, 1);
    rocksdb_options_set_block_based_table_factory(v->index_opts, v->index_topts);
    const rocksdb_options_t *cf_opts[VIEW_CF_COUNT];
    for (int i = 0; i < VIEW_CF_COUNT; i++)
        cf_opts[i] = v->opts;
    for (size_t i = 0; i < sizeof warm / sizeof warm[0]; i++)
        cf_opts[warm[i]] = v->warm_opts;
    for (int i = 0; i < VIEW_CF_COUNT; i++)
        if (INDEX_FAMILIES & 1u << i) cf_opts[i] = v->index_opts;

    char *errptr = NULL;
    if (primary) {
        v->db = rocksdb_open_column_families(v->opts, path, VIEW_CF_COUNT, cf_names, cf_opts, v->cf,
                                             &errptr);
    } else {
        snprintf(sec, sizeof sec, "%s/view-secondary-%d", dir, (int)getpid());
        v->db = rocksdb_open_as_secondary_column_families(v->opts, path, sec, VIEW_CF_COUNT,
                                                          cf_names, cf_opts, v->cf, &errptr);
    }
    if (errptr) {
        fprintf(stderr, "view: cannot open %s: %s\n", path, errptr);
        free(errptr);
        v->db = NULL;
        view_close(v);
        return REG_ESTORE;
    }
    for (int i = 0; i < VIEW_CF_COUNT; i++)
        v->cf_id[i] = rocksdb_column_family_handle_get_id(v->cf[i]);
    const char *opt_name[1] = {"block_based_table_factory"},
               *opt_value[1] = {"{prepopulate_block_cache=kFlushOnly;}"};
    if (primary) /* the warm families' factory is shared: setting one sets both */
        rocksdb_set_options_cf(v->db, v->cf[warm[0]], 1, opt_name, opt_value, &errptr);
    if (errptr) { /* the cache only warms more slowly */
        fprintf(stderr, "view: block cache prepopulation not set: %s\n", errptr);
        free(errptr);
    }
    v->batch_target = (view_batch_target){v->cf, v->cf_id, chunk_suffix, false};
    v->batch_target.own_encoding = view_batch_encoding_checks(&v->batch_target);
    int err = primary ? convert_to_chunks(v) : 0;
    if (!err && primary) err = mark_unlogged(v, mode == VIEW_PRIMARY_UNLOGGED);
    if (err) {
        view_close(v);
        return err;
    }
    *out = v;
    return 0;
}

void view_close(view *v)
{
    if (!v) return;
    if (v->db && v->mode == VIEW_PRIMARY) {
        /* Flushing the memtables makes the next start quick: nothing to replay from the WAL.
         * (An unlogged view is flushed by RocksDB's close, all families at once.) */
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        char *errptr = NULL;
        for (int i = 0; i < VIEW_CF_COUNT; i++) {
            rocksdb_flush_cf(v->db, fo, v->cf[i], &errptr);
            free(errptr);
            errptr = NULL;
        }
        rocksdb_flushoptions_destroy(fo);
    }
    view_filter_close(v->key_filter); /* its scan reads the store */
    if (v->db) {
        for (int i = 0; i < VIEW_CF_COUNT; i++)
            if (v->cf[i]) rocksdb_column_family_handle_destroy(v->cf[i]);
        rocksdb_close(v->db);
    }
    rocksdb_readoptions_destroy(v->ropts);
    rocksdb_writeoptions_destroy(v->wopts);
    rocksdb_options_destroy(v->opts);
    if (v->warm_opts) rocksdb_options_destroy(v->warm_opts);
    if (v->index_opts) rocksdb_options_destroy(v->index_opts);
    rocksdb_block_based_options_destroy(v->topts);
    if (v->index_topts) rocksdb_block_based_options_destroy(v->index_topts);
    rocksdb_cache_destroy(v->cache);
    for (struct arena_chunk *c = v->spare_chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    for (int i = 0; i < 2; i++)
        table_release(&v->spare_tables[i]);
    pthread_mutex_destroy(&v->spare_mu);
    view_set_record_cache(v, 0, 0);
    pthread_mutex_destroy(&v->rc_mu);
    free(v);
}

int view_catch_up(view *v)
{
    if (v->mode != VIEW_SECONDARY) return 0;
    char *errptr = NULL;
    rocksdb_try_catch_up_with_primary(v->db, &errptr);
    if (errptr) {
        fprintf(stderr, "view: catch up failed: %s\n", errptr);
        free(errptr);
        return REG_ESTORE;
    }
    return 0;
}

/* Copies a RocksDB-allocated value into a NUL-terminated malloc'd buffer of our own. */
static int take_value(char *rv, size_t rlen, char **val, size_t *len)
{
    char *copy = malloc(rlen + 1);
    if (!copy) {
        rocksdb_free(rv);
        return REG_ENOMEM;
    }
    memcpy(copy, rv, rlen);
    copy[rlen] = 0;
    rocksdb_free(rv);
    *val = copy;
    if (len) *len = rlen;
    return 0;
}

/* A malloc'd, NUL-terminated copy of n bytes (p may be NULL when n is 0). */
static char *copy_bytes(const void *p, size_t n)
{
    char *copy = malloc(n + 1);
    if (!copy) return NULL;
    if (n) memcpy(copy, p, n);
    copy[n] = 0;
    return copy;
}

/* view_get of a chunked family: the entry in its chunk. */
static int chunked_get(view *v, view_cf cf, const void *key, size_t klen, char **val, size_t *len)
{
    size_t s = chunk_suffix[cf], clen = 0, cs = 0;
    if (klen < s) return REG_ENOTFOUND; /* no such entry can be written (view_batch_build) */
    char *errptr = NULL;
    char *chunk = rocksdb_get_cf(v->db, v->ropts, v->cf[cf], key, klen - s, &clen, &errptr);
    if (errptr) {
        fprintf(stderr, "view: get failed: %s\n", errptr);
        free(errptr);
        return REG_ESTORE;
    }
    if (!chunk) return REG_ENOTFOUND;
    int err = chunk_count(chunk, clen, false, &cs) < 0 || cs != s ? REG_EDECODE : REG_ENOTFOUND;
    chunk_entry e;
    size_t at = CHUNK_HEADER;
    const char *suffix = (const char *)key + klen - s;
    while (err == REG_ENOTFOUND && chunk_next(chunk, clen, false, s, &at, &e)) {
        int c = memcmp(e.suffix, suffix, s);
        if (c > 0) break;
        if (c == 0) err = (*val = copy_bytes(e.val, e.vlen)) ? 0 : REG_ENOMEM;
        if (c == 0 && !err && len) *len = e.vlen;
    }
    rocksdb_free(chunk);
    return err;
}

int view_get(view *v, view_cf cf, const void *key, size_t klen, char **val, size_t *len)
{
    if (chunk_suffix[cf]) return chunked_get(v, cf, key, klen, val, len);
    size_t rlen = 0;
    char *errptr = NULL;
    char *rv = rocksdb_get_cf(v->db, v->ropts, v->cf[cf], key, klen, &rlen, &errptr);
    if (errptr) {
        fprintf(stderr, "view: get failed: %s\n", errptr);
        free(errptr);
        return REG_ESTORE;
    }
    if (!rv) return REG_ENOTFOUND;
    return take_value(rv, rlen, val, len);
}

/* The smallest key greater than every key starting with prefix; NULL when there is none (all
 * 0xff), meaning no upper bound. *ulen gets its length. */
static char *prefix_successor(const void *prefix, size_t plen, size_t *ulen)
{
    if (plen == 0) return NULL; /* the empty prefix: every key */
    char *u = malloc(plen);
    if (!u) return NULL;
    memcpy(u, prefix, plen);
    size_t n = plen;
    while (n > 0 && (unsigned char)u[n - 1] == 0xff)
        n--;
    if (n == 0) {
        free(u);
        return NULL;
    }
    u[n - 1]++;
    *ulen = n;
    return u;
}

/* Places a chunked family's iterator on the first chunk that may hold an entry >= target: the
 * chunk whose key is a prefix of target (its entries sort around target), else the first chunk
 * after target. Chunk keys are prefix-free, so no other chunk before target holds a greater
 * entry. */
static void chunks_seek(rocksdb_iterator_t *it, const char *target, size_t tlen)
{
    rocksdb_iter_seek_for_prev(it, target, tlen);
    if (rocksdb_iter_valid(it)) {
        size_t klen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen <= tlen && !memcmp(k, target, klen)) return;
    }
    rocksdb_iter_seek(it, target, tlen);
}

view_iter *view_iter_prefix(view *v, view_cf cf, const void *prefix, size_t plen, const void *start,
                            size_t slen)
{
    view_iter *vi = calloc(1, sizeof *vi);
    if (!vi) return NULL;
    vi->ro = rocksdb_readoptions_create();
    size_t ulen = 0;
    vi->upper = prefix_successor(prefix, plen, &ulen);
    vi->upper_len = ulen;
    if (vi->upper) rocksdb_readoptions_set_iterate_upper_bound(vi->ro, vi->upper, ulen);
    vi->it = rocksdb_create_iterator_cf(v->db, vi->ro, v->cf[cf]);
    if (!chunk_suffix[cf]) {
        if (start)
            rocksdb_iter_seek(vi->it, start, slen);
        else
            rocksdb_iter_seek(vi->it, prefix, plen);
        return vi;
    }
    vi->suffix = chunk_suffix[cf];
    vi->prefix = copy_bytes(prefix, plen);
    vi->plen = plen;
    vi->start = start ? copy_bytes(start, slen) : NULL;
    vi->slen = slen;
    vi->key = malloc(REG_KEY_MAX + CHUNK_SUFFIX_MAX);
    if (!vi->prefix || (start && !vi->start) || !vi->key) {
        view_iter_free(vi);
        return NULL;
    }
    bool from_start = start && (slen > plen ? memcmp(vi->start, vi->prefix, plen) >= 0
                                            : memcmp(vi->start, vi->prefix, slen) > 0);
    if (from_start && vi->upper &&
        memcmp(vi->start, vi->upper, slen < ulen ? slen : ulen) >= 0) /* past the prefix */
        rocksdb_iter_seek(vi->it, vi->upper, ulen);                   /* the upper bound: nothing */
    else if (from_start)
        chunks_seek(vi->it, vi->start, slen);
    else
        chunks_seek(vi->it, vi->prefix, plen);
    return vi;
}

int view_last_key(view *v, view_cf cf, void *key, size_t cap, size_t *len)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(v->db, v->ropts, v->cf[cf]);
    if (!it) return REG_ENOMEM;
    size_t s = chunk_suffix[cf];
    int err = REG_ENOTFOUND;
    /* In a chunked family, the last chunk's last entry; a chunk may be empty (all deleted). */
    for (rocksdb_iter_seek_to_last(it); err == REG_ENOTFOUND && rocksdb_iter_valid(it);
         rocksdb_iter_prev(it)) {
        size_t n = 0, clen = 0, cs = 0;
        const char *k = rocksdb_iter_key(it, &n), *chunk = s ? rocksdb_iter_value(it, &clen) : NULL;
        chunk_entry e, last = {0};
        size_t at = CHUNK_HEADER;
        if (s && (chunk_count(chunk, clen, false, &cs) < 0 || cs != s)) {
            err = REG_EDECODE;
            break;
        }
        while (s && chunk_next(chunk, clen, false, s, &at, &e))
            last = e;
        if (s && !last.suffix) continue;
        memcpy(key, k, n < cap ? n : cap);
        if (s && n < cap) memcpy((char *)key + n, last.suffix, n + s <= cap ? s : cap - n);
        *len = n + s;
        err = 0;
    }
    char *errptr = NULL;
    rocksdb_iter_get_error(it, &errptr);
    if (errptr) {
        free(errptr);
        err = REG_ESTORE;
    }
    rocksdb_iter_destroy(it);
    return err;
}

/* The next entry of a chunked family's iterator (view_iter_next). */
static int chunks_next(view_iter *vi, const char **key, size_t *klen, const char **val,
                       size_t *vlen)
{
    for (;;) {
        chunk_entry e;
        while (vi->chunk && chunk_next(vi->chunk, vi->chunk_len, false, vi->suffix, &vi->at, &e)) {
            memcpy(vi->key + vi->chunk_klen, e.suffix, vi->suffix);
            size_t n = vi->chunk_klen + vi->suffix;
            if (n < vi->plen || memcmp(vi->key, vi->prefix, vi->plen)) continue;
            if (vi->start) {
                int c = memcmp(vi->key, vi->start, n < vi->slen ? n : vi->slen);
                if (c < 0 || (c == 0 && n < vi->slen)) continue;
            }
            *key = vi->key;
            *klen = n;
            *val = e.vlen ? e.val : "";
            *vlen = e.vlen;
            return 1;
        }
        vi->chunk = NULL;
        if (vi->started) rocksdb_iter_next(vi->it);
        vi->started = 1;
        if (!rocksdb_iter_valid(vi->it)) return 0;
        size_t ck_len = 0, len = 0, s = 0;
        const char *ck = rocksdb_iter_key(vi->it, &ck_len);
        const char *chunk = rocksdb_iter_value(vi->it, &len);
        if (chunk_count(chunk, len, false, &s) < 0 || s != vi->suffix || ck_len > REG_KEY_MAX) {
            fprintf(stderr, "view: a chunked family's value is not a chunk; passed over\n");
            continue;
        }
        memcpy(vi->key, ck, ck_len);
        vi->chunk_klen = ck_len;
        vi->chunk = chunk;
        vi->chunk_len = len;
        vi->at = CHUNK_HEADER;
    }
}

int view_iter_next(view_iter *vi, const char **key, size_t *klen, const char **val, size_t *vlen)
{
    if (vi->suffix) return chunks_next(vi, key, klen, val, vlen);
    if (vi->started) rocksdb_iter_next(vi->it);
    vi->started = 1;
    if (!rocksdb_iter_valid(vi->it)) return 0;
    *key = rocksdb_iter_key(vi->it, klen);
    *val = rocksdb_iter_value(vi->it, vlen);
    return 1;
}

void view_iter_free(view_iter *vi)
{
    if (!vi) return;
    rocksdb_iter_destroy(vi->it);
    rocksdb_readoptions_destroy(vi->ro);
    free(vi->upper);
    free(vi->prefix);
    free(vi->start);
    free(vi->key);
    free(vi);
}

/* The key's hash (keys.h) folded to 32 bits, the family mixed in. */
static uint32_t overlay_hash(view_cf cf, const void *key, size_t klen)
{
    uint64_t h = key_bytes_hash((uint64_t)cf << 32 | klen, key, klen);
    return (uint32_t)(h ^ h >> 32);
}

/* The index slot of the key: the one naming its entry, or the empty one where it goes. */
static uint64_t *overlay_slot(const view_txn *t, view_cf cf, const void *key, size_t klen,
                              uint32_t h)
{
    size_t mask = t->tab.cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint64_t *slot = &t->tab.index[i];
        if (!*slot) return slot;
        if ((uint32_t)(*slot >> 32) != h) continue;
        const struct overlay_entry *e = &t->tab.entries[(uint32_t)*slot - 1];
        if (e->cf == cf && e->klen == klen && !memcmp(e->data, key, klen)) return slot;
    }
}

/* The key's entry in t, or NULL. */
static struct overlay_entry *overlay_find(const view_txn *t, view_cf cf, const void *key,
                                          size_t klen, uint32_t h)
{
    uint64_t slot = *overlay_slot(t, cf, key, klen, h);
    return slot ? &t->tab.entries[(uint32_t)slot - 1] : NULL;
}

/* n bytes for an entry, from the transaction's chunks. NULL when out of memory. */
static char *txn_alloc(view_txn *t, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    struct arena_chunk *c = t->chunks;
    if (!c || c->size - c->used < n) {
        c = NULL;
        if (n <= ARENA_CHUNK / 4) {
            pthread_mutex_lock(&t->v->spare_mu);
            if ((c = t->v->spare_chunks)) {
                t->v->spare_chunks = c->next;
                t->v->nspare_chunks--;
            }
            pthread_mutex_unlock(&t->v->spare_mu);
        }
        size_t size = n <= ARENA_CHUNK / 4 ? ARENA_CHUNK : n;
        if (!c && !(c = malloc(sizeof *c + size))) return NULL;
        c->size = size;
        c->used = 0;
        c->next = t->chunks;
        t->chunks = c;
    }
    char *p = c->data + c->used;
    c->used += n;
    return p;
}

/* A new transaction's table, as large as the largest a transaction needed (as the next batch
 * will likely need), a spare of that size when there is one. */
static int table_new(view *v, struct overlay_table *out)
{
    *out = (struct overlay_table){0};
    pthread_mutex_lock(&v->spare_mu);
    size_t cap = v->index_hint > 1024 ? v->index_hint : 1024;
    size_t entries_cap = v->entries_hint > 512 ? v->entries_hint : 512;
    for (int i = 0; i < 2 && !out->cap; i++)
        if (v->spare_tables[i].cap == cap && v->spare_tables[i].entries_cap == entries_cap) {
            *out = v->spare_tables[i];
            v->spare_tables[i] = (struct overlay_table){0};
        }
    pthread_mutex_unlock(&v->spare_mu);
    if (out->cap) {
        memset(out->index, 0, cap * sizeof *out->index);
        return 0;
    }
    out->index = calloc(cap, sizeof *out->index);
    out->entries = malloc(entries_cap * sizeof *out->entries);
    out->cap = cap;
    out->entries_cap = entries_cap;
    if (out->index && out->entries) return 0;
    table_release(out);
    return REG_ENOMEM;
}

/* Keeps a freed table as a spare in place of an empty or smaller one. */
static void table_free(view *v, struct overlay_table *tab)
{
    pthread_mutex_lock(&v->spare_mu);
    struct overlay_table *spare = v->spare_tables;
    size_t size0 = spare[0].cap + spare[0].entries_cap, size1 = spare[1].cap + spare[1].entries_cap;
    int i = !spare[0].cap ? 0 : !spare[1].cap ? 1 : size0 <= size1 ? 0 : 1;
    if (spare[i].cap + spare[i].entries_cap < tab->cap + tab->entries_cap) {
        struct overlay_table old = spare[i];
        spare[i] = *tab;
        *tab = old;
    }
    pthread_mutex_unlock(&v->spare_mu);
    table_release(tab);
}

/* Doubles t's index, placing its entries again. */
static int index_grow(view_txn *t)
{
    size_t cap = t->tab.cap * 2;
    uint64_t *index = calloc(cap, sizeof *index);
    if (!index) return REG_ENOMEM;
    free(t->tab.index);
    t->tab.index = index;
    t->tab.cap = cap;
    for (size_t i = 0; i < t->used; i++) {
        const struct overlay_entry *e = &t->tab.entries[i];
        if (INDEX_FAMILIES & 1u << e->cf) continue; /* not in the index (overlay_set) */
        *overlay_slot(t, (view_cf)e->cf, e->data, e->klen, e->hash) =
            (uint64_t)e->hash << 32 | (i + 1);
    }
    pthread_mutex_lock(&t->v->spare_mu);
    if (cap > t->v->index_hint) t->v->index_hint = cap;
    pthread_mutex_unlock(&t->v->spare_mu);
    return 0;
}

/* Doubles the room for t's entries. Moves them: pointers to them are stale after it. */
static int entries_grow(view_txn *t)
{
    size_t cap = t->tab.entries_cap * 2;
    struct overlay_entry *entries = realloc(t->tab.entries, cap * sizeof *entries);
    if (!entries) return REG_ENOMEM;
    t->tab.entries = entries;
    t->tab.entries_cap = cap;
    pthread_mutex_lock(&t->v->spare_mu);
    if (cap > t->v->entries_hint) t->v->entries_hint = cap;
    pthread_mutex_unlock(&t->v->spare_mu);
    return 0;
}

static void entry_release(struct overlay_entry *e)
{
    if (e->obj) e->codec->release(e->obj);
    e->obj = NULL;
    e->codec = NULL;
}

/* The view's key filter when it is cf's, else NULL. */
static view_filter *filter_of(const view *v, view_cf cf)
{
    return v->key_filter && cf == v->key_filter_cf ? v->key_filter : NULL;
}

/* The entry for the key, set to `state` with the value's bytes (val/vlen) or none; NULL when out
 * of memory. */
static struct overlay_entry *overlay_set(view_txn *t, view_cf cf, const void *key, size_t klen,
                                         const void *val, size_t vlen, enum entry_state state)
{
    /* An index family's write is only appended: nothing reads it back, and the commit writes a
     * key's writes in the order they were made, so the last one wins (view_batch.c). Finding
     * its slot was most of putting an index entry, a cache miss; and an index sized for them too
     * was three times the size, its slots missing the cache on nearly every other put. */
    bool indexed = !(INDEX_FAMILIES & 1u << cf);
    if (indexed && (t->indexed + 1) * 2 > t->tab.cap && index_grow(t)) return NULL;
    if (t->used == t->tab.entries_cap && entries_grow(t)) return NULL;
    uint32_t h = indexed ? overlay_hash(cf, key, klen) : 0;
    uint64_t *slot = indexed ? overlay_slot(t, cf, key, klen, h) : NULL;
    char *data = txn_alloc(t, klen + vlen + 1);
    if (!data) return NULL;
    memcpy(data, key, klen);
    if (vlen) memcpy(data + klen, val, vlen);
    struct overlay_entry *e;
    if (!slot) {
        e = &t->tab.entries[t->used++];
    } else if (*slot) {
        e = &t->tab.entries[(uint32_t)*slot - 1];
        entry_release(e);
    } else {
        *slot = (uint64_t)h << 32 | (t->used + 1);
        e = &t->tab.entries[t->used++];
        t->indexed++;
    }
    view_filter *filter = filter_of(t->v, cf);
    if (state == ENTRY_PUT && filter) view_filter_add(filter, key, klen);
    *e = (struct overlay_entry){.hash = h,
                                .cf = (uint8_t)cf,
                                .state = (uint8_t)state,
                                .encoded = state == ENTRY_PUT && val,
                                .klen = (uint32_t)klen,
                                .vlen = (uint32_t)vlen,
                                .data = data};
    return e;
}

/* Makes an ENTRY_PUT entry written decoded hold its bytes too. */
static int entry_encode(view_txn *t, struct overlay_entry *e)
{
    if (e->state != ENTRY_PUT || e->encoded) return 0;
    size_t len = 0;
    char *bytes = e->codec->encode(e->obj, &len);
    char *data = bytes ? txn_alloc(t, e->klen + len + 1) : NULL;
    if (!data) {
        free(bytes);
        return REG_ENOMEM;
    }
    memcpy(data, e->data, e->klen);
    memcpy(data + e->klen, bytes, len);
    free(bytes);
    e->data = data;
    e->vlen = (uint32_t)len;
    e->encoded = 1;
    return 0;
}

/* A new key filter was made: the transactions open now are older than it. */
static void filter_made(view *v)
{
    pthread_mutex_lock(&v->spare_mu);
    v->filter_gen++;
    v->txns_older = v->txns_open;
    pthread_mutex_unlock(&v->spare_mu);
}

/* Starts the key filter's scan once no transaction older than it is open (view_filter.h); a
 * no-op for a scan started already. */
static void filter_scan_when_due(view *v)
{
    pthread_mutex_lock(&v->spare_mu);
    bool older = v->txns_older != 0;
    pthread_mutex_unlock(&v->spare_mu);
    if (!older && v->key_filter) view_filter_scan(v->key_filter);
}

void view_txn_expect(const view_txn *t, view_cf cf, const void *key, size_t klen)
{
    if (INDEX_FAMILIES & 1u << cf) return; /* not in the index (overlay_set) */
    uint32_t h = overlay_hash(cf, key, klen);
    for (const view_txn *x = t; x; x = x->base)
        __builtin_prefetch(&x->tab.index[h & (x->tab.cap - 1)]);
    const view_filter *filter = filter_of(t->v, cf);
    if (filter) view_filter_prefetch(filter, key, klen);
}

view_txn *view_txn_begin(view *v, view_txn *base)
{
    view_txn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->v = v;
    t->base = base;
    if (table_new(v, &t->tab)) {
        free(t);
        return NULL;
    }
    /* The key filter: made again when full, and its scan started once no older transaction is
     * open. */
    if (v->key_filter && view_filter_maintain(v->key_filter)) filter_made(v);
    filter_scan_when_due(v);
    pthread_mutex_lock(&v->spare_mu);
    t->filter_gen = v->filter_gen;
    v->txns_open++;
    pthread_mutex_unlock(&v->spare_mu);
    return t;
}

/* Keeps a committed value read through t in t's overlay (an ENTRY_READ entry with bytes), so that
 * reading it again in the batch (a shadow update reads its device record when deciding and when
 * applying) is not another RocksDB lookup. The committed value cannot change under t: only t's
 * base, which was looked at first, is written meanwhile. */
static void cache_committed(view_txn *t, view_cf cf, const void *key, size_t klen, const char *val,
                            size_t vlen)
{
    struct overlay_entry *e = overlay_find(t, cf, key, klen, overlay_hash(cf, key, klen));
    if (!e) {
        if ((e = overlay_set(t, cf, key, klen, val, vlen, ENTRY_READ))) e->encoded = 1;
        return;
    }
    if (e->state != ENTRY_READ || e->encoded) return;
    char *data = txn_alloc(t, klen + vlen + 1); /* a decoded-only entry gets its bytes */
    if (!data) return;
    memcpy(data, e->data, klen);
    memcpy(data + klen, val, vlen);
    e->data = data;
    e->vlen = (uint32_t)vlen;
    e->encoded = 1;
}

int view_txn_get(view_txn *t, view_cf cf, const void *key, size_t klen, char **val, size_t *len)
{
    if (INDEX_FAMILIES & 1u << cf) return REG_EINVAL;
    uint32_t h = overlay_hash(cf, key, klen);
    struct overlay_entry *e = overlay_find(t, cf, key, klen, h);
    if (e && e->state == ENTRY_READ && e->encoded) { /* read before, committed */
        if (!(*val = copy_bytes(e->data + e->klen, e->vlen))) return REG_ENOMEM;
        if (len) *len = e->vlen;
        return 0;
    }
    bool from_base = false;
    if ((!e || e->state == ENTRY_READ) && t->base) {
        struct overlay_entry *b = overlay_find(t->base, cf, key, klen, h);
        if (b && b->state != ENTRY_READ) { /* sealed: every value has its bytes */
            e = b;
            from_base = true;
        }
    }
    if (!from_base && (!e || e->state == ENTRY_READ)) {
        const view_filter *filter = filter_of(t->v, cf);
        if (!e && filter && view_filter_absent(filter, key, klen)) return REG_ENOTFOUND;
        size_t n = 0;
        int err = view_get(t->v, cf, key, klen, val, &n);
        if (!err) cache_committed(t, cf, key, klen, *val, n);
        if (!err && len) *len = n;
        return err;
    }
    if (e->state == ENTRY_DELETE) return REG_ENOTFOUND;
    if (entry_encode(t, e)) return REG_ENOMEM;
    if (!(*val = copy_bytes(e->data + e->klen, e->vlen))) return REG_ENOMEM;
    if (len) *len = e->vlen;
    return 0;
}

int view_txn_prefetch(view_txn *t, view_cf cf, const void *const *keys, const size_t *klens,
                      size_t n)
{
    if ((INDEX_FAMILIES & 1u << cf) || chunk_suffix[cf]) return REG_EINVAL;
    const char **want = malloc((n ? n : 1) * sizeof *want);
    size_t *want_lens = malloc((n ? n : 1) * sizeof *want_lens), m = 0;
    rocksdb_pinnableslice_t **vals = malloc((n ? n : 1) * sizeof *vals);
    char **errs = malloc((n ? n : 1) * sizeof *errs);
    int err = want && want_lens && vals && errs ? 0 : REG_ENOMEM;
    for (size_t i = 0; !err && i < n; i++) {
        uint32_t h = overlay_hash(cf, keys[i], klens[i]);
        if (overlay_find(t, cf, keys[i], klens[i], h)) continue; /* read or written already */
        if (t->base && overlay_find(t->base, cf, keys[i], klens[i], h)) continue; /* its value */
        want[m] = keys[i];
        want_lens[m++] = klens[i];
    }
    if (!err && m)
        rocksdb_batched_multi_get_cf(t->v->db, t->v->ropts, t->v->cf[cf], m, want, want_lens, vals,
                                     errs, false);
    for (size_t j = 0; !err && j < m; j++) {
        if (errs[j]) { /* left to the read that needs it, which reports it */
            free(errs[j]);
        } else if (vals[j]) {
            size_t len = 0;
            const char *val = rocksdb_pinnableslice_value(vals[j], &len);
            cache_committed(t, cf, want[j], want_lens[j], val, len);
        }
        if (vals[j]) rocksdb_pinnableslice_destroy(vals[j]);
    }
    free(want);
    free(want_lens);
    free(vals);
    free(errs);
    return err;
}

void view_txn_put(view_txn *t, view_cf cf, const void *key, size_t klen, const void *val,
                  size_t vlen)
{
    overlay_set(t, cf, key, klen, val ? val : "", vlen, ENTRY_PUT);
}

void view_txn_delete(view_txn *t, view_cf cf, const void *key, size_t klen)
{
    overlay_set(t, cf, key, klen, NULL, 0, ENTRY_DELETE);
}

/* ---- the record cache (v->rc_mu held) ---- */

static struct rc_entry **rc_slot(view *v, view_cf cf, const void *key, size_t klen, uint32_t h)
{
    struct rc_entry **pp = &v->rc_buckets[h & (v->rc_nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || (*pp)->cf != cf || (*pp)->klen != klen ||
                   memcmp((*pp)->key, key, klen)))
        pp = &(*pp)->hash_next;
    return pp;
}

static void rc_unlink(view *v, struct rc_entry *r)
{
    if (r->newer)
        r->newer->older = r->older;
    else
        v->rc_newest = r->older;
    if (r->older)
        r->older->newer = r->newer;
    else
        v->rc_oldest = r->newer;
    r->newer = r->older = NULL;
}

static void rc_push_newest(view *v, struct rc_entry *r)
{
    r->newer = NULL;
    r->older = v->rc_newest;
    if (v->rc_newest) v->rc_newest->newer = r;
    v->rc_newest = r;
    if (!v->rc_oldest) v->rc_oldest = r;
}

static void rc_remove(view *v, struct rc_entry **slot)
{
    struct rc_entry *r = *slot;
    *slot = r->hash_next;
    rc_unlink(v, r);
    r->codec->release(r->obj);
    free(r);
    v->rc_count--;
}

/* Sets (obj: a reference, taken) or forgets (obj NULL) the cached value of a key. */
static void rc_set(view *v, view_cf cf, const void *key, size_t klen, uint32_t h,
                   const view_codec *codec, void *obj)
{
    struct rc_entry **slot = rc_slot(v, cf, key, klen, h);
    if (*slot) rc_remove(v, slot);
    if (!obj) return;
    struct rc_entry *r = malloc(sizeof *r + klen);
    if (!r) {
        codec->release(obj);
        return;
    }
    *r = (struct rc_entry){
        .hash = h, .cf = (uint8_t)cf, .klen = (uint32_t)klen, .obj = obj, .codec = codec};
    memcpy(r->key, key, klen);
    slot = rc_slot(v, cf, key, klen, h);
    r->hash_next = *slot;
    *slot = r;
    rc_push_newest(v, r);
    if (++v->rc_count > v->rc_max) {
        struct rc_entry *old = v->rc_oldest;
        rc_remove(v, rc_slot(v, (view_cf)old->cf, old->key, old->klen, old->hash));
    }
}

int view_set_key_filter(view *v, view_cf cf, size_t max_bytes)
{
    if (v->mode == VIEW_SECONDARY || (INDEX_FAMILIES & 1u << cf) || chunk_suffix[cf])
        return REG_EINVAL;
    view_filter_close(v->key_filter);
    v->key_filter = NULL;
    v->key_filter_cf = cf;
    if (!max_bytes) return 0;
    v->key_filter = view_filter_open(v->db, v->cf[cf], max_bytes);
    if (!v->key_filter) return REG_ENOMEM;
    filter_made(v);
    filter_scan_when_due(v);
    return 0;
}

bool view_key_filter_ready(const view *v)
{
    return v->key_filter && view_filter_ready(v->key_filter);
}

void view_set_record_cache(view *v, unsigned cf_mask, size_t max_entries)
{
    pthread_mutex_lock(&v->rc_mu);
    while (v->rc_oldest) {
        struct rc_entry *old = v->rc_oldest;
        rc_remove(v, rc_slot(v, (view_cf)old->cf, old->key, old->klen, old->hash));
    }
    free(v->rc_buckets);
    v->rc_buckets = NULL;
    v->rc_cf_mask = 0;
    v->rc_max = v->rc_nbuckets = 0;
    size_t n = 1024;
    while (n < max_entries)
        n *= 2;
    if (cf_mask && max_entries && (v->rc_buckets = calloc(n, sizeof *v->rc_buckets))) {
        v->rc_cf_mask = cf_mask;
        v->rc_max = max_entries;
        v->rc_nbuckets = n;
    }
    pthread_mutex_unlock(&v->rc_mu);
}

/* A reference to a decoded value of a key t has not written, or NULL: the one t's base (being
 * committed) wrote, else the record cache's. *absent when the base deleted the key. */
static void *decoded_elsewhere(view_txn *t, view_cf cf, const void *key, size_t klen, uint32_t h,
                               const view_codec *codec, bool *absent)
{
    *absent = false;
    if (!codec->retain) return NULL;
    if (t->base) {
        struct overlay_entry *b = overlay_find(t->base, cf, key, klen, h);
        if (b && b->state != ENTRY_READ) {
            *absent = b->state == ENTRY_DELETE;
            return b->obj && b->codec == codec ? codec->retain(b->obj) : NULL;
        }
    }
    view *v = t->v;
    void *obj = NULL;
    if (!(v->rc_cf_mask & 1u << cf)) return NULL;
    pthread_mutex_lock(&v->rc_mu);
    struct rc_entry *r = v->rc_buckets ? *rc_slot(v, cf, key, klen, h) : NULL;
    if (r && r->codec == codec) {
        obj = codec->retain(r->obj);
        rc_unlink(v, r);
        rc_push_newest(v, r);
    }
    pthread_mutex_unlock(&v->rc_mu);
    return obj;
}

/* Brings the record cache up to what t wrote (t was just written to RocksDB). */
static void rc_commit(view_txn *t)
{
    view *v = t->v;
    if (!v->rc_cf_mask) return;
    pthread_mutex_lock(&v->rc_mu);
    for (size_t i = 0; i < t->used && v->rc_buckets; i++) {
        struct overlay_entry *e = &t->tab.entries[i];
        if (e->state == ENTRY_READ || !(v->rc_cf_mask & 1u << e->cf)) continue;
        void *obj =
            e->state == ENTRY_PUT && e->obj && e->codec->retain ? e->codec->retain(e->obj) : NULL;
        rc_set(v, (view_cf)e->cf, e->data, e->klen, e->hash, e->obj ? e->codec : NULL, obj);
    }
    pthread_mutex_unlock(&v->rc_mu);
}

int view_txn_get_decoded(view_txn *t, view_cf cf, const void *key, size_t klen,
                         const view_codec *codec, const void **obj)
{
    if (INDEX_FAMILIES & 1u << cf) return REG_EINVAL;
    uint32_t h = overlay_hash(cf, key, klen);
    struct overlay_entry *e = overlay_find(t, cf, key, klen, h);
    if (e && e->state == ENTRY_DELETE) return REG_ENOTFOUND;
    if (e && e->obj && e->codec == codec) {
        *obj = e->obj;
        return 0;
    }
    void *decoded = NULL;
    if (!e || e->state == ENTRY_READ) {
        bool absent = false;
        decoded = decoded_elsewhere(t, cf, key, klen, h, codec, &absent);
        if (absent) return REG_ENOTFOUND;
    }
    if (!decoded) {
        char *val = NULL;
        size_t len = 0;
        int err = view_txn_get(t, cf, key, klen, &val, &len);
        if (err) return err;
        decoded = codec->decode(val, len);
        free(val);
        if (!decoded) return REG_EDECODE;
    }
    e = overlay_find(t, cf, key, klen, h); /* the read may have grown t */
    if (!e) {                              /* first touch: remember the decoded committed value */
        e = overlay_set(t, cf, key, klen, NULL, 0, ENTRY_READ);
        if (!e) {
            codec->release(decoded);
            return REG_ENOMEM;
        }
    }
    entry_release(e); /* a form by another codec; the bytes stay */
    e->obj = decoded;
    e->codec = codec;
    *obj = decoded;
    return 0;
}

void view_txn_put_decoded(view_txn *t, view_cf cf, const void *key, size_t klen,
                          const view_codec *codec, void *obj)
{
    struct overlay_entry *e = overlay_set(t, cf, key, klen, NULL, 0, ENTRY_PUT);
    if (!e) {
        codec->release(obj);
        return;
    }
    e->obj = obj;
    e->codec = codec;
}

static void txn_free(view_txn *t)
{
    for (size_t i = 0; i < t->used; i++)
        entry_release(&t->tab.entries[i]);
    table_free(t->v, &t->tab);
    view *v = t->v;
    struct arena_chunk *unkept = NULL;
    pthread_mutex_lock(&v->spare_mu);
    v->txns_open--;
    if (t->filter_gen != v->filter_gen) v->txns_older--;
    for (struct arena_chunk *c = t->chunks, *next; c; c = next) {
        next = c->next;
        if (c->size == ARENA_CHUNK && v->nspare_chunks < SPARE_CHUNKS_MAX) {
            c->next = v->spare_chunks;
            v->spare_chunks = c;
            v->nspare_chunks++;
        } else {
            c->next = unkept;
            unkept = c;
        }
    }
    pthread_mutex_unlock(&v->spare_mu);
    for (struct arena_chunk *c = unkept, *next; c; c = next) { /* freed outside the lock */
        next = c->next;
        free(c);
    }
    free(t);
}

int view_txn_seal(view_txn *t)
{
    for (size_t i = 0; i < t->used; i++)
        if (entry_encode(t, &t->tab.entries[i])) return REG_ENOMEM;
    return 0;
}

void view_txn_drop_base(view_txn *t)
{
    t->base = NULL;
}

int view_txn_write(view_txn *t, const view_meta_value *meta, size_t nmeta)
{
    if (view_txn_seal(t)) return REG_ENOMEM; /* a no-op when sealed already */
    view_write *w = malloc((t->used ? t->used : 1) * sizeof *w);
    if (!w) return REG_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < t->used; i++) { /* in the order written: the later write wins */
        const struct overlay_entry *e = &t->tab.entries[i];
        if (e->state != ENTRY_READ)
            w[n++] = (view_write){e->cf,   e->state == ENTRY_DELETE, e->klen, e->vlen,
                                  e->data, e->data + e->klen};
    }
    rocksdb_writebatch_t *wb = NULL;
    int err = view_batch_build(&t->v->batch_target, w, n, meta, nmeta, &wb);
    free(w);
    if (err) return err;
    char *errptr = NULL;
    rocksdb_write(t->v->db, t->v->wopts, wb, &errptr);
    rocksdb_writebatch_destroy(wb);
    if (errptr) {
        fprintf(stderr, "view: commit failed: %s\n", errptr);
        free(errptr);
        return REG_ESTORE;
    }
    rc_commit(t);
    return 0;
}

void view_txn_free(view_txn *t)
{
    if (t) txn_free(t);
}

int64_t view_meta_get(view *v, const char *name, int64_t dflt)
{
    char *val = NULL;
    size_t len = 0;
    if (view_get(v, VIEW_META, name, strlen(name), &val, &len) != 0) return dflt;
    int64_t out = dflt;
    if (len == 8) {
        uint64_t x = 0;
        for (int i = 0; i < 8; i++)
            x = x << 8 | (unsigned char)val[i];
        out = (int64_t)x;
    }
    free(val);
    return out;
}

int64_t view_property(view *v, view_cf cf, const char *name)
{
    uint64_t out = 0;
    if (rocksdb_property_int_cf(v->db, v->cf[cf], name, &out) != 0) return -1;
    return (int64_t)out;
}

int view_src_get(view_src src, view_cf cf, const void *key, size_t klen, char **val, size_t *len)
{
    return src.t ? view_txn_get(src.t, cf, key, klen, val, len)
                 : view_get(src.v, cf, key, klen, val, len);
}
