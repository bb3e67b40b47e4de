/* mqtt_codec.c - MQTT 3.1.1 server-side frame reader, decoders, encoders and topic rules
 * (mqtt_codec.h). Section numbers and [MQTT-x] tags refer to the OASIS 3.1.1 specification. */
#include "mqtt_codec.h"

#include "err.h"

static int fail(const char **why, const char *reason, int err)
{
    if (why) *why = reason;
    return err;
}

/* ---------------------------------------------------------------------------------------------
 * UTF-8 and topics */

/* NULL when s is a valid MQTT string (without the length bound), else why not. */
static const char *utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0) return "string contains U+0000";
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf; /* the range of the second byte */
        if (c < 0xc2) return "invalid UTF-8 (stray continuation byte or overlong form)";
        if (c < 0xe0) {
            need = 1;
        } else if (c < 0xf0) {
            need = 2;
            if (c == 0xe0) lo = 0xa0; /* overlong */
            if (c == 0xed) hi = 0x9f; /* U+D800..U+DFFF */
        } else if (c < 0xf5) {
            need = 3;
            if (c == 0xf0) lo = 0x90; /* overlong */
            if (c == 0xf4) hi = 0x8f; /* above U+10FFFF */
        } else {
            return "invalid UTF-8 (bad lead byte)";
        }
        if (n - i - 1 < need) return "invalid UTF-8 (truncated sequence)";
        if (s[i + 1] < lo || s[i + 1] > hi) {
            if (c == 0xed && s[i + 1] >= 0xa0 && s[i + 1] <= 0xbf)
                return "invalid UTF-8 (surrogate code point)";
            return "invalid UTF-8 (overlong form, bad continuation or above U+10FFFF)";
        }
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80) return "invalid UTF-8 (bad continuation byte)";
        i += need + 1;
    }
    return NULL;
}

static const char *topic_check(mqtt_str t)
{
    if (t.len == 0) return "empty topic name";
    if (t.len > MQTT_MAX_STR) return "topic name too long";
    for (size_t i = 0; i < t.len; i++)
        if (t.p[i] == '+' || t.p[i] == '#') return "wildcard in a topic name";
    return utf8_check((const uint8_t *)t.p, t.len);
}

static const char *filter_check(mqtt_str f)
{
    if (f.len == 0) return "empty topic filter";
    if (f.len > MQTT_MAX_STR) return "topic filter too long";
    for (size_t i = 0; i < f.len; i++) {
        bool starts_level = i == 0 || f.p[i - 1] == '/';
        bool ends_level = i + 1 == f.len || f.p[i + 1] == '/';
        if (f.p[i] == '#' && !(starts_level && i + 1 == f.len))
            return "'#' must be the whole last level of a filter";
        if (f.p[i] == '+' && !(starts_level && ends_level))
            return "'+' must be a whole level of a filter";
    }
    return utf8_check((const uint8_t *)f.p, f.len);
}

bool mqtt_utf8_valid(mqtt_str s)
{
    return s.len <= MQTT_MAX_STR && !utf8_check((const uint8_t *)s.p, s.len);
}

bool mqtt_topic_valid(mqtt_str topic)
{
    return !topic_check(topic);
}

bool mqtt_filter_valid(mqtt_str filter)
{
    return !filter_check(filter);
}

static size_t level_end(mqtt_str s, size_t from)
{
    while (from < s.len && s.p[from] != '/')
        from++;
    return from;
}

bool mqtt_filter_matches(mqtt_str f, mqtt_str t)
{
    if (f.len == 0 || t.len == 0) return false;
    if (t.p[0] == '$' && (f.p[0] == '+' || f.p[0] == '#')) return false; /* [MQTT-4.7.2-1] */
    size_t fi = 0, ti = 0;
    for (;;) {
        size_t fe = level_end(f, fi), te = level_end(t, ti);
        if (fe - fi == 1 && f.p[fi] == '#') return true;
        bool plus = fe - fi == 1 && f.p[fi] == '+';
        if (!plus && (fe - fi != te - ti || memcmp(f.p + fi, t.p + ti, fe - fi) != 0)) return false;
        bool f_end = fe == f.len, t_end = te == t.len;
        if (f_end || t_end) {
            /* "a/#" also matches "a" (its parent level) [MQTT-4.7.1-2] */
            return f_end ? t_end : f.len - fe == 2 && f.p[fe + 1] == '#';
        }
        fi = fe + 1;
        ti = te + 1;
    }
}

