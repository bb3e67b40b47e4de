/*
 * test_tls13.c - unit tests of common/tls13.c against OpenSSL's own client.
 *
 * A client SSL and a server SSL (the registry's server context) talk through memory BIOs; the
 * server is taken over after its handshake, and from then on only tls13_seal and tls13_open
 * speak for it. The client is plain OpenSSL, so every record checked here is one OpenSSL wrote
 * or accepted: application data both ways (also several records at once), each of the three
 * cipher suites, the client's data arriving together with its Finished, KeyUpdate in both
 * directions, close_notify both ways, tampered and malformed records, and the connections that
 * must not be taken over (TLS 1.2, an SSL that was not watched).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "http_server.h"
#include "pki.h"
#include "tls13.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static SSL_CTX *server_ctx;
static tls13_engine *engine;

typedef struct pair {
    SSL *client, *server;
    tls13 *t;
    /* What the client sent after the server's handshake ended: the taken-over server's input. */
    uint8_t in[64 * 1024];
    size_t in_len;
} pair;

/* Moves everything waiting in from's write BIO into to's read BIO. */
static void pump(SSL *from, SSL *to)
{
    char buf[16 * 1024];
    int n;
    while ((n = BIO_read(SSL_get_wbio(from), buf, sizeof buf)) > 0)
        BIO_write(SSL_get_rbio(to), buf, n);
}

static size_t drain(SSL *from, uint8_t *out, size_t cap)
{
    size_t len = 0;
    int n;
    while (len < cap && (n = BIO_read(SSL_get_wbio(from), out + len, (int)(cap - len))) > 0)
        len += (size_t)n;
    return len;
}

static SSL *mem_ssl(SSL_CTX *ctx)
{
    SSL *s = SSL_new(ctx);
    SSL_set_bio(s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    BIO_set_mem_eof_return(SSL_get_rbio(s), -1);
    BIO_set_mem_eof_return(SSL_get_wbio(s), -1);
    return s;
}

/* Runs the handshake; with `early`, the client writes it right after its Finished so that it
 * reaches the server in the same flight. take_over_rc: what tls13_take_over must return. */
static void handshake(pair *p, const char *suite, int max_version, bool watch, const char *early,
                      int take_over_rc)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (suite) SSL_CTX_set_ciphersuites(cctx, suite);
    if (max_version) SSL_CTX_set_max_proto_version(cctx, max_version);
    p->client = mem_ssl(cctx);
    SSL_CTX_free(cctx);
    SSL_set_connect_state(p->client);
    p->server = mem_ssl(server_ctx);
    SSL_set_accept_state(p->server);
    if (watch) assert_int_equal(tls13_watch(p->server), 0);

    int client_done = 0;
    for (int round = 0; round < 10; round++) {
        if (!client_done && SSL_do_handshake(p->client) == 1) {
            client_done = 1;
            if (early) assert_int_equal(SSL_write(p->client, early, (int)strlen(early)),
                                        (int)strlen(early));
        }
        pump(p->client, p->server);
        uint8_t sent[8192];
        int r = SSL_do_handshake(p->server);
        size_t sent_len = drain(p->server, sent, sizeof sent);
        if (r == 1) {
            assert_int_equal(tls13_take_over(engine, p->server, sent, sent_len, &p->t),
                             take_over_rc);
            BIO_write(SSL_get_rbio(p->client), sent, (int)sent_len);
            break;
        }
        assert_int_equal(SSL_get_error(p->server, r), SSL_ERROR_WANT_READ);
        BIO_write(SSL_get_rbio(p->client), sent, (int)sent_len);
    }
    assert_true(SSL_is_init_finished(p->server));
    if (!client_done) assert_int_equal(SSL_do_handshake(p->client), 1);
    /* Whatever the client had sent beyond its Finished is now the taken-over server's input. */
    int n = BIO_read(SSL_get_rbio(p->server), p->in, sizeof p->in);
    p->in_len = n > 0 ? (size_t)n : 0;
}

static void pair_free(pair *p)
{
    SSL_free(p->client);
    SSL_free(p->server);
    tls13_free(p->t);
}

/* The client's pending output, as the server's input. */
static void client_sent(pair *p)
{
    p->in_len += drain(p->client, p->in + p->in_len, sizeof p->in - p->in_len);
}

/* Opens every whole record of the server's input, appending application data to out; returns
 * the last tls13_open result other than TLS13_DATA/TLS13_INCOMPLETE (TLS13_DATA if none). */
