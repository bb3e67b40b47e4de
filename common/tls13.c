/*
 * tls13.c - the record layer of a server-side TLS 1.3 connection after the handshake (tls13.h).
 *
 * A record (RFC 8446 5.2): a 5-byte header (type 23, version 0x0303, length), then the AEAD
 * ciphertext of the content, its real content type and optional zero padding, then the 16-byte
 * tag. The header is the additional data; the nonce is the write IV XOR the record's 64-bit
 * sequence number. Keys and IVs come from the traffic secret with HKDF-Expand-Label (7.1), and a
 * KeyUpdate replaces the secret with HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)
 * (7.2). Every output here is at most one hash long, so HKDF-Expand is a single HMAC.
 */
#include "tls13.h"
#include "err.h"
#include "ids.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { SECRET_MAX = 48, KEY_MAX = 32, IV_LEN = 12, TAG_LEN = 16 };
enum { TYPE_ALERT = 21, TYPE_HANDSHAKE = 22, TYPE_APPLICATION = 23 };
enum { HS_KEY_UPDATE = 24 };

/* The three TLS 1.3 AEAD suites OpenSSL enables by default. */
enum suite { SUITE_AES128_GCM, SUITE_AES256_GCM, SUITE_CHACHA20, SUITE_COUNT };
static const struct suite_info {
    uint16_t id; /* IANA cipher suite number */
    const char *cipher, *digest;
    uint8_t key_len, hash_len;
} suites[SUITE_COUNT] = {
    [SUITE_AES128_GCM] = {0x1301, "AES-128-GCM", "SHA256", 16, 32},
    [SUITE_AES256_GCM] = {0x1302, "AES-256-GCM", "SHA384", 32, 48},
    [SUITE_CHACHA20] = {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32},
};

struct tls13_engine {
    EVP_CIPHER *cipher[SUITE_COUNT];
    EVP_CIPHER_CTX *ctx[SUITE_COUNT]; /* initialised with its cipher once; re-keyed per record */
    EVP_MD *md[SUITE_COUNT];
};

/* One direction of a connection. */
struct direction {
    uint8_t secret[SECRET_MAX];
    uint8_t key[KEY_MAX];
    uint8_t iv[IV_LEN];
    uint64_t seq;
};

struct tls13 {
    struct direction in, out;
    uint8_t suite;
    bool reply_due;
};

/* ---- the engine ---- */

int tls13_engine_new(tls13_engine **out)
{
    tls13_engine *e = calloc(1, sizeof *e);
    if (!e) return REG_ENOMEM;
    for (int i = 0; i < SUITE_COUNT; i++) {
        e->cipher[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
        e->md[i] = EVP_MD_fetch(NULL, suites[i].digest, NULL);
        e->ctx[i] = EVP_CIPHER_CTX_new();
        if (!e->cipher[i] || !e->md[i] || !e->ctx[i] ||
            EVP_CipherInit_ex2(e->ctx[i], e->cipher[i], NULL, NULL, 1, NULL) != 1) {
            tls13_engine_free(e);
            return REG_ETLS;
        }
    }
    *out = e;
    return 0;
}

void tls13_engine_free(tls13_engine *e)
{
    if (!e) return;
    for (int i = 0; i < SUITE_COUNT; i++) {
        EVP_CIPHER_CTX_free(e->ctx[i]);
        EVP_CIPHER_free(e->cipher[i]);
        EVP_MD_free(e->md[i]);
    }
    free(e);
}

/* ---- keys ---- */

/* HKDF-Expand-Label(secret, label, "", len) for len <= the hash length: one HMAC of the
 * HkdfLabel structure followed by the counter byte 1. */
static int expand_label(const tls13_engine *e, int suite, const uint8_t *secret,
                        const char *label, uint8_t *out, size_t len)
{
    uint8_t info[2 + 1 + 6 + 16 + 1 + 1];
    size_t ll = strlen(label), n = 0;
    info[n++] = (uint8_t)(len >> 8);
    info[n++] = (uint8_t)len;
    info[n++] = (uint8_t)(6 + ll);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, ll);
    n += ll;
    info[n++] = 0; /* empty context */
    info[n++] = 1; /* T(1) */
    uint8_t t[EVP_MAX_MD_SIZE];
    unsigned tlen = 0;
    if (!HMAC(e->md[suite], secret, suites[suite].hash_len, info, n, t, &tlen) || tlen < len)
        return REG_ETLS;
    memcpy(out, t, len);
    OPENSSL_cleanse(t, sizeof t);
    return 0;
}

