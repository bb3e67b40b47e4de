/*
 * postings.h - how the view stores its equality indexes (metadata, type and status, status,
 * firmware): as posting lists, one RocksDB entry per indexed value and chunk of device ids, each
 * holding the sorted ids of the devices that have that value, and changed by merge operands (a
 * sorted list of ids to add or remove) that RocksDB folds into the list when it reads, flushes
 * or compacts.
 *
 * Why: an index entry per device and value made five of a registration's eight keys, each a
 * memtable insert, a WAL record, a flush and compactions (a quarter of the projector's CPU). A
 * batch's new devices mostly share their values (a device type, a status, a region), so one
 * operand per value and chunk takes them all.
 *
 * Logically an index entry is still a key that ends with the 16-byte device id (view.h). Its
 * list key is that key without the id's last POSTING_SUFFIX_BYTES: the list holds those last
 * bytes of each id. Device ids are time-ordered (UUIDv7: the first 6 bytes are the time in
 * milliseconds), so the 5 bytes kept in the list key make a chunk of the devices registered in
 * one 256 ms window: a batch's registrations go to one or two chunks per value, and a list
 * stays bounded by the rate devices register at. Ids come out in key order: lists sort by their
 * keys, and the suffixes within a list are sorted.
 *
 * Formats (all bytes; a suffix is POSTING_SUFFIX_BYTES):
 *   list     POSTING_LIST    suffix*             (ascending, each once)
 *   operand  POSTING_OPERAND (op suffix)*        (ascending by suffix, each once; op is
 *                                                 POSTING_ADD or POSTING_REMOVE)
 * A list is never empty bytes, so a stored list cannot be mistaken for the empty value of an
 * older view's entry (view_open converts those).
 */
#ifndef REG_POSTINGS_H
#define REG_POSTINGS_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stddef.h>

enum {
    POSTING_ID_BYTES = 16,
    POSTING_CHUNK_BYTES = 5,
    POSTING_SUFFIX_BYTES = POSTING_ID_BYTES - POSTING_CHUNK_BYTES,
    POSTING_OP_BYTES = 1 + POSTING_SUFFIX_BYTES,
    POSTING_LIST = 1,
    POSTING_OPERAND = 2,
    POSTING_REMOVE = 0,
    POSTING_ADD = 1,
};

/* The bytes a list or an operand of n ids takes. */
static inline size_t postings_list_size(size_t n)
{
    return 1 + n * POSTING_SUFFIX_BYTES;
}
static inline size_t postings_operand_size(size_t n)
{
    return 1 + n * POSTING_OP_BYTES;
}

/* The number of ids in a stored list, or -1 when the bytes are not a list. */
long postings_list_count(const char *val, size_t len);

/* One list (existing, NULL for none) with n operands applied in order, in a malloc'd buffer of
 * *len bytes; NULL when a value is malformed or memory runs out. */
char *postings_full_merge(const char *existing, size_t existing_len, const char *const *ops,
                          const size_t *op_lens, size_t n, size_t *len);
/* The n operands as one, in a malloc'd buffer of *len bytes (an id's last op wins); NULL when an
 * operand is malformed or memory runs out. */
char *postings_partial_merge(const char *const *ops, const size_t *op_lens, size_t n, size_t *len);

/* RocksDB's merge operator over these formats; the options it is set on own it. */
rocksdb_mergeoperator_t *postings_merge_operator(void);

#endif