bool mqtt_filter_within(mqtt_str f, mqtt_str prefix)
{
    mqtt_str q = prefix;
    if (q.len && q.p[q.len - 1] == '/') q.len--;
    if (!mqtt_topic_valid(q) || !mqtt_filter_valid(f)) return false;
    if (f.len < q.len || memcmp(f.p, q.p, q.len) != 0) return false;
    /* The filter's first levels are the prefix's, literally; whatever follows is below it. */
    return f.len == q.len || f.p[q.len] == '/';
}

/* ---------------------------------------------------------------------------------------------
 * Frame reader */

/* The fixed-header flags 3.1.1 requires of each type (2.2.2); PUBLISH's are free except QoS 3. */
static const char *flags_check(unsigned type, unsigned flags)
{
    if (type == 0 || type == 15) return "reserved packet type";
    if (type == MQTT_PUBLISH) {
        if (((flags >> 1) & 3) == 3) return "PUBLISH with QoS 3";
        return NULL;
    }
    unsigned want =
        (type == MQTT_PUBREL || type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE) ? 2 : 0;
    return flags == want ? NULL : "invalid fixed-header flags for the packet type";
}

int mqtt_frame_next(const uint8_t *buf, size_t len, size_t max_packet, mqtt_frame *f,
                    const char **why)
{
    f->len = 0;
    if (len == 0) return REG_EAGAIN;
    const char *bad = flags_check(buf[0] >> 4, buf[0] & 0x0f);
    if (bad) return fail(why, bad, REG_EDECODE);
    uint32_t value = 0;
    size_t i = 1;
    for (;;) {
        if (i == 5) return fail(why, "remaining length longer than 4 bytes", REG_EDECODE);
        if (i >= len) return REG_EAGAIN;
        uint8_t b = buf[i];
        value |= (uint32_t)(b & 0x7f) << (7 * (i - 1));
        i++;
        if (!(b & 0x80)) {
            if (b == 0 && i > 2)
                return fail(why, "remaining length not in its shortest form", REG_EDECODE);
            break;
        }
    }
    size_t total = i + (size_t)value;
    if (max_packet == 0) max_packet = MQTT_MAX_PACKET;
    if (total > max_packet) return fail(why, "packet larger than the maximum", REG_ETOOBIG);
    f->len = total;
    if (len < total) return REG_EAGAIN;
    f->type = (enum mqtt_type)(buf[0] >> 4);
    f->flags = buf[0] & 0x0f;
    f->body = buf + i;
    f->body_len = value;
    return 0;
}

