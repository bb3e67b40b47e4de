/*
 * chunked.h - column families stored in chunks: every entry whose key shares all but its last S
 * bytes lives in one RocksDB value, the chunk, a sorted list of (suffix, value) under the shared
 * part of the key, and a batch changes a chunk with one merge operand (entries to put or
 * delete) that RocksDB folds into it when it reads, flushes or compacts.
 *
 * Why: a RocksDB entry costs a memtable insert, a WAL record, a flush and compactions, whatever
 * its size. The view has two kinds of entries written by the thousand per batch whose keys end
 * in time-ordered ids (UUIDv7: 6 bytes of milliseconds first), so that a batch's entries share
 * their key's front:
 *   - the equality indexes (value, device id) -> "": a chunk per value and 256 ms of
 *     registrations (S = 11): posting lists;
 *   - the commands' outcomes, command id -> outcome: a chunk per millisecond of commands
 *     (S = 10).
 * They were six of a registration's nine keys. The view (view.c) reads and writes them as
 * entries; only its commit and its committed reads know the chunks.
 *
 * Chunk keys must be prefix-free within a family (no chunk key starts another), so that a
 * chunk's entries sort between its key and the next chunk's: the equality indexes' strings hold
 * no 0 byte, the commands' keys all have one length.
 *
 * Formats (bytes; a varint is LEB128 as RocksDB writes them):
 *   chunk    CHUNK_LIST    S  (suffix varint(vlen) value)*       ascending suffixes, each once
 *   operand  CHUNK_OPERAND S  (op suffix varint(vlen) value)*    ascending suffixes, each once;
 *                                                                op CHUNK_PUT or CHUNK_DELETE
 *                                                                (whose value is empty)
 * Neither is ever empty bytes, nor starts like JSON text, so a chunk is told apart from the
 * entries of a view older than chunks (view_open moves those into chunks).
 */
#ifndef REG_CHUNKED_H
#define REG_CHUNKED_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stddef.h>

enum {
    CHUNK_LIST = 1,
    CHUNK_OPERAND = 2,
    CHUNK_DELETE = 0,
    CHUNK_PUT = 1,
    CHUNK_SUFFIX_MAX = 32,
    CHUNK_VALUE_MAX = 1u << 28, /* a varint of at most 4 bytes */
};

/* One entry of a chunk or an operand. */
typedef struct chunk_entry {
    bool put; /* an operand's op; always true in a chunk */
    const char *suffix;
    const char *val;
    size_t vlen;
} chunk_entry;

/* The number of entries of a chunk (operand false) or operand, or -1 when the bytes are not
 * one; *suffix_len gets S. */
long chunk_count(const char *bytes, size_t len, bool operand, size_t *suffix_len);
/* The entry at *at of a chunk or operand already counted (start with *at = 2); false at the
 * end. */
bool chunk_next(const char *bytes, size_t len, bool operand, size_t suffix_len, size_t *at,
                chunk_entry *e);

/* The bytes an operand's header and an entry of it take. */
enum { CHUNK_HEADER = 2 };
static inline size_t chunk_op_size(size_t suffix_len, size_t vlen)
{
    size_t n = 1 + suffix_len + 1 + vlen;
    for (size_t x = vlen; x >= 0x80; x >>= 7)
        n++;
    return n;
}
/* Writes an operand's header or an entry at p; returns the end. */
char *chunk_op_header(char *p, size_t suffix_len);
char *chunk_op_entry(char *p, bool put, const void *suffix, size_t suffix_len, const void *val,
                     size_t vlen);

/* A chunk (existing, NULL for none) with n operands applied in order, in a malloc'd buffer of
 * *len bytes; NULL when a value is malformed (or their S differ) or memory runs out. */
char *chunk_full_merge(const char *existing, size_t existing_len, const char *const *ops,
                       const size_t *op_lens, size_t n, size_t *len);
/* The n operands as one, in a malloc'd buffer of *len bytes (a suffix's last op wins); NULL when
 * an operand is malformed or memory runs out. */
char *chunk_partial_merge(const char *const *ops, const size_t *op_lens, size_t n, size_t *len);

/* RocksDB's merge operator over these formats; the options it is set on own it. */
rocksdb_mergeoperator_t *chunk_merge_operator(void);

#endif
