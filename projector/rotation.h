/*
 * rotation.h - the certificate rotation scheduler: finds operational certificates within their
 * tenant's rotate_before_days of expiry and sends a RotateCertificate command for each, so that
 * the projector marks them due (and, with MQTT, the device is told). Runs where the projector
 * runs, on a timer of the given loop, reading the primary view and appending to the commands log.
 */
#ifndef REG_ROTATION_H
#define REG_ROTATION_H

#include "eventlog.h"
#include "projector/view.h"

#include <stdint.h>

struct uv_loop_s;
typedef struct rotation rotation;

/* Starts scanning every interval_ms (0: 60000). Borrows v and commands. */
int rotation_start(struct uv_loop_s *loop, view *v, elog *commands, unsigned interval_ms,
                   rotation **out);
/* Stops; the memory is freed when the loop has closed the timer. */
void rotation_stop(rotation *r);
/* How many rotation commands it has sent. */
uint64_t rotation_sent(const rotation *r);

#endif
