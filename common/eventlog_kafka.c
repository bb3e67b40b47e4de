/*
 * eventlog_kafka.c - the Kafka backend of the log (eventlog.h), through librdkafka.
 *
 * A log is one topic with one partition (partition 0): the region's total order, so offsets are
 * that partition's offsets. Appends go through one idempotent producer (acks=all, a linger of a
 * couple of milliseconds so that concurrent appends share a request) keyed by the caller's key
 * (the tenant id), with the caller's time as the message timestamp. elog_append never blocks: a
 * full producer queue is back-pressure (REG_EAGAIN). A poller thread owned by the log serves the
 * delivery reports and runs each append's callback with its offset, or with REG_ETIMEOUT /
 * REG_EKAFKA when the record was not stored within the delivery timeout (30 s, or
 * REGISTRY_KAFKA_TIMEOUT_MS from the environment), so a stopped broker makes appends fail
 * clearly rather than hang. The producer's queue holds librdkafka's default of 100000 messages.
 * A time_ms of 0 stamps the record with the current time (librdkafka's convention).
 *
 * Open makes sure the topic exists: found in the metadata, else created with the AdminAPI (one
 * partition, replication 1), never by the broker's auto-create, which would pick the broker's
 * default partition count. Open blocks (up to about 3 x min(timeout, 10 s)) until partition 0
 * has a leader, so the log is usable when it returns.
 *
 * Each reader is its own consumer handle, assigned partition 0 at the requested offset: no
 * group subscription, no committed offsets (the caller keeps its position), so readers never
 * rebalance each other. Records handed out keep pointing into librdkafka's messages, which the
 * reader keeps until its next call.
 *
 * elog_end_offset and elog_offset_for_time ask the broker and block the calling thread for up
 * to KLOG_QUERY_TIMEOUT_MS: never call them on a loop thread.
 */
#include "eventlog_impl.h"
#include "err.h"

#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    KLOG_DEFAULT_TIMEOUT_MS = 30000,  /* delivery timeout unless REGISTRY_KAFKA_TIMEOUT_MS */
    KLOG_LINGER_MS = 2,               /* batches concurrent appends, costs at most this latency */
    KLOG_OPEN_TIMEOUT_MAX_MS = 10000, /* topic creation at open */
    KLOG_QUERY_TIMEOUT_MS = 5000,     /* end_offset, offset_for_time */
    KLOG_CLOSE_WAIT_MS = 5000,        /* close waits this long for outstanding appends */
    KLOG_POLL_MS = 100,               /* poller's wake-up period (to notice close) */
    KLOG_LOG_INTERVAL_MS = 5000,      /* repeats of one error are logged at most this often */
};

/* librdkafka's default backs reconnects off up to 10 s, and (in 2.0.2) expires queued messages
 * only between connection attempts: a stopped broker would fail appends up to 10 s past their
 * timeout, and a restarted one be noticed as late. One attempt a second is cheap. */
#define KLOG_RECONNECT_MAX_MS "1000"

/* Rate-limits the logging of a repeating error (a stopped broker reports one per message or
 * per reconnect). Used by one thread only. */
typedef struct klog_ratelimit {
    int last_err;
    int64_t last_ms;
    unsigned long suppressed;
} klog_ratelimit;

/* A flush in progress: waits for the appends with sequence numbers in (lo, hi] and collects
 * the first error among them. Lives on the flushing thread's stack, linked under klog.mu. */
typedef struct klog_flush_waiter {
    uint64_t lo, hi;
    int err;
    struct klog_flush_waiter *next;
} klog_flush_waiter;

typedef struct klog {
    struct elog super;
    rd_kafka_t *rk; /* the producer; also used for admin and offset queries (thread-safe) */
    rd_kafka_topic_t *rkt;
    char *topic;
    char *brokers;
    int timeout_ms;
    pthread_t poller;
    atomic_bool stop_poller;

    /* Appends are numbered 1, 2, ... in the order librdkafka accepted them. Delivery reports of
     * one partition come back in that order (librdkafka guarantees it for an idempotent
     * producer, failures included), so `reported` is also the highest number reported: a flush
     * waits for reported >= the number queued when it started. */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* broadcast at each report */
    uint64_t queued;
    uint64_t reported;
    bool closing;
    klog_flush_waiter *waiters;

    klog_ratelimit poller_log; /* poller thread only */
} klog;

