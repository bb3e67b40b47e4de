/*
 * test_jsonfast.c - unit tests of common/jsonfast.c: the text is byte for byte jansson's
 * json_dumps(JSON_COMPACT | JSON_ENCODE_ANY), on chosen cases (every escape, multi-byte UTF-8,
 * NUL inside strings and keys, reals, empty containers) and on thousands of random documents;
 * invalid UTF-8 and nesting beyond the limit are refused as jansson refuses them. A copy equals
 * its original (json_equal, and the same text), shares nothing with it, and keeps the order of
 * members. Loading gives what json_loadb(JSON_DECODE_ANY, with each combination of
 * JSON_ALLOW_NUL and JSON_REJECT_DUPLICATES) gives on chosen
 * valid and invalid texts and on the random documents in three renderings. A packed value equals
 * jansson's json_pack of the same format and arguments, and a failed one takes every o argument
 * (ASan's leak check tells).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "jsonfast.h"

#include <stdlib.h>
#include <string.h>

static void assert_same_as_jansson(const json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t len = 0;
    char *got = jsonfast_dump(v, &len);
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
    free(want);
}

static void test_chosen_values(void **state)
{
    (void)state;
    const char *docs[] = {
        "{}",
        "[]",
        "null",
        "true",
        "false",
        "0",
        "-9223372036854775808",
        "9223372036854775807",
        "\"\"",
        "1.5",
        "-0.0",
        "1e300",
        "3.141592653589793",
        "[1,2.25,\"x\",null,{}]",
        "{\"a\":{\"b\":[{\"c\":[]}]},\"z\":1,\"m\":\"\\\" \\\\ / \\b\\f\\n\\r\\t \\u0001\\u001f\"}",
        "\"\\u00e9\\u20ac\\ud83d\\ude00 caf\\u00e9\"",
        "{\"\\u00fcber\":\"\\u007f\"}",
        "\"tab\\there\"",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        json_t *v = json_loads(docs[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        assert_non_null(v);
        assert_same_as_jansson(v);
        json_decref(v);
    }
    json_t *nul = json_stringn("a\0b", 3);
    assert_same_as_jansson(nul);
    json_t *obj = json_object();
    json_object_setn_new(obj, "k\0ey", 4, json_integer(1));
    assert_same_as_jansson(obj);
    json_decref(obj);
    json_decref(nul);
}

static void test_invalid_utf8_refused(void **state)
{
    (void)state;
    const char *bad[] = {"\x80",         "\xc0\xaf",         "\xc1\xbf",         "\xe0\x80\xaf",
                         "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "ab\xe2\x82",
                         "\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *s = json_stringn_nocheck(bad[i], strlen(bad[i]));
        assert_null(jsonfast_dump(s, NULL));
        assert_null(json_dumps(s, JSON_COMPACT | JSON_ENCODE_ANY));
        json_decref(s);
    }
}

static void test_depth_limit(void **state)
{
    (void)state;
    json_t *root = json_array(), *at = root;
    for (int i = 0; i < JSONFAST_MAX_DEPTH; i++) {
        json_t *inner = json_array();
        json_array_append_new(at, inner);
        at = inner;
    }
    char *text = jsonfast_dump(root, NULL);
    assert_non_null(text); /* JSONFAST_MAX_DEPTH + 1 levels of arrays: the limit itself */
    free(text);
    json_array_append_new(at, json_array());
    assert_null(jsonfast_dump(root, NULL));
    json_decref(root);
}

static uint32_t rng = 12345;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static json_t *random_string(void)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         " ",
                                         "\"",
                                         "\\",
                                         "/",
                                         "\n",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "key",
                                         "0"};
    char buf[64] = {0};
    size_t len = 0, n = next_rand() % 8;
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[next_rand() % (sizeof pieces / sizeof pieces[0])];
        size_t pl = strlen(p);
        if (len + pl >= sizeof buf) break;
        memcpy(buf + len, p, pl);
        len += pl;
    }
    return json_stringn(buf, len);
}