static int derive(const tls13_engine *e, int suite, struct direction *d)
{
    d->seq = 0;
    int err = expand_label(e, suite, d->secret, "key", d->key, suites[suite].key_len);
    return err ? err : expand_label(e, suite, d->secret, "iv", d->iv, IV_LEN);
}

/* The next generation of a direction's secret, keys and IV (a KeyUpdate). */
static int update(const tls13_engine *e, int suite, struct direction *d)
{
    uint8_t next[SECRET_MAX];
    int err = expand_label(e, suite, d->secret, "traffic upd", next, suites[suite].hash_len);
    if (!err) memcpy(d->secret, next, sizeof next);
    OPENSSL_cleanse(next, sizeof next);
    return err ? err : derive(e, suite, d);
}

/* ---- records ---- */

static void nonce_for(const struct direction *d, uint8_t nonce[IV_LEN])
{
    memcpy(nonce, d->iv, IV_LEN);
    for (int i = 0; i < 8; i++)
        nonce[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* Encrypts (enc 1) or decrypts and authenticates (enc 0) body in place under d's current key
 * and sequence number; the header is the additional data and the tag follows the body. */
static int aead(tls13_engine *e, int suite, const struct direction *d, int enc,
                const uint8_t header[TLS13_RECORD_HEADER], uint8_t *body, size_t len)
{
    EVP_CIPHER_CTX *c = e->ctx[suite];
    uint8_t nonce[IV_LEN];
    nonce_for(d, nonce);
    int n = 0;
    if (EVP_CipherInit_ex2(c, NULL, d->key, nonce, enc, NULL) != 1 ||
        EVP_CipherUpdate(c, NULL, &n, header, TLS13_RECORD_HEADER) != 1 ||
        (len && EVP_CipherUpdate(c, body, &n, body, (int)len) != 1))
        return REG_ETLS;
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, body + len) != 1)
        return REG_ETLS;
    if (EVP_CipherFinal_ex(c, body + len, &n) != 1) return REG_ETLS;
    if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, body + len) != 1)
        return REG_ETLS;
    return 0;
}

/* Seals one record of `type` holding len (<= TLS13_MAX_PLAINTEXT) bytes at out; returns its
 * length, or a negative error. */
static long seal_record(tls13_engine *e, tls13 *t, uint8_t type, const void *data, size_t len,
                        uint8_t *out)
{
    size_t body = len + 1;
    out[0] = TYPE_APPLICATION;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)((body + TAG_LEN) >> 8);
    out[4] = (uint8_t)(body + TAG_LEN);
    if (len) memmove(out + TLS13_RECORD_HEADER, data, len);
    out[TLS13_RECORD_HEADER + len] = type;
    int err = aead(e, t->suite, &t->out, 1, out, out + TLS13_RECORD_HEADER, body);
    if (err) return err;
    t->out.seq++;
    return (long)(TLS13_RECORD_HEADER + body + TAG_LEN);
}

size_t tls13_sealed_len(size_t len)
{
    size_t records = (len + TLS13_MAX_PLAINTEXT - 1) / TLS13_MAX_PLAINTEXT;
    return len + records * TLS13_OVERHEAD;
}

int tls13_seal(tls13_engine *e, tls13 *t, const void *data, size_t len, uint8_t *out)
{
    const uint8_t *p = data;
    while (len) {
        size_t n = len < TLS13_MAX_PLAINTEXT ? len : TLS13_MAX_PLAINTEXT;
        long w = seal_record(e, t, TYPE_APPLICATION, p, n, out);
        if (w < 0) return (int)w;
        p += n;
        len -= n;
        out += w;
    }
    return 0;
}

int tls13_seal_close(tls13_engine *e, tls13 *t, uint8_t *out, size_t *out_len)
{
    static const uint8_t close_notify[2] = {1 /* warning */, 0 /* close_notify */};
    long w = seal_record(e, t, TYPE_ALERT, close_notify, sizeof close_notify, out);
    if (w < 0) return (int)w;
    *out_len = (size_t)w;
    return 0;
}

