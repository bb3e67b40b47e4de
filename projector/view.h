/*
 * view.h - the registry's current state in RocksDB: one column family per entity and per index,
 * every key prefixed by the tenant's 16-byte id so that a tenant's data is one key range.
 *
 * Only the projector writes (through a view_txn: a write batch whose reads see its own pending
 * writes, committed in one atomic write together with the consumed log offsets). Everyone else
 * reads: in the same process, or from another process as a RocksDB secondary instance that
 * catches up with the primary (view_catch_up).
 *
 * Key layouts (T = tenant id, D = device id, both 16 raw bytes; strings are raw bytes, and a 0
 * byte ends a string that is followed by more key):
 *   tenants      T                      -> tenant JSON
 *   tokens       'h' sha256(token)      -> {token_id, tenant_id, role, name}
 *                'i' T token_id(16)     -> sha256(token) (32 bytes)
 *   devices      T D                    -> device JSON (with its metadata)
 *   serials      T serial               -> D
 *   idx_meta     T key 0 value 0 D      -> ""  (chunked)
 *   idx_attr     T device_type 0 status 0 D -> ""  (chunked)
 *   idx_status   T status 0 D           -> ""  (chunked)
 *   idx_firmware T firmware 0 D         -> ""  (chunked)
 *   idx_lastseen T be64(last_seen_ms) D -> ""
 *   commands     command_id(16)         -> outcome JSON (recognises a re-sent command) (chunked)
 *   cas          'f' T ca_id(16)        -> factory CA JSON {ca_id, subject, fingerprint, not_after,
 *                                          pem, created_at}
 *                'i' T                  -> the tenant's issuing CA certificate (PEM)
 *   manifests    T serial               -> {manifest_id, device_type, hardware_revision}
 *   claims       'h' sha256(token)      -> {tenant_id, claim_id}
 *                'c' T claim_id(16)     -> claim JSON {claim_id, device_type, max_uses, uses,
 *                                          expires_at, ...}
 *   certs        'f' sha256(cert DER)   -> certificate status JSON (what authentication needs:
 *                                          tenant, device, cert_id, validity, overlap end,
 *                                          revocation)
 *                'c' T cert_id(16)      -> sha256(cert DER) (32 bytes)
 *                'p' T cert_id(16)      -> the certificate (PEM)
 *                'r' T cert_id(16)      -> {serial_hex, revoked_ms} (the tenant's CRL entries)
 *   cert_expiry  be64(not_after_ms) T cert_id(16) -> "" (certificates not yet marked due for
 *                                          rotation; the rotation scheduler walks it in order)
 *   shadows      T D                    -> shadow JSON {desired, reported, metadata: {desired,
 *                                          reported}, version, last_updated_ms} (common/shadow.h)
 *   meta         name                   -> value (consumed offsets; the view's format)
 *
 * The families marked "chunked" are stored in chunks (projector/chunked.h: the equality indexes
 * as posting lists, one per indexed value and 256 ms of device ids; the outcomes one chunk per
 * millisecond of command ids), but read and written as the entries above: puts and deletes
 * through a transaction, view_get, view_last_key and iterators give entries, never chunks.
 */
#ifndef REG_VIEW_H
#define REG_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum view_cf {
    VIEW_META,
    VIEW_TENANTS,
    VIEW_TOKENS,
    VIEW_DEVICES,
    VIEW_SERIALS,
    VIEW_IDX_META,
    VIEW_IDX_ATTR,
    VIEW_IDX_STATUS,
    VIEW_IDX_FIRMWARE,
    VIEW_IDX_LASTSEEN,
    VIEW_COMMANDS,
    VIEW_CAS,
    VIEW_MANIFESTS,
    VIEW_CLAIMS,
    VIEW_CERTS,
    VIEW_CERT_EXPIRY,
    VIEW_SHADOWS,
    VIEW_CF_COUNT
} view_cf;

typedef struct view view;
typedef struct view_txn view_txn;
typedef struct view_iter view_iter;

