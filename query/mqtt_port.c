/*
 * mqtt_port.c - the MQTT device front end (mqtt_port.h) on the stream layer and the MQTT codec.
 *
 * A connection's life: AWAIT_CONNECT (after the TLS handshake, until its CONNECT, within
 * connect_timeout_ms) -> AUTHENTICATING (the certificate's status through devauth's tiers, and
 * for a device still provisioning its activation; input waits meanwhile) -> CONNECTED (indexed
 * by device, so that deliveries and status changes find it). Lookups and activations answer
 * later: a connection closed meanwhile stays allocated until its answer has arrived.
 *
 * One timer sweeps every connection each second (CONNECT deadline, keep-alive, and the end of a
 * superseded certificate's overlap): O(connections) of cheap comparisons.
 */
#define _GNU_SOURCE
#include "query/mqtt_port.h"
#include "clock.h"
#include "delivery.h"
#include "err.h"
#include "ids.h"
#include "mqtt_codec.h"
#include "query/devauth.h"
#include "query/device_port.h"
#include "query/devices.h"
#include "jsonbody.h"
#include "projector/shadow_view.h"
#include "shadow.h"
#include "jsonfast.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

enum {
    DEVICE_BUCKETS = 1 << 16,
    SWEEP_MS = 1000,
    MAX_FILTER = 256, /* bytes of one subscription filter */
    MAX_FILTERS_PER_PACKET = 32,
    OUT_SMALL = 64,
    MAX_SHADOW_PENDING = 16, /* shadow updates of one connection waiting for their decision */
};

enum conn_state { AWAIT_CONNECT, AUTHENTICATING, CONNECTED };

/* CONNACK refusals, by reason (metrics). */
enum refusal {
    REF_NO_CERT,
    REF_UNKNOWN_CERT,
    REF_REFUSED_CERT,
    REF_CLIENT_ID,
    REF_DEVICE,
    REF_UNAVAILABLE,
    REF_PROTOCOL,
    REF_COUNT
};
static const char *const refusal_names[REF_COUNT] = {
    "no_certificate", "unknown_certificate", "certificate_refused",
    "client_id",      "device_refused",      "unavailable",
    "protocol"};

typedef struct mconn {
    struct mqtt_port *mp;
    stream *s; /* NULL once closed */
    enum conn_state state;
    bool waiting;      /* a lookup or activation will call back */
    unsigned updating; /* shadow updates waiting for their decision (each will call back) */
    devauth_status st;
    char fp[65];
    uint16_t keepalive_s;
    int64_t opened_ms, last_rx_ms;
    char *filters[32]; /* granted subscriptions (up to max_subscriptions) */
    uint8_t qos[32];
    unsigned nfilters;
    uint16_t next_pid;
    struct mconn *dev_prev, *dev_next; /* in its device's bucket, while CONNECTED */
    struct mconn *prev, *next;         /* every open connection, for the sweep */
} mconn;

struct mqtt_port {
    uv_loop_t *loop;
    stream_listener *listener;
    struct device_port *dp;
    devauth *auth;
    bus *bus;
    metrics *metrics;
    mqtt_limits lim;
    uv_timer_t sweep;
    mconn *all;
    mconn *devices[DEVICE_BUCKETS];
    unsigned connected;
    uint64_t refused[REF_COUNT], msgs_in, msgs_out, closed_keepalive, closed_protocol, closed_acl,
        closed_auth, shadow_updates, shadow_rejected, shadow_gets;
    unsigned nconns; /* allocated mconns (closed ones waiting for an answer included) */
    bool stopping, sweep_closed;
};

/* After mqtt_port_stop, the port goes with its last connection and its timer. */
static void port_maybe_free(mqtt_port *mp)
{
    if (mp->stopping && mp->sweep_closed && mp->nconns == 0) free(mp);
}

static unsigned device_bucket(const reg_uuid *t, const reg_uuid *d)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ t->b[i]) * 16777619u;
    for (int i = 0; i < 16; i++)
        h = (h ^ d->b[i]) * 16777619u;
    return h % DEVICE_BUCKETS;
}

static void index_add(mqtt_port *mp, mconn *c)
{
    unsigned b = device_bucket(&c->st.tenant, &c->st.device);
    c->dev_prev = NULL;
    c->dev_next = mp->devices[b];
    if (c->dev_next) c->dev_next->dev_prev = c;
    mp->devices[b] = c;
    mp->connected++;
}

