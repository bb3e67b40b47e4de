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
    reg_uuid tenant;    /* tenant tokens only */
    char tenant_s[37];
    char actor[48]; /* "admin" or "token:<token id>": who, in commands and events */
} auth_principal;

/* Authenticates an Authorization header value ("Bearer <token>"; NULL when absent) against the
 * admin hash and the view. Returns 0 and fills p, or REG_ENOTFOUND for no/bad credentials, or
 * REG_ESTORE. */
int auth_bearer(view *v, const char *admin_hash, const char *authorization, auth_principal *p);

#endif