static json_t *random_value(int depth)
{
    switch (next_rand() % (depth > 4 ? 6 : 8)) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(next_rand() & 1);
    case 2:
        return json_integer((json_int_t)next_rand() - (json_int_t)(next_rand() % 3) * 2147483648);
    case 3:
        return json_real((double)(int32_t)next_rand() / 1024.0);
    case 4:
    case 5:
        return random_string();
    case 6: {
        json_t *a = json_array();
        for (uint32_t i = next_rand() % 5; i > 0; i--)
            json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (uint32_t i = next_rand() % 5; i > 0; i--) {
            json_t *k = random_string();
            json_object_setn_new(o, json_string_value(k), json_string_length(k),
                                 random_value(depth + 1));
            json_decref(k);
        }
        return o;
    }
    }
}

static void test_random_documents(void **state)
{
    (void)state;
    for (int i = 0; i < 5000; i++) {
        json_t *v = random_value(0);
        assert_same_as_jansson(v);
        json_decref(v);
    }
}

static void test_copies(void **state)
{
    (void)state;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(0);
        json_t *c = jsonfast_copy(v);
        assert_non_null(c);
        assert_true(json_equal(v, c));
        char *a = jsonfast_dump(v, NULL), *b = jsonfast_dump(c, NULL);
        if (a || b) assert_string_equal(a, b);
        free(a);
        free(b);
        if (json_is_object(c) || json_is_array(c)) assert_ptr_not_equal(c, v);
        json_decref(c);
        json_decref(v);
    }
    json_t *v = json_pack("{s:{s:[i]}}", "a", "b", 1), *c = jsonfast_copy(v);
    json_array_append_new(json_object_get(json_object_get(c, "a"), "b"), json_integer(2));
    json_object_set_new(c, "z", json_true());
    assert_int_equal(json_array_size(json_object_get(json_object_get(v, "a"), "b")), 1);
    assert_null(json_object_get(v, "z"));
    json_decref(c);
    json_decref(v);
    json_t *deep = json_array(), *at = deep;
    for (int i = 0; i <= JSONFAST_MAX_DEPTH; i++) {
        json_t *inner = json_array();
        json_array_append_new(at, inner);
        at = inner;
    }
    assert_null(jsonfast_copy(deep));
    json_decref(deep);
}

/* jsonfast_load gives what json_loadb gives: the same value, or NULL where it fails. */
static void assert_loads_like_jansson_with(const char *text, size_t len, int flags)
{
    size_t jflags = JSON_DECODE_ANY | (flags & JSONFAST_ALLOW_NUL ? JSON_ALLOW_NUL : 0) |
                    (flags & JSONFAST_REJECT_DUPLICATES ? JSON_REJECT_DUPLICATES : 0);
    json_t *want = json_loadb(text, len, jflags, NULL);
    json_t *got = jsonfast_load(text, len, flags);
    if (!want) {
        if (got) fail_msg("jsonfast_load accepted what jansson refuses: %.*s", (int)len, text);
        return;
    }
    if (!got) fail_msg("jsonfast_load refused what jansson accepts: %.*s", (int)len, text);
    if (!json_equal(want, got))
        fail_msg("jsonfast_load differs from jansson on %.*s", (int)len, text);
    /* and in the same order of members (json_equal ignores it) */
    char *w = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
    char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_string_equal(g, w);
    free(w);
    free(g);
    json_decref(want);
    json_decref(got);
}

static void assert_loads_like_jansson(const char *text, size_t len)
{
    for (int flags = 0; flags < 4; flags++)
        assert_loads_like_jansson_with(text, len, flags);
}

#define LOADS_LIKE_JANSSON(lit) assert_loads_like_jansson(lit, sizeof(lit) - 1)

