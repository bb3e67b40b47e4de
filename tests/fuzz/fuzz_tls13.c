/*
 * fuzz_tls13.c - libFuzzer harness for common/tls13.c (the TLS 1.3 record layer).
 *
 * A server state and its mirror (the same secrets, the directions swapped: what one seals the
 * other opens) under the suite the first byte picks. The second byte picks the mode:
 *   - even: the rest is ciphertext from the network, opened record by record. Whatever happens,
 *     consumption stays inside the input, an incomplete record consumes nothing, plaintext lies
 *     inside the record and is at most 2^14 bytes, and errors are the documented ones.
 *   - odd: the rest is a script for the mirror (data of a given length, a KeyUpdate, a
 *     close_notify, a flipped bit in the next record), whose records the server opens: data
 *     must come out identical, a KeyUpdate as TLS13_CONTROL, close_notify as TLS13_CLOSED, a
 *     flipped bit as an error (or, in the length field, as an incomplete record), after which
 *     the script ends (the connection would be closed).
 *     Each data record is also answered by the server and opened by the mirror.
 *
 * Build and run: tests/fuzz/run.sh tls13 SECONDS OUT_DIR SCHEMAS_EMBEDDED_C
 */
#include "err.h"
#include "tls13.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_check.h"

static const uint16_t suites[] = {0x1301, 0x1302, 0x1303};
static const size_t hash_len[] = {32, 48, 32};

static int documented(int r)
{
    return r == REG_EDECODE || r == REG_ETOOBIG || r == REG_ETLS;
}

static void raw(tls13_engine *e, tls13 *server, const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    size_t at = 0;
    while (at < size) {
        size_t used = 0, plen = 0;
        uint8_t *plain = NULL;
        int r = tls13_open(e, server, buf + at, size - at, &used, &plain, &plen);
        if (r < 0) {
            CHECK(documented(r));
            break;
        }
        CHECK(used <= size - at);
        if (r == TLS13_INCOMPLETE) {
            CHECK(used == 0);
            break;
        }
        CHECK(used > 0);
        if (r == TLS13_DATA) {
            CHECK(plain >= buf + at && plain + plen <= buf + at + used);
            CHECK(plen <= TLS13_MAX_PLAINTEXT);
        }
        if (r == TLS13_CLOSED) break;
        at += used;
    }
    free(buf);
}

/* Opens exactly one record at rec (len bytes) with `to`. */
static int open_one(tls13_engine *e, tls13 *to, uint8_t *rec, size_t len, uint8_t **plain,
                    size_t *plen)
{
    size_t used = 0;
    int r = tls13_open(e, to, rec, len, &used, plain, plen);
    if (r > TLS13_INCOMPLETE) CHECK(used == len);
    return r;
}

static void scripted(tls13_engine *e, tls13 *server, tls13 *mirror, const uint8_t *s, size_t n)
{
    static uint8_t rec[TLS13_MAX_RECORD + 64];
    int flip = -1;
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint8_t op = s[i] % 4, arg = s[i + 1];
        size_t len = 0;
        uint8_t *plain = NULL;
        size_t plen = 0;
        if (op == 3) { /* corrupt the next record */
            flip = arg;
            continue;
        }
        if (op == 0) {
            size_t dlen = (size_t)arg * 67 % (TLS13_MAX_PLAINTEXT + 1); /* up to a full record */
            uint8_t *d = malloc(dlen ? dlen : 1);
            for (size_t k = 0; k < dlen; k++)
                d[k] = (uint8_t)(k * 31 + arg);
            len = tls13_sealed_len(dlen);
            CHECK(dlen == 0 ? len == 0 : len == dlen + TLS13_OVERHEAD);
            CHECK(tls13_seal(e, mirror, d, dlen, rec) == 0);
            if (len && flip >= 0) {
                rec[(size_t)flip % len] ^= 1;
                int r = open_one(e, server, rec, len, &plain, &plen);
                CHECK(r == TLS13_INCOMPLETE || documented(r)); /* a longer length: incomplete */
                free(d);
                return;
            }
            if (len) {
                CHECK(open_one(e, server, rec, len, &plain, &plen) == TLS13_DATA);
                CHECK(plen == dlen && !memcmp(plain, d, dlen));
                /* and the answer */
                size_t alen = tls13_sealed_len(dlen);
                CHECK(tls13_seal(e, server, d, dlen, rec) == 0);
                CHECK(open_one(e, mirror, rec, alen, &plain, &plen) == TLS13_DATA);
                CHECK(plen == dlen && !memcmp(plain, d, dlen));
            }
            free(d);
            continue;
        }
        CHECK((op == 1 ? tls13_seal_reply(e, mirror, rec, &len)
                       : tls13_seal_close(e, mirror, rec, &len)) == 0);
        CHECK(len <= TLS13_CONTROL_RECORD);
        if (flip >= 0) {
            rec[(size_t)flip % len] ^= 1;
            int r = open_one(e, server, rec, len, &plain, &plen);
            CHECK(r == TLS13_INCOMPLETE || documented(r));
            return;
        }
        int r = open_one(e, server, rec, len, &plain, &plen);
        CHECK(r == (op == 1 ? TLS13_CONTROL : TLS13_CLOSED));
        CHECK(!tls13_reply_due(server)); /* the mirror's KeyUpdate asks for none */
        if (op == 2) return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tls13_engine *e;
    if (!e && tls13_engine_new(&e)) abort();
    if (size < 2) return 0;
    int suite = data[0] % 3;
    uint8_t client[48], server_secret[48];
    for (int i = 0; i < 48; i++) {
        client[i] = (uint8_t)(i + 1);
        server_secret[i] = (uint8_t)(0xa0 ^ i);
    }
    tls13 *server = NULL, *mirror = NULL;
    CHECK(tls13_new(e, suites[suite], client, server_secret, hash_len[suite], &server) == 0);
    CHECK(tls13_new(e, suites[suite], server_secret, client, hash_len[suite], &mirror) == 0);
    if (data[1] % 2 == 0)
        raw(e, server, data + 2, size - 2);
    else
        scripted(e, server, mirror, data + 2, size - 2);
    tls13_free(server);
    tls13_free(mirror);
    return 0;
}
