/*
 * mqtt_codec.h - the server side of MQTT 3.1.1 (and 3.1, "MQIsdp" level 3, on CONNECT) as a pure
 * codec: an incremental frame reader that cuts a byte stream into packets and checks their fixed
 * headers; decoders for the packets a server receives (CONNECT, PUBLISH, PUBACK, SUBSCRIBE,
 * UNSUBSCRIBE, PINGREQ, DISCONNECT) that validate every field the specification constrains,
 * UTF-8 strings included (section 1.5.3: well-formed, no surrogates, no U+0000); encoders for the
 * packets a server sends (CONNACK, PUBLISH at QoS 0 and 1, PUBACK, SUBACK, UNSUBACK, PINGRESP) into
 * a caller's buffer; and the topic rules (names, filters, matching with '+' and '#', and whether
 * a filter stays under a prefix, for the ACL).
 *
 * No I/O, no logging, no global state, no allocation. Decoded packets are views: every mqtt_str,
 * payload and body pointer they hold points into the buffer given to mqtt_frame_next, so they are
 * valid only while the caller keeps that buffer unchanged. MQTT strings are length-prefixed and
 * never NUL-terminated here.
 *
 * Errors come from the registry's one space (err.h):
 *   REG_EAGAIN  (frame reader only) the buffer holds the start of a packet, not all of it;
 *   REG_EDECODE malformed: a protocol violation after which the server closes the connection
 *               without an answer (MQTT-4.8.0-1);
 *   REG_ETOOBIG over a limit the caller set (packet size, filters per packet), or an encoder's
 *               output does not fit its buffer or the protocol's sizes;
 *   REG_EINVAL  well-formed but refused: CONNECT with an unsupported protocol level or a
 *               rejected client id (mqtt_connect.refuse_code says which CONNACK to send), PUBLISH
 *               at QoS 2 (which this server does not support); for encoders, arguments that
 *               would make a packet the specification forbids.
 * Functions that can fail take an optional `const char **why` (may be NULL) and set it, on
 * error, to a short static English reason fit for a log line.
 */