/* What an append hands to librdkafka as the message's opaque; owned by librdkafka until the
 * delivery report, then freed by the poller. */
typedef struct klog_pending {
    elog_append_cb cb;
    void *arg;
    uint64_t seq;
} klog_pending;

typedef struct kreader {
    struct elog_reader super;
    rd_kafka_t *rk; /* this reader's consumer */
    char *topic;
    /* The messages behind the records last returned, destroyed at the next call or close. */
    rd_kafka_message_t **held;
    int nheld, cap;
    int pending_err; /* an error met after records were read: returned by the next call */
    klog_ratelimit log;
} kreader;

static const struct elog_ops klog_ops;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Logs "eventlog(kafka) topic: what: text" unless the same error was logged recently; the
 * number of lines left out is told with the next line logged. */
static void klog_log_limited(klog_ratelimit *rl, const char *topic, const char *what, int err,
                             const char *text)
{
    int64_t t = now_ms();
    if (err == rl->last_err && t - rl->last_ms < KLOG_LOG_INTERVAL_MS) {
        rl->suppressed++;
        return;
    }
    if (rl->suppressed)
        fprintf(stderr, "eventlog(kafka) %s: (%lu repeated errors not shown)\n", topic,
                rl->suppressed);
    fprintf(stderr, "eventlog(kafka) %s: %s: %s\n", topic, what, text);
    rl->last_err = err;
    rl->last_ms = t;
    rl->suppressed = 0;
}

/* Sets one configuration property; logs librdkafka's text on failure. */
static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "eventlog(kafka): config %s=%s: %s\n", name, value, errstr);
        return REG_EINVAL;
    }
    return 0;
}

/* The delivery timeout: REGISTRY_KAFKA_TIMEOUT_MS when set to a positive number of ms. */
static int delivery_timeout_ms(void)
{
    const char *s = getenv("REGISTRY_KAFKA_TIMEOUT_MS");
    if (!s || !*s) return KLOG_DEFAULT_TIMEOUT_MS;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v <= 0 || v > 3600000) {
        fprintf(stderr,
                "eventlog(kafka): ignoring REGISTRY_KAFKA_TIMEOUT_MS=%s (want 1..3600000)\n", s);
        return KLOG_DEFAULT_TIMEOUT_MS;
    }
    return (int)v;
}

/* Translates the outcome of one delivery into the error space. */
static int delivery_err(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return 0;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return REG_ETIMEOUT;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        return REG_ECLOSED; /* purged by elog_close */
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return REG_ETOOBIG;
    default:
        return REG_EKAFKA;
    }
}

