/*
 * test_mqtt_codec.c - unit tests for common/mqtt_codec.c (MQTT 3.1.1 server-side codec).
 *
 * Covers every encoder against byte vectors written by hand from the specification; the
 * remaining-length boundaries (each length of encoding at both ends, and the maximum) and its
 * malformed forms (five bytes, non-shortest); the frame reader on every prefix of a CONNECT, over
 * max_packet, and on every (type, flags) pair of the first byte; each decoder on valid packets
 * and on each malformation the specification names (CONNECT flags and protocol, PUBLISH topics
 * with wildcards or invalid UTF-8, SUBSCRIBE filters and QoS); and tables for topic and filter
 * validity, filter matching and mqtt_filter_within.
 *
 * With MQTT_CORPUS_DIR set, many of the packets built here (valid, truncated and malformed) are
 * written there, one per file, behind the byte from which tests/fuzz/fuzz_mqtt.c takes its limits
 * (0x1c: no packet limit, 8 filters per packet): that is how tests/fuzz/corpus_mqtt/ was seeded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mqtt_codec.h"

/* ------------------------------------------------------------------------------------------ */
/* helpers */

#define S(lit) ((mqtt_str){(lit), sizeof(lit) - 1})

/* A packet under construction: the body first, then the fixed header put in front. */
typedef struct pkt {
    uint8_t body[1024];
    size_t n;
    uint8_t out[1100];
    size_t len;
} pkt;

static void p8(pkt *p, uint8_t v)
{
    assert_true(p->n < sizeof p->body);
    p->body[p->n++] = v;
}

static void p16(pkt *p, uint16_t v)
{
    p8(p, (uint8_t)(v >> 8));
    p8(p, (uint8_t)v);
}

static void pbytes(pkt *p, const void *s, size_t n)
{
    p16(p, (uint16_t)n);
    assert_true(p->n + n <= sizeof p->body);
    memcpy(p->body + p->n, s, n);
    p->n += n;
}

static void pstr(pkt *p, const char *s)
{
    pbytes(p, s, strlen(s));
}

/* Puts the fixed header in front; returns the packet. */
static const uint8_t *finish(pkt *p, uint8_t first)
{
    p->out[0] = first;
    int h = mqtt_remaining_length_encode((uint32_t)p->n, p->out + 1);
    assert_true(h >= 1);
    memcpy(p->out + 1 + h, p->body, p->n);
    p->len = 1 + (size_t)h + p->n;
    return p->out;
}

static void corpus_write(const char *name, const uint8_t *b, size_t n)
{
    const char *dir = getenv("MQTT_CORPUS_DIR");
    if (!dir) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fputc(0x1c, f), 0x1c);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* The one frame that is the whole of buf. */
static mqtt_frame frame_of(const uint8_t *buf, size_t n)
{
    mqtt_frame f;
    const char *why = NULL;
    int rc = mqtt_frame_next(buf, n, 0, &f, &why);
    if (rc) fail_msg("frame_next: %s (%s)", reg_strerror(rc), why ? why : "");
    assert_int_equal(f.len, n);
    return f;
}

static bool str_eq(mqtt_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.p, c, s.len) == 0;
}

/* A CONNECT's body from its parts (NULL: field absent; flags given whole). */
static const uint8_t *connect_pkt(pkt *p, const char *name, uint8_t level, uint8_t flags,
                                  uint16_t keep_alive, const char *client_id,
                                  const char *will_topic, const char *will_msg, const char *user,
                                  const char *pass)
{
    p->n = 0;
    pstr(p, name);
    p8(p, level);
    p8(p, flags);
    p16(p, keep_alive);
    pstr(p, client_id);
    if (will_topic) pstr(p, will_topic);
    if (will_msg) pstr(p, will_msg);
    if (user) pstr(p, user);
    if (pass) pstr(p, pass);
    return finish(p, 0x10);
}

