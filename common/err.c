/* err.c - messages for the error space declared in err.h. */
#include "err.h"

const char *reg_strerror(int err)
{
    switch (err) {
    case REG_OK:
        return "ok";
#define REG_ERR_CASE(name, msg)                                                                    \
    case REG_E##name:                                                                              \
        return msg;
        REG_ERRNO_MAP(REG_ERR_CASE)
#undef REG_ERR_CASE
    default:
        return "unknown error";
    }
}