bool tls13_reply_due(const tls13 *t)
{
    return t->reply_due;
}

int tls13_seal_reply(tls13_engine *e, tls13 *t, uint8_t *out, size_t *out_len)
{
    static const uint8_t key_update[5] = {HS_KEY_UPDATE, 0, 0, 1, 0 /* update_not_requested */};
    long w = seal_record(e, t, TYPE_HANDSHAKE, key_update, sizeof key_update, out);
    if (w < 0) return (int)w;
    *out_len = (size_t)w;
    t->reply_due = false;
    return update(e, t->suite, &t->out); /* our later records use the next key */
}

/* The handshake messages a client may send after the handshake that this layer accepts: only
 * KeyUpdate (RFC 8446 4.6.3). */
static int handshake_messages(tls13_engine *e, tls13 *t, const uint8_t *m, size_t len)
{
    while (len) {
        if (len < 4) return REG_EDECODE;
        size_t mlen = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
        if (m[0] != HS_KEY_UPDATE || mlen != 1 || len < 5 || m[4] > 1) return REG_EDECODE;
        if (m[4] == 1) t->reply_due = true;
        int err = update(e, t->suite, &t->in);
        if (err) return err;
        m += 5;
        len -= 5;
    }
    return 0;
}

int tls13_open(tls13_engine *e, tls13 *t, uint8_t *buf, size_t len, size_t *used,
               uint8_t **plain, size_t *plain_len)
{
    *used = 0;
    if (len < TLS13_RECORD_HEADER) return TLS13_INCOMPLETE;
    size_t rlen = (size_t)buf[3] << 8 | buf[4];
    if (buf[0] != TYPE_APPLICATION || buf[1] != 3) return REG_EDECODE;
    if (rlen > TLS13_MAX_RECORD - TLS13_RECORD_HEADER) return REG_ETOOBIG;
    if (rlen < 1 + TAG_LEN) return REG_EDECODE;
    if (len < TLS13_RECORD_HEADER + rlen) return TLS13_INCOMPLETE;
    uint8_t *body = buf + TLS13_RECORD_HEADER;
    size_t n = rlen - TAG_LEN;
    int err = aead(e, t->suite, &t->in, 0, buf, body, n);
    if (err) return err;
    t->in.seq++;
    *used = TLS13_RECORD_HEADER + rlen;
    while (n && !body[n - 1]) /* padding */
        n--;
    if (!n) return REG_EDECODE; /* no content type */
    uint8_t type = body[--n];
    if (n > TLS13_MAX_PLAINTEXT) return REG_ETOOBIG;
    switch (type) {
    case TYPE_APPLICATION:
        *plain = body;
        *plain_len = n;
        return TLS13_DATA;
    case TYPE_ALERT:
        return TLS13_CLOSED;
    case TYPE_HANDSHAKE:
        err = handshake_messages(e, t, body, n);
        return err ? err : TLS13_CONTROL;
    default:
        return REG_EDECODE;
    }
}

int tls13_new(tls13_engine *e, uint16_t suite_id, const uint8_t *client_secret,
              const uint8_t *server_secret, size_t secret_len, tls13 **out)
{
    *out = NULL;
    int suite = 0;
    while (suite < SUITE_COUNT && suites[suite].id != suite_id)
        suite++;
    if (suite == SUITE_COUNT || secret_len != suites[suite].hash_len) return REG_EINVAL;
    tls13 *t = OPENSSL_zalloc(sizeof *t);
    if (!t) return REG_ENOMEM;
    t->suite = (uint8_t)suite;
    memcpy(t->in.secret, client_secret, secret_len);
    memcpy(t->out.secret, server_secret, secret_len);
    int err = derive(e, suite, &t->in);
    if (!err) err = derive(e, suite, &t->out);
    if (err) {
        tls13_free(t);
        return err;
    }
    *out = t;
    return 0;
}

/* ---- taking over from OpenSSL ---- */

/* The secrets the key log callback captured for a watched SSL. */
struct captured {
    uint8_t client[SECRET_MAX], server[SECRET_MAX];
    size_t client_len, server_len;
};

static int captured_index = -1;

static void captured_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr) OPENSSL_clear_free(ptr, sizeof(struct captured));
}