static void index_remove(mqtt_port *mp, mconn *c)
{
    if (c->state != CONNECTED) return;
    unsigned b = device_bucket(&c->st.tenant, &c->st.device);
    if (c->dev_prev)
        c->dev_prev->dev_next = c->dev_next;
    else
        mp->devices[b] = c->dev_next;
    if (c->dev_next) c->dev_next->dev_prev = c->dev_prev;
    mp->connected--;
}

static void conn_free(mconn *c)
{
    mqtt_port *mp = c->mp;
    for (unsigned i = 0; i < c->nfilters; i++)
        free(c->filters[i]);
    free(c);
    mp->nconns--;
    port_maybe_free(mp);
}

static void send_bytes(mconn *c, const uint8_t *buf, size_t len)
{
    if (c->s && stream_write(c->s, buf, len) != 0) stream_close(c->s, true); /* too slow a reader */
}

static void send_connack(mconn *c, uint8_t rc)
{
    uint8_t out[8];
    int n = mqtt_encode_connack(out, sizeof out, false, rc);
    if (n > 0) send_bytes(c, out, (size_t)n);
}

static void refuse(mconn *c, enum refusal why, uint8_t rc)
{
    c->mp->refused[why]++;
    send_connack(c, rc);
    if (c->s) stream_close(c->s, false);
}

/* ---- authentication ---- */

static void connected(mconn *c)
{
    mqtt_port *mp = c->mp;
    c->state = CONNECTED;
    index_add(mp, c);
    send_connack(c, MQTT_CONNACK_ACCEPTED);
    device_port_touch(mp->dp, &c->st);
    if (c->s) stream_resume(c->s); /* packets that came after the CONNECT */
}

/* A closed connection's memory goes when nothing will call back for it any more. */
static bool conn_release(mconn *c)
{
    if (c->s) return false;
    if (!c->waiting && !c->updating) conn_free(c);
    return true;
}

static void on_activated(void *arg, int status, json_t *body)
{
    mconn *c = arg;
    c->waiting = false;
    if (conn_release(c)) return;
    if (status >= 400) {
        refuse(c, status == 503 ? REF_UNAVAILABLE : REF_DEVICE,
               status == 503 ? MQTT_CONNACK_UNAVAILABLE : MQTT_CONNACK_NOT_AUTHORIZED);
        return;
    }
    devauth_device_activated(c->mp->auth, &c->st.tenant, &c->st.device);
    snprintf(c->st.device_status, sizeof c->st.device_status, "active");
    connected(c);
}

static void on_status(void *arg, int err, const devauth_status *st)
{
    mconn *c = arg;
    c->waiting = false;
    if (conn_release(c)) return;
    const char *why = NULL;
    if (err == REG_ENOTFOUND) return refuse(c, REF_UNKNOWN_CERT, MQTT_CONNACK_NOT_AUTHORIZED);
    if (err) return refuse(c, REF_UNAVAILABLE, MQTT_CONNACK_UNAVAILABLE);
    int r = devauth_refusal(st, clock_now_ms(), &why);
    if (r == 401) return refuse(c, REF_REFUSED_CERT, MQTT_CONNACK_NOT_AUTHORIZED);
    if (r) return refuse(c, REF_DEVICE, MQTT_CONNACK_NOT_AUTHORIZED);
    if (strcmp(st->device_s, c->st.device_s)) /* the client id CONNECT gave */
        return refuse(c, REF_CLIENT_ID, MQTT_CONNACK_NOT_AUTHORIZED);
    c->st = *st;
    if (!strcmp(st->device_status, "provisioning")) {
        if (!device_port_writes(c->mp->dp))
            return refuse(c, REF_UNAVAILABLE, MQTT_CONNACK_UNAVAILABLE);
        c->waiting = true;
        device_port_activate(c->mp->dp, st, c->fp, on_activated, c);
        return;
    }
    connected(c);
}