static int decode_connect(pkt *p, mqtt_connect *c, const char **why)
{
    mqtt_frame f = frame_of(p->out, p->len);
    *why = NULL;
    int rc = mqtt_decode_connect(&f, c, why);
    if (rc) assert_non_null(*why);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* encoders */

static void test_encode_small(void **state)
{
    uint8_t b[16];
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    assert_int_equal(mqtt_encode_connack(b, sizeof b, false, 0), 4);
    assert_memory_equal(b, connack, 4);
    static const uint8_t connack_sp[] = {0x20, 0x02, 0x01, 0x00};
    assert_int_equal(mqtt_encode_connack(b, sizeof b, true, 0), 4);
    assert_memory_equal(b, connack_sp, 4);
    static const uint8_t connack_5[] = {0x20, 0x02, 0x00, 0x05};
    assert_int_equal(mqtt_encode_connack(b, sizeof b, false, MQTT_CONNACK_NOT_AUTHORIZED), 4);
    assert_memory_equal(b, connack_5, 4);
    assert_int_equal(mqtt_encode_connack(b, sizeof b, false, 6), REG_EINVAL);
    assert_int_equal(mqtt_encode_connack(b, sizeof b, true, 1), REG_EINVAL);
    assert_int_equal(mqtt_encode_connack(b, 3, false, 0), REG_ETOOBIG);

    static const uint8_t pingresp[] = {0xd0, 0x00};
    assert_int_equal(mqtt_encode_pingresp(b, sizeof b), 2);
    assert_memory_equal(b, pingresp, 2);
    assert_int_equal(mqtt_encode_pingresp(b, 1), REG_ETOOBIG);

    static const uint8_t puback[] = {0x40, 0x02, 0x12, 0x34};
    assert_int_equal(mqtt_encode_puback(b, sizeof b, 0x1234), 4);
    assert_memory_equal(b, puback, 4);
    assert_int_equal(mqtt_encode_puback(b, sizeof b, 0), REG_EINVAL);
    assert_int_equal(mqtt_encode_puback(b, 3, 1), REG_ETOOBIG);

    static const uint8_t unsuback[] = {0xb0, 0x02, 0x00, 0x01};
    assert_int_equal(mqtt_encode_unsuback(b, sizeof b, 1), 4);
    assert_memory_equal(b, unsuback, 4);
    assert_int_equal(mqtt_encode_unsuback(b, sizeof b, 0), REG_EINVAL);

    static const uint8_t suback[] = {0x90, 0x06, 0x00, 0x0a, 0x00, 0x01, 0x02, 0x80};
    static const uint8_t codes[] = {0, 1, 2, 0x80};
    assert_int_equal(mqtt_encode_suback(b, sizeof b, 10, codes, 4), 8);
    assert_memory_equal(b, suback, 8);
    assert_int_equal(mqtt_encode_suback(b, 7, 10, codes, 4), REG_ETOOBIG);
    static const uint8_t bad_codes[] = {0, 3};
    assert_int_equal(mqtt_encode_suback(b, sizeof b, 10, bad_codes, 2), REG_EINVAL);
    assert_int_equal(mqtt_encode_suback(b, sizeof b, 10, codes, 0), REG_EINVAL);
    assert_int_equal(mqtt_encode_suback(b, sizeof b, 0, codes, 1), REG_EINVAL);
}

static void test_encode_publish(void **state)
{
    uint8_t b[512];
    mqtt_publish p = {.topic = S("a/b"), .payload = (const uint8_t *)"hi", .payload_len = 2};
    static const uint8_t qos0[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'};
    assert_int_equal(mqtt_publish_size(3, 2, 0), 9);
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &p), 9);
    assert_memory_equal(b, qos0, 9);
    assert_int_equal(mqtt_encode_publish(b, 8, &p), REG_ETOOBIG);
    assert_int_equal(mqtt_encode_publish_head(b, sizeof b, &p), 7);
    assert_memory_equal(b, qos0, 7);

    p.qos = 1;
    p.dup = p.retain = true;
    p.packet_id = 10;
    static const uint8_t qos1[] = {0x3b, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0a, 'h', 'i'};
    assert_int_equal(mqtt_publish_size(3, 2, 1), 11);
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &p), 11);
    assert_memory_equal(b, qos1, 11);
    assert_int_equal(mqtt_encode_publish_head(b, 8, &p), REG_ETOOBIG);

    /* decodes back to the same fields */
    mqtt_frame f = frame_of(b, 11);
    mqtt_publish d;
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), 0);
    assert_true(str_eq(d.topic, "a/b") && d.qos == 1 && d.dup && d.retain && d.packet_id == 10);
    assert_int_equal(d.payload_len, 2);
    assert_memory_equal(d.payload, "hi", 2);

    /* a two-byte remaining length: 2 + 3 + 2 + 200 = 207 = CF 01 */
    uint8_t payload[200];
    memset(payload, 'x', sizeof payload);
    p.payload = payload;
    p.payload_len = sizeof payload;
    p.dup = p.retain = false;
    assert_int_equal(mqtt_publish_size(3, 200, 1), 210);
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &p), 210);
    static const uint8_t head[] = {0x32, 0xcf, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0a};
    assert_memory_equal(b, head, sizeof head);
    assert_memory_equal(b + 10, payload, 200);
    assert_int_equal(mqtt_encode_publish_head(b, sizeof b, &p), 10);

    /* what the specification forbids */
    mqtt_publish bad = p;
    bad.qos = 2;
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &bad), REG_EINVAL);
    bad = p;
    bad.packet_id = 0;
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &bad), REG_EINVAL);
    bad = p;
    bad.qos = 0;
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &bad), REG_EINVAL); /* packet id at QoS 0 */
    bad.packet_id = 0;
    bad.dup = true;
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &bad), REG_EINVAL);
    bad = p;
    bad.topic = S("a/+");
    assert_int_equal(mqtt_encode_publish(b, sizeof b, &bad), REG_EINVAL);
    bad.topic = S("");
    assert_int_equal(mqtt_encode_publish_head(b, sizeof b, &bad), REG_EINVAL);

    /* sizes at the protocol's limits */
    assert_int_equal(mqtt_publish_size(0, 0, 0), 4);
    assert_int_equal(mqtt_publish_size(1, 123, 0), 128); /* remaining 126 */
    assert_int_equal(mqtt_publish_size(1, 124, 0), 129); /* remaining 127 */
    assert_int_equal(mqtt_publish_size(1, 125, 0), 131); /* remaining 128 */
    assert_int_equal(mqtt_publish_size(1, MQTT_MAX_REMAINING - 3, 0), (int)MQTT_MAX_REMAINING + 5);
    assert_int_equal(mqtt_publish_size(1, MQTT_MAX_REMAINING - 2, 0), REG_ETOOBIG);
    assert_int_equal(mqtt_publish_size(1, MQTT_MAX_REMAINING - 3, 1), REG_ETOOBIG);
    assert_int_equal(mqtt_publish_size(65536, 0, 0), REG_ETOOBIG);
    assert_int_equal(mqtt_publish_size(65535, 0, 0), 65535 + 2 + 4);
}

/* ------------------------------------------------------------------------------------------ */
/* frame reader */

