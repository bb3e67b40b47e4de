/*
 * ids.h - identifiers and secrets: UUIDs (time-ordered v7, and name-based ones derived with SHA-256
 * so that a re-decided command yields the same event ids), bearer tokens and their hashes.
 */
#ifndef REG_IDS_H
#define REG_IDS_H

#include <stddef.h>
#include <stdint.h>

typedef struct reg_uuid {
    uint8_t b[16];
} reg_uuid;

#define REG_UUID_STRLEN 36 /* without the NUL */

/* A new time-ordered (version 7, RFC 9562) UUID: the Unix time in milliseconds and its
 * sub-millisecond fraction, then 62 bits from the OpenSSL CSPRNG (counted up from the last id
 * within one fraction, so that the ids one thread makes always increase). Every id the registry
 * makes is one: the view's keys start with them (commands, devices, certificates), and ids that
 * grow with time are written at the end of their key range, where RocksDB's memtable inserts
 * them cheaply, instead of at random places. They reveal when they were made, as the records
 * they name do anyway. 0 or REG_EIO. */
int reg_uuid_new(reg_uuid *out);

/* A name-based UUID (version 5 layout, SHA-256 instead of SHA-1): the same (namespace, name)
 * always gives the same id. */
void reg_uuid_derive(const reg_uuid *ns, const void *name, size_t len, reg_uuid *out);

/* Parses the canonical 36-character form (hex digits, either case). 0 or REG_EINVAL. */
int reg_uuid_parse(const char *s, reg_uuid *out);

/* The id in the len bytes at s (not necessarily NUL-terminated) parsed into *parsed and copied as
 * it is, with a NUL, into text: 1; else 0, text "". */
int reg_uuid_take(const char *s, size_t len, char text[REG_UUID_STRLEN + 1], reg_uuid *parsed);

/* Writes the canonical lower-case form and a NUL into out (at least 37 bytes). */
void reg_uuid_format(const reg_uuid *u, char *out);

/* A new bearer token: "rgt_" followed by 43 base64url characters (32 random bytes). out holds
 * at least 48 bytes. 0 or REG_EIO. */
int reg_token_new(char *out, size_t cap);

/* The hex SHA-256 of a token (64 characters and a NUL into out, at least 65 bytes); tokens are
 * stored and logged only as this. */
void reg_token_hash(const char *token, char *out);

/* A device serial number as manifests and bootstraps accept it: 1 to REG_SERIAL_MAX bytes of
 * printable ASCII other than space, ',' and '"' (so that it fits a CSV row unquoted). */
#define REG_SERIAL_MAX 128
int reg_serial_valid(const char *s, size_t len);

/* Decodes exactly n bytes from 2n hex digits (either case; nothing after them). 0 or REG_EINVAL. */
int reg_hex_decode(const char *hex, uint8_t *out, size_t n);

#endif
