/*
 * fuzz_shadow.c - libFuzzer harness for common/shadow.c.
 *
 * Each input (at most 16 KiB) is parsed as JSON (jansson, duplicate keys refused) and goes
 * through shadow_parse_mqtt_update, through shadow_parse_http_update for both sections and
 * through shadow_check_patch. A refusal must be REG_EINVAL with a reason and no section handed
 * out; an accepted update must hand out the members of the message, checked patches, its version
 * and its client token within the limit.
 *
 * Each accepted section is merged into a small fixed shadow (desired and reported with their
 * metadata). The merged section must be well formed: no null, no empty object below the root,
 * within the depth limit, and metadata mirroring it with a timestamp at every leaf. Every leaf
 * the patch writes is there with that timestamp, every key it deletes is gone, every key it does
 * not name is as it was. Merging the same patch again changes nothing (at the same timestamp:
 * neither state nor metadata; at another: not the state).
 *
 * The delta is checked on the merged shadow, and on the patch as a state of its own against
 * each fixed section: every delta leaf is desired's value at the same path, a delta object
 * against a non-object in reported is desired's whole object, no delta object is empty; the
 * delta against reported is itself again (it is a fixed point); desired against itself has no
 * delta; and once the device follows the delta (merging it into reported) there is no delta
 * left. The last holds because a merged desired holds no null (which would delete) and no empty
 * object (which writes nothing), and because the merge writes values as they are while the delta
 * compares numbers by value. The delta's metadata mirrors the delta, and shadow_state_size is
 * the compact JSON length of both sections.
 *
 * Every input also goes through common/jsonfast.c: it must load as json_loadb loads it (the same
 * value, or refused by both; deeper than jsonfast's limit, refused by jsonfast alone; up to a NUL
 * byte, where jansson's input ends and which jsonfast refuses), its text
 * must be json_dumps's, byte for byte, and its copy must equal it.
 *
 * Build: tests/fuzz/run.sh shadow SECONDS OUT_DIR SCHEMAS_EMBEDDED_C (the last is not used here)
 * Run:   ./fuzz_shadow -max_total_time=60 tests/fuzz/corpus_shadow
 */
#include "err.h"
#include "jsonfast.h"
#include "shadow.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_check.h"

#define MAX_INPUT 16384
#define T1 100
#define T2 200

static const char fixed_desired[] = "{\"color\":\"RED\",\"lights\":{\"on\":true,\"level\":3,"
                                    "\"rgb\":[255,0,0]},\"mode\":{\"eco\":{\"level\":1}},\"n\":1}";
static const char fixed_reported[] = "{\"color\":\"GREEN\",\"lights\":{\"on\":true,\"level\":3.0},"
                                     "\"engine\":\"ON\",\"n\":1.0,\"seq\":[1,2]}";

static shadow_limits lim;

static json_t *load(const char *text)
{
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    CHECK(j);
    return j;
}

static int is_stamp(const json_t *m, json_int_t *ts)
{
    const json_t *t = json_object_get(m, "timestamp");
    if (json_object_size(m) != 1 || !json_is_integer(t)) return 0;
    if (ts) *ts = json_integer_value(t);
    return 1;
}

/* A section and its metadata: no null, no empty object below the root, one stamp per leaf. */
static void check_well_formed(const json_t *s, const json_t *m, int root)
{
    CHECK(json_is_object(s) && json_is_object(m));
    CHECK(root || json_object_size(s) > 0);
    CHECK(json_object_size(s) == json_object_size(m));
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)s, k, klen, v)
    {
        const json_t *mv = json_object_getn(m, k, klen);
        CHECK(mv && !json_is_null(v));
        if (json_is_object(v))
            check_well_formed(v, mv, 0);
        else
            CHECK(is_stamp(mv, NULL));
    }
}

/* What the merge of patch into before (at timestamp ts) must have given: after, with meta. */
static void check_merged(const json_t *before, const json_t *bmeta, const json_t *patch,
                         const json_t *after, const json_t *ameta, json_int_t ts)
{
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)before, k, klen, v)
    {
        if (json_object_getn(patch, k, klen)) continue;
        CHECK(json_equal(json_object_getn(after, k, klen), v));
        CHECK(json_equal(json_object_getn(ameta, k, klen), json_object_getn(bmeta, k, klen)));
    }
    json_object_keylen_foreach((json_t *)patch, k, klen, v)
    {
        const json_t *a = json_object_getn(after, k, klen), *b = json_object_getn(before, k, klen);
        if (json_is_null(v)) {
            CHECK(!a);
        } else if (!json_is_object(v)) {
            json_int_t t;
            CHECK(json_equal(a, v));
            CHECK(is_stamp(json_object_getn(ameta, k, klen), &t) && t == ts);
        } else if (json_is_object(a)) {
            /* an object before is merged into; anything else is as good as an empty one */
            json_t *empty = json_object();
            const json_t *bm = json_object_getn(bmeta, k, klen);
            int merged = json_is_object(b);
            check_merged(merged ? b : empty, merged ? bm : empty, v, a,
                         json_object_getn(ameta, k, klen), ts);
            json_decref(empty);
        } else if (json_is_object(b)) {
            CHECK(!a); /* the patch deleted all there was */
        } else {
            /* the patch wrote nothing: what was there stays, with its metadata */
            const json_t *am = json_object_getn(ameta, k, klen),
                         *bm = json_object_getn(bmeta, k, klen);
            CHECK(a ? json_equal(a, b) && json_equal(am, bm) : !b && !am);
        }
    }
}