static void test_remaining_length(void **state)
{
    static const struct {
        uint32_t v;
        uint8_t enc[4];
        int n;
    } cases[] = {
        {0, {0x00}, 1},
        {127, {0x7f}, 1},
        {128, {0x80, 0x01}, 2},
        {16383, {0xff, 0x7f}, 2},
        {16384, {0x80, 0x80, 0x01}, 3},
        {2097151, {0xff, 0xff, 0x7f}, 3},
        {2097152, {0x80, 0x80, 0x80, 0x01}, 4},
        {268435455, {0xff, 0xff, 0xff, 0x7f}, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t enc[4];
        assert_int_equal(mqtt_remaining_length_encode(cases[i].v, enc), cases[i].n);
        assert_memory_equal(enc, cases[i].enc, (size_t)cases[i].n);

        /* the frame reader: the header alone asks for the rest and says how much */
        uint8_t hdr[5] = {0x30};
        memcpy(hdr + 1, cases[i].enc, (size_t)cases[i].n);
        size_t hlen = 1 + (size_t)cases[i].n, total = hlen + cases[i].v;
        mqtt_frame f;
        int rc = mqtt_frame_next(hdr, hlen, 0, &f, NULL);
        if (cases[i].v == 0) {
            assert_int_equal(rc, 0);
            assert_int_equal(f.body_len, 0);
        } else {
            assert_int_equal(rc, REG_EAGAIN);
            assert_int_equal(f.len, total);
        }
        /* every shorter header too, without a length yet */
        for (size_t k = 0; k < hlen; k++) {
            assert_int_equal(mqtt_frame_next(hdr, k, 0, &f, NULL), REG_EAGAIN);
            assert_int_equal(f.len, 0);
        }
        /* one byte over max_packet, known from the header alone */
        if (total > 2)
            assert_int_equal(mqtt_frame_next(hdr, hlen, total - 1, &f, NULL), REG_ETOOBIG);
        /* the whole packet where it is small enough to allocate */
        if (cases[i].v <= 2097152) {
            uint8_t *buf = calloc(1, total + 3);
            assert_non_null(buf);
            memcpy(buf, hdr, hlen);
            assert_int_equal(mqtt_frame_next(buf, total - 1, total, &f, NULL), REG_EAGAIN);
            assert_int_equal(mqtt_frame_next(buf, total + 3, total, &f, NULL), 0);
            assert_int_equal(f.len, total);
            assert_int_equal(f.body_len, cases[i].v);
            assert_ptr_equal(f.body, buf + hlen);
            assert_int_equal(f.type, MQTT_PUBLISH);
            free(buf);
        }
    }
    uint8_t enc[4];
    assert_int_equal(mqtt_remaining_length_encode(268435456, enc), REG_ETOOBIG);

    /* malformed lengths */
    static const struct {
        uint8_t b[6];
        size_t n;
    } bad[] = {
        {{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, 6}, /* five length bytes */
        {{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, 6}, /* five length bytes */
        {{0x30, 0x80, 0x80, 0x80, 0x80}, 5},       /* a fifth is coming: already wrong */
        {{0x30, 0x80, 0x00}, 3},                   /* 0 in two bytes */
        {{0x30, 0xff, 0x00}, 3},                   /* 127 in two bytes */
        {{0x30, 0x80, 0x80, 0x80, 0x00}, 5},       /* 0 in four bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mqtt_frame f;
        const char *why = NULL;
        assert_int_equal(mqtt_frame_next(bad[i].b, bad[i].n, 0, &f, &why), REG_EDECODE);
        assert_non_null(why);
    }
}

static void test_frame_partial_connect(void **state)
{
    pkt p;
    connect_pkt(&p, "MQTT", 4, 0xee, 60, "dev-1", "t/will", "bye", "user", "pw");
    corpus_write("connect_full.bin", p.out, p.len);
    size_t hlen = p.len - p.n;
    for (size_t k = 0; k < p.len; k++) {
        mqtt_frame f;
        assert_int_equal(mqtt_frame_next(p.out, k, 0, &f, NULL), REG_EAGAIN);
        assert_int_equal(f.len, k >= hlen ? p.len : 0);
    }
    /* complete, with the next packet's first bytes behind it */
    uint8_t two[1200];
    memcpy(two, p.out, p.len);
    two[p.len] = 0xc0;
    two[p.len + 1] = 0x00;
    mqtt_frame f;
    assert_int_equal(mqtt_frame_next(two, p.len + 1, 0, &f, NULL), 0);
    assert_int_equal(f.len, p.len);
    assert_int_equal(f.type, MQTT_CONNECT);
    assert_int_equal(f.flags, 0);
    assert_int_equal(mqtt_frame_next(two + f.len, 1, 0, &f, NULL), REG_EAGAIN);
    assert_int_equal(mqtt_frame_next(two + p.len, 2, 0, &f, NULL), 0);
    assert_int_equal(f.type, MQTT_PINGREQ);
    assert_int_equal(mqtt_frame_next(two, 0, 0, &f, NULL), REG_EAGAIN);
}

static void test_frame_max_packet(void **state)
{
    pkt p;
    connect_pkt(&p, "MQTT", 4, 0x02, 60, "abcdef", NULL, NULL, NULL, NULL);
    mqtt_frame f;
    const char *why = NULL;
    assert_int_equal(mqtt_frame_next(p.out, p.len, p.len - 1, &f, &why), REG_ETOOBIG);
    assert_non_null(why);
    assert_int_equal(mqtt_frame_next(p.out, 2, p.len - 1, &f, NULL), REG_ETOOBIG);
    assert_int_equal(mqtt_frame_next(p.out, p.len, p.len, &f, NULL), 0);
    assert_int_equal(mqtt_frame_next(p.out, p.len, 2, &f, NULL), REG_ETOOBIG);
    static const uint8_t ping[] = {0xc0, 0x00};
    assert_int_equal(mqtt_frame_next(ping, 2, 2, &f, NULL), 0);
}

static void test_frame_flags(void **state)
{
    for (unsigned type = 0; type < 16; type++) {
        for (unsigned flags = 0; flags < 16; flags++) {
            bool ok;
            if (type == 0 || type == 15)
                ok = false;
            else if (type == MQTT_PUBLISH)
                ok = ((flags >> 1) & 3) != 3;
            else if (type == MQTT_PUBREL || type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE)
                ok = flags == 2;
            else
                ok = flags == 0;
            uint8_t b[2] = {(uint8_t)(type << 4 | flags), 0};
            mqtt_frame f;
            /* the first byte alone already decides */
            assert_int_equal(mqtt_frame_next(b, 1, 0, &f, NULL), ok ? REG_EAGAIN : REG_EDECODE);
            int rc = mqtt_frame_next(b, 2, 0, &f, NULL);
            if (rc != (ok ? 0 : REG_EDECODE))
                fail_msg("type %u flags %#x: %s", type, flags, reg_strerror(rc));
            if (ok) {
                assert_int_equal(f.type, type);
                assert_int_equal(f.flags, flags);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* CONNECT */

static void test_connect_valid(void **state)
{
    static const uint8_t spec[] = {0x10, 0x0f, 0x00, 0x04, 'M',  'Q', 'T', 'T', 0x04,
                                   0x02, 0x00, 0x3c, 0x00, 0x03, 'a', 'b', 'c'};
    corpus_write("connect_min.bin", spec, sizeof spec);
    mqtt_frame f = frame_of(spec, sizeof spec);
    mqtt_connect c;
    assert_int_equal(mqtt_decode_connect(&f, &c, NULL), 0);
    assert_int_equal(c.protocol_level, 4);
    assert_true(c.clean_session && !c.will && !c.has_username && !c.has_password);
    assert_int_equal(c.keep_alive, 60);
    assert_true(str_eq(c.client_id, "abc"));
    assert_ptr_equal(c.client_id.p, (const char *)spec + 14); /* a view into the buffer */

    pkt p;
    const char *why;
    /* will (QoS 1, retained), user name and password: flags 1110 1110 */
    connect_pkt(&p, "MQTT", 4, 0xee, 300, "dev-1", "t/will", "bye", "user", "pw");
    assert_int_equal(decode_connect(&p, &c, &why), 0);
    assert_true(c.clean_session && c.will && c.will_retain && c.has_username && c.has_password);
    assert_int_equal(c.will_qos, 1);
    assert_int_equal(c.keep_alive, 300);
    assert_true(str_eq(c.client_id, "dev-1") && str_eq(c.will_topic, "t/will") &&
                str_eq(c.will_message, "bye") && str_eq(c.username, "user") &&
                str_eq(c.password, "pw"));

    /* MQTT 3.1 */
    connect_pkt(&p, "MQIsdp", 3, 0x00, 10, "legacy", NULL, NULL, NULL, NULL);
    corpus_write("connect_v31.bin", p.out, p.len);
    assert_int_equal(decode_connect(&p, &c, &why), 0);
    assert_int_equal(c.protocol_level, 3);
    assert_false(c.clean_session);

    /* an empty client id with clean session; user name without password; will QoS 2 */
    connect_pkt(&p, "MQTT", 4, 0x96, 0, "", "w", "", "u", NULL);
    corpus_write("connect_empty_id.bin", p.out, p.len);
    assert_int_equal(decode_connect(&p, &c, &why), 0);
    assert_int_equal(c.client_id.len, 0);
    assert_int_equal(c.will_qos, 2);
    assert_int_equal(c.will_message.len, 0);
    assert_true(c.has_username && !c.has_password && str_eq(c.username, "u"));

    /* a binary password and will message with NULs are fine */
    p.n = 0;
    pstr(&p, "MQTT");
    p8(&p, 4);
    p8(&p, 0xc6);
    p16(&p, 5);
    pstr(&p, "d");
    pstr(&p, "w/t");
    pbytes(&p, "\0\1\2", 3);
    pstr(&p, "u");
    pbytes(&p, "\0\xff", 2);
    finish(&p, 0x10);
    corpus_write("connect_binary.bin", p.out, p.len);
    assert_int_equal(decode_connect(&p, &c, &why), 0);
    assert_int_equal(c.will_message.len, 3);
    assert_int_equal(c.password.len, 2);
    assert_memory_equal(c.password.p, "\0\xff", 2);
}

static void test_connect_errors(void **state)
{
    pkt p;
    mqtt_connect c;
    const char *why;
    /* malformed */
    connect_pkt(&p, "MQTT", 4, 0x03, 60, "a", NULL, NULL, NULL, NULL); /* reserved bit */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTX", 4, 0x02, 60, "a", NULL, NULL, NULL, NULL);
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "mqtt", 4, 0x02, 60, "a", NULL, NULL, NULL, NULL);
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x1e, 60, "a", "t", "m", NULL, NULL); /* will QoS 3 */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x0a, 60, "a", NULL, NULL, NULL, NULL); /* will QoS, no will */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x22, 60, "a", NULL, NULL, NULL, NULL); /* retain, no will */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x42, 60, "a", NULL, NULL, NULL, "pw"); /* password, no user */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x06, 60, "a", "t/+", "m", NULL, NULL); /* wildcard will topic */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x06, 60, "a", "", "m", NULL, NULL); /* empty will topic */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x02, 60, "a\xc0\xaf", NULL, NULL, NULL, NULL); /* overlong */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x82, 60, "a", NULL, NULL, "\xed\xa0\x80", NULL); /* surrogate */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x82, 60, "a", NULL, NULL, NULL, NULL); /* user flag, no user */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    corpus_write("connect_truncated_user.bin", p.out, p.len);
    connect_pkt(&p, "MQTT", 4, 0x06, 60, "a", "t", NULL, NULL, NULL); /* no will message */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    connect_pkt(&p, "MQTT", 4, 0x02, 60, "a", NULL, NULL, "extra", NULL); /* trailing bytes */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EDECODE);
    /* header cut short inside the remaining length's bounds */
    static const uint8_t cut[] = {0x10, 0x08, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02};
    corpus_write("connect_cut_header.bin", cut, sizeof cut);
    mqtt_frame f = frame_of(cut, sizeof cut);
    assert_int_equal(mqtt_decode_connect(&f, &c, NULL), REG_EDECODE);
    static const uint8_t cut_name[] = {0x10, 0x03, 0x00, 0x04, 'M'};
    f = frame_of(cut_name, sizeof cut_name);
    assert_int_equal(mqtt_decode_connect(&f, &c, NULL), REG_EDECODE);

    /* well-formed, refused with a CONNACK code */
    connect_pkt(&p, "MQTT", 3, 0x02, 60, "a", NULL, NULL, NULL, NULL);
    assert_int_equal(decode_connect(&p, &c, &why), REG_EINVAL);
    assert_int_equal(c.refuse_code, MQTT_CONNACK_BAD_PROTOCOL);
    connect_pkt(&p, "MQTT", 5, 0x02, 60, "a", NULL, NULL, NULL, NULL); /* MQTT 5 */
    corpus_write("connect_v5.bin", p.out, p.len);
    assert_int_equal(decode_connect(&p, &c, &why), REG_EINVAL);
    assert_int_equal(c.refuse_code, MQTT_CONNACK_BAD_PROTOCOL);
    connect_pkt(&p, "MQIsdp", 4, 0x02, 60, "a", NULL, NULL, NULL, NULL);
    assert_int_equal(decode_connect(&p, &c, &why), REG_EINVAL);
    assert_int_equal(c.refuse_code, MQTT_CONNACK_BAD_PROTOCOL);
    connect_pkt(&p, "MQTT", 4, 0x00, 60, "", NULL, NULL, NULL, NULL); /* empty id, clean 0 */
    corpus_write("connect_empty_id_clean0.bin", p.out, p.len);
    assert_int_equal(decode_connect(&p, &c, &why), REG_EINVAL);
    assert_int_equal(c.refuse_code, MQTT_CONNACK_ID_REJECTED);
    connect_pkt(&p, "MQIsdp", 3, 0x02, 60, "", NULL, NULL, NULL, NULL); /* 3.1 needs an id */
    assert_int_equal(decode_connect(&p, &c, &why), REG_EINVAL);
    assert_int_equal(c.refuse_code, MQTT_CONNACK_ID_REJECTED);

    /* another packet type */
    static const uint8_t ping[] = {0xc0, 0x00};
    f = frame_of(ping, 2);
    assert_int_equal(mqtt_decode_connect(&f, &c, NULL), REG_EINVAL);
}

