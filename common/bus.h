/*
 * bus.h - notifications between the registry's roles: publish a message on a channel, receive
 * the messages of the channels one subscribed to.
 *
 * Two backends: local (in-process; `registry serve`) and Redis pub/sub (the distributed
 * deployment; hiredis). Delivery is at-most-once and ordered per publisher and channel, as Redis
 * pub/sub is: the bus carries wake-ups and outcomes, never the only copy of a fact (the log and
 * the view hold those).
 *
 * Channels used: "outcome" (the decision of each command, which a waiting API call answers with),
 * "commit" (the view advanced: secondaries catch up), "auth" (certificates, devices and CAs whose
 * authentication status changed: caches forget them, revoked certificates' connections close),
 * "deliver" (a message for a device's MQTT topic: the front end holding its connection sends it).
 */
#ifndef REG_BUS_H
#define REG_BUS_H

#include <stddef.h>

struct uv_loop_s;
typedef struct bus bus;

/* Receives one message. Runs on the loop given to bus_subscribe. msg is valid during the call. */
typedef void (*bus_msg_cb)(void *arg, const char *channel, const char *msg, size_t len);

/* Opens a bus: redis_addr NULL for the local backend, else "host:port". The caller owns *out. */
int bus_open(const char *redis_addr, bus **out);

/* Frees the bus. Subscriptions must have been closed first (bus_unsubscribe_all). */
void bus_close(bus *b);

/* Publishes msg (copied) on channel. Thread-safe; may be called from any thread (the projector's);
 * the redis backend blocks that thread for the round trip, so never call it on a loop. Returns 0
 * or REG_EREDIS (the message is lost; subscribers recover from the view). */
int bus_publish(bus *b, const char *channel, const char *msg, size_t len);

/* Subscribes: cb(arg, ...) runs on `loop` for each message on channel. 0 or REG_E*. */
int bus_subscribe(bus *b, struct uv_loop_s *loop, const char *channel, bus_msg_cb cb, void *arg);

/* Ends every subscription made on `loop` (their handles close on that loop; run it afterwards). */
void bus_unsubscribe_all(bus *b, struct uv_loop_s *loop);

#endif
