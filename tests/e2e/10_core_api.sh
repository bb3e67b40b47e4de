#!/usr/bin/env bash
# The operator API end to end on the embedded default: tenants, tokens and roles, devices, the
# status machine, metadata, read-your-writes, tenant isolation, and bad input of every kind.
source "$E2E_LIB"
start_role API serve --data "$WORK/data"

CONTEXT="health"; req GET "$API/healthz" ""; expect 200
CONTEXT="ready"; req GET "$API/readyz" ""; expect 200

CONTEXT="no token"; req POST "$API/tenants" "" '{"name":"acme"}'; expect 401 "b['status']==401"
CONTEXT="bad token"; req POST "$API/tenants" "nope" '{"name":"acme"}'; expect 401
CONTEXT="create tenant"; req POST "$API/tenants" "$ADMIN" '{"name":"acme"}'
expect 201 "b['name']=='acme' and b['token'].startswith('rgt_') and len(b['tenant_id'])==36 and b['version']==1"
T1=$(field "b['token']"); T1_ID=$(field "b['tenant_id']")
req POST "$API/tenants" "$ADMIN" '{"name":"globex","cert_validity_days":90}'
expect 201 "b['cert_validity_days']==90"
T2=$(field "b['token']")
CONTEXT="operator cannot create tenants"; req POST "$API/tenants" "$T1" '{"name":"x"}'; expect 403
CONTEXT="admin cannot touch devices"; req POST "$API/devices" "$ADMIN" '{"serial_number":"s","device_type":"t"}'; expect 403

CONTEXT="viewer token"; req POST "$API/tokens" "$T1" '{"role":"viewer","name":"dash"}'
expect 201 "b['role']=='viewer' and b['token'].startswith('rgt_')"
V1=$(field "b['token']"); V1_ID=$(field "b['token_id']")
CONTEXT="bad role"; req POST "$API/tokens" "$T1" '{"role":"root","name":"x"}'; expect 400 "'role' in b['detail']"

CONTEXT="register"; req POST "$API/devices" "$T1" '{"serial_number":"SN-001","device_type":"thermostat","firmware_version":"2.9.0","metadata":{"region":"eu-west","floor":"3"}}'
expect 201 "b['status']=='provisioning' and b['serial_number']=='SN-001' and b['metadata']=={'region':'eu-west','floor':'3'} and b['version']==1 and b['tenant_id']=='$T1_ID' and b['registered_at'].endswith('Z')"
D1=$(field "b['device_id']")
CONTEXT="read your write"; req GET "$API/devices/$D1" "$V1"
expect 200 "b['device_id']=='$D1' and b['firmware_version']=='2.9.0' and b['metadata']['region']=='eu-west' and b['last_seen_at'] is None"
CONTEXT="duplicate serial"; req POST "$API/devices" "$T1" '{"serial_number":"SN-001","device_type":"thermostat"}'; expect 409
CONTEXT="same serial, other tenant"; req POST "$API/devices" "$T2" '{"serial_number":"SN-001","device_type":"thermostat"}'; expect 201
D2=$(field "b['device_id']")
CONTEXT="viewer cannot write"; req POST "$API/devices" "$V1" '{"serial_number":"SN-9","device_type":"t"}'; expect 403
CONTEXT="other tenant's device"; req GET "$API/devices/$D2" "$T1"; expect 404
req PATCH "$API/devices/$D2" "$T1" '{"status":"active"}'; expect 404
req PUT "$API/devices/$D2/metadata/k" "$T1" '{"value":"v"}'; expect 404
CONTEXT="unknown device"; req GET "$API/devices/00000000-0000-4000-8000-000000000000" "$T1"; expect 404

# The status machine.
CONTEXT="provisioning->suspended"; req PATCH "$API/devices/$D1" "$T1" '{"status":"suspended"}'; expect 409 "b['current_status']=='provisioning'"
CONTEXT="provisioning->active"; req PATCH "$API/devices/$D1" "$T1" '{"status":"active"}'; expect 200 "b['status']=='active' and b['version']==2"
CONTEXT="active->suspended"; req PATCH "$API/devices/$D1" "$T1" '{"status":"suspended"}'; expect 200 "b['status']=='suspended' and b['version']==3"
CONTEXT="suspended->active"; req PATCH "$API/devices/$D1" "$T1" '{"status":"active","firmware_version":"2.10.0"}'; expect 200 "b['status']=='active' and b['firmware_version']=='2.10.0' and b['version']==5"
CONTEXT="active->provisioning"; req PATCH "$API/devices/$D1" "$T1" '{"status":"provisioning"}'; expect 409
CONTEXT="bad status"; req PATCH "$API/devices/$D1" "$T1" '{"status":"exploded"}'; expect 400 "'status' in b['detail']"

