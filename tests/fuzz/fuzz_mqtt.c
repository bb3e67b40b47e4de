/*
 * fuzz_mqtt.c - libFuzzer harness for common/mqtt_codec.c.
 *
 * Each input after its first byte is read as a stream of MQTT packets by mqtt_frame_next with a
 * max_packet and a filter bound chosen by that first byte. Every frame found must lie inside the
 * input with a fixed header in its shortest form, every shorter prefix of it must ask for more,
 * and each frame goes through every decoder (those for other types must say REG_EINVAL). What
 * decodes is checked against the decoders' contracts (views inside the frame, valid UTF-8,
 * topics and filters valid) and re-encoded where the server has an encoder: a PUBLISH at QoS 0
 * or 1 and a PUBACK must re-encode to exactly the bytes they came from; SUBSCRIBE, UNSUBSCRIBE and
 * PINGREQ get their answer encoded and read back. The errors must be the documented ones, each
 * with a reason.
 *
 * The same bytes, cut at NULs into filter, topic and prefix, also drive the topic rules: a valid
 * topic is a valid filter matching itself; whatever a filter within a prefix matches lies under
 * that prefix; "#" matches exactly the valid topics not starting with '$'.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon tests/fuzz/fuzz_mqtt.c \
 *        common/mqtt_codec.c common/err.c
 * Run:   ./fuzz_mqtt -max_total_time=60 tests/fuzz/corpus_mqtt
 */
#include "err.h"
#include "mqtt_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_check.h"

#define MAX_SUBS 8

static const uint8_t *frame_lo, *frame_hi; /* the current frame, for inside() */

static int inside(const void *p, size_t n)
{
    const uint8_t *b = p;
    if (n == 0) return 1;
    return b >= frame_lo && b <= frame_hi && n <= (size_t)(frame_hi - b);
}

static void check_str(mqtt_str s, int utf8)
{
    CHECK(inside(s.p, s.len));
    if (utf8) CHECK(mqtt_utf8_valid(s));
}

static void check_err(int rc, const char *why, int allowed_einval)
{
    CHECK(rc == REG_EDECODE || rc == REG_ETOOBIG || (allowed_einval && rc == REG_EINVAL));
    CHECK(why && *why);
}

/* Reads back an answer the server would send: one whole frame of the given type. */
static void check_answer(const uint8_t *b, int n, enum mqtt_type type)
{
    CHECK(n >= 2);
    mqtt_frame a;
    CHECK(mqtt_frame_next(b, (size_t)n, 0, &a, NULL) == 0);
    CHECK(a.type == type && a.len == (size_t)n);
}