#ifndef REG_MQTT_CODEC_H
#define REG_MQTT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Control packet types (the high nibble of the first byte). 0 and 15 are reserved. */
enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* CONNACK return codes (3.2.2.3). */
enum mqtt_connack_code {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_PROTOCOL = 1,
    MQTT_CONNACK_ID_REJECTED = 2,
    MQTT_CONNACK_UNAVAILABLE = 3,
    MQTT_CONNACK_BAD_CREDENTIALS = 4,
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQTT_SUBACK_FAILURE 0x80
#define MQTT_MAX_REMAINING 268435455u /* the largest remaining length (4 length bytes) */
#define MQTT_MAX_PACKET (MQTT_MAX_REMAINING + 5u)
#define MQTT_MAX_STR 65535u /* strings carry a 2-byte length */

/* A string inside a packet (or any caller string): p is not NUL-terminated. */
typedef struct mqtt_str {
    const char *p;
    size_t len;
} mqtt_str;

/* A view of a NUL-terminated string (NULL gives the empty string). */
static inline mqtt_str mqtt_cstr(const char *s)
{
    mqtt_str r = {s ? s : "", s ? strlen(s) : 0};
    return r;
}

/* Whether a equals the NUL-terminated string b. */
static inline bool mqtt_str_eq(mqtt_str a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && !memcmp(a.p, b, n);
}

/* One packet found by mqtt_frame_next. body points into the caller's buffer. */
typedef struct mqtt_frame {
    enum mqtt_type type;
    uint8_t flags;       /* the low nibble of the first byte */
    const uint8_t *body; /* the variable header and payload (remaining length bytes) */
    size_t body_len;     /* the remaining length */
    size_t len;          /* the whole packet: fixed header + body_len */
} mqtt_frame;

typedef struct mqtt_connect {
    uint8_t protocol_level; /* 4 ("MQTT", 3.1.1) or 3 ("MQIsdp", 3.1) */
    bool clean_session;
    uint16_t keep_alive; /* seconds; 0 turns the keep-alive off */
    mqtt_str client_id;  /* may be empty (with clean_session): the server assigns one */
    bool will;
    uint8_t will_qos; /* 0..2 */
    bool will_retain;
    mqtt_str will_topic;   /* a valid topic name when `will` */
    mqtt_str will_message; /* binary */
    bool has_username, has_password;
    mqtt_str username;   /* UTF-8 */
    mqtt_str password;   /* binary */
    uint8_t refuse_code; /* with REG_EINVAL: the CONNACK return code to answer with, then close */
} mqtt_connect;

/* A PUBLISH as decoded, or as given to the encoder. */
typedef struct mqtt_publish {
    mqtt_str topic;
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos; /* 0..2 decoded (2 with REG_EINVAL); 0 or 1 to encode */
    bool dup, retain;
    uint16_t packet_id; /* non-zero when qos > 0, else 0 */
} mqtt_publish;

typedef struct mqtt_subscription {
    mqtt_str filter; /* a valid topic filter */
    uint8_t qos;     /* the requested maximum QoS, 0..2 */
} mqtt_subscription;

/* ---------------------------------------------------------------------------------------------
 * Frame reader */

/* Looks for one packet at the start of buf[0..len). 0 when a whole packet is there: *f describes
 * it (f->body points into buf; consume f->len bytes). REG_EAGAIN when buf holds only the start
 * of a valid-so-far packet: f->len is then the whole packet's size if the fixed header is
 * complete, else 0. REG_ETOOBIG when the packet (fixed header + remaining length) is larger than
 * max_packet (0: the protocol's limit), reported as soon as the length is known, before the body
 * arrives. REG_EDECODE for a reserved type (0, 15), fixed-header flags 3.1.1 forbids for the type
 * (PUBREL, SUBSCRIBE, UNSUBSCRIBE 0x2, PUBLISH QoS 3, others 0), or a remaining length encoded in
 * more than 4 bytes or in more bytes than needed; the first byte is checked as soon as it
 * arrives. The reader keeps no state: call it again with more bytes. */
int mqtt_frame_next(const uint8_t *buf, size_t len, size_t max_packet, mqtt_frame *f,
                    const char **why);

/* Encodes a remaining length into out (at least 4 bytes): the number of bytes written (1..4), or
 * REG_ETOOBIG over MQTT_MAX_REMAINING. */
int mqtt_remaining_length_encode(uint32_t value, uint8_t *out);

/* ---------------------------------------------------------------------------------------------
 * Decoders: each takes a frame from mqtt_frame_next (REG_EINVAL if it is another type) and fills
 * *out with views into the frame's body. Bytes left over after the last field are malformed. */

/* CONNECT. 0, REG_EDECODE (unknown protocol name, reserved flag set, will QoS 3 or will
 * QoS/retain without the will flag, password without username, invalid UTF-8 or will topic,
 * truncated or trailing bytes), or REG_EINVAL with out->refuse_code set: 1 for a protocol level
 * other than 4 ("MQTT") or 3 ("MQIsdp"), 2 for an empty client id without clean session (or at
 * all in 3.1). The client id is not otherwise restricted (the server may refuse more). */
int mqtt_decode_connect(const mqtt_frame *f, mqtt_connect *out, const char **why);

/* PUBLISH. 0; REG_EDECODE (invalid topic name: empty, wildcards, invalid UTF-8; packet id 0 at
 * QoS > 0; DUP at QoS 0; QoS 3; truncated); REG_EINVAL for QoS 2, with *out filled. */
int mqtt_decode_publish(const mqtt_frame *f, mqtt_publish *out, const char **why);

/* PUBACK: exactly a non-zero packet id. 0 or REG_EDECODE. */
int mqtt_decode_puback(const mqtt_frame *f, uint16_t *packet_id, const char **why);

/* SUBSCRIBE: the packet id into *packet_id and up to max_subs (filter, QoS) pairs into subs,
 * their number into *count. 0; REG_EDECODE (packet id 0, no filters, an invalid filter, requested
 * QoS 3 or reserved bits set, truncated); REG_ETOOBIG with more than max_subs filters. */
int mqtt_decode_subscribe(const mqtt_frame *f, uint16_t *packet_id, mqtt_subscription *subs,
                          size_t max_subs, size_t *count, const char **why);

/* UNSUBSCRIBE: as mqtt_decode_subscribe, filters only. */
int mqtt_decode_unsubscribe(const mqtt_frame *f, uint16_t *packet_id, mqtt_str *filters,
                            size_t max_filters, size_t *count, const char **why);

/* PINGREQ and DISCONNECT: no body. 0 or REG_EDECODE. */
int mqtt_decode_pingreq(const mqtt_frame *f, const char **why);
int mqtt_decode_disconnect(const mqtt_frame *f, const char **why);

/* ---------------------------------------------------------------------------------------------
 * Encoders: each writes one whole packet at out[0..cap) and returns its length, REG_ETOOBIG
 * when cap is too small (nothing useful is written then), or REG_EINVAL for arguments the
 * specification forbids. Nothing is kept. */

/* CONNACK: 20 02 sp rc. REG_EINVAL for rc > 5, or session_present with rc != 0. */
int mqtt_encode_connack(uint8_t *out, size_t cap, bool session_present, uint8_t rc);

/* PUBLISH from *p (qos 0 or 1; packet_id non-zero exactly when qos is 1; dup only at qos 1; a
 * valid topic name). The payload is copied after the header. */
int mqtt_encode_publish(uint8_t *out, size_t cap, const mqtt_publish *p);

/* As mqtt_encode_publish without the payload: writes the fixed header (whose length counts the
 * payload), topic and packet id, so that the caller can send p->payload from where it lies. */
int mqtt_encode_publish_head(uint8_t *out, size_t cap, const mqtt_publish *p);

/* The encoded size of a PUBLISH with this topic and payload length at this QoS (0 or 1; 2 takes
 * the same room as 1), or REG_ETOOBIG beyond the protocol's limits (topic over 65535 bytes,
 * remaining length over MQTT_MAX_REMAINING). */
int mqtt_publish_size(size_t topic_len, size_t payload_len, uint8_t qos);

/* PUBACK: 40 02 id. REG_EINVAL for packet id 0. */
int mqtt_encode_puback(uint8_t *out, size_t cap, uint16_t packet_id);

/* SUBACK: one return code per filter of the SUBSCRIBE, each 0, 1, 2 (granted QoS) or
 * MQTT_SUBACK_FAILURE. REG_EINVAL for packet id 0, no codes or another code value. */
int mqtt_encode_suback(uint8_t *out, size_t cap, uint16_t packet_id, const uint8_t *codes,
                       size_t n);

/* UNSUBACK: B0 02 id. REG_EINVAL for packet id 0. */
int mqtt_encode_unsuback(uint8_t *out, size_t cap, uint16_t packet_id);

/* PINGRESP: D0 00. */
int mqtt_encode_pingresp(uint8_t *out, size_t cap);

/* ---------------------------------------------------------------------------------------------
 * Topics (4.7). Nothing here allocates or keeps its arguments. */

/* True for a valid UTF-8 string as MQTT defines it (1.5.3): well-formed, no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no U+0000, at most 65535 bytes. */
bool mqtt_utf8_valid(mqtt_str s);

/* True for a valid topic name: a valid string of at least one byte without '+' or '#'. */
bool mqtt_topic_valid(mqtt_str topic);

/* True for a valid topic filter: a valid string of at least one byte where '+' fills a whole
 * level and '#' fills the last level (so "a/#/b", "a+", "#/x" are invalid). */
bool mqtt_filter_valid(mqtt_str filter);

/* True when the (valid) filter matches the (valid) topic name: '+' matches any one level (an
 * empty one too), '#' any number of levels including none, so "a/#" matches "a"; a filter
 * starting with a wildcard matches no topic starting with '$' (4.7.2). Invalid arguments give an
 * unspecified answer, never an out-of-bounds read. */
bool mqtt_filter_matches(mqtt_str filter, mqtt_str topic);

/* True when every topic the filter can match lies under prefix, that is, is the prefix's own
 * topic or below it: with prefix "$registry/devices/D/" (the trailing '/' optional), the filter
 * must be valid and be either "$registry/devices/D" itself or start with "$registry/devices/D/"
 * (wildcards are free after that). So ".../D/#" and ".../D/shadow/+" are within; "#",
 * "+/devices/D/x", "$registry/devices/+/shadow" and ".../DX/y" are not. False when the prefix
 * without its trailing '/' is not a valid topic name (a prefix holding wildcards bounds
 * nothing). */
bool mqtt_filter_within(mqtt_str filter, mqtt_str prefix);

#endif
