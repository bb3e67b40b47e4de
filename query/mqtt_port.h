/*
 * mqtt_port.h - the MQTT device front end (API.md, "MQTT"): MQTT 3.1.1 over TLS on the MQTT port
 * (default 8883), on the device port's TLS context and authentication path.
 *
 * A device connects with its operational certificate; the client id must be the certificate's
 * device id, else CONNACK "not authorized" (as for a revoked, expired or past-overlap
 * certificate, a suspended or decommissioned device, or no certificate). The first connection of
 * a device still `provisioning` activates it; last_seen_at is written at most once per interval.
 * A device may subscribe and publish only under $registry/devices/{its id}/: a forbidden filter
 * gets a SUBACK failure, a forbidden PUBLISH closes the connection. QoS 0 and 1; QoS 2 closes the
 * connection. Keep-alive is enforced (closed after 1.5 x keep-alive of silence).
 *
 * What the registry sends a device arrives on the bus channel "deliver" (see projector/notify.h)
 * and goes out on every live connection of that device whose subscriptions match. Revocations
 * and device status changes ("auth" notices) re-check the connections concerned and close those
 * no longer allowed.
 */
#ifndef REG_MQTT_PORT_H
#define REG_MQTT_PORT_H

#include "bus.h"
#include "metrics.h"
#include "stream.h"

#include <stddef.h>

struct uv_loop_s;
struct device_port;
typedef struct mqtt_port mqtt_port;

typedef struct mqtt_limits {
    size_t max_packet;           /* largest packet accepted; default 128 KiB */
    unsigned max_subscriptions;  /* per connection; default 16 */
    unsigned connect_timeout_ms; /* CONNECT must arrive by then after the handshake; 10000 */
} mqtt_limits;

/* Starts the MQTT port on host:port (port 0 picks one), sharing dp's TLS context,
 * authenticator, activation and last_seen writes. Borrows dp, b and m. */
int mqtt_port_start(struct uv_loop_s *loop, const char *host, int port, const stream_limits *sl,
                    const mqtt_limits *ml, struct device_port *dp, bus *b, metrics *m,
                    mqtt_port **out);
int mqtt_port_port(const mqtt_port *mp);
/* Closes every connection and stops; memory goes when the loop has closed the handles. */
void mqtt_port_stop(mqtt_port *mp);
/* Appends the port's counters to a /metrics page. */
void mqtt_port_metrics(mqtt_port *mp, metrics_out *out);

#endif