/* Merges patch into copies of s and m at ts, into *s2 and *m2. */
static void merge_copy(const json_t *s, const json_t *m, const json_t *patch, json_int_t ts,
                       json_t **s2, json_t **m2)
{
    *s2 = json_deep_copy(s);
    *m2 = json_deep_copy(m);
    CHECK(*s2 && *m2);
    CHECK(shadow_merge(s2, m2, patch, ts) == 0);
}

/* Merges patch (a checked one) into the section s with metadata m, and checks it all. */
static void check_merge(const json_t *s, const json_t *m, const json_t *patch, json_t **out,
                        json_t **out_meta)
{
    json_t *s1, *m1, *s2, *m2, *s3, *m3;
    merge_copy(s, m, patch, T1, &s1, &m1);
    check_well_formed(s1, m1, 1);
    const char *why = NULL;
    CHECK(shadow_check_patch(s1, &lim, &why) == 0);
    if (json_is_null(patch))
        CHECK(json_object_size(s1) == 0);
    else
        check_merged(s, m, patch, s1, m1, T1);
    merge_copy(s1, m1, patch, T1, &s2, &m2);
    CHECK(json_equal(s1, s2) && json_equal(m1, m2));
    merge_copy(s1, m1, patch, T2, &s3, &m3);
    CHECK(json_equal(s1, s3));
    json_decref(s2);
    json_decref(m2);
    json_decref(s3);
    json_decref(m3);
    *out = s1;
    *out_meta = m1;
}

/* Each key of delta is desired's at the same path (whole where reported has no object). */
static void check_delta_within(const json_t *delta, const json_t *desired, const json_t *reported)
{
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)delta, k, klen, v)
    {
        const json_t *d = json_object_getn(desired, k, klen);
        const json_t *r = json_object_getn(reported, k, klen);
        CHECK(d);
        if (json_is_object(v) && json_is_object(d) && json_is_object(r)) {
            CHECK(json_object_size(v) > 0);
            check_delta_within(v, d, r);
        } else {
            CHECK(json_equal(v, d));
        }
    }
}

/* The metadata of a shape where meta mirrors a state that holds the shape: the same shape. */
static void check_mirror(const json_t *shape, const json_t *meta)
{
    CHECK(json_is_object(meta) && json_object_size(shape) == json_object_size(meta));
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)shape, k, klen, v)
    {
        const json_t *mv = json_object_getn(meta, k, klen);
        if (json_is_object(v))
            check_mirror(v, mv);
        else
            CHECK(is_stamp(mv, NULL));
    }
}

static size_t dump_len(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    CHECK(s);
    size_t n = strlen(s);
    free(s);
    return n;
}

/* desired and reported are well-formed sections; dmeta is desired's metadata. */
static void check_delta(const json_t *desired, const json_t *dmeta, const json_t *reported,
                        const json_t *rmeta)
{
    json_t *delta = shadow_delta(desired, reported);
    CHECK(delta);
    check_delta_within(delta, desired, reported);
    json_t *again = shadow_delta(delta, reported);
    CHECK(again && json_equal(again, delta));
    json_decref(again);
    json_t *self = shadow_delta(desired, desired);
    CHECK(self && json_object_size(self) == 0);
    json_decref(self);

    json_t *dm = shadow_meta_of(dmeta, delta);
    CHECK(dm);
    check_mirror(delta, dm);
    json_decref(dm);
    json_t *whole = shadow_meta_of(dmeta, desired);
    CHECK(whole && json_equal(whole, dmeta));
    json_decref(whole);

    /* the device follows the delta */
    const char *why = NULL;
    CHECK(shadow_check_patch(delta, &lim, &why) == 0);
    json_t *r2, *rm2;
    merge_copy(reported, rmeta, delta, T2, &r2, &rm2);
    check_well_formed(r2, rm2, 1);
    json_t *left = shadow_delta(desired, r2);
    CHECK(left && json_object_size(left) == 0);
    json_decref(left);
    json_decref(r2);
    json_decref(rm2);

    CHECK(shadow_state_size(desired, reported) == dump_len(desired) + dump_len(reported));
    json_decref(delta);
}

/* A client token handed out is the member's string, within the limit. */
static void check_token(const json_t *member, const char *token)
{
    CHECK(json_is_string(member) && token == json_string_value(member));
    CHECK(json_string_length(member) <= lim.max_client_token);
}

/* A refusal has its reason and no section, and at most the message's own client token. */
static void check_refusal(int rc, const char *why, const shadow_update *u, const json_t *token)
{
    CHECK(rc == REG_EINVAL && why && *why);
    CHECK(!u->desired && !u->reported && u->version == -1);
    if (u->client_token) check_token(token, u->client_token);
}