/* Delivery report callback: runs on the poller thread (inside rd_kafka_poll). Runs the append's
 * callback first, then counts it, so that a flush returns only after the callbacks ran. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    klog *kl = opaque;
    klog_pending *p = msg->_private;
    int err = delivery_err(msg->err);
    if (err && err != REG_ECLOSED)
        klog_log_limited(&kl->poller_log, kl->topic, "append failed", msg->err,
                         rd_kafka_err2str(msg->err));
    if (p->cb) p->cb(p->arg, err, err ? -1 : msg->offset);

    pthread_mutex_lock(&kl->mu);
    kl->reported++;
    if (err)
        for (klog_flush_waiter *w = kl->waiters; w; w = w->next)
            if (!w->err && p->seq > w->lo && p->seq <= w->hi) w->err = err;
    pthread_cond_broadcast(&kl->cond);
    pthread_mutex_unlock(&kl->mu);
    free(p);
}

/* Client-level errors (broker down, fatal idempotence errors): logged, as the appends they
 * affect report their own failure. Runs on the poller thread. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    klog *kl = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char text[512];
        rd_kafka_fatal_error(rk, text, sizeof text);
        fprintf(stderr, "eventlog(kafka) %s: fatal producer error: %s\n", kl->topic, text);
        return;
    }
    klog_log_limited(&kl->poller_log, kl->topic, "producer", err, reason);
}

static void *poller_main(void *arg)
{
    klog *kl = arg;
    while (!atomic_load(&kl->stop_poller))
        rd_kafka_poll(kl->rk, KLOG_POLL_MS);
    return NULL;
}

/* Creates the topic (1 partition, replication 1). Blocks up to timeout_ms. */
static int create_topic(klog *kl, int timeout_ms)
{
    char errstr[512];
    int rc = 0;
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(kl->topic, 1, 1, errstr, sizeof errstr);
    if (!nt) {
        fprintf(stderr, "eventlog(kafka) %s: %s\n", kl->topic, errstr);
        return REG_EINVAL;
    }
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(kl->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_queue_t *q = rd_kafka_queue_new(kl->rk);
    if (!opts || !q ||
        rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr, sizeof errstr) ||
        rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof errstr)) {
        rc = REG_ENOMEM;
        goto out;
    }
    rd_kafka_CreateTopics(kl->rk, &nt, 1, opts, q);
    /* The admin request times out on its own at timeout_ms; the margin is for the result. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (!ev) {
        fprintf(stderr, "eventlog(kafka) %s: creating the topic: no answer in %d ms\n", kl->topic,
                timeout_ms);
        rc = REG_EUNAVAILABLE;
        goto out;
    }
    rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
    const char *text = rd_kafka_event_error_string(ev);
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    if (!err && res) {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
        if (cnt >= 1) {
            err = rd_kafka_topic_result_error(tr[0]);
            text = rd_kafka_topic_result_error_string(tr[0]);
        }
    }
    if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        fprintf(stderr, "eventlog(kafka) %s: creating the topic: %s\n", kl->topic,
                text ? text : rd_kafka_err2str(err));
        rc = err == RD_KAFKA_RESP_ERR__TIMED_OUT || err == RD_KAFKA_RESP_ERR__TRANSPORT
                 ? REG_EUNAVAILABLE
                 : REG_EKAFKA;
    }
    rd_kafka_event_destroy(ev);
out:
    if (q) rd_kafka_queue_destroy(q);
    if (opts) rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

/* Asks the metadata of the topic: sets *partitions (0 when the topic is missing) and *ready
 * (partition 0 has a leader). 0, or REG_E* when the cluster didn't answer as it should. */
static int lookup_topic(klog *kl, int timeout_ms, int *partitions, bool *ready)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(kl->rk, 0, kl->rkt, &md, timeout_ms);
    if (err) {
        fprintf(stderr, "eventlog(kafka) %s: metadata: %s\n", kl->topic, rd_kafka_err2str(err));
        return err == RD_KAFKA_RESP_ERR__TIMED_OUT || err == RD_KAFKA_RESP_ERR__TRANSPORT
                   ? REG_EUNAVAILABLE
                   : REG_EKAFKA;
    }
    *partitions = 0;
    *ready = false;
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *t = &md->topics[i];
        if (strcmp(t->topic, kl->topic)) continue;
        err = t->err;
        if (!err) *partitions = t->partition_cnt;
        for (int j = 0; j < t->partition_cnt; j++)
            if (t->partitions[j].id == 0 && t->partitions[j].leader >= 0) *ready = true;
    }
    rd_kafka_metadata_destroy(md);
    /* Missing, or just created and not yet everywhere: not errors here. */
    if (err && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
        err != RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC && err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) {
        fprintf(stderr, "eventlog(kafka) %s: metadata: %s\n", kl->topic, rd_kafka_err2str(err));
        return REG_EKAFKA;
    }
    return 0;
}

/* Makes sure the topic exists and partition 0 has a leader, so that the log is usable (offset
 * queries included) once open returns. Asks the metadata first (a topic provisioned by an
 * operator then needs no create permission, and a cluster whose AdminAPI has no controller, like
 * librdkafka's mock, still works), then creates it. The producer has
 * allow.auto.create.topics=false, so the question doesn't create the topic with the broker's
 * default partition count. Blocks up to about three times timeout_ms. */
