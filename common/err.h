/*
 * err.h - the registry's one error space.
 *
 * Every function that can fail returns 0 or one of the negative REG_E* codes below; the same
 * table gives the message (reg_strerror). Errors from libraries (RocksDB's errptr, librdkafka,
 * hiredis, OpenSSL, libuv) are translated into this space once, where they arise, and the
 * library's own text is logged there if it helps an operator.
 */
#ifndef REG_ERR_H
#define REG_ERR_H

#define REG_ERRNO_MAP(X)                                                                           \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(IO, "input/output error")                                                                    \
    X(NOTFOUND, "not found")                                                                       \
    X(EXISTS, "already exists")                                                                    \
    X(TOOBIG, "too large")                                                                         \
    X(SCHEMA, "schema error")                                                                      \
    X(DECODE, "malformed record")                                                                  \
    X(UNKNOWN_SCHEMA, "unknown writer schema")                                                     \
    X(TIMEOUT, "timed out")                                                                        \
    X(UNAVAILABLE, "backend unavailable")                                                          \
    X(CLOSED, "closed")                                                                            \
    X(STORE, "storage error")                                                                      \
    X(KAFKA, "kafka error")                                                                        \
    X(REDIS, "redis error")                                                                        \
    X(TLS, "tls error")                                                                            \
    X(AGAIN, "try again")

enum reg_err {
    REG_OK = 0,
#define REG_ERR_ENUM(name, msg) REG_E##name,
    REG_ERR_FIRST_ = -1000,
    REG_ERRNO_MAP(REG_ERR_ENUM)
#undef REG_ERR_ENUM
};

/* The message for an error code (never NULL; static storage). */
const char *reg_strerror(int err);

#endif