int mqtt_remaining_length_encode(uint32_t value, uint8_t *out)
{
    if (value > MQTT_MAX_REMAINING) return REG_ETOOBIG;
    int n = 0;
    do {
        uint8_t b = value & 0x7f;
        value >>= 7;
        out[n++] = b | (value ? 0x80 : 0);
    } while (value);
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Decoders */

/* A cursor over a body; every read checks the bounds. */
typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static bool rd_u8(reader *r, uint8_t *v)
{
    if (r->left < 1) return false;
    *v = r->p[0];
    r->p++;
    r->left--;
    return true;
}

static bool rd_u16(reader *r, uint16_t *v)
{
    if (r->left < 2) return false;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    r->left -= 2;
    return true;
}

/* A 2-byte length and that many bytes. */
static bool rd_bytes(reader *r, mqtt_str *s)
{
    uint16_t n;
    if (!rd_u16(r, &n) || r->left < n) return false;
    s->p = (const char *)r->p;
    s->len = n;
    r->p += n;
    r->left -= n;
    return true;
}

static int frame_check(const mqtt_frame *f, enum mqtt_type type, const char **why)
{
    if (f->type != type) return fail(why, "not the expected packet type", REG_EINVAL);
    const char *bad = flags_check(f->type, f->flags);
    return bad ? fail(why, bad, REG_EDECODE) : 0;
}

#define TRUNC(what) fail(why, what " truncated", REG_EDECODE)

int mqtt_decode_connect(const mqtt_frame *f, mqtt_connect *out, const char **why)
{
    memset(out, 0, sizeof *out);
    int err = frame_check(f, MQTT_CONNECT, why);
    if (err) return err;
    reader r = {f->body, f->body_len};
    mqtt_str name;
    uint8_t level, flags;
    if (!rd_bytes(&r, &name)) return TRUNC("CONNECT protocol name");
    bool v311 = name.len == 4 && memcmp(name.p, "MQTT", 4) == 0;
    bool v31 = name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0;
    if (!v311 && !v31) return fail(why, "unknown protocol name", REG_EDECODE);
    if (!rd_u8(&r, &level)) return TRUNC("CONNECT protocol level");
    out->protocol_level = level;
    /* [MQTT-3.1.2-2]: answer CONNACK 1; what follows may be another version's layout. */
    if (level != (v311 ? 4 : 3)) {
        out->refuse_code = MQTT_CONNACK_BAD_PROTOCOL;
        return fail(why, "unsupported protocol level", REG_EINVAL);
    }
    if (!rd_u8(&r, &flags) || !rd_u16(&r, &out->keep_alive)) return TRUNC("CONNECT header");
    if (flags & 0x01) return fail(why, "CONNECT reserved flag set", REG_EDECODE);
    out->clean_session = flags & 0x02;
    out->will = flags & 0x04;
    out->will_qos = (flags >> 3) & 3;
    out->will_retain = flags & 0x20;
    out->has_password = flags & 0x40;
    out->has_username = flags & 0x80;
    if (out->will_qos == 3) return fail(why, "will QoS 3", REG_EDECODE);
    if (!out->will && (out->will_qos || out->will_retain))
        return fail(why, "will QoS or retain without the will flag", REG_EDECODE);
    if (out->has_password && !out->has_username)
        return fail(why, "password without user name", REG_EDECODE);

    const char *bad;
    if (!rd_bytes(&r, &out->client_id)) return TRUNC("CONNECT client id");
    if ((bad = utf8_check((const uint8_t *)out->client_id.p, out->client_id.len)))
        return fail(why, bad, REG_EDECODE);
    if (out->will) {
        if (!rd_bytes(&r, &out->will_topic)) return TRUNC("CONNECT will topic");
        if ((bad = topic_check(out->will_topic))) return fail(why, bad, REG_EDECODE);
        if (!rd_bytes(&r, &out->will_message)) return TRUNC("CONNECT will message");
    }
    if (out->has_username) {
        if (!rd_bytes(&r, &out->username)) return TRUNC("CONNECT user name");
        if ((bad = utf8_check((const uint8_t *)out->username.p, out->username.len)))
            return fail(why, bad, REG_EDECODE);
    }
    if (out->has_password && !rd_bytes(&r, &out->password)) return TRUNC("CONNECT password");
    if (r.left) return fail(why, "trailing bytes after CONNECT payload", REG_EDECODE);

    /* [MQTT-3.1.3-8]; 3.1 required 1 to 23 characters. */
    if (out->client_id.len == 0 && (!out->clean_session || v31)) {
        out->refuse_code = MQTT_CONNACK_ID_REJECTED;
        return fail(why, "empty client id without clean session", REG_EINVAL);
    }
    return 0;
}

int mqtt_decode_publish(const mqtt_frame *f, mqtt_publish *out, const char **why)
{
    memset(out, 0, sizeof *out);
    int err = frame_check(f, MQTT_PUBLISH, why);
    if (err) return err;
    out->dup = f->flags & 0x08;
    out->qos = (f->flags >> 1) & 3;
    out->retain = f->flags & 0x01;
    if (out->dup && out->qos == 0) return fail(why, "DUP set at QoS 0", REG_EDECODE);
    reader r = {f->body, f->body_len};
    if (!rd_bytes(&r, &out->topic)) return TRUNC("PUBLISH topic");
    const char *bad = topic_check(out->topic);
    if (bad) return fail(why, bad, REG_EDECODE);
    if (out->qos > 0) {
        if (!rd_u16(&r, &out->packet_id)) return TRUNC("PUBLISH packet id");
        if (out->packet_id == 0) return fail(why, "packet id 0", REG_EDECODE);
    }
    out->payload = r.p;
    out->payload_len = r.left;
    if (out->qos == 2) return fail(why, "QoS 2 is not supported", REG_EINVAL);
    return 0;
}

int mqtt_decode_puback(const mqtt_frame *f, uint16_t *packet_id, const char **why)
{
    *packet_id = 0;
    int err = frame_check(f, MQTT_PUBACK, why);
    if (err) return err;
    if (f->body_len != 2) return fail(why, "PUBACK length is not 2", REG_EDECODE);
    uint16_t id = (uint16_t)(f->body[0] << 8 | f->body[1]);
    if (id == 0) return fail(why, "packet id 0", REG_EDECODE);
    *packet_id = id;
    return 0;
}

/* SUBSCRIBE and UNSUBSCRIBE share their layout but for the QoS byte after each filter. */
static int decode_filters(const mqtt_frame *f, enum mqtt_type type, uint16_t *packet_id,
                          mqtt_subscription *subs, mqtt_str *filters, size_t max, size_t *count,
                          const char **why)
{
    *packet_id = 0;
    *count = 0;
    int err = frame_check(f, type, why);
    if (err) return err;
    reader r = {f->body, f->body_len};
    uint16_t id;
    if (!rd_u16(&r, &id)) return TRUNC("packet id");
    if (id == 0) return fail(why, "packet id 0", REG_EDECODE);
    if (r.left == 0) return fail(why, "no topic filter", REG_EDECODE); /* [MQTT-3.8.3-3] */
    size_t n = 0;
    while (r.left) {
        mqtt_str filter;
        uint8_t qos = 0;
        if (!rd_bytes(&r, &filter)) return TRUNC("topic filter");
        const char *bad = filter_check(filter);
        if (bad) return fail(why, bad, REG_EDECODE);
        if (subs) {
            if (!rd_u8(&r, &qos)) return TRUNC("requested QoS");
            if (qos > 2)
                return fail(why, "requested QoS above 2 or reserved bits set", REG_EDECODE);
        }
        if (n == max) return fail(why, "too many topic filters", REG_ETOOBIG);
        if (subs) {
            subs[n].filter = filter;
            subs[n].qos = qos;
        } else {
            filters[n] = filter;
        }
        n++;
    }
    *packet_id = id;
    *count = n;
    return 0;
}

int mqtt_decode_subscribe(const mqtt_frame *f, uint16_t *packet_id, mqtt_subscription *subs,
                          size_t max_subs, size_t *count, const char **why)
{
    return decode_filters(f, MQTT_SUBSCRIBE, packet_id, subs, NULL, max_subs, count, why);
}

int mqtt_decode_unsubscribe(const mqtt_frame *f, uint16_t *packet_id, mqtt_str *filters,
                            size_t max_filters, size_t *count, const char **why)
{
    return decode_filters(f, MQTT_UNSUBSCRIBE, packet_id, NULL, filters, max_filters, count, why);
}

static int decode_empty(const mqtt_frame *f, enum mqtt_type type, const char **why)
{
    int err = frame_check(f, type, why);
    if (err) return err;
    return f->body_len ? fail(why, "packet must have no body", REG_EDECODE) : 0;
}

int mqtt_decode_pingreq(const mqtt_frame *f, const char **why)
{
    return decode_empty(f, MQTT_PINGREQ, why);
}

int mqtt_decode_disconnect(const mqtt_frame *f, const char **why)
{
    return decode_empty(f, MQTT_DISCONNECT, why);
}

/* ---------------------------------------------------------------------------------------------
 * Encoders */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* The four 4-byte packets: type byte, 2, then two bytes. */
static int encode4(uint8_t *out, size_t cap, uint8_t first, uint8_t a, uint8_t b)
{
    if (cap < 4) return REG_ETOOBIG;
    out[0] = first;
    out[1] = 2;
    out[2] = a;
    out[3] = b;
    return 4;
}

int mqtt_encode_connack(uint8_t *out, size_t cap, bool session_present, uint8_t rc)
{
    if (rc > MQTT_CONNACK_NOT_AUTHORIZED || (session_present && rc)) return REG_EINVAL;
    return encode4(out, cap, MQTT_CONNACK << 4, session_present ? 1 : 0, rc);
}

int mqtt_encode_puback(uint8_t *out, size_t cap, uint16_t packet_id)
{
    if (packet_id == 0) return REG_EINVAL;
    return encode4(out, cap, MQTT_PUBACK << 4, (uint8_t)(packet_id >> 8), (uint8_t)packet_id);
}

int mqtt_encode_unsuback(uint8_t *out, size_t cap, uint16_t packet_id)
{
    if (packet_id == 0) return REG_EINVAL;
    return encode4(out, cap, MQTT_UNSUBACK << 4, (uint8_t)(packet_id >> 8), (uint8_t)packet_id);
}

int mqtt_encode_pingresp(uint8_t *out, size_t cap)
{
    if (cap < 2) return REG_ETOOBIG;
    out[0] = MQTT_PINGRESP << 4;
    out[1] = 0;
    return 2;
}

int mqtt_encode_suback(uint8_t *out, size_t cap, uint16_t packet_id, const uint8_t *codes, size_t n)
{
    if (packet_id == 0 || n == 0) return REG_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (codes[i] > 2 && codes[i] != MQTT_SUBACK_FAILURE) return REG_EINVAL;
    if (n > MQTT_MAX_REMAINING - 2) return REG_ETOOBIG;
    uint8_t hdr[5];
    hdr[0] = MQTT_SUBACK << 4;
    int h = 1 + mqtt_remaining_length_encode((uint32_t)(2 + n), hdr + 1);
    if (cap < (size_t)h + 2 + n) return REG_ETOOBIG;
    memcpy(out, hdr, (size_t)h);
    put16(out + h, packet_id);
    memcpy(out + h + 2, codes, n);
    return h + 2 + (int)n;
}

int mqtt_publish_size(size_t topic_len, size_t payload_len, uint8_t qos)
{
    if (topic_len > MQTT_MAX_STR) return REG_ETOOBIG;
    size_t rem = 2 + topic_len + (qos ? 2 : 0);
    if (payload_len > MQTT_MAX_REMAINING - rem) return REG_ETOOBIG;
    rem += payload_len;
    size_t h = rem < 128 ? 2 : rem < 16384 ? 3 : rem < 2097152 ? 4 : 5;
    return (int)(h + rem);
}

static bool publish_args_ok(const mqtt_publish *p)
{
    return p->qos <= 1 && (p->qos == 1 ? p->packet_id != 0 : !p->dup && !p->packet_id) &&
           (p->payload || !p->payload_len) && mqtt_topic_valid(p->topic);
}

/* The fixed header, topic and packet id of a PUBLISH whose arguments are valid. */
static int publish_head(uint8_t *out, size_t cap, const mqtt_publish *p)
{
    int total = mqtt_publish_size(p->topic.len, p->payload_len, p->qos);
    if (total < 0) return total;
    size_t rem = 2 + p->topic.len + (p->qos ? 2 : 0) + p->payload_len;
    uint8_t hdr[5];
    hdr[0] = (uint8_t)(MQTT_PUBLISH << 4 | (p->dup ? 0x08 : 0) | p->qos << 1 | (p->retain ? 1 : 0));
    int h = 1 + mqtt_remaining_length_encode((uint32_t)rem, hdr + 1);
    size_t head = (size_t)h + 2 + p->topic.len + (p->qos ? 2 : 0);
    if (cap < head) return REG_ETOOBIG;
    memcpy(out, hdr, (size_t)h);
    put16(out + h, (uint16_t)p->topic.len);
    memcpy(out + h + 2, p->topic.p, p->topic.len);
    if (p->qos) put16(out + h + 2 + p->topic.len, p->packet_id);
    return (int)head;
}

int mqtt_encode_publish_head(uint8_t *out, size_t cap, const mqtt_publish *p)
{
    return publish_args_ok(p) ? publish_head(out, cap, p) : REG_EINVAL;
}

int mqtt_encode_publish(uint8_t *out, size_t cap, const mqtt_publish *p)
{
    if (!publish_args_ok(p)) return REG_EINVAL;
    int total = mqtt_publish_size(p->topic.len, p->payload_len, p->qos);
    if (total < 0) return total;
    if (cap < (size_t)total) return REG_ETOOBIG;
    int head = publish_head(out, cap, p);
    if (head < 0) return head;
    if (p->payload_len) memcpy(out + head, p->payload, p->payload_len);
    return total;
}
