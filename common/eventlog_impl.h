/*
 * eventlog_impl.h - what a log backend provides (internal to the eventlog modules).
 *
 * A backend's log and reader structs start with `struct elog` / `struct elog_reader` (their
 * `super`), recovered with a cast; eventlog.c dispatches the public calls through `ops`.
 */
#ifndef REG_EVENTLOG_IMPL_H
#define REG_EVENTLOG_IMPL_H

#include "eventlog.h"

struct elog_ops {
    int (*append)(elog *log, const void *key, size_t key_len, const void *value, size_t value_len,
                  int64_t time_ms, elog_append_cb cb, void *arg);
    int (*flush)(elog *log, int timeout_ms);
    int64_t (*end_offset)(elog *log);
    int (*offset_for_time)(elog *log, int64_t time_ms, int64_t *offset);
    int (*reader_open)(elog *log, int64_t offset, elog_reader **out);
    int (*reader_next)(elog_reader *rd, elog_record *recs, int max, int timeout_ms);
    void (*reader_close)(elog_reader *rd);
    void (*close)(elog *log);
};

struct elog {
    const struct elog_ops *ops;
};

struct elog_reader {
    const struct elog_ops *ops;
};

int elog_embedded_open(const elog_config *cfg, elog **out);

/* elog_embedded_open without the upgrade: the topic's segment files as they are. */
int elog_segments_open(const elog_config *cfg, elog **out);

/* The embedded topic's directory, DIR/log/<topic>, into out. 0, or REG_EINVAL when too long. */
int elog_embedded_path(const elog_config *cfg, char *out, size_t cap);

/* Brings the embedded topic from the earlier layout, a RocksDB database keyed by offset, into
 * segment files, and finishes an upgrade that a crash cut short. Nothing to do (0) when the
 * topic is already in segments or does not exist yet. Holds an flock on DIR/log meanwhile, so
 * that two processes never upgrade one topic at once. */
int elog_embedded_upgrade(const elog_config *cfg);
int elog_kafka_open(const elog_config *cfg, elog **out);

#endif