/* ------------------------------------------------------------------------------------------ */
/* PUBLISH, PUBACK */

static int decode_publish_topic(const char *topic, size_t tlen, mqtt_publish *d)
{
    pkt p;
    p.n = 0;
    pbytes(&p, topic, tlen);
    pbytes(&p, "x", 1);
    finish(&p, 0x30);
    mqtt_frame f = frame_of(p.out, p.len);
    const char *why = NULL;
    int rc = mqtt_decode_publish(&f, d, &why);
    if (rc) assert_non_null(why);
    return rc;
}

static void test_publish_decode(void **state)
{
    mqtt_publish d;
    static const uint8_t q0[] = {0x31, 0x06, 0x00, 0x01, 't', 'a', 'b', 'c'};
    corpus_write("publish_qos0_retain.bin", q0, sizeof q0);
    mqtt_frame f = frame_of(q0, sizeof q0);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), 0);
    assert_true(str_eq(d.topic, "t") && d.qos == 0 && d.retain && !d.dup && d.packet_id == 0);
    assert_int_equal(d.payload_len, 3);
    assert_ptr_equal(d.payload, q0 + 5);

    static const uint8_t q1[] = {0x3a, 0x05, 0x00, 0x01, 't', 0x01, 0x00};
    corpus_write("publish_qos1_dup_empty.bin", q1, sizeof q1);
    f = frame_of(q1, sizeof q1);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), 0);
    assert_true(d.qos == 1 && d.dup && !d.retain && d.packet_id == 256 && d.payload_len == 0);

    static const uint8_t q2[] = {0x34, 0x06, 0x00, 0x01, 't', 0x00, 0x07, 'z'};
    corpus_write("publish_qos2.bin", q2, sizeof q2);
    f = frame_of(q2, sizeof q2);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), REG_EINVAL);
    assert_true(d.qos == 2 && d.packet_id == 7 && d.payload_len == 1 && str_eq(d.topic, "t"));

    /* QoS 3: the frame reader refuses it, and so does the decoder given such a frame */
    static const uint8_t q3[] = {0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01};
    corpus_write("publish_qos3.bin", q3, sizeof q3);
    assert_int_equal(mqtt_frame_next(q3, sizeof q3, 0, &f, NULL), REG_EDECODE);
    mqtt_frame forged = {MQTT_PUBLISH, 0x06, q3 + 2, 5, 7};
    assert_int_equal(mqtt_decode_publish(&forged, &d, NULL), REG_EDECODE);

    static const uint8_t id0[] = {0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x00};
    f = frame_of(id0, sizeof id0);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), REG_EDECODE);
    static const uint8_t dup0[] = {0x38, 0x03, 0x00, 0x01, 't'};
    f = frame_of(dup0, sizeof dup0);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), REG_EDECODE);
    static const uint8_t no_id[] = {0x32, 0x04, 0x00, 0x01, 't', 0x00};
    f = frame_of(no_id, sizeof no_id);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), REG_EDECODE);
    static const uint8_t cut_topic[] = {0x30, 0x03, 0x00, 0x05, 't'};
    corpus_write("publish_cut_topic.bin", cut_topic, sizeof cut_topic);
    f = frame_of(cut_topic, sizeof cut_topic);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), REG_EDECODE);
    static const uint8_t empty[] = {0x30, 0x00};
    f = frame_of(empty, sizeof empty);
    assert_int_equal(mqtt_decode_publish(&f, &d, NULL), REG_EDECODE);

    /* topics */
    assert_int_equal(decode_publish_topic("a/b", 3, &d), 0);
    assert_int_equal(decode_publish_topic("\xc3\xbc/\xe2\x82\xac/\xf0\x9d\x84\x9e", 11, &d), 0);
    assert_int_equal(decode_publish_topic("$registry/devices/x/shadow/update", 33, &d), 0);
    assert_int_equal(decode_publish_topic("/", 1, &d), 0);
    static const char *bad[] = {
        "a/+",
        "+",
        "#",
        "a/#",
        "a/b#",
        "a+b",
        "",
        "a\xc0\xaf",        /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong '/' in three bytes */
        "\xed\xa0\x80",     /* U+D800 */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xe2\x82",         /* truncated */
        "a\x80",            /* stray continuation */
        "\xff",
        "\xf8\x88\x80\x80\x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (decode_publish_topic(bad[i], strlen(bad[i]), &d) != REG_EDECODE)
            fail_msg("topic %zu accepted", i);
    }
    assert_int_equal(decode_publish_topic("a\0b", 3, &d), REG_EDECODE);   /* U+0000 */
    assert_int_equal(decode_publish_topic("\xef\xbf\xbf", 3, &d), 0);     /* U+FFFF is allowed */
    assert_int_equal(decode_publish_topic("\xf4\x8f\xbf\xbf", 4, &d), 0); /* U+10FFFF */
    assert_int_equal(decode_publish_topic("\xed\x9f\xbf", 3, &d), 0);     /* U+D7FF */
}