static void test_load_chosen(void **state)
{
    (void)state;
    static const char *const valid[] = {
        "{}",
        "[]",
        " {\"a\" : [1, -2, 3.5, -0, 0, 1e3, 2E-2, -1.25e+2, true, false, null]} ",
        "\"plain\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u00e9\\u20AC\\ud83d\\ude00\"",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        "9223372036854775807",
        "-9223372036854775808",
        "1e-400",
        "0.000001",
        "123456789012345678901234567890.5",
        "{\"k\":1,\"k\":2,\"j\":3}",
        "{\"\":\"\"}",
        "[[[[{\"x\":[{}]}]]]]",
        "\"a\\u0000b\"",
        "{\"nested\":{\"deeper\":{\"\\u00e9\":\"v\"}}}",
        "\t\r\n[\t1\r,\n2 ]\n"};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
        assert_loads_like_jansson(valid[i], strlen(valid[i]));
    static const char *const invalid[] = {"",
                                          " ",
                                          "{",
                                          "[1,]",
                                          "[1 2]",
                                          "{\"a\"}",
                                          "{\"a\":}",
                                          "{a:1}",
                                          "{\"a\":1,}",
                                          "01",
                                          "-",
                                          "1.",
                                          ".5",
                                          "1e",
                                          "1e+",
                                          "+1",
                                          "0x10",
                                          "tru",
                                          "nul",
                                          "falsey",
                                          "\"unterminated",
                                          "\"bad \\x escape\"",
                                          "\"\\u12\"",
                                          "\"\\ud800\"",
                                          "\"\\udc00\"",
                                          "\"\\ud800\\u0041\"",
                                          "\"ctl \x01\"",
                                          "\"\xc0\xaf\"",
                                          "\"\xed\xa0\x80\"",
                                          "\"\xf4\x90\x80\x80\"",
                                          "\"\xff\"",
                                          "9223372036854775808",
                                          "-9223372036854775809",
                                          "1e400",
                                          "-1e400",
                                          "[1] [2]",
                                          "{} x",
                                          "{\"a\\u0000b\":1}",
                                          "[\"\\",
                                          "\"\\u"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        assert_loads_like_jansson(invalid[i], strlen(invalid[i]));
    LOADS_LIKE_JANSSON("\"with\0NUL\""); /* a raw NUL byte is a control character */
    /* Depth: the limit itself loads, one more level is refused. */
    char deep[2 * (JSONFAST_MAX_DEPTH + 2)];
    size_t n = 0;
    for (int i = 0; i <= JSONFAST_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i <= JSONFAST_MAX_DEPTH; i++)
        deep[n++] = ']';
    json_t *v = jsonfast_load(deep, n, 0);
    assert_non_null(v);
    json_decref(v);
    memmove(deep + 1, deep, n);
    deep[0] = '[';
    deep[n + 1] = ']';
    assert_null(jsonfast_load(deep, n + 2, 0));
}

static void test_load_random_documents(void **state)
{
    (void)state;
    static const size_t renderings[] = {JSON_COMPACT, JSON_INDENT(2) | JSON_ENSURE_ASCII,
                                        JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH};
    for (int i = 0; i < 5000; i++) {
        json_t *v = random_value(0);
        for (size_t r = 0; r < 3; r++) {
            char *text = json_dumps(v, renderings[r] | JSON_ENCODE_ANY);
            assert_non_null(text);
            assert_loads_like_jansson(text, strlen(text));
            /* and every prefix of a few of them: truncated text never loads */
            if (i < 50)
                for (size_t cut = 0; cut < strlen(text); cut++)
                    assert_loads_like_jansson(text, cut);
            free(text);
        }
        json_decref(v);
    }
}

/* The same value as json_pack, key order included (compared as text). */
#define ASSERT_PACKS_LIKE_JANSSON(...)                                                             \
    do {                                                                                           \
        json_t *want_ = json_pack(__VA_ARGS__), *got_ = jsonfast_pack(__VA_ARGS__);                \
        assert_non_null(want_);                                                                    \
        assert_non_null(got_);                                                                     \
        char *w_ = json_dumps(want_, JSON_COMPACT | JSON_ENCODE_ANY);                              \
        char *g_ = json_dumps(got_, JSON_COMPACT | JSON_ENCODE_ANY);                               \
        assert_string_equal(g_, w_);                                                               \
        free(w_);                                                                                  \
        free(g_);                                                                                  \
        json_decref(want_);                                                                        \
        json_decref(got_);                                                                         \
    } while (0)

static void test_pack(void **state)
{
    (void)state;
    json_t *shared = json_pack("{s:[i,i]}", "x", 1, 2);
    ASSERT_PACKS_LIKE_JANSSON("{s:s, s:O, s:I, s:i, s:b, s:b, s:n, s:f}", "id", "d-1", "shared",
                              shared, "big", (json_int_t)1764612345678, "small", -7, "yes", 1, "no",
                              0, "none", "real", 2.5);
    ASSERT_PACKS_LIKE_JANSSON("{s:{s:{}, s:[]}, s:[s, {s:s}, [n]]}", "a", "b", "c", "d", "e", "f",
                              "g");
    ASSERT_PACKS_LIKE_JANSSON("{s:s?, s:O?, s:o?}", "s", NULL, "O", NULL, "o", NULL);
    ASSERT_PACKS_LIKE_JANSSON("[s?, O?]", "é ü ✓", shared);
    ASSERT_PACKS_LIKE_JANSSON("{s:o}", "owned", json_pack("[i]", 3));
    ASSERT_PACKS_LIKE_JANSSON("s", "just a string");
    ASSERT_PACKS_LIKE_JANSSON("{}");
    assert_int_equal(shared->refcount, 1);

    /* What json_pack refuses: a NULL without '?', an unknown format, an unclosed container,
     * two values. Each o argument is taken even then. */
    assert_null(jsonfast_pack("{s:s, s:o}", "a", NULL, "b", json_integer(1)));
    assert_null(jsonfast_pack("{s:O, s:o}", "a", NULL, "b", json_integer(1)));
    assert_null(jsonfast_pack("[o, s, o]", json_integer(1), NULL, json_integer(2)));
    assert_null(jsonfast_pack("{s:o", "a", json_integer(1)));
    assert_null(jsonfast_pack("[o, o", json_integer(1), json_integer(2)));
    assert_null(jsonfast_pack("{s:o, s:x}", "a", json_integer(1), "b"));
    assert_null(jsonfast_pack("i i", 1, 2));
    assert_null(jsonfast_pack(""));
    assert_int_equal(shared->refcount, 1);
    json_decref(shared);
}

/* Integers as printf writes them, at both ends of the range, and in a text. */
static void test_integers(void **state)
{
    (void)state;
    const int64_t values[] = {0, 1, -1, 9, 10, -10, 201, 1700000000123, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char want[32], got[JSONFAST_INT_MAX + 1];
        snprintf(want, sizeof want, "%lld", (long long)values[i]);
        size_t n = jsonfast_int(got, values[i]);
        got[n] = 0;
        assert_string_equal(got, want);
    }
    jsonfast_text x = {0};
    jsonfast_text_raw(&x, "[");
    jsonfast_text_int(&x, INT64_MIN);
    jsonfast_text_raw(&x, ",");
    jsonfast_text_int(&x, 42);
    jsonfast_text_raw(&x, "]");
    size_t len = 0;
    char *text = jsonfast_text_end(&x, &len);
    assert_string_equal(text, "[-9223372036854775808,42]");
    assert_int_equal(len, strlen(text));
    free(text);
}

/* jsonfast_members finds each named member, whatever the order of the object's members, the
 * ones it lacks as NULL. */
static void test_members(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b", "c", "d"};
    static const char *const orders[] = {
        "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}",         /* the names' order */
        "{\"d\":4,\"c\":3,\"b\":2,\"a\":1}",         /* reversed */
        "{\"x\":0,\"a\":1,\"c\":3,\"b\":2,\"d\":4}", /* another member, one pair swapped */
        "{\"a\":1,\"c\":3,\"d\":4}",                 /* one missing */
        "{}",
    };
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
        json_t *obj = json_loads(orders[i], 0, NULL), *m[4];
        assert_non_null(obj);
        jsonfast_members(obj, names, 4, m);
        for (int k = 0; k < 4; k++)
            assert_ptr_equal(m[k], json_object_get(obj, names[k]));
        json_decref(obj);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chosen_values), cmocka_unit_test(test_invalid_utf8_refused),
        cmocka_unit_test(test_depth_limit),   cmocka_unit_test(test_random_documents),
        cmocka_unit_test(test_copies),        cmocka_unit_test(test_pack),
        cmocka_unit_test(test_load_chosen),   cmocka_unit_test(test_load_random_documents),
        cmocka_unit_test(test_integers),      cmocka_unit_test(test_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