static int server_reads(pair *p, char *out, size_t *out_len)
{
    size_t at = 0;
    int last = TLS13_DATA;
    for (;;) {
        size_t used = 0, plen = 0;
        uint8_t *plain = NULL;
        int r = tls13_open(engine, p->t, p->in + at, p->in_len - at, &used, &plain, &plen);
        if (r == TLS13_INCOMPLETE) break;
        if (r < 0) return r;
        if (r == TLS13_DATA) {
            memcpy(out + *out_len, plain, plen);
            *out_len += plen;
        } else {
            last = r;
        }
        at += used;
    }
    memmove(p->in, p->in + at, p->in_len - at);
    p->in_len -= at;
    return last;
}

/* Seals data from the server and hands it to the client. */
static void server_writes(pair *p, const void *data, size_t len)
{
    size_t n = tls13_sealed_len(len);
    uint8_t *rec = malloc(n);
    assert_int_equal(tls13_seal(engine, p->t, data, len, rec), 0);
    BIO_write(SSL_get_rbio(p->client), rec, (int)n);
    free(rec);
}

static size_t client_reads(pair *p, char *out, size_t cap)
{
    size_t len = 0;
    int n;
    while (len < cap && (n = SSL_read(p->client, out + len, (int)(cap - len))) > 0)
        len += (size_t)n;
    return len;
}

static void round_trip(const char *suite)
{
    pair p = {0};
    handshake(&p, suite, 0, true, "CONNECT with the Finished", 0);
    assert_non_null(p.t);
    char got[64 * 1024];
    size_t got_len = 0;
    assert_int_equal(server_reads(&p, got, &got_len), TLS13_DATA);
    assert_int_equal(got_len, strlen("CONNECT with the Finished"));
    assert_memory_equal(got, "CONNECT with the Finished", got_len);

    server_writes(&p, "CONNACK", 7);
    assert_int_equal(client_reads(&p, got, sizeof got), 7);
    assert_memory_equal(got, "CONNACK", 7);

    /* Larger than one record, both ways. */
    static char big[40000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    server_writes(&p, big, sizeof big);
    assert_int_equal(client_reads(&p, got, sizeof got), sizeof big);
    assert_memory_equal(got, big, sizeof big);
    assert_int_equal(SSL_write(p.client, big, sizeof big), (int)sizeof big);
    client_sent(&p);
    got_len = 0;
    assert_int_equal(server_reads(&p, got, &got_len), TLS13_DATA);
    assert_int_equal(got_len, sizeof big);
    assert_memory_equal(got, big, sizeof big);
    pair_free(&p);
}

static void test_aes128(void **state)
{
    round_trip("TLS_AES_128_GCM_SHA256");
}
static void test_aes256(void **state)
{
    round_trip("TLS_AES_256_GCM_SHA384");
}
static void test_chacha20(void **state)
{
    round_trip("TLS_CHACHA20_POLY1305_SHA256");
}

/* Data sent byte by byte arrives whole once the record is complete. */
static void test_partial_records(void **state)
{
    pair p = {0};
    handshake(&p, NULL, 0, true, NULL, 0);
    assert_int_equal(p.in_len, 0);
    SSL_write(p.client, "ping", 4);
    client_sent(&p);
    size_t total = p.in_len, used = 0, plen = 0;
    uint8_t *plain = NULL;
    for (size_t have = 0; have < total; have++)
        assert_int_equal(tls13_open(engine, p.t, p.in, have, &used, &plain, &plen),
                         TLS13_INCOMPLETE);
    assert_int_equal(tls13_open(engine, p.t, p.in, total, &used, &plain, &plen), TLS13_DATA);
    assert_int_equal(used, total);
    assert_int_equal(plen, 4);
    assert_memory_equal(plain, "ping", 4);
    pair_free(&p);
}

static void test_key_update(void **state)
{
    pair p = {0};
    handshake(&p, NULL, 0, true, NULL, 0);
    /* The client updates its key and asks for ours. */
    assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_write(p.client, "after", 5), 5);
    client_sent(&p);
    char got[64];
    size_t got_len = 0;
    assert_int_equal(server_reads(&p, got, &got_len), TLS13_CONTROL);
    assert_int_equal(got_len, 5);
    assert_memory_equal(got, "after", 5);
    assert_true(tls13_reply_due(p.t));
    uint8_t reply[TLS13_CONTROL_RECORD];
    size_t reply_len = 0;
    assert_int_equal(tls13_seal_reply(engine, p.t, reply, &reply_len), 0);
    assert_false(tls13_reply_due(p.t));
    BIO_write(SSL_get_rbio(p.client), reply, (int)reply_len);
    server_writes(&p, "under the new key", 17);
    assert_int_equal(client_reads(&p, got, sizeof got), 17);
    assert_memory_equal(got, "under the new key", 17);

    /* An update the server need not answer. */
    assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    assert_int_equal(SSL_write(p.client, "again", 5), 5);
    client_sent(&p);
    got_len = 0;
    assert_int_equal(server_reads(&p, got, &got_len), TLS13_CONTROL);
    assert_false(tls13_reply_due(p.t));
    assert_memory_equal(got, "again", 5);
    server_writes(&p, "still", 5);
    assert_int_equal(client_reads(&p, got, sizeof got), 5);
    pair_free(&p);
}