/* How a process opens the view:
 * - VIEW_PRIMARY writes it, and secondaries in other processes follow its writes through
 *   RocksDB's write-ahead log (the distributed deployment's projector).
 * - VIEW_PRIMARY_UNLOGGED writes it without that log, for a view no other process reads
 *   (`registry serve` on the embedded logs): the commands and events logs are the durable
 *   record, so the view's own log only repeated them (a fifth of the committing thread). The
 *   families are flushed together (RocksDB's atomic flush), so after a crash the view is as it
 *   was at one commit, its consumed offsets included, and the projector decides again what came
 *   after (the events it finds already in the events log are not appended twice). Closing the
 *   view flushes it. It is marked so (view_is_unlogged) for a secondary to refuse.
 * - VIEW_SECONDARY reads a primary's files. */
enum view_mode { VIEW_PRIMARY, VIEW_PRIMARY_UNLOGGED, VIEW_SECONDARY };

/* Opens the view in DIR/view (a primary creates it). A secondary opens the primary's files
 * read-only, keeping its own info log in DIR/view-secondary-<pid>. cache_mb sizes this
 * process's block cache (0: VIEW_CACHE_MB_DEFAULT); every front end has its own. The caller owns
 * *out. */
enum { VIEW_CACHE_MB_DEFAULT = 256 };
int view_open(const char *dir, enum view_mode mode, unsigned cache_mb, view **out);
void view_close(view *v);

/* Turns RocksDB's performance counters off for the calling thread. They are per thread and on
 * by default: every memtable insert and key comparison then reached the thread's counters
 * through __tls_get_addr, ~12% of the committer thread. view_open does it for the thread that
 * opens a view; every other thread that reads or writes one calls this first. */
void view_thread_init(void);

/* Secondary only: makes the primary's latest committed writes visible. Blocks briefly (reads the
 * primary's MANIFEST and WAL tail). */
int view_catch_up(view *v);

/* Reads a committed value. On success *val is malloc'd (the caller frees it) and NUL-terminated
 * beyond *len. REG_ENOTFOUND when absent. */
int view_get(view *v, view_cf cf, const void *key, size_t klen, char **val, size_t *len);

/* Iterates the committed keys that start with prefix, in key order, from `start` (the first key
 * >= start; NULL for the prefix itself). The caller owns the iterator; NULL when out of memory. */
view_iter *view_iter_prefix(view *v, view_cf cf, const void *prefix, size_t plen, const void *start,
                            size_t slen);
/* The greatest committed key of cf: its first cap bytes in key, its length in *len. 0,
 * REG_ENOTFOUND (cf is empty) or REG_ESTORE. */
int view_last_key(view *v, view_cf cf, void *key, size_t cap, size_t *len);

/* Advances to the next entry: 1 and the entry (valid until the next call), or 0 at the end. */
int view_iter_next(view_iter *it, const char **key, size_t *klen, const char **val, size_t *vlen);
void view_iter_free(view_iter *it);

/* Keeps a filter of cf's keys (view_filter.h) of at most max_bytes (0: none), which the view's
 * transactions consult before they look a key up: for a family whose lookups nearly all miss
 * (the serial numbers). Replaces an earlier filter; a primary's only, of a family neither
 * indexed nor chunked (else REG_EINVAL). The transactions must then be used by one thread at a
 * time. 0 or REG_ENOMEM. */
int view_set_key_filter(view *v, view_cf cf, size_t max_bytes);
/* Whether the filter answers yet (its first scan of the family is done). */
bool view_key_filter_ready(const view *v);

/* A transaction of the projector: reads see committed state plus the txn's own writes, and,
 * given a base, the base's writes: base is an earlier transaction, sealed, whose write is under
 * way on another thread (the projector decides its next batch meanwhile). The base must not be
 * freed before view_txn_drop_base, called once its write is done. NULL when out of memory.
 * The index families (VIEW_IDX_*) are write-only in a transaction: reading one through it
 * (view_txn_get, view_txn_get_decoded) is REG_EINVAL. */
view_txn *view_txn_begin(view *v, view_txn *base);
void view_txn_drop_base(view_txn *t);
int view_txn_get(view_txn *t, view_cf cf, const void *key, size_t klen, char **val, size_t *len);
/* Reads the committed values of the n keys of cf that neither t nor its base has touched, in one
 * batched lookup, and keeps them in t as view_txn_get keeps what it reads: a batch's commands
 * then find the records they name without a lookup each (batched, a device record took ~0.8 us
 * against ~1.5 us alone). Keys absent from the view are left to the reads. 0, REG_ENOMEM, or
 * REG_EINVAL for an index or chunked family. */