static int ensure_topic(klog *kl, int timeout_ms)
{
    int partitions = 0, rc;
    bool ready = false;
    if ((rc = lookup_topic(kl, timeout_ms, &partitions, &ready))) return rc;
    if (partitions == 0 && (rc = create_topic(kl, timeout_ms))) return rc;
    /* A new topic takes a moment to reach every broker's metadata. */
    int64_t until = now_ms() + timeout_ms;
    while (!ready) {
        if (now_ms() >= until) {
            fprintf(stderr, "eventlog(kafka) %s: partition 0 has no leader after %d ms\n",
                    kl->topic, timeout_ms);
            return REG_EUNAVAILABLE;
        }
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000}, NULL);
        if ((rc = lookup_topic(kl, timeout_ms, &partitions, &ready))) return rc;
    }
    if (partitions != 1) /* partition 0 alone is still one total order; say so */
        fprintf(stderr,
                "eventlog(kafka) %s: the topic has %d partitions; only partition 0 is used\n",
                kl->topic, partitions);
    return 0;
}

static void klog_free(klog *kl)
{
    if (kl->rkt) rd_kafka_topic_destroy(kl->rkt);
    if (kl->rk) rd_kafka_destroy(kl->rk);
    free(kl->topic);
    free(kl->brokers);
    free(kl);
}

int elog_kafka_open(const elog_config *cfg, elog **out)
{
    if (!cfg || !cfg->topic || !cfg->topic[0] || !cfg->brokers || !out) return REG_EINVAL;
    klog *kl = calloc(1, sizeof *kl);
    if (!kl) return REG_ENOMEM;
    kl->super.ops = &klog_ops;
    kl->topic = strdup(cfg->topic);
    kl->brokers = strdup(cfg->brokers);
    kl->timeout_ms = delivery_timeout_ms();
    if (!kl->topic || !kl->brokers) {
        klog_free(kl);
        return REG_ENOMEM;
    }

    char timeout[16], request_timeout[16], linger[16];
    snprintf(timeout, sizeof timeout, "%d", kl->timeout_ms);
    /* An in-flight request of an idempotent producer can't be timed out locally: keep requests
     * no longer than the delivery timeout so the latter holds. */
    snprintf(request_timeout, sizeof request_timeout, "%d",
             kl->timeout_ms < 30000 ? kl->timeout_ms : 30000);
    snprintf(linger, sizeof linger, "%d", KLOG_LINGER_MS);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = 0;
    if ((rc = conf_set(conf, "bootstrap.servers", kl->brokers)) ||
        (rc = conf_set(conf, "client.id", "registry")) ||
        (rc = conf_set(conf, "allow.auto.create.topics", "false")) ||
        (rc = conf_set(conf, "enable.idempotence", "true")) ||
        (rc = conf_set(conf, "acks", "all")) || (rc = conf_set(conf, "linger.ms", linger)) ||
        (rc = conf_set(conf, "message.timeout.ms", timeout)) ||
        (rc = conf_set(conf, "reconnect.backoff.max.ms", KLOG_RECONNECT_MAX_MS)) ||
        (rc = conf_set(conf, "request.timeout.ms", request_timeout))) {
        rd_kafka_conf_destroy(conf);
        klog_free(kl);
        return rc;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, kl);

    char errstr[512];
    kl->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!kl->rk) { /* conf is still ours on failure */
        fprintf(stderr, "eventlog(kafka) %s: creating the producer: %s\n", kl->topic, errstr);
        rd_kafka_conf_destroy(conf);
        klog_free(kl);
        return REG_EKAFKA;
    }
    /* conf is now owned by kl->rk */

    int open_timeout =
        kl->timeout_ms < KLOG_OPEN_TIMEOUT_MAX_MS ? kl->timeout_ms : KLOG_OPEN_TIMEOUT_MAX_MS;
    kl->rkt = rd_kafka_topic_new(kl->rk, kl->topic, NULL);
    if (!kl->rkt) {
        fprintf(stderr, "eventlog(kafka) %s: %s\n", kl->topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        klog_free(kl);
        return REG_EKAFKA;
    }
    if ((rc = ensure_topic(kl, open_timeout))) {
        klog_free(kl);
        return rc;
    }

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&kl->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&kl->mu, NULL);
    atomic_init(&kl->stop_poller, false);
    if (pthread_create(&kl->poller, NULL, poller_main, kl)) {
        fprintf(stderr, "eventlog(kafka) %s: cannot start the poller thread\n", kl->topic);
        pthread_cond_destroy(&kl->cond);
        pthread_mutex_destroy(&kl->mu);
        klog_free(kl);
        return REG_ENOMEM;
    }
    *out = &kl->super; /* the caller owns the log */
    return 0;
}