static void test_puback_decode(void **state)
{
    uint16_t id;
    static const uint8_t ok[] = {0x40, 0x02, 0xbe, 0xef};
    corpus_write("puback.bin", ok, sizeof ok);
    mqtt_frame f = frame_of(ok, sizeof ok);
    assert_int_equal(mqtt_decode_puback(&f, &id, NULL), 0);
    assert_int_equal(id, 0xbeef);
    uint8_t b[4];
    assert_int_equal(mqtt_encode_puback(b, 4, id), 4);
    assert_memory_equal(b, ok, 4);
    static const uint8_t zero[] = {0x40, 0x02, 0x00, 0x00};
    f = frame_of(zero, sizeof zero);
    assert_int_equal(mqtt_decode_puback(&f, &id, NULL), REG_EDECODE);
    static const uint8_t longer[] = {0x40, 0x03, 0x00, 0x01, 0x00};
    f = frame_of(longer, sizeof longer);
    assert_int_equal(mqtt_decode_puback(&f, &id, NULL), REG_EDECODE);
    static const uint8_t shorter[] = {0x40, 0x01, 0x01};
    f = frame_of(shorter, sizeof shorter);
    assert_int_equal(mqtt_decode_puback(&f, &id, NULL), REG_EDECODE);
}

/* ------------------------------------------------------------------------------------------ */
/* SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT */

