/* auth.c - bearer token authentication against the view (auth.h). */
#include "query/auth.h"
#include "err.h"
#include "projector/keys.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { AUTH_CACHE_SLOTS = 4096 };

struct auth_cache {
    uint64_t generation; /* a slot is valid when its generation is the cache's */
    struct {
        uint64_t generation;
        char hash[65];
        auth_principal who;
    } slots[AUTH_CACHE_SLOTS];
};

auth_cache *auth_cache_new(void)
{
    auth_cache *c = calloc(1, sizeof *c);
    if (c) c->generation = 1;
    return c;
}

void auth_cache_clear(auth_cache *c)
{
    if (c) c->generation++;
}

void auth_cache_free(auth_cache *c)
{
    free(c);
}

static unsigned slot_of(const char *hash)
{
    unsigned v = 0;
    sscanf(hash, "%3x", &v); /* the hash is uniform: its first 12 bits pick the slot */
    return v % AUTH_CACHE_SLOTS;
}

static int hex_to_bytes(const char *hex, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

int auth_bearer(view *v, auth_cache *c, const char *admin_hash, const char *authorization,
                auth_principal *p)
{
    memset(p, 0, sizeof *p);
    if (!authorization || strncasecmp(authorization, "Bearer ", 7)) return REG_ENOTFOUND;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    if (len == 0 || len > 256) return REG_ENOTFOUND;

    char hash[65];
    reg_token_hash(token, hash);
    if (admin_hash && admin_hash[0] && CRYPTO_memcmp(hash, admin_hash, 64) == 0) {
        p->role = AUTH_ADMIN;
        strcpy(p->actor, "admin");
        return 0;
    }
    unsigned slot = slot_of(hash);
    if (c && c->slots[slot].generation == c->generation && !strcmp(c->slots[slot].hash, hash)) {
        *p = c->slots[slot].who;
        return 0;
    }
    reg_key k;
    unsigned char raw[32];
    hex_to_bytes(hash, raw, 32);
    key_add(key_byte(key_reset(&k), 'h'), raw, 32);
    char *val = NULL;
    size_t vlen = 0;
    int err = view_get(v, VIEW_TOKENS, k.b, k.len, &val, &vlen);
    if (err) return err;
    json_t *rec = json_loadb(val, vlen, 0, NULL);
    free(val);
    if (!rec) return REG_ESTORE;
    const char *role = json_string_value(json_object_get(rec, "role"));
    const char *tenant = json_string_value(json_object_get(rec, "tenant_id"));
    const char *token_id = json_string_value(json_object_get(rec, "token_id"));
    if (!role || !tenant || !token_id || reg_uuid_parse(tenant, &p->tenant)) {
        json_decref(rec);
        return REG_ESTORE;
    }
    p->role = !strcmp(role, "operator") ? AUTH_OPERATOR : AUTH_VIEWER;
    reg_uuid_format(&p->tenant, p->tenant_s);
    snprintf(p->actor, sizeof p->actor, "token:%s", token_id);
    json_decref(rec);
    if (c) {
        c->slots[slot].generation = c->generation;
        memcpy(c->slots[slot].hash, hash, 65);
        c->slots[slot].who = *p;
    }
    return 0;
}