static void test_close_notify(void **state)
{
    pair p = {0};
    handshake(&p, NULL, 0, true, NULL, 0);
    uint8_t rec[TLS13_CONTROL_RECORD];
    size_t len = 0;
    assert_int_equal(tls13_seal_close(engine, p.t, rec, &len), 0);
    BIO_write(SSL_get_rbio(p.client), rec, (int)len);
    char got[8];
    assert_int_equal(SSL_read(p.client, got, sizeof got), 0);
    assert_int_equal(SSL_get_error(p.client, 0), SSL_ERROR_ZERO_RETURN);
    SSL_shutdown(p.client); /* the client's own close_notify */
    client_sent(&p);
    size_t got_len = 0;
    assert_int_equal(server_reads(&p, got, &got_len), TLS13_CLOSED);
    pair_free(&p);
}

static void test_bad_records(void **state)
{
    pair p = {0};
    handshake(&p, NULL, 0, true, NULL, 0);
    SSL_write(p.client, "ping", 4);
    client_sent(&p);
    uint8_t rec[256];
    size_t len = p.in_len, used = 0, plen = 0;
    uint8_t *plain = NULL;
    memcpy(rec, p.in, len);

    rec[len - 1] ^= 1; /* the tag */
    assert_int_equal(tls13_open(engine, p.t, rec, len, &used, &plain, &plen), REG_ETLS);
    memcpy(rec, p.in, len);
    rec[0] = 22; /* a plaintext handshake record after the handshake */
    assert_int_equal(tls13_open(engine, p.t, rec, len, &used, &plain, &plen), REG_EDECODE);
    uint8_t huge[5] = {23, 3, 3, 0x48, 0x01}; /* 18433 bytes: past 2^14 + 256 */
    assert_int_equal(tls13_open(engine, p.t, huge, 5, &used, &plain, &plen), REG_ETOOBIG);
    uint8_t tiny[5 + 16] = {23, 3, 3, 0, 16}; /* no room for the content type */
    assert_int_equal(tls13_open(engine, p.t, tiny, sizeof tiny, &used, &plain, &plen),
                     REG_EDECODE);
    /* A failed record consumed no sequence number: the genuine one still opens. */
    assert_int_equal(tls13_open(engine, p.t, p.in, len, &used, &plain, &plen), TLS13_DATA);
    assert_memory_equal(plain, "ping", 4);
    /* Replayed: its sequence number is gone. */
    SSL_write(p.client, "pong", 4);
    memcpy(rec, p.in, len);
    assert_int_equal(tls13_open(engine, p.t, rec, len, &used, &plain, &plen), REG_ETLS);
    pair_free(&p);
}

static void test_not_taken_over(void **state)
{
    pair p = {0};
    handshake(&p, NULL, TLS1_2_VERSION, true, NULL, REG_EINVAL); /* TLS 1.2 */
    assert_null(p.t);
    pair_free(&p);
    pair q = {0};
    handshake(&q, NULL, 0, false, NULL, REG_EINVAL); /* not watched */
    assert_null(q.t);
    pair_free(&q);
}

static int setup(void **state)
{
    EVP_PKEY *ca_key = NULL, *srv_key = NULL;
    X509 *ca = NULL, *srv = NULL;
    int64_t now = (int64_t)time(NULL) * 1000;
    char *srv_pem = NULL, *srv_key_pem = NULL;
    if (pki_ca_new("tls13 test CA", NULL, 2, now, &ca_key, &ca) || pki_key_new_p256(&srv_key) ||
        pki_issue_server(ca, ca_key, srv_key, "localhost", NULL, 0, 2, now, &srv) ||
        pki_cert_to_pem(srv, &srv_pem) || pki_key_to_pem(srv_key, &srv_key_pem) ||
        http_tls_server_ctx(srv_pem, srv_key_pem, &server_ctx) || tls13_watch_ctx(server_ctx) ||
        tls13_engine_new(&engine))
        return -1;
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    X509_free(ca);
    X509_free(srv);
    free(srv_pem);
    free(srv_key_pem);
    return 0;
}

static int teardown(void **state)
{
    SSL_CTX_free(server_ctx);
    tls13_engine_free(engine);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aes128),         cmocka_unit_test(test_aes256),
        cmocka_unit_test(test_chacha20),       cmocka_unit_test(test_partial_records),
        cmocka_unit_test(test_key_update),     cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_bad_records),    cmocka_unit_test(test_not_taken_over),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