static void check_version(const json_t *member, int64_t version)
{
    CHECK(member ? json_integer_value(member) == version && version >= 0 : version == -1);
}

static void check_http(const json_t *body, const char *section)
{
    shadow_update u;
    const char *why = NULL;
    int rc = shadow_parse_http_update(body, section, &lim, &u, &why);
    const json_t *token = json_object_get(body, "client_token");
    if (rc) {
        check_refusal(rc, why, &u, token);
        return;
    }
    const json_t *s = json_object_get(body, section);
    int desired = !strcmp(section, "desired");
    CHECK(s && (desired ? u.desired : u.reported) == s && !(desired ? u.reported : u.desired));
    CHECK(shadow_check_patch(s, &lim, &why) == 0);
    check_version(json_object_get(body, "version"), u.version);
    CHECK(!token == !u.client_token);
    if (token) check_token(token, u.client_token);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT) return 0;
    shadow_limits_default(&lim);
    /* jansson ends its input at a NUL byte (which is never valid JSON text, and which jsonfast
     * refuses): the two are compared on the text before it, with each of jsonfast's flags. */
    const uint8_t *nul = memchr(data, 0, size);
    size_t text_len = nul ? (size_t)(nul - data) : size;
    json_t *whole = nul ? jsonfast_load((const char *)data, size, JSONFAST_ALLOW_NUL) : NULL;
    CHECK(!whole);
    for (int flags = 0; flags < 4; flags++) {
        size_t jflags = JSON_DECODE_ANY | (flags & JSONFAST_ALLOW_NUL ? JSON_ALLOW_NUL : 0) |
                        (flags & JSONFAST_REJECT_DUPLICATES ? JSON_REJECT_DUPLICATES : 0);
        json_t *want = json_loadb((const char *)data, text_len, jflags, NULL);
        json_t *got = jsonfast_load((const char *)data, text_len, flags);
        if (want && !got) { /* only for nesting beyond the limit, which jsonfast_dump refuses */
            char *text = jsonfast_dump(want, NULL);
            CHECK(!text);
        }
        CHECK(!got || (want && json_equal(want, got)));
        json_decref(want);
        json_decref(got);
    }
    json_t *msg = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!msg) return 0;
    char *fast = jsonfast_dump(msg, NULL), *slow = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
    CHECK((!fast && !slow) || (fast && slow && !strcmp(fast, slow)));
    free(fast);
    free(slow);
    json_t *copy = jsonfast_copy(msg);
    CHECK(copy && json_equal(copy, msg));
    json_decref(copy);

    const char *why = NULL;
    int rc = shadow_check_patch(msg, &lim, &why);
    CHECK(rc == 0 || (rc == REG_EINVAL && why && *why));
    check_http(msg, "desired");
    check_http(msg, "reported");

    shadow_update u;
    why = NULL;
    rc = shadow_parse_mqtt_update(msg, &lim, &u, &why);
    const json_t *token = json_object_get(msg, "clientToken");
    if (rc) {
        check_refusal(rc, why, &u, token);
        json_decref(msg);
        return 0;
    }
    const json_t *state = json_object_get(msg, "state");
    CHECK(u.desired || u.reported);
    CHECK(u.desired == json_object_get(state, "desired"));
    CHECK(u.reported == json_object_get(state, "reported"));
    check_version(json_object_get(msg, "version"), u.version);
    CHECK(!token == !u.client_token);
    if (token) check_token(token, u.client_token);

    json_t *d = load(fixed_desired), *r = load(fixed_reported), *dm = NULL, *rm = NULL;
    json_t *none = NULL;
    CHECK(shadow_merge(&none, &dm, d, 1) == 0);
    json_decref(none);
    none = NULL;
    CHECK(shadow_merge(&none, &rm, r, 2) == 0);
    json_decref(none);

    json_t *d1 = json_incref(d), *dm1 = json_incref(dm);
    json_t *r1 = json_incref(r), *rm1 = json_incref(rm);
    if (u.desired) {
        json_decref(d1);
        json_decref(dm1);
        check_merge(d, dm, u.desired, &d1, &dm1);
    }
    if (u.reported) {
        json_decref(r1);
        json_decref(rm1);
        check_merge(r, rm, u.reported, &r1, &rm1);
    }
    check_delta(d1, dm1, r1, rm1);

    /* each patch as a state of its own, against each fixed section */
    const json_t *patches[] = {u.desired, u.reported};
    for (int i = 0; i < 2; i++) {
        if (!patches[i]) continue;
        json_t *p = NULL, *pm = NULL;
        CHECK(shadow_merge(&p, &pm, patches[i], T1) == 0);
        check_well_formed(p, pm, 1);
        check_delta(p, pm, r, rm);
        check_delta(d, dm, p, pm);
        json_decref(p);
        json_decref(pm);
    }

    json_t *all[] = {d, r, dm, rm, d1, dm1, r1, rm1, msg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        json_decref(all[i]);
    return 0;
}
