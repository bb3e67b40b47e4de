/* clock.h - wall-clock and monotonic time, and RFC 3339 timestamps (UTC, milliseconds). */
#ifndef REG_CLOCK_H
#define REG_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch. */
int64_t clock_now_ms(void);

/* Monotonic nanoseconds (for durations and timeouts). */
uint64_t clock_mono_ns(void);

/* The calling thread's CPU time in nanoseconds. */
uint64_t clock_thread_cpu_ns(void);

/* Formats ms since the epoch as "2026-11-28T10:18:53.123Z" into out (at least 25 bytes). */
void clock_rfc3339(int64_t ms, char *out);

/* Parses an RFC 3339 timestamp (with 'Z' or a numeric offset, optional fraction) into ms since
 * the epoch. 0 or REG_EINVAL. */
int clock_parse_rfc3339(const char *s, int64_t *ms);

#endif
