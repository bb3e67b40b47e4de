/*
 * auth.h - who is calling the operator API: the admin (manages tenants), or a tenant's token
 * with role operator (reads and writes its tenant) or viewer (reads only). Tokens are looked up
 * by their SHA-256 in the view; the admin token's hash comes from the configuration. The
 * plaintext of a token is never stored or logged.
 */
#ifndef REG_AUTH_H
#define REG_AUTH_H

#include "ids.h"
#include "projector/view.h"

enum auth_role { AUTH_NONE, AUTH_ADMIN, AUTH_OPERATOR, AUTH_VIEWER };

typedef struct auth_principal {
    enum auth_role role;
    reg_uuid tenant; /* tenant tokens only */
    char tenant_s[37];
    char actor[48]; /* "admin" or "token:<token id>": who, in commands and events */
} auth_principal;

/* Remembers recent token lookups (by token hash) so that a busy client costs no view read. It
 * must be cleared whenever the view may have changed a token: the API clears it on every commit
 * notice of the projector. One loop thread only. */
typedef struct auth_cache auth_cache;
auth_cache *auth_cache_new(void);
void auth_cache_clear(auth_cache *c);
void auth_cache_free(auth_cache *c);

/* Authenticates an Authorization header value ("Bearer <token>"; NULL when absent) against the
 * admin hash, the cache (may be NULL) and the view. Returns 0 and fills p, or REG_ENOTFOUND for
 * no/bad credentials, or REG_ESTORE. */
int auth_bearer(view *v, auth_cache *c, const char *admin_hash, const char *authorization,
                auth_principal *p);

#endif