# Metadata.
CONTEXT="put metadata"; req PUT "$API/devices/$D1/metadata/owner" "$T1" '{"value":"ops team"}'; expect 200 "b['metadata']['owner']=='ops team' and b['version']==6"
CONTEXT="patch metadata"; req PATCH "$API/devices/$D1/metadata" "$T1" '{"floor":null,"room":"12"}'; expect 200 "b['metadata']=={'region':'eu-west','owner':'ops team','room':'12'} and b['version']==7"
CONTEXT="get metadata"; req GET "$API/devices/$D1/metadata" "$V1"; expect 200 "b=={'region':'eu-west','owner':'ops team','room':'12'}"
CONTEXT="delete metadata"; req DELETE "$API/devices/$D1/metadata/room" "$T1"; expect 200 "'room' not in b['metadata']"
CONTEXT="delete absent key"; req DELETE "$API/devices/$D1/metadata/room" "$T1"; expect 404
CONTEXT="metadata value type"; req PUT "$API/devices/$D1/metadata/n" "$T1" '{"value":5}'; expect 400 "'string' in b['detail']"
LONGKEY=$(python3 -c "print('k'*129)")
CONTEXT="long key"; req PUT "$API/devices/$D1/metadata/$LONGKEY" "$T1" '{"value":"v"}'; expect 400 "'invalid' in b['detail']"
LONGVAL=$(python3 -c "print('v'*1025)")
CONTEXT="long value"; req PUT "$API/devices/$D1/metadata/k" "$T1" "{\"value\":\"$LONGVAL\"}"; expect 400 "'longer' in b['detail']"
MANY=$(python3 -c "import json; print(json.dumps({'k%d'%i:'v' for i in range(101)}))")
CONTEXT="too many keys"; req PATCH "$API/devices/$D1/metadata" "$T1" "$MANY"; expect 400 "'at most 100' in b['detail']"
SOME=$(python3 -c "import json; print(json.dumps({'k%d'%i:'v' for i in range(99)}))")
CONTEXT="too many keys after merge"; req PATCH "$API/devices/$D1/metadata" "$T1" "$SOME"; expect 400 "'at most 100' in b['detail']"

# Bad input.
CONTEXT="not json"; req POST "$API/devices" "$T1" 'serial_number=1'; expect 400 "'JSON' in b['detail']"
CONTEXT="wrong media type"; req POST "$API/devices" "$T1" '{}' text/plain; expect 415
CONTEXT="duplicate keys"; req POST "$API/devices" "$T1" '{"serial_number":"a","serial_number":"b","device_type":"t"}'; expect 400 "'duplicate' in b['detail']"
DEEP=$(python3 -c "print('{\"metadata\":' + '{\"a\":'*40 + '1' + '}'*41)")
CONTEXT="deep nesting"; req POST "$API/devices" "$T1" "$DEEP"; expect 400 "'nested' in b['detail']"
CONTEXT="wrong type"; req POST "$API/devices" "$T1" '{"serial_number":7,"device_type":"t"}'; expect 400 "'serial_number' in b['detail']"
CONTEXT="unknown field"; req POST "$API/devices" "$T1" '{"serial_number":"x","device_type":"t","colour":"red"}'; expect 400 "'colour' in b['detail']"
CONTEXT="missing field"; req POST "$API/devices" "$T1" '{"serial_number":"x"}'; expect 400 "'device_type' in b['detail']"
CONTEXT="invalid uuid"; req GET "$API/devices/not-a-uuid" "$T1"; expect 400 "'UUID' in b['detail']"
CONTEXT="unknown route"; req GET "$API/nothing/here" "$T1"; expect 404
CONTEXT="wrong method"; req DELETE "$API/devices" "$T1"; expect 405
BIG=$(python3 -c "print('{\"serial_number\":\"' + 'x'*1100000 + '\"}')")
CONTEXT="oversized body"; printf '%s' "$BIG" > "$WORK/big.json"
STATUS=$(curl -sS -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $T1" -H 'Content-Type: application/json' --data-binary @"$WORK/big.json" "$API/devices" || true)
[ "$STATUS" = 413 ] && pass || fail "oversized body gave $STATUS"
CONTEXT="oversized header"; STATUS=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-Junk: $(python3 -c "print('j'*20000)")" "$API/healthz" || true)
[ "$STATUS" = 431 ] && pass || fail "oversized header gave $STATUS"
CONTEXT="malformed http"; printf 'GARBAGE / HTTP/9\r\n\r\n' | timeout 5 python3 -c "
import socket,sys
s=socket.create_connection(('${API#http://}'.split(':')[0], int('${API##*:}')))
s.sendall(sys.stdin.buffer.read()); print(s.recv(200).decode(errors='replace').split('\r\n')[0])" > "$WORK/raw" || true
grep -q ' 400 ' "$WORK/raw" && pass || fail "malformed request: $(cat "$WORK/raw")"
CONTEXT="still serving"; req GET "$API/devices/$D1" "$T1"; expect 200

# Tokens: a revoked token stops working.
CONTEXT="revoke token"; req DELETE "$API/tokens/$V1_ID" "$T1"; expect 200 "b['revoked']"
req GET "$API/devices/$D1" "$V1"; expect 401
CONTEXT="revoke again"; req DELETE "$API/tokens/$V1_ID" "$T1"; expect 404

# Decommissioned is final.
CONTEXT="decommission"; req PATCH "$API/devices/$D1" "$T1" '{"status":"decommissioned"}'; expect 200 "b['status']=='decommissioned'"
req PATCH "$API/devices/$D1" "$T1" '{"status":"active"}'; expect 409
req PUT "$API/devices/$D1/metadata/x" "$T1" '{"value":"y"}'; expect 409

CONTEXT="metrics"; req GET "$API/metrics" ""
[ "$STATUS" = 200 ] && grep -q 'registry_http_requests_total{route="/devices",status="201"}' "$WORK/body" && grep -q registry_projector_lag "$WORK/body" && grep -q "registry_projector_serial_filter_ready 1" "$WORK/body" && grep -q registry_log_appends_total "$WORK/body" && grep -q 'registry_http_request_duration_seconds_bucket{route="/devices/{id}"' "$WORK/body" && pass || fail "metrics: $BODY"
stop_role API
finish