int view_txn_prefetch(view_txn *t, view_cf cf, const void *const *keys, const size_t *klens,
                      size_t n);
/* A hint that the key will soon be read or written through t: where t and its base would find
 * it is fetched into the cache meanwhile. The overlay's index is a few hundred KiB a batch and
 * each key's slot is a cache miss; asked a few commands ahead, the miss overlaps their work. */
void view_txn_expect(const view_txn *t, view_cf cf, const void *key, size_t klen);
void view_txn_put(view_txn *t, view_cf cf, const void *key, size_t klen, const void *val,
                  size_t vlen);
void view_txn_delete(view_txn *t, view_cf cf, const void *key, size_t klen);
/* A decoded form of stored values (a record's parsed JSON, say), kept by a transaction beside
 * the bytes: a record read and written several times in a batch is decoded once and encoded
 * once, at the commit. */
typedef struct view_codec {
    void *(*decode)(const char *val, size_t len);  /* NULL when val is not one */
    char *(*encode)(const void *obj, size_t *len); /* malloc'd bytes; NULL when out of memory */
    void (*release)(void *obj);
    void *(*retain)(void *obj); /* another reference to obj (objects are shared, never changed,
                                   but by a sole holder that writes it back: record_device_take) */
} view_codec;
/* The value under key in codec's form, decoded at most once per transaction. *obj is borrowed
 * and must not be changed: it stays valid until the transaction writes that key again or
 * ends. 0, REG_ENOTFOUND, REG_EDECODE or REG_E*. */
int view_txn_get_decoded(view_txn *t, view_cf cf, const void *key, size_t klen,
                         const view_codec *codec, const void **obj);
/* Writes obj (taken, and not to be changed after) as the key's value; it is encoded at the
 * commit, or when read as bytes before. */
void view_txn_put_decoded(view_txn *t, view_cf cf, const void *key, size_t klen,
                          const view_codec *codec, void *obj);
/* Keeps, beside the committed view, the decoded values of up to max_entries committed keys of
 * the column families in cf_mask (1 << cf), most recently written or read first: a transaction's
 * view_txn_get_decoded then takes a record written by an earlier batch without reading and
 * decoding it again (a device's shadow, which the device reports many times a second). Only the
 * primary's writer should ask for it; it is kept exact by view_txn_write. 0 turns it off. */
void view_set_record_cache(view *v, unsigned cf_mask, size_t max_entries);

/* Gives every value written decoded its bytes: from then on the txn takes no more writes and
 * view_txn_write does not change it, so another transaction may read through it meanwhile. */
int view_txn_seal(view_txn *t);
/* Meta values written with a transaction's writes (8-byte big-endian integers). */
typedef struct view_meta_value {
    const char *name;
    int64_t value;
} view_meta_value;
/* Writes the txn's writes and the meta values in one atomic write (sealing it first); the txn
 * stays readable until freed. 0, REG_ENOMEM or REG_ESTORE. */
int view_txn_write(view_txn *t, const view_meta_value *meta, size_t nmeta);
/* Frees the txn; what it did not write is dropped. */
void view_txn_free(view_txn *t);

/* A read source: the committed state (t NULL) or a transaction's merged state. Lets code that
 * renders records serve both the query side and the projector. */
typedef struct view_src {
    view *v;
    view_txn *t;
} view_src;

int view_src_get(view_src src, view_cf cf, const void *key, size_t klen, char **val, size_t *len);

/* A meta value; absent reads as `dflt`. */
int64_t view_meta_get(view *v, const char *name, int64_t dflt);

/* The meta values a view is projected to: the offset after the last command it has decided
 * (the projector's), and after the last event it has applied (the projector's and a rebuild's,
 * which `registry verify` compares up to). */
#define VIEW_META_COMMANDS_NEXT "commands.next"
#define VIEW_META_EVENTS_NEXT "events.next"

/* Whether the view's primary, the last one that opened it, writes it VIEW_PRIMARY_UNLOGGED: a
 * secondary then sees only what has been flushed, not the latest commits. */
bool view_is_unlogged(view *v);

/* A RocksDB property of the view (e.g. "rocksdb.estimate-num-keys") for a column family, as a
 * number; -1 when unavailable. */
int64_t view_property(view *v, view_cf cf, const char *name);

#endif
