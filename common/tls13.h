/*
 * tls13.h - the record layer of a server-side TLS 1.3 connection after OpenSSL's handshake.
 *
 * OpenSSL runs the handshake; this module then takes the connection over, and the SSL object
 * can be freed. What a TLS 1.3 connection needs once it is up is its two traffic secrets, the
 * keys and IVs derived from them and two sequence numbers: about 200 bytes, where OpenSSL 3.0
 * keeps some 15 KiB (the SSL object, the session with the decoded client certificate, two AEAD
 * contexts) for as long as the connection lives. A fleet of idle MQTT devices is exactly that
 * case. It is what the kernel's TLS offload does with the keys OpenSSL hands it, done here in
 * user space with OpenSSL's AEADs and HMAC (RFC 8446 section 5 for records, 7.1 and 7.2 for the
 * keys and their updates).
 *
 * How the secrets are obtained: OpenSSL 3.0 has no API for traffic secrets other than its key
 * log callback, so tls13_watch_ctx installs one on the server's SSL_CTX and tls13_watch marks
 * the SSL objects whose secrets it keeps (others, on the same context, are ignored). The write
 * sequence number is learned from the records the server wrote in its last handshake step (its
 * session tickets): those that open under the server's application key are counted.
 *
 * After the take-over: the peer's application data, alerts and KeyUpdate messages are handled
 * here; anything else a TLS 1.3 client may not send after the handshake is an error (the
 * caller closes the connection). TLS 1.2 connections, other cipher suites and an SSL object
 * that buffered input are not taken over (tls13_take_over says so; the caller keeps the SSL).
 *
 * Threading: a tls13_engine (cipher contexts) belongs to one thread; a connection's tls13 is
 * used with the engine of the thread that owns the connection.
 */
#ifndef REG_TLS13_H
#define REG_TLS13_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ssl_ctx_st;
struct ssl_st;

typedef struct tls13_engine tls13_engine;
typedef struct tls13 tls13;

enum {
    TLS13_RECORD_HEADER = 5,
    TLS13_MAX_PLAINTEXT = 16384,
    TLS13_MAX_RECORD = TLS13_RECORD_HEADER + TLS13_MAX_PLAINTEXT + 256, /* RFC 8446 5.2 */
    TLS13_OVERHEAD = TLS13_RECORD_HEADER + 1 + 16, /* header, content type, AEAD tag */
    TLS13_CONTROL_RECORD = TLS13_OVERHEAD + 5      /* room for an alert or a KeyUpdate */
};

/* Cipher contexts for one thread. The caller owns *out. */
int tls13_engine_new(tls13_engine **out);
void tls13_engine_free(tls13_engine *e);

/* Installs the secret-capturing key log callback on a server context (idempotent).
 * REG_EEXISTS when the context has another key log callback (nothing is taken over then). */
int tls13_watch_ctx(struct ssl_ctx_st *ctx);
/* Keeps this SSL's application traffic secrets as the handshake derives them, for
 * tls13_take_over. The secrets are wiped when the SSL is freed. */
int tls13_watch(struct ssl_st *ssl);

/* After a successful handshake of a watched SSL: the connection's record state. sent/sent_len:
 * the bytes the SSL wrote in its last handshake step, not yet sent (they go out unchanged).
 * REG_EINVAL when the connection is not one this module takes over (keep using the SSL). The
 * caller owns *out; the SSL may be freed. */
int tls13_take_over(tls13_engine *e, struct ssl_st *ssl, const uint8_t *sent, size_t sent_len,
                    tls13 **out);
/* The record state of a connection whose application traffic secrets are known (what
 * tls13_take_over builds; tests and the fuzzer use it directly): suite_id is the cipher suite's
 * IANA number (0x1301..0x1303), the secrets one hash long. REG_EINVAL for another suite. */
int tls13_new(tls13_engine *e, uint16_t suite_id, const uint8_t *client_secret,
              const uint8_t *server_secret, size_t secret_len, tls13 **out);
void tls13_free(tls13 *t);

/* The bytes tls13_seal writes for len bytes of application data. */
size_t tls13_sealed_len(size_t len);
/* Seals application data into records at out (tls13_sealed_len(len) bytes). 0 or REG_ETLS. */
int tls13_seal(tls13_engine *e, tls13 *t, const void *data, size_t len, uint8_t *out);
/* Seals a close_notify alert (*out_len bytes written, at most TLS13_CONTROL_RECORD). */
int tls13_seal_close(tls13_engine *e, tls13 *t, uint8_t *out, size_t *out_len);

/* What tls13_open found. */
enum tls13_opened {
    TLS13_INCOMPLETE, /* buf does not hold a whole record yet: nothing consumed */
    TLS13_DATA,       /* application data, decrypted in place: *plain, *plain_len */
    TLS13_CONTROL,    /* a KeyUpdate, applied; when tls13_reply_due, send tls13_seal_reply */
    TLS13_CLOSED      /* the peer sent an alert (close_notify or another): close */
};
/* Opens the record at the start of buf, decrypting it in place; *used: bytes consumed. A
 * TLS13_* value, or REG_EDECODE (malformed), REG_ETOOBIG or REG_ETLS (did not authenticate):
 * close the connection then. */
int tls13_open(tls13_engine *e, tls13 *t, uint8_t *buf, size_t len, size_t *used,
               uint8_t **plain, size_t *plain_len);

/* The peer's KeyUpdate asked for ours: tls13_seal_reply writes it (at most
 * TLS13_CONTROL_RECORD bytes) and moves to the next write key. Send it before any more data. */
bool tls13_reply_due(const tls13 *t);
int tls13_seal_reply(tls13_engine *e, tls13 *t, uint8_t *out, size_t *out_len);

#endif