static int klog_append(elog *log, const void *key, size_t key_len, const void *value,
                       size_t value_len, int64_t time_ms, elog_append_cb cb, void *arg)
{
    klog *kl = (klog *)log;
    klog_pending *p = malloc(sizeof *p);
    if (!p) return REG_ENOMEM;
    p->cb = cb;
    p->arg = arg;

    /* producev runs under mu so that the sequence numbers follow librdkafka's queue order and a
     * refused message takes none. It does not block: no RD_KAFKA_MSG_F_BLOCK, and the poller
     * never calls into librdkafka while holding mu. */
    pthread_mutex_lock(&kl->mu);
    if (kl->closing) {
        pthread_mutex_unlock(&kl->mu);
        free(p);
        return REG_ECLOSED;
    }
    p->seq = kl->queued + 1;
    rd_kafka_resp_err_t err =
        rd_kafka_producev(kl->rk, RD_KAFKA_V_RKT(kl->rkt), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_len),
                          RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_TIMESTAMP(time_ms),
                          RD_KAFKA_V_OPAQUE(p), RD_KAFKA_V_END);
    if (!err) kl->queued++; /* p is now librdkafka's, handed back in on_delivery */
    pthread_mutex_unlock(&kl->mu);
    if (!err) return 0;

    free(p);
    switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return REG_EAGAIN; /* back-pressure, not logged */
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return REG_ETOOBIG;
    default:
        fprintf(stderr, "eventlog(kafka) %s: append: %s\n", kl->topic, rd_kafka_err2str(err));
        return REG_EKAFKA;
    }
}

/* Waits on kl->cond until `until` (monotonic ms); mu held. Returns false once the time is up. */
static bool wait_until(klog *kl, int64_t until)
{
    int64_t t = now_ms();
    if (t >= until) return false;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (until - t) % 1000 * 1000000;
    ts.tv_sec += (until - t) / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&kl->cond, &kl->mu, &ts);
    return true;
}

static int klog_flush(elog *log, int timeout_ms)
{
    klog *kl = (klog *)log;
    int64_t until = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&kl->mu);
    klog_flush_waiter w = {.lo = kl->reported, .hi = kl->queued, .err = 0, .next = kl->waiters};
    kl->waiters = &w;
    while (kl->reported < w.hi && wait_until(kl, until))
        ;
    int rc = w.err ? w.err : kl->reported < w.hi ? REG_ETIMEOUT : 0;
    for (klog_flush_waiter **pp = &kl->waiters; *pp; pp = &(*pp)->next)
        if (*pp == &w) {
            *pp = w.next;
            break;
        }
    pthread_mutex_unlock(&kl->mu);
    return rc;
}

/* Blocks up to KLOG_QUERY_TIMEOUT_MS (a round trip to the partition's leader). */
static int64_t klog_end_offset(elog *log)
{
    klog *kl = (klog *)log;
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(kl->rk, kl->topic, 0, &lo, &hi, KLOG_QUERY_TIMEOUT_MS);
    if (err) {
        fprintf(stderr, "eventlog(kafka) %s: end offset: %s\n", kl->topic, rd_kafka_err2str(err));
        return -1;
    }
    return hi;
}

