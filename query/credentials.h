/*
 * credentials.h - the operator's credentials reads: the tenant's issuing CA, its factory CAs, a
 * device's certificates (with their status now), and the tenant's CRL. Answers from the view;
 * another tenant's objects are simply not found (404).
 */
#ifndef REG_QUERY_CREDENTIALS_H
#define REG_QUERY_CREDENTIALS_H

#include "http_server.h"
#include "keystore.h"
#include "projector/view.h"
#include "query/auth.h"

/* Each answers req (taken) and returns the status it answered with. */

/* GET /issuing-ca: the PEM certificate (application/x-pem-file). */
int query_issuing_ca(view *v, const auth_principal *who, http_req *req);

/* GET /factory-cas?limit=N&cursor=C: {items: [{ca_id, subject, fingerprint, not_after,
 * created_at}], next_cursor}. */
int query_factory_cas(view *v, const auth_principal *who, const char *query, http_req *req);

/* GET /factory-cas/{id}: one CA, with its PEM. */
int query_factory_ca(view *v, const auth_principal *who, const char *id, http_req *req);

/* GET /devices/{id}/certificates: [{cert_id, fingerprint, serial, issued_at, expires_at,
 * valid_until, revoked_at, is_primary, status, rotation_due}], where status is judged now:
 * active, superseded (in its overlap window), expired, or revoked. */
int query_device_certificates(view *v, const auth_principal *who, const char *id, http_req *req);

/* GET /crl: the tenant's CRL (PEM), signed by its issuing CA with the key from keys. The CRL is
 * made again whenever the tenant's revocations changed (its number is their count). */
int query_crl(view *v, keystore *keys, const auth_principal *who, http_req *req);

#endif
