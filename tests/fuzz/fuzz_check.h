/*
 * fuzz_check.h - the fuzzers' assertion: a property that does not hold aborts the run, naming the
 * check and where it is, so that libFuzzer keeps the input that broke it. Header-only: run.sh
 * builds each fuzzer from its own file and the sources it tests.
 */
#ifndef REG_FUZZ_CHECK_H
#define REG_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
