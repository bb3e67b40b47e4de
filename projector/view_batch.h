/*
 * view_batch.h - private to the view (view.c): a transaction's writes made one RocksDB write
 * batch, in key order, the chunked families' entries gathered into one merge operand per chunk
 * (chunked.h), encoded in RocksDB's own batch format.
 */
#ifndef REG_VIEW_BATCH_H
#define REG_VIEW_BATCH_H

#include "projector/view.h"

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stdint.h>

/* One write of a transaction: a put of val (vlen bytes) or a deletion. */
typedef struct view_write {
    uint8_t cf; /* view_cf */
    bool del;
    uint32_t klen, vlen;
    const char *key, *val;
} view_write;

/* Where a batch goes: the view's families, their ids, the length of each chunked family's key
 * suffix (0: not chunked), and whether the batch is encoded here (view_batch_encoding_checks)
 * or through RocksDB's calls. */
typedef struct view_batch_target {
    rocksdb_column_family_handle_t *const *cf;
    const uint32_t *cf_id;
    const uint8_t *chunk_suffix;
    bool own_encoding;
} view_batch_target;

/* v as 8 big-endian bytes at p (the meta values' form). */
static inline void view_put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* True when this RocksDB encodes a sample batch as view_batch does: view_open sets
 * own_encoding from it (should a RocksDB version ever differ, batches are built with put_cf). */
bool view_batch_encoding_checks(const view_batch_target *to);

/* The batch of the n writes (in the order they were made: of a key written twice, the later
 * wins) and the meta values (8-byte big-endian integers in VIEW_META), in *out (the caller
 * destroys it). 0, REG_ENOMEM, or REG_EINVAL when a chunked family's key is shorter than its
 * suffix or its value too long for a chunk. */
int view_batch_build(const view_batch_target *to, const view_write *w, size_t n,
                     const view_meta_value *meta, size_t nmeta, rocksdb_writebatch_t **out);

#endif
