/*
 * test_eventlog_kafka.c - the Kafka backend of the log (common/eventlog_kafka.c), against
 * librdkafka's mock cluster: appends get offsets 0..N-1 in order and are read back from the
 * start, from the middle and as they arrive; a full producer queue is REG_EAGAIN; a stopped broker
 * makes appends fail after the delivery timeout (REGISTRY_KAFKA_TIMEOUT_MS), and the producer
 * recovers when it comes back; closing with undelivered appends still runs each callback once.
 *
 * When KAFKA_BROKERS is set (ops/kafka.sh's broker), the append/read case also runs against that
 * broker on a fresh topic; otherwise that case is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eventlog.h"
#include "err.h"

#define T0 1700000000000LL /* record i's time is T0 + i */

static rd_kafka_t *mock_rk; /* the handle that owns the mock cluster */
static rd_kafka_mock_cluster_t *mock;
static char *mock_brokers;

/* Outcome of one append, written by the log's poller thread. */
typedef struct slot {
    atomic_int done; /* times the callback ran */
    int err;
    int64_t offset;
} slot;

static void append_cb(void *arg, int err, int64_t offset)
{
    slot *s = arg;
    s->err = err;
    s->offset = offset;
    atomic_fetch_add(&s->done, 1);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A topic name not used before by this process nor, on a real broker, by an earlier run. */
static void fresh_topic(char *buf, size_t size, const char *what)
{
    static int n;
    snprintf(buf, size, "registry.test.%s.%ld.%d.%d", what, (long)time(NULL), (int)getpid(), n++);
}

/* Opens the log on topic with the given delivery timeout. The mock cluster of librdkafka 2.0.2
 * names no controller, so the AdminAPI can't create topics there: on the mock, the topic is
 * made beforehand (the backend then finds it in the metadata); a real broker gets it created. */
static elog *open_log(const char *brokers, const char *topic, int timeout_ms)
{
    if (brokers == mock_brokers) assert_int_equal(rd_kafka_mock_topic_create(mock, topic, 1, 1), 0);
    char t[16];
    snprintf(t, sizeof t, "%d", timeout_ms);
    setenv("REGISTRY_KAFKA_TIMEOUT_MS", t, 1);
    elog_config cfg = {.topic = topic, .brokers = brokers};
    elog *log = NULL;
    assert_int_equal(elog_open(&cfg, &log), 0);
    assert_non_null(log);
    return log;
}

static void key_of(char *buf, size_t size, int i)
{
    snprintf(buf, size, "tenant-%d", i % 3);
}

static void value_of(char *buf, size_t size, int i)
{
    snprintf(buf, size, "record %d", i);
}

/* Reads `count` records from rd (in batches), checking they are records first..first+count-1. */
static void read_expect(elog_reader *rd, int first, int count)
{
    elog_record recs[16];
    int got = 0;
    int64_t until = now_ms() + 20000;
    while (got < count) {
        assert_true(now_ms() < until);
        int n = elog_reader_next(rd, recs, 16, 1000);
        assert_true(n >= 0);
        for (int j = 0; j < n; j++) {
            int i = first + got;
            assert_true(got < count);
            char key[32], value[32];
            key_of(key, sizeof key, i);
            value_of(value, sizeof value, i);
            assert_int_equal(recs[j].offset, i);
            assert_int_equal(recs[j].time_ms, T0 + i);
            assert_int_equal(recs[j].key_len, strlen(key));
            assert_memory_equal(recs[j].key, key, strlen(key));
            assert_int_equal(recs[j].value_len, strlen(value));
            assert_memory_equal(recs[j].value, value, strlen(value));
            got++;
        }
    }
}

/* Appends records first..first+count-1 (checking their callbacks' offsets after a flush). */
static void append_records(elog *log, int first, int count)
{
    slot *slots = calloc((size_t)count, sizeof *slots);
    assert_non_null(slots);
    for (int i = 0; i < count; i++) {
        char key[32], value[32];
        key_of(key, sizeof key, first + i);
        value_of(value, sizeof value, first + i);
        assert_int_equal(elog_append(log, key, strlen(key), value, strlen(value), T0 + first + i,
                                     append_cb, &slots[i]),
                         0);
    }
    assert_int_equal(elog_flush(log, 20000), 0);
    for (int i = 0; i < count; i++) {
        assert_int_equal(atomic_load(&slots[i].done), 1);
        assert_int_equal(slots[i].err, 0);
        assert_int_equal(slots[i].offset, first + i);
    }
    free(slots);
}

static void append_read(const char *brokers)
{
    enum { N = 200 };
    char topic[128];
    fresh_topic(topic, sizeof topic, "append");
    elog *log = open_log(brokers, topic, 10000);
    assert_int_equal(elog_end_offset(log), 0);
    assert_int_equal(elog_flush(log, 1000), 0); /* nothing outstanding */

    append_records(log, 0, N);
    assert_int_equal(elog_end_offset(log), N);

    elog_reader *rd;
    assert_int_equal(elog_reader_open(log, 0, &rd), 0);
    read_expect(rd, 0, N);
    elog_reader_close(rd);

    assert_int_equal(elog_reader_open(log, N / 2, &rd), 0);
    read_expect(rd, N / 2, N - N / 2);
    /* At the end: waits, then times out with nothing. */
    elog_record rec;
    int64_t t = now_ms();
    assert_int_equal(elog_reader_next(rd, &rec, 1, 300), 0);
    assert_true(now_ms() - t >= 250);
    /* New records reach a waiting reader. */
    append_records(log, N, 5);
    read_expect(rd, N, 5);
    elog_reader_close(rd);

    /* librdkafka 2.0.2's mock answers no lookup by time ("not found": the end); only a real
     * broker can check the times themselves. */
    int64_t off = -1;
    assert_int_equal(elog_offset_for_time(log, T0 + 100000, &off), 0);
    assert_int_equal(off, N + 5);
    if (brokers != mock_brokers) {
        assert_int_equal(elog_offset_for_time(log, T0 + 17, &off), 0);
        assert_int_equal(off, 17);
        assert_int_equal(elog_offset_for_time(log, 0, &off), 0);
        assert_int_equal(off, 0);
    }

    elog_close(log);
}

static void test_append_read_mock(void **state)
{
    append_read(mock_brokers);
}

static void test_append_read_real(void **state)
{
    const char *brokers = getenv("KAFKA_BROKERS");
    if (!brokers || !*brokers) skip();
    append_read(brokers);
}

static void test_reader_args(void **state)
{
    char topic[128];
    fresh_topic(topic, sizeof topic, "args");
    elog *log = open_log(mock_brokers, topic, 10000);
    elog_reader *rd = NULL;
    assert_int_equal(elog_reader_open(log, -1, &rd), REG_EINVAL);
    /* A position beyond the end is an error, not a silent jump. */
    assert_int_equal(elog_reader_open(log, 1000, &rd), 0);
    elog_record rec;
    int rc = 0;
    int64_t until = now_ms() + 10000;
    while (rc == 0 && now_ms() < until)
        rc = elog_reader_next(rd, &rec, 1, 500);
    assert_int_equal(rc, REG_EKAFKA);
    elog_reader_close(rd);
    elog_close(log);
}

/* The broker stops: the producer queue fills (REG_EAGAIN, without blocking), the queued appends
 * fail once the delivery timeout passes, and appends work again once the broker is back. */
static void test_broker_down_mock(void **state)
{
    enum { TIMEOUT_MS = 2000, MAX_TRIES = 300000 };
    char topic[128];
    fresh_topic(topic, sizeof topic, "down");
    elog *log = open_log(mock_brokers, topic, TIMEOUT_MS);
    append_records(log, 0, 1); /* connected, producer id acquired */

    assert_int_equal(rd_kafka_mock_broker_set_down(mock, 1), 0);
    slot *slots = calloc(MAX_TRIES, sizeof *slots);
    assert_non_null(slots);
    int queued = 0, rc = 0;
    int64_t t0 = now_ms();
    while (queued < MAX_TRIES) {
        rc = elog_append(log, "k", 1, "v", 1, T0, append_cb, &slots[queued]);
        if (rc) break;
        queued++;
    }
    assert_int_equal(rc, REG_EAGAIN);
    assert_true(queued > 0);
    assert_true(now_ms() - t0 < TIMEOUT_MS); /* never blocked */

    rc = elog_flush(log, TIMEOUT_MS + 20000);
    int64_t waited = now_ms() - t0;
    assert_int_equal(rc, REG_ETIMEOUT);
    assert_true(waited >= TIMEOUT_MS - 100);
    for (int i = 0; i < queued; i++) {
        assert_int_equal(atomic_load(&slots[i].done), 1);
        assert_int_equal(slots[i].err, REG_ETIMEOUT);
        assert_int_equal(slots[i].offset, -1);
    }
    free(slots);

    /* Back up: appends succeed again and continue the log where it stood. */
    /* (An append may still time out while the producer reconnects: retry for a while.) */
    assert_int_equal(rd_kafka_mock_broker_set_up(mock, 1), 0);
    slot s = {0};
    int64_t until = now_ms() + 20000;
    do {
        atomic_store(&s.done, 0);
        assert_int_equal(elog_append(log, "k", 1, "v", 1, T0, append_cb, &s), 0);
        rc = elog_flush(log, 20000);
        assert_int_equal(atomic_load(&s.done), 1);
        assert_int_equal(rc, s.err);
    } while (rc == REG_ETIMEOUT && now_ms() < until);
    assert_int_equal(rc, 0);
    assert_int_equal(s.offset, 1);
    elog_close(log);
}

/* Closing while appends can't be delivered still runs each callback exactly once. */
static void test_close_undelivered_mock(void **state)
{
    enum { N = 10 };
    char topic[128];
    fresh_topic(topic, sizeof topic, "close");
    elog *log = open_log(mock_brokers, topic, 60000);
    append_records(log, 0, 1);
    assert_int_equal(rd_kafka_mock_broker_set_down(mock, 1), 0);
    slot slots[N] = {0};
    for (int i = 0; i < N; i++)
        assert_int_equal(elog_append(log, "k", 1, "v", 1, T0, append_cb, &slots[i]), 0);
    assert_int_equal(elog_flush(log, 200), REG_ETIMEOUT);
    elog_close(log);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&slots[i].done), 1);
        assert_int_not_equal(slots[i].err, 0);
    }
    assert_int_equal(rd_kafka_mock_broker_set_up(mock, 1), 0);
}

static int setup(void **state)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr); /* it has no brokers */
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!mock_rk) {
        fprintf(stderr, "mock handle: %s\n", errstr);
        return -1;
    }
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    if (!mock) return -1;
    mock_brokers = strdup(rd_kafka_mock_cluster_bootstraps(mock));
    return mock_brokers ? 0 : -1;
}

static int teardown(void **state)
{
    free(mock_brokers);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read_mock), cmocka_unit_test(test_reader_args),
        cmocka_unit_test(test_broker_down_mock), cmocka_unit_test(test_close_undelivered_mock),
        cmocka_unit_test(test_append_read_real),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
