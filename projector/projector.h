/*
 * projector.h - the projector: consumes the commands log in order, decides each command against
 * the view, appends the resulting events to the events log, then commits the view changes and
 * the consumed offset in one atomic write, and finally publishes each command's outcome on the
 * bus ("outcome") and a wake-up for readers ("commit").
 *
 * Exactly-once effect with at-least-once delivery: a command already decided (its id is in the
 * view) is not decided again, its stored outcome is re-published; after a crash between the
 * events append and the view commit, the commands are re-decided (same result: decisions are
 * deterministic) and their events, already in the events log, are recognised by command id and
 * not appended twice.
 *
 * It runs on a thread of its own (RocksDB writes and log flushes block; no loop is involved).
 */
#ifndef REG_PROJECTOR_H
#define REG_PROJECTOR_H

#include "bus.h"
#include "eventlog.h"
#include "projector/decide.h"
#include "projector/view.h"

#include <stdint.h>

typedef struct projector projector;

typedef struct projector_config {
    decide_config decide;
    int batch_max; /* commands per view commit (default 4000) */
    /* Shadows kept decoded between batches (view_set_record_cache; default 65536, -1 none) */
    long shadow_cache;
    /* The bound of the serial numbers' key filter, in MiB (view_set_key_filter: a registration
     * whose serial is new then costs no store lookup; default 64, room for ~53 M serial numbers,
     * -1 none) */
    long serial_filter_mb;
} projector_config;

typedef struct projector_stats {
    uint64_t commands; /* decided (accepted + rejected) */
    uint64_t accepted;
    uint64_t rejected;
    uint64_t duplicates; /* commands seen again and not re-decided */
    uint64_t malformed;  /* records that did not decode (skipped) */
    uint64_t events;     /* appended to the events log */
    uint64_t batches;    /* view commits */
    int64_t next_offset; /* the next command offset to decide */
    int64_t log_end;     /* the commands log's end, as last seen (refreshed twice a second) */
    /* CPU time of the projector's thread (deciding) and of its committer thread (writing the
     * view), as of their last batch */
    uint64_t decide_cpu_ns, commit_cpu_ns;
    /* Whether the view's filter of serial numbers answers (view_key_filter_ready): not while
     * its scan runs, nor once outgrown (--serial-filter-mb), when registrations are slower */
    bool serial_filter_ready;
} projector_stats;

/* Starts the projector thread. Borrows everything it is given; they must outlive
 * projector_stop. The caller owns *out. 0 or REG_E*. */
int projector_start(view *v, elog *commands, elog *events, bus *b, const projector_config *cfg,
                    projector **out);

/* Stops after the current batch and frees the projector. */
void projector_stop(projector *p);

/* A consistent copy of the counters (thread-safe). */
void projector_get_stats(projector *p, projector_stats *out);

#endif
