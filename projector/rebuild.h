/*
 * rebuild.h - a view made from the events log alone, without deciding anything: the follower
 * path of the architecture, `registry rebuild` (as of a moment), and the check that the
 * projector's view equals the one its events describe (`registry verify`).
 */
#ifndef REG_REBUILD_H
#define REG_REBUILD_H

#include "eventlog.h"
#include "projector/view.h"

#include <stdint.h>

/* Applies every event of `events` below offset until_offset with time_ms <= until_ms (INT64_MAX
 * for both: all of them) to `into` (a primary view, normally empty), committing in batches.
 * *applied counts the events applied.
 * Returns 0 or REG_E*; an event that does not decode or apply is an error (the log is the
 * source of truth: a bad record must be looked at, not skipped). */
int rebuild_view(elog *events, view *into, int64_t until_ms, int64_t until_offset,
                 uint64_t *applied);

/* Compares the state column families (everything but the consumed offsets and the command
 * outcomes) of two views. 0 when equal; REG_EINVAL when not, describing the first difference on
 * stderr. */
int rebuild_compare(view *a, view *b);

#endif