static void handle_connect(mconn *c, const mqtt_connect *cn)
{
    mqtt_port *mp = c->mp;
    c->keepalive_s = cn->keep_alive;
    const char *fp = stream_peer_fingerprint(c->s);
    if (!fp) return refuse(c, REF_NO_CERT, MQTT_CONNACK_NOT_AUTHORIZED);
    if (cn->client_id.len != 36) return refuse(c, REF_CLIENT_ID, MQTT_CONNACK_NOT_AUTHORIZED);
    memcpy(c->st.device_s, cn->client_id.p, 36);
    c->st.device_s[36] = 0;
    snprintf(c->fp, sizeof c->fp, "%s", fp);
    c->state = AUTHENTICATING;
    c->waiting = true;
    stream_pause(c->s); /* nothing else is read until the device is known */
    devauth_lookup(mp->auth, c->fp, on_status, c);
}

/* ---- the device's own topics ---- */

static void deliver(mqtt_port *mp, mconn *c, const char *topic, const char *payload, size_t plen);
static void deliver_to_device(mqtt_port *mp, const reg_uuid *t, const reg_uuid *d,
                              const char *topic, const char *payload, size_t plen);
static void shadow_update_msg(mconn *c, const mqtt_publish *p);
static void shadow_get_msg(mconn *c, const mqtt_publish *p);
static char *shadow_pending_delta(mconn *c);

static void prefix_of(const mconn *c, char *out, size_t cap)
{
    snprintf(out, cap, "$registry/devices/%s/", c->st.device_s);
}

static void handle_subscribe(mconn *c, uint16_t packet_id, const mqtt_subscription *subs,
                             size_t count)
{
    char prefix[80];
    prefix_of(c, prefix, sizeof prefix);
    uint8_t granted[MAX_FILTERS_PER_PACKET];
    for (size_t i = 0; i < count; i++) {
        const mqtt_subscription *f = &subs[i];
        char filter[MAX_FILTER + 1];
        if (f->filter.len > MAX_FILTER || !mqtt_filter_within(f->filter, mqtt_cstr(prefix))) {
            granted[i] = MQTT_SUBACK_FAILURE;
            continue;
        }
        memcpy(filter, f->filter.p, f->filter.len);
        filter[f->filter.len] = 0;
        unsigned j;
        for (j = 0; j < c->nfilters && strcmp(c->filters[j], filter); j++) {
        }
        if (j == c->nfilters && c->nfilters >= c->mp->lim.max_subscriptions) {
            granted[i] = MQTT_SUBACK_FAILURE;
            continue;
        }
        uint8_t q = f->qos > 1 ? 1 : f->qos;
        if (j == c->nfilters) {
            if (!(c->filters[j] = strdup(filter))) {
                granted[i] = MQTT_SUBACK_FAILURE;
                continue;
            }
            c->nfilters++;
        }
        c->qos[j] = q;
        granted[i] = q;
    }
    /* A device that was offline gets its pending delta as soon as it listens for deltas. It is
     * read before the SUBACK goes out, so that whatever the device does once subscribed comes
     * after the read (and reaches it through the bus), never inside it. */
    char delta_topic[128];
    char *pending = NULL;
    shadow_view_topic(c->st.device_s, "update/delta", delta_topic, sizeof delta_topic);
    for (size_t i = 0; i < count && !pending; i++)
        if (granted[i] != MQTT_SUBACK_FAILURE &&
            mqtt_filter_matches(subs[i].filter, mqtt_cstr(delta_topic)))
            pending = shadow_pending_delta(c);
    uint8_t out[OUT_SMALL + MAX_FILTERS_PER_PACKET];
    int n = mqtt_encode_suback(out, sizeof out, packet_id, granted, count);
    if (n > 0) send_bytes(c, out, (size_t)n);
    if (pending) deliver(c->mp, c, delta_topic, pending, strlen(pending));
    free(pending);
}

static void handle_unsubscribe(mconn *c, uint16_t packet_id, const mqtt_str *filters, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        for (unsigned j = 0; j < c->nfilters; j++) {
            if (strlen(c->filters[j]) == filters[i].len &&
                !memcmp(c->filters[j], filters[i].p, filters[i].len)) {
                free(c->filters[j]);
                c->filters[j] = c->filters[c->nfilters - 1];
                c->qos[j] = c->qos[c->nfilters - 1];
                c->nfilters--;
                break;
            }
        }
    }
    uint8_t out[8];
    int n = mqtt_encode_unsuback(out, sizeof out, packet_id);
    if (n > 0) send_bytes(c, out, (size_t)n);
}

/* A device publishes only under its own prefix; anything else closes the connection. The
 * registry's handlers for device topics (shadow, jobs) hang off here. */