static void check_frame(const uint8_t *start, const mqtt_frame *f, size_t max_subs,
                        mqtt_str *last_topic)
{
    static uint8_t out[MQTT_MAX_STR + 16];
    const char *why;
    int rc;

    /* CONNECT */
    mqtt_connect c;
    why = NULL;
    rc = mqtt_decode_connect(f, &c, &why);
    if (f->type != MQTT_CONNECT)
        CHECK(rc == REG_EINVAL);
    else if (rc == 0) {
        CHECK(c.protocol_level == 3 || c.protocol_level == 4);
        check_str(c.client_id, 1);
        CHECK(c.client_id.len || (c.clean_session && c.protocol_level == 4));
        if (c.will) {
            CHECK(mqtt_topic_valid(c.will_topic) && inside(c.will_topic.p, c.will_topic.len));
            check_str(c.will_message, 0);
            CHECK(c.will_qos <= 2);
        } else {
            CHECK(!c.will_qos && !c.will_retain && !c.will_topic.len && !c.will_message.len);
        }
        if (c.has_username) check_str(c.username, 1);
        if (c.has_password) check_str(c.password, 0);
        CHECK(c.has_username || !c.has_password);
        CHECK(c.refuse_code == 0);
        uint8_t ack[4];
        CHECK(mqtt_encode_connack(ack, sizeof ack, !c.clean_session, 0) == 4);
        check_answer(ack, 4, MQTT_CONNACK);
    } else {
        check_err(rc, why, 1);
        if (rc == REG_EINVAL) {
            CHECK(c.refuse_code == 1 || c.refuse_code == 2);
            uint8_t ack[4];
            CHECK(mqtt_encode_connack(ack, sizeof ack, false, c.refuse_code) == 4);
            check_answer(ack, 4, MQTT_CONNACK);
        }
    }

    /* PUBLISH */
    mqtt_publish p;
    why = NULL;
    rc = mqtt_decode_publish(f, &p, &why);
    if (f->type != MQTT_PUBLISH)
        CHECK(rc == REG_EINVAL);
    else if (rc == 0 || (rc == REG_EINVAL && p.qos == 2)) {
        if (rc) CHECK(why);
        CHECK(mqtt_topic_valid(p.topic) && inside(p.topic.p, p.topic.len));
        CHECK(inside(p.payload, p.payload_len));
        CHECK((p.qos > 0) == (p.packet_id != 0));
        CHECK(mqtt_publish_size(p.topic.len, p.payload_len, p.qos) == (int)f->len);
        CHECK(mqtt_filter_matches(p.topic, p.topic));
        *last_topic = p.topic;
        if (rc == 0 && f->len <= sizeof out) {
            CHECK(mqtt_encode_publish(out, f->len, &p) == (int)f->len);
            CHECK(memcmp(out, start, f->len) == 0);
            CHECK(mqtt_encode_publish(out, f->len - 1, &p) == REG_ETOOBIG);
            int h = mqtt_encode_publish_head(out, f->len, &p);
            CHECK(h > 0 && (size_t)h + p.payload_len == f->len);
            CHECK(memcmp(out, start, (size_t)h) == 0);
        }
    } else {
        check_err(rc, why, 0);
    }

    /* PUBACK */
    uint16_t id;
    why = NULL;
    rc = mqtt_decode_puback(f, &id, &why);
    if (f->type != MQTT_PUBACK)
        CHECK(rc == REG_EINVAL);
    else if (rc == 0) {
        CHECK(id != 0);
        CHECK(mqtt_encode_puback(out, 4, id) == 4 && memcmp(out, start, 4) == 0);
    } else {
        check_err(rc, why, 0);
    }

    /* SUBSCRIBE */
    mqtt_subscription subs[MAX_SUBS];
    size_t n;
    why = NULL;
    rc = mqtt_decode_subscribe(f, &id, subs, max_subs, &n, &why);
    if (f->type != MQTT_SUBSCRIBE)
        CHECK(rc == REG_EINVAL);
    else if (rc == 0) {
        CHECK(id != 0 && n >= 1 && n <= max_subs);
        uint8_t codes[MAX_SUBS];
        for (size_t i = 0; i < n; i++) {
            CHECK(mqtt_filter_valid(subs[i].filter));
            CHECK(inside(subs[i].filter.p, subs[i].filter.len));
            CHECK(subs[i].qos <= 2);
            codes[i] = (subs[i].filter.len & 1) ? MQTT_SUBACK_FAILURE : subs[i].qos;
            if (last_topic->len) mqtt_filter_matches(subs[i].filter, *last_topic);
        }
        int len = mqtt_encode_suback(out, sizeof out, id, codes, n);
        CHECK(len == 4 + (int)n);
        check_answer(out, len, MQTT_SUBACK);
        CHECK(mqtt_encode_suback(out, (size_t)len - 1, id, codes, n) == REG_ETOOBIG);
    } else {
        check_err(rc, why, 0);
    }

    /* UNSUBSCRIBE */
    mqtt_str filters[MAX_SUBS];
    why = NULL;
    rc = mqtt_decode_unsubscribe(f, &id, filters, max_subs, &n, &why);
    if (f->type != MQTT_UNSUBSCRIBE)
        CHECK(rc == REG_EINVAL);
    else if (rc == 0) {
        CHECK(id != 0 && n >= 1 && n <= max_subs);
        for (size_t i = 0; i < n; i++)
            CHECK(mqtt_filter_valid(filters[i]) && inside(filters[i].p, filters[i].len));
        CHECK(mqtt_encode_unsuback(out, 4, id) == 4);
        check_answer(out, 4, MQTT_UNSUBACK);
    } else {
        check_err(rc, why, 0);
    }

    /* PINGREQ, DISCONNECT */
    why = NULL;
    rc = mqtt_decode_pingreq(f, &why);
    if (f->type != MQTT_PINGREQ)
        CHECK(rc == REG_EINVAL);
    else if (rc == 0) {
        CHECK(f->body_len == 0);
        CHECK(mqtt_encode_pingresp(out, 2) == 2);
        check_answer(out, 2, MQTT_PINGRESP);
    } else {
        check_err(rc, why, 0);
    }
    why = NULL;
    rc = mqtt_decode_disconnect(f, &why);
    if (f->type != MQTT_DISCONNECT)
        CHECK(rc == REG_EINVAL);
    else if (rc)
        check_err(rc, why, 0);
}