static void make_index(void)
{
    captured_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, captured_free);
}

/* Key log lines are "LABEL <client random hex> <secret hex>" (the NSS key log format). */
static void on_keylog(const SSL *ssl, const char *line)
{
    struct captured *c = captured_index < 0 ? NULL : SSL_get_ex_data(ssl, captured_index);
    if (!c) return;
    static const char client[] = "CLIENT_TRAFFIC_SECRET_0 ", server[] = "SERVER_TRAFFIC_SECRET_0 ";
    uint8_t *dst;
    size_t *dst_len;
    if (!strncmp(line, client, sizeof client - 1)) {
        dst = c->client;
        dst_len = &c->client_len;
    } else if (!strncmp(line, server, sizeof server - 1)) {
        dst = c->server;
        dst_len = &c->server_len;
    } else {
        return;
    }
    const char *hex = strchr(line + sizeof client - 1, ' ');
    if (!hex) return;
    size_t n = strlen(++hex) / 2;
    if (n <= SECRET_MAX && !reg_hex_decode(hex, dst, n)) *dst_len = n;
}

int tls13_watch_ctx(SSL_CTX *ctx)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, make_index);
    if (captured_index < 0) return REG_ENOMEM;
    SSL_CTX_keylog_cb_func cur = SSL_CTX_get_keylog_callback(ctx);
    if (cur && cur != on_keylog) return REG_EEXISTS;
    SSL_CTX_set_keylog_callback(ctx, on_keylog);
    return 0;
}

int tls13_watch(SSL *ssl)
{
    if (captured_index < 0) return REG_EINVAL;
    struct captured *c = OPENSSL_zalloc(sizeof *c);
    if (!c) return REG_ENOMEM;
    if (SSL_set_ex_data(ssl, captured_index, c) != 1) {
        OPENSSL_free(c);
        return REG_ENOMEM;
    }
    return 0;
}

/* How many of the records in sent are sealed under the server's application key: the
 * write sequence number OpenSSL reached. Records under the handshake key may come first; a
 * handshake record after an application one means we misread the stream (-1). */
static long records_sealed(tls13_engine *e, tls13 *t, const uint8_t *sent, size_t len)
{
    long count = 0;
    uint8_t scratch[TLS13_MAX_RECORD];
    while (len && count >= 0) {
        size_t rlen = len < TLS13_RECORD_HEADER ? 0 : (size_t)sent[3] << 8 | sent[4];
        if (!rlen || len < TLS13_RECORD_HEADER + rlen || rlen > sizeof scratch) {
            count = -1;
            break;
        }
        bool opens = false;
        if (sent[0] == TYPE_APPLICATION && rlen >= 1 + TAG_LEN) {
            memcpy(scratch, sent + TLS13_RECORD_HEADER, rlen);
            struct direction d = t->out;
            d.seq = (uint64_t)count;
            opens = aead(e, t->suite, &d, 0, sent, scratch, rlen - TAG_LEN) == 0;
        }
        if (opens)
            count++;
        else if (count)
            count = -1;
        sent += TLS13_RECORD_HEADER + rlen;
        len -= TLS13_RECORD_HEADER + rlen;
    }
    OPENSSL_cleanse(scratch, sizeof scratch);
    return count;
}

int tls13_take_over(tls13_engine *e, SSL *ssl, const uint8_t *sent, size_t sent_len,
                    tls13 **out)
{
    *out = NULL;
    struct captured *c = captured_index < 0 ? NULL : SSL_get_ex_data(ssl, captured_index);
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    if (!c || !cipher || SSL_version(ssl) != TLS1_3_VERSION || SSL_has_pending(ssl))
        return REG_EINVAL;
    if (c->client_len != c->server_len) return REG_EINVAL;
    tls13 *t = NULL;
    int err = tls13_new(e, (uint16_t)SSL_CIPHER_get_protocol_id(cipher), c->client, c->server,
                        c->client_len, &t);
    if (err) return err;
    long seq = records_sealed(e, t, sent, sent_len);
    if (seq < 0) {
        tls13_free(t);
        return REG_EINVAL;
    }
    t->out.seq = (uint64_t)seq;
    *out = t;
    return 0;
}

void tls13_free(tls13 *t)
{
    if (t) OPENSSL_clear_free(t, sizeof *t);
}