/* Blocks up to KLOG_QUERY_TIMEOUT_MS (and as much again when no record is that recent). */
static int klog_offset_for_time(elog *log, int64_t time_ms, int64_t *offset)
{
    klog *kl = (klog *)log;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    if (!parts) return REG_ENOMEM;
    /* Negative times are librdkafka's "latest"/"earliest" markers: any time before the epoch
     * means "from the first record". */
    rd_kafka_topic_partition_list_add(parts, kl->topic, 0)->offset = time_ms > 0 ? time_ms : 0;
    rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(kl->rk, parts, KLOG_QUERY_TIMEOUT_MS);
    if (!err) err = parts->elems[0].err;
    int64_t off = parts->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        fprintf(stderr, "eventlog(kafka) %s: offset for time %" PRId64 ": %s\n", kl->topic, time_ms,
                rd_kafka_err2str(err));
        return err == RD_KAFKA_RESP_ERR__TIMED_OUT ? REG_ETIMEOUT : REG_EKAFKA;
    }
    if (off < 0) { /* no record that recent: the end */
        off = klog_end_offset(log);
        if (off < 0) return REG_EKAFKA;
    }
    *offset = off;
    return 0;
}

/* Waits for the appends outstanding (the poller reports them); mu held. True when none is. */
static bool wait_outstanding(klog *kl, int ms)
{
    int64_t until = now_ms() + ms;
    while (kl->reported < kl->queued && wait_until(kl, until))
        ;
    return kl->reported >= kl->queued;
}