static bool handle_publish(mconn *c, const mqtt_publish *p)
{
    char prefix[80];
    prefix_of(c, prefix, sizeof prefix);
    size_t plen = strlen(prefix);
    if (p->topic.len <= plen || memcmp(p->topic.p, prefix, plen)) {
        c->mp->closed_acl++;
        return false;
    }
    c->mp->msgs_in++;
    if (p->qos == 1) {
        uint8_t out[8];
        int n = mqtt_encode_puback(out, sizeof out, p->packet_id);
        if (n > 0) send_bytes(c, out, (size_t)n);
    }
    mqtt_str rest = {p->topic.p + plen, p->topic.len - plen};
    if (mqtt_str_eq(rest, "shadow/update"))
        shadow_update_msg(c, p);
    else if (mqtt_str_eq(rest, "shadow/get"))
        shadow_get_msg(c, p);
    return true;
}

/* Handles one packet; false closes the connection. */
static bool handle_packet(mconn *c, const mqtt_frame *f)
{
    const char *why = NULL;
    if (c->state == AWAIT_CONNECT) {
        mqtt_connect cn;
        if (f->type != MQTT_CONNECT) return false;
        int err = mqtt_decode_connect(f, &cn, &why);
        if (err == REG_EINVAL) { /* well formed, but refused: a protocol level, an empty id */
            refuse(c, REF_PROTOCOL, cn.refuse_code);
            return true;
        }
        if (err) return false;
        handle_connect(c, &cn);
        return true;
    }
    switch (f->type) {
    case MQTT_PUBLISH: {
        mqtt_publish p;
        if (mqtt_decode_publish(f, &p, &why) || p.qos > 1) return false; /* QoS 2: refused */
        return handle_publish(c, &p);
    }
    case MQTT_PUBACK: {
        uint16_t id;
        return mqtt_decode_puback(f, &id, &why) == 0; /* clean sessions: nothing to resend */
    }
    case MQTT_SUBSCRIBE: {
        mqtt_subscription subs[MAX_FILTERS_PER_PACKET];
        uint16_t id;
        size_t n;
        if (mqtt_decode_subscribe(f, &id, subs, MAX_FILTERS_PER_PACKET, &n, &why)) return false;
        handle_subscribe(c, id, subs, n);
        return true;
    }
    case MQTT_UNSUBSCRIBE: {
        mqtt_str filters[MAX_FILTERS_PER_PACKET];
        uint16_t id;
        size_t n;
        if (mqtt_decode_unsubscribe(f, &id, filters, MAX_FILTERS_PER_PACKET, &n, &why))
            return false;
        handle_unsubscribe(c, id, filters, n);
        return true;
    }
    case MQTT_PINGREQ: {
        uint8_t out[2];
        if (mqtt_decode_pingreq(f, &why)) return false;
        int n = mqtt_encode_pingresp(out, sizeof out);
        if (n > 0) send_bytes(c, out, (size_t)n);
        return true;
    }
    case MQTT_DISCONNECT:
        if (mqtt_decode_disconnect(f, &why)) return false;
        stream_close(c->s, false);
        return true;
    default: /* a second CONNECT, a server-to-client packet, QoS 2 flows */
        return false;
    }
}

/* ---- stream callbacks ---- */

static void on_open(void *app, stream *s)
{
    mqtt_port *mp = app;
    mconn *c = calloc(1, sizeof *c);
    if (!c) {
        stream_close(s, true);
        return;
    }
    c->mp = mp;
    mp->nconns++;
    c->s = s;
    c->opened_ms = c->last_rx_ms = clock_now_ms();
    c->next = mp->all;
    if (mp->all) mp->all->prev = c;
    mp->all = c;
    stream_set_data(s, c);
}

static size_t on_data(void *app, stream *s, const char *data, size_t len)
{
    mconn *c = stream_data(s);
    size_t used = 0;
    if (!c) return len;
    c->last_rx_ms = clock_now_ms();
    while (used < len && c->s && c->state != AUTHENTICATING) {
        mqtt_frame f;
        const char *why = NULL;
        int rc = mqtt_frame_next((const uint8_t *)data + used, len - used, c->mp->lim.max_packet,
                                 &f, &why);
        if (rc == REG_EAGAIN) break; /* the rest of the packet has not arrived */
        if (rc < 0 || !handle_packet(c, &f)) {
            c->mp->closed_protocol++;
            stream_close(s, true);
            return len;
        }
        used += f.len;
        /* Activity keeps last_seen_at current (written at most once per interval). */
        if (c->state == CONNECTED && c->s) device_port_touch(c->mp->dp, &c->st);
    }
    return used;
}

