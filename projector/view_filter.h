/*
 * view_filter.h - private to the view (view.c): a filter of one column family's keys
 * (keyfilter.h) that the view's transactions consult before asking RocksDB for a key, so that a
 * lookup of a key the family surely lacks costs one cache line.
 *
 * It is filled twice over: the view adds every key its transactions put in the family from the
 * moment it is made, and a thread of its own then scans the keys the family holds, started once
 * the transactions begun before it was made are done (so that every key is in one or the
 * other). Until the scan is done it answers nothing. When more keys were added than it has room
 * for, the next transaction makes it again twice the size, up to a bound in bytes; beyond that,
 * there is no filter and every lookup goes to RocksDB.
 *
 * Threads: one thread writes the view (adds, lookups, view_filter_maintain); the scan runs
 * beside it.
 */
#ifndef REG_VIEW_FILTER_H
#define REG_VIEW_FILTER_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct view_filter view_filter;

/* A filter of cf's keys in db (both borrowed: they must outlive it) of at most max_bytes, to
 * which keys put from now on are to be added; NULL when out of memory. The caller owns it
 * (view_filter_close), and starts its scan (view_filter_scan) once every key put before it was
 * made is committed or abandoned: the scan must see them. */
view_filter *view_filter_open(rocksdb_t *db, rocksdb_column_family_handle_t *cf, size_t max_bytes);
/* Starts the scan of the family's keys; the filter answers once it is done. A no-op once
 * started, and for a filter outgrown. */
void view_filter_scan(view_filter *vf);
/* Stops the scan and frees the filter. */
void view_filter_close(view_filter *vf);
/* True when the key is surely not in the family. */
bool view_filter_absent(const view_filter *vf, const void *key, size_t klen);
/* A key put in the family. */
void view_filter_add(view_filter *vf, const void *key, size_t klen);
void view_filter_prefetch(const view_filter *vf, const void *key, size_t klen);
/* Makes the filter again, larger, when it is full: true when it did, and then it wants its scan
 * (view_filter_scan) as a new one does. */
bool view_filter_maintain(view_filter *vf);
/* Whether it answers: filled, and not outgrown. */
bool view_filter_ready(const view_filter *vf);

#endif