static void klog_close(elog *log)
{
    klog *kl = (klog *)log;
    pthread_mutex_lock(&kl->mu);
    kl->closing = true; /* appends from now on: REG_ECLOSED */
    bool done = wait_outstanding(kl, KLOG_CLOSE_WAIT_MS);
    pthread_mutex_unlock(&kl->mu);
    if (!done) {
        /* Still undelivered (broker down): give up on them so each callback still runs once,
         * with REG_ECLOSED, before the producer goes. */
        fprintf(stderr, "eventlog(kafka) %s: closing with undelivered appends; dropping them\n",
                kl->topic);
        rd_kafka_purge(kl->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        pthread_mutex_lock(&kl->mu);
        if (!wait_outstanding(kl, 2000))
            fprintf(stderr, "eventlog(kafka) %s: %" PRIu64 " append callbacks never ran\n",
                    kl->topic, kl->queued - kl->reported);
        pthread_mutex_unlock(&kl->mu);
    }
    atomic_store(&kl->stop_poller, true);
    pthread_join(kl->poller, NULL);
    if (kl->poller_log.suppressed)
        fprintf(stderr, "eventlog(kafka) %s: (%lu repeated errors not shown)\n", kl->topic,
                kl->poller_log.suppressed);
    pthread_cond_destroy(&kl->cond);
    pthread_mutex_destroy(&kl->mu);
    klog_free(kl);
}

/* ---- readers ---- */

static void kreader_release(kreader *rd)
{
    for (int i = 0; i < rd->nheld; i++)
        rd_kafka_message_destroy(rd->held[i]);
    rd->nheld = 0;
}

static void kreader_free(kreader *rd)
{
    kreader_release(rd);
    if (rd->rk) {
        rd_kafka_consumer_close(rd->rk);
        rd_kafka_destroy(rd->rk);
    }
    free(rd->held);
    free(rd->topic);
    free(rd);
}

static int klog_reader_open(elog *log, int64_t offset, elog_reader **out)
{
    klog *kl = (klog *)log;
    if (offset < 0) return REG_EINVAL;
    kreader *rd = calloc(1, sizeof *rd);
    if (!rd) return REG_ENOMEM;
    rd->super.ops = &klog_ops;
    rd->topic = strdup(kl->topic);
    if (!rd->topic) {
        kreader_free(rd);
        return REG_ENOMEM;
    }

    /* librdkafka wants a group.id for rd_kafka_assign; the group is never joined (no subscribe)
     * and nothing is committed to it. auto.offset.reset=error: a position outside the log is
     * reported, never silently moved to either end. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc;
    if ((rc = conf_set(conf, "bootstrap.servers", kl->brokers)) ||
        (rc = conf_set(conf, "client.id", "registry")) ||
        (rc = conf_set(conf, "group.id", "registry.reader")) ||
        (rc = conf_set(conf, "enable.auto.commit", "false")) ||
        (rc = conf_set(conf, "enable.auto.offset.store", "false")) ||
        (rc = conf_set(conf, "enable.partition.eof", "false")) ||
        (rc = conf_set(conf, "isolation.level", "read_committed")) ||
        (rc = conf_set(conf, "auto.offset.reset", "error")) ||
        (rc = conf_set(conf, "reconnect.backoff.max.ms", KLOG_RECONNECT_MAX_MS))) {
        rd_kafka_conf_destroy(conf);
        kreader_free(rd);
        return rc;
    }
    char errstr[512];
    rd->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rd->rk) {
        fprintf(stderr, "eventlog(kafka) %s: creating a consumer: %s\n", rd->topic, errstr);
        rd_kafka_conf_destroy(conf);
        kreader_free(rd);
        return REG_EKAFKA;
    }
    /* Serve client events (errors, logs) through rd_kafka_consumer_poll too. */
    rd_kafka_poll_set_consumer(rd->rk);

    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    if (!parts) {
        kreader_free(rd);
        return REG_ENOMEM;
    }
    rd_kafka_topic_partition_list_add(parts, rd->topic, 0)->offset = offset;
    rd_kafka_resp_err_t err = rd_kafka_assign(rd->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        fprintf(stderr, "eventlog(kafka) %s: assigning partition 0: %s\n", rd->topic,
                rd_kafka_err2str(err));
        kreader_free(rd);
        return REG_EKAFKA;
    }
    *out = &rd->super; /* the caller owns the reader */
    return 0;
}

/* Errors after which the reader can't go on (its position is gone, or the client is dead);
 * the others (broker unreachable, leader moving) are retried by librdkafka. */
static bool reader_err_is_permanent(rd_kafka_t *rk, rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET:
    case RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE:
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return rd_kafka_fatal_error(rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR;
    }
}

static int klog_reader_next(elog_reader *r, elog_record *recs, int max, int timeout_ms)
{
    kreader *rd = (kreader *)r;
    kreader_release(rd); /* the previous call's records end here */
    if (rd->pending_err) {
        int err = rd->pending_err;
        rd->pending_err = 0;
        return err;
    }
    if (max <= 0) return 0;
    if (rd->cap < max) {
        rd_kafka_message_t **h = realloc(rd->held, (size_t)max * sizeof *h);
        if (!h) return REG_ENOMEM;
        rd->held = h;
        rd->cap = max;
    }

    /* Wait up to timeout_ms for the first record, then take what is already there. */
    int64_t until = now_ms() + timeout_ms;
    int n = 0;
    while (n < max) {
        int wait = 0;
        if (n == 0) {
            int64_t left = until - now_ms();
            wait = timeout_ms < 0 ? -1 : left > 0 ? (int)left : 0;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rd->rk, wait);
        if (!m) {
            if (n > 0 || wait == 0) break;
            continue;
        }
        if (m->err) {
            rd_kafka_resp_err_t err = m->err;
            if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) { /* not an error */
                rd_kafka_message_destroy(m);
                continue;
            }
            bool permanent = reader_err_is_permanent(rd->rk, err);
            if (permanent)
                fprintf(stderr, "eventlog(kafka) %s: reader: %s\n", rd->topic,
                        rd_kafka_message_errstr(m));
            else
                klog_log_limited(&rd->log, rd->topic, "reader", err, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (!permanent) continue;
            if (n > 0) { /* hand out what was read; the error comes with the next call */
                rd->pending_err = REG_EKAFKA;
                break;
            }
            return REG_EKAFKA;
        }
        rd->held[n] = m; /* kept until the next call: recs point into it */
        elog_record *rec = &recs[n];
        rec->offset = m->offset;
        rec->time_ms = rd_kafka_message_timestamp(m, NULL);
        rec->key = m->key;
        rec->key_len = m->key_len;
        rec->value = m->payload;
        rec->value_len = m->len;
        n++;
        rd->nheld = n;
    }
    return n;
}

static void klog_reader_close(elog_reader *r)
{
    kreader_free((kreader *)r);
}

static const struct elog_ops klog_ops = {
    .append = klog_append,
    .flush = klog_flush,
    .end_offset = klog_end_offset,
    .offset_for_time = klog_offset_for_time,
    .reader_open = klog_reader_open,
    .reader_next = klog_reader_next,
    .reader_close = klog_reader_close,
    .close = klog_close,
};
