/*
 * eventlog.h - the log: an append-only, totally ordered sequence of records (one per topic),
 * with two backends behind one interface.
 *
 *  - embedded: a directory of segment files per topic under DATA/log/<topic>/. Appends are
 *    group-committed by the log's writer thread with one write and one fdatasync: an append
 *    whose callback reported success survives kill -9.
 *  - kafka: a topic through librdkafka (idempotent producer, acks=all), keyed by tenant. One
 *    partition per topic, so that a region's commands are one total order (the projector is one
 *    consumer); offsets are that partition's offsets.
 *
 * Positions are offsets: the first record is at 0, appends get increasing offsets. Readers read
 * from an offset (or the first offset at or after a time) and wait for new records.
 */
#ifndef REG_EVENTLOG_H
#define REG_EVENTLOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct elog elog;
typedef struct elog_reader elog_reader;

typedef struct elog_config {
    const char *topic;   /* e.g. "registry.local.commands" */
    const char *dir;     /* embedded: the data directory (the log lives in dir/log/<topic>) */
    const char *brokers; /* kafka: "host:port[,...]"; when set, the kafka backend is used */
    int fsync;           /* embedded: sync appends (default on; tests of speed may turn it off) */
    uint64_t segment_bytes; /* embedded: size at which a segment file is rolled (0: 64 MiB) */
} elog_config;

/* A record as read. Pointers are valid until the next elog_reader_next on the same reader. */
typedef struct elog_record {
    int64_t offset;
    int64_t time_ms;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
} elog_record;

/* Reports the outcome of one append: err 0 and the record's offset, or a REG_E* code (the
 * record was not stored). Runs on the log's own thread (embedded: its writer; kafka: its poller),
 * never on the caller's loop: keep it short and thread-safe (queue the result, wake a loop). */
typedef void (*elog_append_cb)(void *arg, int err, int64_t offset);

/* Opens the log for cfg->topic (creating it when missing). The caller owns *out. 0 or REG_E*. */
int elog_open(const elog_config *cfg, elog **out);

/* Waits for outstanding appends (up to a few seconds) and frees the log. */
void elog_close(elog *log);

/* Queues an append; never blocks on I/O. key and value are copied. cb (may be NULL) is called
 * exactly once. Returns 0, or REG_EAGAIN when the log's bounded queue is full (back-pressure:
 * the caller answers 503 or retries), or REG_ECLOSED. */
int elog_append(elog *log, const void *key, size_t key_len, const void *value, size_t value_len,
                int64_t time_ms, elog_append_cb cb, void *arg);

/* Blocks the calling thread (never a loop thread) until every append queued before the call has
 * been reported. Returns 0 when all succeeded, else the first error seen, or REG_ETIMEOUT. */
int elog_flush(elog *log, int timeout_ms);

/* The offset the next append will get (the high watermark); -1 when unknown. */
int64_t elog_end_offset(elog *log);

/* The first offset whose record's time is >= time_ms (elog_end_offset when none). */
int elog_offset_for_time(elog *log, int64_t time_ms, int64_t *offset);

/* Opens a reader positioned at `offset`. A reader belongs to one thread. The caller owns *out. */
int elog_reader_open(elog *log, int64_t offset, elog_reader **out);

/* Reads up to max records in order, waiting up to timeout_ms for the first one. Returns the
 * number read (0 on timeout) or a REG_E* code. */
int elog_reader_next(elog_reader *rd, elog_record *recs, int max, int timeout_ms);

void elog_reader_close(elog_reader *rd);

#endif