static void on_close(void *app, stream *s)
{
    mqtt_port *mp = app;
    mconn *c = stream_data(s);
    if (!c) return;
    index_remove(mp, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        mp->all = c->next;
    if (c->next) c->next->prev = c->prev;
    c->s = NULL;
    c->state = AWAIT_CONNECT; /* out of the index; a late answer only frees */
    conn_release(c);
}

/* ---- deliveries and notices ---- */

static void deliver(mqtt_port *mp, mconn *c, const char *topic, const char *payload, size_t plen)
{
    uint8_t qos = 0;
    bool match = false;
    for (unsigned i = 0; i < c->nfilters; i++)
        if (mqtt_filter_matches(mqtt_cstr(c->filters[i]), mqtt_cstr(topic))) {
            match = true;
            if (c->qos[i] > qos) qos = c->qos[i];
        }
    if (!match) return;
    int size = mqtt_publish_size(strlen(topic), plen, qos);
    if (size <= 0) return;
    size_t need = (size_t)size;
    uint8_t small[512], *buf = need <= sizeof small ? small : malloc(need);
    if (!buf) return;
    if (qos && ++c->next_pid == 0) c->next_pid = 1;
    mqtt_publish p = {.topic = mqtt_cstr(topic),
                      .payload = (const uint8_t *)payload,
                      .payload_len = plen,
                      .qos = qos,
                      .packet_id = qos ? c->next_pid : 0};
    int n = mqtt_encode_publish(buf, need, &p);
    if (n > 0) {
        send_bytes(c, buf, (size_t)n);
        mp->msgs_out++;
    }
    if (buf != small) free(buf);
}

/* To every connection of the device on this front end whose subscriptions match. */
static void deliver_to_device(mqtt_port *mp, const reg_uuid *t, const reg_uuid *d,
                              const char *topic, const char *payload, size_t plen)
{
    for (mconn *c = mp->devices[device_bucket(t, d)], *next; c; c = next) {
        next = c->dev_next;
        if (!memcmp(c->st.tenant.b, t->b, 16) && !memcmp(c->st.device.b, d->b, 16))
            deliver(mp, c, topic, payload, plen);
    }
}

/* A batch from the projector (delivery.h): each message to the device's connections here. */
static void on_deliver(void *arg, const char *channel, const char *msg, size_t len)
{
    mqtt_port *mp = arg;
    delivery d;
    size_t pos = 0;
    char topic[DELIVERY_MAX_TOPIC + 1];
    while (delivery_next(msg, len, &pos, &d) == 1) {
        memcpy(topic, d.topic, d.topic_len);
        topic[d.topic_len] = 0;
        deliver_to_device(mp, &d.tenant, &d.device, topic, d.payload, d.payload_len);
    }
}

/* ---- the shadow topics ---- */

/* A device's update on its way to the projector. */
struct shadow_req {
    mconn *c;
    char *client_token; /* owned; NULL when none */
};

static int64_t now_s(void)
{
    return clock_now_ms() / 1000;
}

/* Publishes msg (taken) on the device's shadow topic `suffix` to its connections here that
 * subscribed (a device may listen on one connection and publish on another, as with the
 * mosquitto clients). */
static void send_shadow(mconn *c, const char *suffix, json_t *msg)
{
    char topic[128];
    shadow_view_topic(c->st.device_s, suffix, topic, sizeof topic);
    size_t len = 0;
    char *text = msg ? jsonfast_dump(msg, &len) : NULL;
    if (text) deliver_to_device(c->mp, &c->st.tenant, &c->st.device, topic, text, len);
    free(text);
    json_decref(msg);
}

/* update/rejected or get/rejected: {code, message, clientToken?, timestamp}. */
static void shadow_reject(mconn *c, const char *suffix, int code, const char *message,
                          const char *client_token)
{
    c->mp->shadow_rejected++;
    json_t *m = json_pack("{s:i, s:s, s:I}", "code", code, "message", message, "timestamp",
                          (json_int_t)now_s());
    if (m && client_token) json_object_set_new(m, "clientToken", json_string(client_token));
    send_shadow(c, suffix, m);
}

/* The client token of a refused message, echoed when it is a string within the limit. */
static const char *token_of(const json_t *msg, const shadow_limits *l)
{
    const char *t = json_string_value(json_object_get(msg, "clientToken"));
    return t && strlen(t) <= l->max_client_token ? t : NULL;
}

/* body: only when refused (device_port_update_shadow without it). */
static void on_shadow_outcome(void *arg, int status, json_t *body)
{
    struct shadow_req *r = arg;
    mconn *c = r->c;
    c->updating--;
    /* Accepted: update/accepted, /documents and /delta come from the projector, to every
     * connection of the device. Refused: its connections here hear of it, also when the one
     * that sent the update has gone (as a one-shot publisher does). */
    if (status >= 400) {
        const char *detail = json_string_value(json_object_get(body, "detail"));
        shadow_reject(c, "update/rejected", status, detail ? detail : "the update was refused",
                      r->client_token);
    }
    conn_release(c);
    free(r->client_token);
    free(r);
}

static void shadow_update_msg(mconn *c, const mqtt_publish *p)
{
    device_port *dp = c->mp->dp;
    const shadow_limits *l = device_port_shadow_limits(dp);
    jsonbody_err e = {{0}};
    /* Deep enough for the shadow's own depth rule to name the section that is too deep. */
    json_t *msg =
        jsonbody_parse_object((const char *)p->payload, p->payload_len, l->max_depth + 3, &e);
    shadow_update u;
    const char *why = e.detail;
    struct shadow_req *r = NULL;
    if (!msg || shadow_parse_mqtt_update(msg, l, &u, &why))
        shadow_reject(c, "update/rejected", 400, why, token_of(msg, l));
    else if (!device_port_writes(dp))
        shadow_reject(c, "update/rejected", 503, "this front end does not accept writes",
                      u.client_token);
    else if (c->updating >= MAX_SHADOW_PENDING)
        shadow_reject(c, "update/rejected", 429, "too many updates waiting for their decision",
                      u.client_token);
    else if (!(r = calloc(1, sizeof *r)) ||
             (u.client_token && !(r->client_token = strdup(u.client_token)))) {
        free(r);
        shadow_reject(c, "update/rejected", 503, "out of memory", u.client_token);
    } else {
        r->c = c;
        c->updating++;
        c->mp->shadow_updates++;
        device_port_update_shadow(dp, &c->st, &u, false, on_shadow_outcome, r);
    }
    json_decref(msg);
}

/* shadow/get: the whole document on get/accepted (payload empty or {"clientToken"}). */
static void shadow_get_msg(mconn *c, const mqtt_publish *p)
{
    device_port *dp = c->mp->dp;
    const shadow_limits *l = device_port_shadow_limits(dp);
    json_t *msg = NULL, *rec = NULL;
    jsonbody_err e = {{0}};
    if (p->payload_len &&
        !(msg = jsonbody_parse_object((const char *)p->payload, p->payload_len, 4, &e)))
        return shadow_reject(c, "get/rejected", 400, e.detail, NULL);
    c->mp->shadow_gets++;
    int err = query_shadow_record(device_port_view(dp), device_port_view_is_secondary(dp),
                                  &c->st.tenant, &c->st.device, &rec);
    if (err)
        shadow_reject(c, "get/rejected", err == REG_ENOTFOUND ? 404 : 503,
                      err == REG_ENOTFOUND ? "no such device" : "the shadow could not be read",
                      token_of(msg, l));
    else
        send_shadow(c, "get/accepted", shadow_view_get_accepted(rec, token_of(msg, l), now_s()));
    json_decref(rec);
    json_decref(msg);
}

/* The update/delta message for the device's current shadow (malloc'd JSON text, the caller
 * frees it), or NULL when desired and reported agree. */
static char *shadow_pending_delta(mconn *c)
{
    device_port *dp = c->mp->dp;
    json_t *rec = NULL;
    if (query_shadow_record(device_port_view(dp), device_port_view_is_secondary(dp), &c->st.tenant,
                            &c->st.device, &rec))
        return NULL;
    json_t *m = shadow_view_delta_message(rec, NULL, now_s());
    char *text = m ? jsonfast_dump(m, NULL) : NULL;
    json_decref(m);
    json_decref(rec);
    return text;
}

/* A re-check of a live connection after its device's or certificate's status changed. */
static void on_recheck(void *arg, int err, const devauth_status *st)
{
    mconn *c = arg;
    c->waiting = false;
    if (conn_release(c)) return;
    const char *why;
    if (err == REG_ENOTFOUND || (!err && devauth_refusal(st, clock_now_ms(), &why))) {
        c->mp->closed_auth++;
        stream_close(c->s, true);
        return;
    }
    if (!err) c->st = *st;
}

static void recheck(mconn *c)
{
    if (c->waiting || !c->s) return;
    c->waiting = true;
    devauth_lookup(c->mp->auth, c->fp, on_recheck, c);
}

static void on_auth_notice(void *arg, const char *channel, const char *msg, size_t len)
{
    mqtt_port *mp = arg;
    json_t *j = json_loadb(msg, len, 0, NULL);
    size_t i;
    json_t *v;
    /* The device port's handler ran first (it subscribed first): devauth has forgotten them. */
    json_array_foreach(json_object_get(j, "revoked"), i, v) if (json_is_string(v))
        mp->closed_auth += stream_listener_close_peer(mp->listener, json_string_value(v));
    json_array_foreach(json_object_get(j, "devices"), i, v)
    {
        reg_uuid t, d;
        if (devauth_device_ref(json_string_value(v), &t, &d)) continue;
        for (mconn *c = mp->devices[device_bucket(&t, &d)], *next; c; c = next) {
            next = c->dev_next;
            if (!memcmp(c->st.tenant.b, t.b, 16) && !memcmp(c->st.device.b, d.b, 16)) recheck(c);
        }
    }
    json_t *certs = json_object_get(j, "certs");
    if (json_array_size(certs)) {
        for (mconn *c = mp->all, *next; c; c = next) {
            next = c->next;
            if (c->state != CONNECTED) continue;
            json_array_foreach(certs, i,
                               v) if (json_is_string(v) && !strcasecmp(json_string_value(v), c->fp))
                recheck(c);
        }
    }
    json_decref(j);
}

static void on_sweep(uv_timer_t *t)
{
    mqtt_port *mp = t->data;
    int64_t now = clock_now_ms();
    for (mconn *c = mp->all, *next; c; c = next) {
        next = c->next;
        if (!c->s) continue;
        if (c->state == AWAIT_CONNECT && now - c->opened_ms > mp->lim.connect_timeout_ms) {
            stream_close(c->s, true);
        } else if (c->state == CONNECTED && c->keepalive_s &&
                   now - c->last_rx_ms > (int64_t)c->keepalive_s * 1500) {
            mp->closed_keepalive++;
            stream_close(c->s, true);
        } else if (c->state == CONNECTED && now >= c->st.valid_until_ms) {
            mp->closed_auth++; /* expired, or superseded and past its overlap */
            stream_close(c->s, true);
        }
    }
}

/* ---- the port ---- */

int mqtt_port_start(uv_loop_t *loop, const char *host, int port, const stream_limits *sl,
                    const mqtt_limits *ml, struct device_port *dp, bus *b, metrics *m,
                    mqtt_port **out)
{
    mqtt_port *mp = calloc(1, sizeof *mp);
    if (!mp) return REG_ENOMEM;
    mp->loop = loop;
    mp->dp = dp;
    mp->auth = device_port_auth(dp);
    mp->bus = b;
    mp->metrics = m;
    if (ml) mp->lim = *ml;
    if (!mp->lim.max_packet) mp->lim.max_packet = 128 * 1024;
    if (!mp->lim.max_subscriptions || mp->lim.max_subscriptions > 32)
        mp->lim.max_subscriptions = 16;
    if (!mp->lim.connect_timeout_ms) mp->lim.connect_timeout_ms = 10000;
    stream_callbacks cb = {on_open, on_data, on_close};
    int err = bus_subscribe(b, loop, "deliver", on_deliver, mp);
    if (!err) err = bus_subscribe(b, loop, "auth", on_auth_notice, mp);
    if (!err)
        err = stream_listen(loop, host, port, device_port_tls(dp), sl, &cb, mp, &mp->listener);
    if (err) {
        free(mp);
        return err;
    }
    uv_timer_init(loop, &mp->sweep);
    mp->sweep.data = mp;
    uv_timer_start(&mp->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    *out = mp;
    return 0;
}

int mqtt_port_port(const mqtt_port *mp)
{
    return stream_listener_port(mp->listener);
}

static void on_sweep_closed(uv_handle_t *h)
{
    mqtt_port *mp = h->data;
    mp->sweep_closed = true;
    port_maybe_free(mp);
}

void mqtt_port_stop(mqtt_port *mp)
{
    if (!mp) return;
    mp->stopping = true;
    stream_listener_close(mp->listener); /* each connection's on_close runs */
    uv_close((uv_handle_t *)&mp->sweep, on_sweep_closed);
}

void mqtt_port_metrics(mqtt_port *mp, metrics_out *out)
{
    stream_stats st;
    stream_listener_stats(mp->listener, &st);
    metrics_printf(out,
                   "# TYPE registry_mqtt_connections gauge\n"
                   "registry_mqtt_connections{state=\"open\"} %u\n"
                   "registry_mqtt_connections{state=\"connected\"} %u\n"
                   "# TYPE registry_mqtt_handshakes_total counter\n"
                   "registry_mqtt_handshakes_total{result=\"full\"} %llu\n"
                   "registry_mqtt_handshakes_total{result=\"resumed\"} %llu\n"
                   "registry_mqtt_handshakes_total{result=\"failed\"} %llu\n"
                   "registry_mqtt_handshakes_total{result=\"timeout\"} %llu\n"
                   "# TYPE registry_mqtt_bytes_total counter\n"
                   "registry_mqtt_bytes_total{direction=\"in\"} %llu\n"
                   "registry_mqtt_bytes_total{direction=\"out\"} %llu\n"
                   "# TYPE registry_mqtt_messages_total counter\n"
                   "registry_mqtt_messages_total{direction=\"in\"} %llu\n"
                   "registry_mqtt_messages_total{direction=\"out\"} %llu\n"
                   "# TYPE registry_mqtt_closed_total counter\n"
                   "registry_mqtt_closed_total{reason=\"keepalive\"} %llu\n"
                   "registry_mqtt_closed_total{reason=\"protocol\"} %llu\n"
                   "registry_mqtt_closed_total{reason=\"acl\"} %llu\n"
                   "registry_mqtt_closed_total{reason=\"auth\"} %llu\n"
                   "# TYPE registry_mqtt_shadow_requests_total counter\n"
                   "registry_mqtt_shadow_requests_total{kind=\"update\"} %llu\n"
                   "registry_mqtt_shadow_requests_total{kind=\"get\"} %llu\n"
                   "registry_mqtt_shadow_requests_total{kind=\"rejected\"} %llu\n"
                   "# TYPE registry_mqtt_connack_refused_total counter\n",
                   st.open, mp->connected, (unsigned long long)st.handshakes_full,
                   (unsigned long long)st.handshakes_resumed,
                   (unsigned long long)st.handshake_failures,
                   (unsigned long long)st.handshake_timeouts, (unsigned long long)st.bytes_in,
                   (unsigned long long)st.bytes_out, (unsigned long long)mp->msgs_in,
                   (unsigned long long)mp->msgs_out, (unsigned long long)mp->closed_keepalive,
                   (unsigned long long)mp->closed_protocol, (unsigned long long)mp->closed_acl,
                   (unsigned long long)mp->closed_auth, (unsigned long long)mp->shadow_updates,
                   (unsigned long long)mp->shadow_gets, (unsigned long long)mp->shadow_rejected);
    for (int i = 0; i < REF_COUNT; i++)
        metrics_printf(out, "registry_mqtt_connack_refused_total{reason=\"%s\"} %llu\n",
                       refusal_names[i], (unsigned long long)mp->refused[i]);
    metrics_printf(out, "# TYPE registry_mqtt_handshake_failures_total counter\n");
    for (int i = 0; i < STREAM_HS_FAILURE_COUNT; i++)
        metrics_printf(out, "registry_mqtt_handshake_failures_total{reason=\"%s\"} %llu\n",
                       stream_handshake_failure_names[i],
                       (unsigned long long)st.handshake_failed[i]);
    metrics_printf(out, "registry_mqtt_handshake_failures_total{reason=\"timeout\"} %llu\n",
                   (unsigned long long)st.handshake_timeouts);
    metrics_printf(out,
                   "# TYPE registry_mqtt_tls_taken_over_total counter\n"
                   "registry_mqtt_tls_taken_over_total %llu\n",
                   (unsigned long long)st.taken_over);
}