/* A SUBSCRIBE (qos >= 0) or UNSUBSCRIBE (qos < 0) with these filters. */
static const uint8_t *filters_pkt(pkt *p, uint16_t id, const char *const *filters, size_t n,
                                  int qos)
{
    p->n = 0;
    p16(p, id);
    for (size_t i = 0; i < n; i++) {
        pstr(p, filters[i]);
        if (qos >= 0) p8(p, (uint8_t)qos);
    }
    return finish(p, qos >= 0 ? 0x82 : 0xa2);
}

static int subscribe(pkt *p, mqtt_subscription *subs, size_t max, size_t *count)
{
    mqtt_frame f = frame_of(p->out, p->len);
    uint16_t id;
    const char *why = NULL;
    int rc = mqtt_decode_subscribe(&f, &id, subs, max, count, &why);
    if (rc) assert_non_null(why);
    return rc;
}

static void test_subscribe_decode(void **state)
{
    pkt p;
    mqtt_subscription subs[4];
    size_t n;
    uint16_t id;
    static const uint8_t spec[] = {0x82, 0x0e, 0x00, 0x0a, 0x00, 0x03, 'a', '/',
                                   'b',  0x01, 0x00, 0x03, 'c',  '/',  '#', 0x02};
    corpus_write("subscribe_two.bin", spec, sizeof spec);
    mqtt_frame f = frame_of(spec, sizeof spec);
    assert_int_equal(mqtt_decode_subscribe(&f, &id, subs, 4, &n, NULL), 0);
    assert_int_equal(id, 10);
    assert_int_equal(n, 2);
    assert_true(str_eq(subs[0].filter, "a/b") && subs[0].qos == 1);
    assert_true(str_eq(subs[1].filter, "c/#") && subs[1].qos == 2);
    assert_int_equal(mqtt_decode_subscribe(&f, &id, subs, 1, &n, NULL), REG_ETOOBIG);

    const char *const good[] = {"$registry/devices/d/#", "+/+", "#", "/", "a/+/c"};
    filters_pkt(&p, 1, good, 4, 0);
    corpus_write("subscribe_wildcards.bin", p.out, p.len);
    assert_int_equal(subscribe(&p, subs, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(subscribe(&p, subs, 3, &n), REG_ETOOBIG);

    filters_pkt(&p, 1, good, 0, 0); /* no filters */
    corpus_write("subscribe_empty.bin", p.out, p.len);
    assert_int_equal(subscribe(&p, subs, 4, &n), REG_EDECODE);
    filters_pkt(&p, 0, good, 1, 0); /* packet id 0 */
    assert_int_equal(subscribe(&p, subs, 4, &n), REG_EDECODE);
    filters_pkt(&p, 1, good, 1, 3); /* QoS 3 */
    assert_int_equal(subscribe(&p, subs, 4, &n), REG_EDECODE);
    filters_pkt(&p, 1, good, 1, 0x41); /* reserved bits */
    assert_int_equal(subscribe(&p, subs, 4, &n), REG_EDECODE);
    filters_pkt(&p, 1, good, 1, -1); /* no QoS byte: an UNSUBSCRIBE body */
    p.out[0] = 0x82;
    assert_int_equal(subscribe(&p, subs, 4, &n), REG_EDECODE);

    static const char *const bad[] = {"a/#/b", "a+", "#/x", "+a", "a/b#", "", "a/\xed\xa0\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *const two[] = {"ok/+", bad[i]};
        filters_pkt(&p, 1, two, 2, 1);
        if (subscribe(&p, subs, 4, &n) != REG_EDECODE) fail_msg("filter '%s' accepted", bad[i]);
    }
    const char *const nul[] = {"a"};
    filters_pkt(&p, 1, nul, 1, 0);
    assert_int_equal(p.out[6], 'a');
    p.out[6] = 0; /* "a" becomes U+0000 */
    assert_int_equal(subscribe(&p, subs, 4, &n), REG_EDECODE);

    /* the SUBACK for a subscription answers it with one code per filter */
    filters_pkt(&p, 77, good, 3, 2);
    assert_int_equal(subscribe(&p, subs, 4, &n), 0);
    uint8_t codes[4], out[16];
    for (size_t i = 0; i < n; i++)
        codes[i] = subs[i].qos > 1 ? 1 : subs[i].qos;
    static const uint8_t suback[] = {0x90, 0x05, 0x00, 77, 1, 1, 1};
    assert_int_equal(mqtt_encode_suback(out, sizeof out, 77, codes, n), 7);
    assert_memory_equal(out, suback, 7);
}

static void test_unsubscribe_decode(void **state)
{
    pkt p;
    mqtt_str filters[3];
    size_t n;
    uint16_t id;
    static const uint8_t spec[] = {0xa2, 0x07, 0x00, 0x02, 0x00, 0x03, 'a', '/', '+'};
    corpus_write("unsubscribe.bin", spec, sizeof spec);
    mqtt_frame f = frame_of(spec, sizeof spec);
    assert_int_equal(mqtt_decode_unsubscribe(&f, &id, filters, 3, &n, NULL), 0);
    assert_int_equal(id, 2);
    assert_int_equal(n, 1);
    assert_true(str_eq(filters[0], "a/+"));

    const char *const list[] = {"a", "b/#", "c", "d"};
    filters_pkt(&p, 9, list, 4, -1);
    f = frame_of(p.out, p.len);
    assert_int_equal(mqtt_decode_unsubscribe(&f, &id, filters, 3, &n, NULL), REG_ETOOBIG);
    filters_pkt(&p, 9, list, 3, -1);
    f = frame_of(p.out, p.len);
    assert_int_equal(mqtt_decode_unsubscribe(&f, &id, filters, 3, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_true(str_eq(filters[1], "b/#"));
    filters_pkt(&p, 9, list, 0, -1);
    f = frame_of(p.out, p.len);
    assert_int_equal(mqtt_decode_unsubscribe(&f, &id, filters, 3, &n, NULL), REG_EDECODE);
    const char *const bad[] = {"a/#/b"};
    filters_pkt(&p, 9, bad, 1, -1);
    f = frame_of(p.out, p.len);
    assert_int_equal(mqtt_decode_unsubscribe(&f, &id, filters, 3, &n, NULL), REG_EDECODE);
    /* a SUBSCRIBE frame is not an UNSUBSCRIBE */
    filters_pkt(&p, 9, list, 1, 0);
    f = frame_of(p.out, p.len);
    assert_int_equal(mqtt_decode_unsubscribe(&f, &id, filters, 3, &n, NULL), REG_EINVAL);
}

static void test_empty_packets(void **state)
{
    static const uint8_t ping[] = {0xc0, 0x00}, disc[] = {0xe0, 0x00};
    corpus_write("pingreq.bin", ping, 2);
    corpus_write("disconnect.bin", disc, 2);
    mqtt_frame f = frame_of(ping, 2);
    assert_int_equal(mqtt_decode_pingreq(&f, NULL), 0);
    assert_int_equal(mqtt_decode_disconnect(&f, NULL), REG_EINVAL);
    f = frame_of(disc, 2);
    assert_int_equal(mqtt_decode_disconnect(&f, NULL), 0);
    static const uint8_t ping_body[] = {0xc0, 0x01, 0x00};
    corpus_write("pingreq_body.bin", ping_body, 3);
    f = frame_of(ping_body, 3);
    assert_int_equal(mqtt_decode_pingreq(&f, NULL), REG_EDECODE);
    static const uint8_t disc_body[] = {0xe0, 0x01, 0x00};
    f = frame_of(disc_body, 3);
    assert_int_equal(mqtt_decode_disconnect(&f, NULL), REG_EDECODE);
    /* a stream of several packets */
    static const uint8_t stream[] = {0xc0, 0x00, 0x30, 0x03, 0x00, 0x01, 't', 0xe0, 0x00};
    corpus_write("stream.bin", stream, sizeof stream);
    size_t off = 0, count = 0;
    while (off < sizeof stream) {
        assert_int_equal(mqtt_frame_next(stream + off, sizeof stream - off, 16, &f, NULL), 0);
        off += f.len;
        count++;
    }
    assert_int_equal(count, 3);
    assert_int_equal(f.type, MQTT_DISCONNECT);
}

/* ------------------------------------------------------------------------------------------ */
/* topics */

static void test_topic_filter_valid(void **state)
{
    static const struct {
        const char *s;
        bool topic, filter;
    } cases[] = {
        {"a", true, true},      {"a/b/c", true, true},
        {"/", true, true},      {"//", true, true},
        {"$SYS/x", true, true}, {" ", true, true},
        {"", false, false},     {"#", false, true},
        {"+", false, true},     {"a/#", false, true},
        {"+/+/#", false, true}, {"/+/", false, true},
        {"a/+/b", false, true}, {"a/#/b", false, false},
        {"a+", false, false},   {"#/x", false, false},
        {"+a", false, false},   {"a/b#", false, false},
        {"##", false, false},   {"a/++", false, false},
        {"#/", false, false},   {"\xed\xa0\x80", false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mqtt_str s = mqtt_cstr(cases[i].s);
        if (mqtt_topic_valid(s) != cases[i].topic) fail_msg("topic '%s'", cases[i].s);
        if (mqtt_filter_valid(s) != cases[i].filter) fail_msg("filter '%s'", cases[i].s);
    }
    assert_false(mqtt_topic_valid(S("a\0b")));
    assert_false(mqtt_filter_valid(S("a\0b")));
    static char big[65537];
    memset(big, 'a', sizeof big);
    assert_true(mqtt_topic_valid((mqtt_str){big, 65535}));
    assert_false(mqtt_topic_valid((mqtt_str){big, 65536}));
    assert_false(mqtt_utf8_valid((mqtt_str){big, 65536}));
    assert_true(mqtt_utf8_valid(S("")));
    assert_false(mqtt_utf8_valid(S("\xc1\xbf")));
    assert_true(mqtt_utf8_valid(S("\xc2\x80")));
}

static void test_filter_matches(void **state)
{
    static const struct {
        const char *filter, *topic;
        bool match;
    } cases[] = {
        {"a/b", "a/b", true},
        {"a/b", "a/c", false},
        {"a/b", "a/b/c", false},
        {"a/b/c", "a/b", false},
        {"a/b", "a/bc", false},
        {"a/bc", "a/b", false},
        {"#", "a", true},
        {"#", "a/b/c", true},
        {"#", "/", true},
        {"a/#", "a", true}, /* the parent level */
        {"a/#", "a/b", true},
        {"a/#", "a/b/c", true},
        {"a/#", "a/", true},
        {"a/#", "ab", false},
        {"a/#", "b/a", false},
        {"a/b/#", "a", false},
        {"+", "a", true},
        {"+", "a/b", false},
        {"+", "/", false},
        {"+/+", "/", true},
        {"/+", "/finance", true},
        {"+", "/finance", false},
        {"a/+", "a/", true}, /* an empty level */
        {"a/+", "a", false},
        {"a/+/c", "a/b/c", true},
        {"a/+/c", "a/b/d", false},
        {"a/+/#", "a/b", true},
        {"a/+/#", "a", false},
        {"+/#", "a", true},
        {"+/b/#", "x/b/c/d", true},
        {"/#", "/x", true},
        {"/#", "x", false},
        /* '$' topics: no leading wildcard reaches them */
        {"#", "$SYS/x", false},
        {"+/x", "$SYS/x", false},
        {"+", "$SYS", false},
        {"$SYS/#", "$SYS/x", true},
        {"$SYS/+", "$SYS/x", true},
        {"$registry/devices/+/shadow", "$registry/devices/d1/shadow", true},
        {"a/#", "a/$x", true}, /* only the first character counts */
        {"A/b", "a/b", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool m = mqtt_filter_matches(mqtt_cstr(cases[i].filter), mqtt_cstr(cases[i].topic));
        if (m != cases[i].match) fail_msg("'%s' vs '%s': %d", cases[i].filter, cases[i].topic, m);
    }
    assert_false(mqtt_filter_matches(S(""), S("a")));
    assert_false(mqtt_filter_matches(S("a"), S("")));
}

static void test_filter_within(void **state)
{
    /* for the fuzzer's topic checks: filter, topic and prefix separated by NULs */
    static const char seed[] = "$registry/devices/d1/+/#\0$registry/devices/d1/a/b\0"
                               "$registry/devices/d1/";
    corpus_write("topics_within.bin", (const uint8_t *)seed, sizeof seed - 1);
    static const char seed2[] = "+/b/#\0x/b/c\0x/";
    corpus_write("topics_match.bin", (const uint8_t *)seed2, sizeof seed2 - 1);
    static const char P[] = "$registry/devices/d1/";
    static const struct {
        const char *filter, *prefix;
        bool within;
    } cases[] = {
        {"$registry/devices/d1/#", P, true},
        {"$registry/devices/d1/shadow/+", P, true},
        {"$registry/devices/d1/shadow/update", P, true},
        {"$registry/devices/d1/+/+/#", P, true},
        {"$registry/devices/d1/+", P, true},
        {"$registry/devices/d1", P, true}, /* the prefix's own topic */
        {"$registry/devices/d1/", P, true},
        {"$registry/devices/d1/#", "$registry/devices/d1", true},
        {"#", P, false},
        {"+", P, false},
        {"+/devices/d1/x", P, false},
        {"$registry/devices/+/shadow", P, false},
        {"$registry/devices/#", P, false},
        {"$registry/+/d1/shadow", P, false},
        {"$registry/devices/d12/x", P, false},
        {"$registry/devices/d", P, false},
        {"$registry/devices/d1x", P, false},
        {"$registry/devices/d1/#/x", P, false},                    /* not a valid filter */
        {"$registry/devices/d1/a+", P, false},                     /* not a valid filter */
        {"$registry/devices/d1/#", "$registry/devices/+/", false}, /* prefix with a wildcard */
        {"a/#", "", false},
        {"a/#", "/", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool w = mqtt_filter_within(mqtt_cstr(cases[i].filter), mqtt_cstr(cases[i].prefix));
        if (w != cases[i].within)
            fail_msg("'%s' within '%s': %d", cases[i].filter, cases[i].prefix, w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_small),     cmocka_unit_test(test_encode_publish),
        cmocka_unit_test(test_remaining_length), cmocka_unit_test(test_frame_partial_connect),
        cmocka_unit_test(test_frame_max_packet), cmocka_unit_test(test_frame_flags),
        cmocka_unit_test(test_connect_valid),    cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_publish_decode),   cmocka_unit_test(test_puback_decode),
        cmocka_unit_test(test_subscribe_decode), cmocka_unit_test(test_unsubscribe_decode),
        cmocka_unit_test(test_empty_packets),    cmocka_unit_test(test_topic_filter_valid),
        cmocka_unit_test(test_filter_matches),   cmocka_unit_test(test_filter_within),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
