/* eventlog.c - the log's public calls, dispatched to the backend chosen at open (eventlog.h). */
#include "eventlog_impl.h"
#include "err.h"

int elog_open(const elog_config *cfg, elog **out)
{
    if (!cfg || !cfg->topic || !out) return REG_EINVAL;
    if (cfg->brokers && cfg->brokers[0]) return elog_kafka_open(cfg, out);
    if (!cfg->dir) return REG_EINVAL;
    return elog_embedded_open(cfg, out);
}

void elog_close(elog *log)
{
    if (log) log->ops->close(log);
}

int elog_append(elog *log, const void *key, size_t key_len, const void *value, size_t value_len,
                int64_t time_ms, elog_append_cb cb, void *arg)
{
    return log->ops->append(log, key, key_len, value, value_len, time_ms, cb, arg);
}

int elog_flush(elog *log, int timeout_ms)
{
    return log->ops->flush(log, timeout_ms);
}

int64_t elog_end_offset(elog *log)
{
    return log->ops->end_offset(log);
}

int elog_offset_for_time(elog *log, int64_t time_ms, int64_t *offset)
{
    return log->ops->offset_for_time(log, time_ms, offset);
}

int elog_reader_open(elog *log, int64_t offset, elog_reader **out)
{
    return log->ops->reader_open(log, offset, out);
}

int elog_reader_next(elog_reader *rd, elog_record *recs, int max, int timeout_ms)
{
    return rd->ops->reader_next(rd, recs, max, timeout_ms);
}

void elog_reader_close(elog_reader *rd)
{
    if (rd) rd->ops->reader_close(rd);
}