static void check_stream(const uint8_t *data, size_t size, size_t max_packet, size_t max_subs)
{
    size_t off = 0;
    mqtt_str last_topic = {"", 0};
    while (off < size) {
        const uint8_t *b = data + off;
        size_t left = size - off;
        mqtt_frame f;
        const char *why = NULL;
        int rc = mqtt_frame_next(b, left, max_packet, &f, &why);
        if (rc == REG_EAGAIN) {
            CHECK(f.len == 0 || f.len > left);
            CHECK(f.len <= (max_packet ? max_packet : MQTT_MAX_PACKET));
            return;
        }
        if (rc) {
            CHECK(rc == REG_EDECODE || rc == REG_ETOOBIG);
            CHECK(why && *why);
            return;
        }
        CHECK(f.len >= 2 && f.len <= left);
        CHECK(!max_packet || f.len <= max_packet);
        CHECK(f.type >= 1 && f.type <= 14 && f.flags == (b[0] & 0x0f));
        size_t hlen = f.len - f.body_len;
        CHECK(hlen >= 2 && hlen <= 5 && f.body == b + hlen);
        /* the header is in its shortest form: re-encoding the length gives the same bytes */
        uint8_t enc[4];
        CHECK(mqtt_remaining_length_encode((uint32_t)f.body_len, enc) == (int)hlen - 1);
        CHECK(memcmp(enc, b + 1, hlen - 1) == 0);
        /* every prefix asks for more: the last byte short, the header only, and one between */
        mqtt_frame g;
        CHECK(mqtt_frame_next(b, f.len - 1, max_packet, &g, NULL) == REG_EAGAIN);
        CHECK(g.len == (f.len - 1 >= hlen ? f.len : 0));
        CHECK(mqtt_frame_next(b, hlen - 1, max_packet, &g, NULL) == REG_EAGAIN && g.len == 0);
        CHECK(mqtt_frame_next(b, f.len / 2, max_packet, &g, NULL) == REG_EAGAIN);
        frame_lo = b;
        frame_hi = b + f.len;
        check_frame(b, &f, max_subs, &last_topic);
        off += f.len;
    }
}

/* The next NUL-separated piece of [*p, end). */
static mqtt_str piece(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *s = *p, *z = memchr(s, 0, (size_t)(end - s));
    mqtt_str r = {(const char *)s, (size_t)((z ? z : end) - s)};
    *p = z ? z + 1 : end;
    return r;
}

static int under(mqtt_str t, mqtt_str prefix)
{
    if (prefix.len && prefix.p[prefix.len - 1] == '/') prefix.len--;
    if (t.len < prefix.len || memcmp(t.p, prefix.p, prefix.len) != 0) return 0;
    return t.len == prefix.len || t.p[prefix.len] == '/';
}

static void check_topics(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    mqtt_str filter = piece(&p, end), topic = piece(&p, end), prefix = piece(&p, end);
    bool fv = mqtt_filter_valid(filter), tv = mqtt_topic_valid(topic);
    bool m = mqtt_filter_matches(filter, topic);
    if (tv) {
        CHECK(mqtt_filter_valid(topic) && mqtt_utf8_valid(topic));
        CHECK(mqtt_filter_matches(topic, topic));
        CHECK(mqtt_filter_matches((mqtt_str){"#", 1}, topic) == (topic.p[0] != '$'));
    }
    if (mqtt_topic_valid(filter)) CHECK(fv);
    if (fv && tv && mqtt_topic_valid(filter))
        CHECK(m == (filter.len == topic.len && !memcmp(filter.p, topic.p, topic.len)));
    if (mqtt_filter_within(filter, prefix)) {
        CHECK(fv);
        if (tv && m) CHECK(under(topic, prefix));
    }
    if (tv && !(topic.len == 1 && topic.p[0] == '/')) {
        /* (a prefix of "/" alone names no level and bounds nothing) */
        CHECK(mqtt_filter_within(topic, topic));
        CHECK(!mqtt_filter_within((mqtt_str){"#", 1}, topic));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* First byte: low 2 bits the max_packet, the next 3 the bound on filters per packet. */
    static const size_t max_packets[4] = {0, 16, 128, 4096};
    size_t max_packet = max_packets[data[0] & 3];
    size_t max_subs = 1 + ((data[0] >> 2) & 7);
    check_stream(data + 1, size - 1, max_packet, max_subs);
    check_topics(data + 1, size - 1);
    return 0;
}
