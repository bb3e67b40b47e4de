/*
 * view_filter.c - a filter of one column family's keys for the view's transactions
 * (view_filter.h): a keyfilter, the thread that scans the family into it, and its remaking when
 * full.
 */
#include "projector/view_filter.h"
#include "projector/keyfilter.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* The room a new filter starts with, in keys, when the family holds fewer: a filter remade
 * soon after the start would scan again what the first one just scanned. */
enum { FILTER_MIN_KEYS = 1 << 20 };

struct view_filter {
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf;
    size_t max_keys; /* the most keys max_bytes has room for */
    keyfilter *f;    /* owned; NULL once outgrown */
    pthread_t scanner;
    bool scanning;     /* the scanner was started and not joined yet */
    atomic_bool ready; /* the scan is done: f holds every key the family held when it began */
    atomic_bool stop;  /* asks the scanner to end early */
};

static void *scan_main(void *arg)
{
    view_filter *vf = arg;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_fill_cache(ro, 0); /* a scan once: keep the cache for the reads */
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(vf->db, ro, vf->cf);
    size_t n = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen = 0;
        const char *key = rocksdb_iter_key(it, &klen);
        keyfilter_add(vf->f, key, klen);
        if (++n % 4096 == 0 && atomic_load(&vf->stop)) break;
    }
    char *errptr = NULL;
    rocksdb_iter_get_error(it, &errptr);
    bool whole = !errptr && !rocksdb_iter_valid(it);
    if (errptr) {
        fprintf(stderr, "view: scanning keys for a filter failed: %s\n", errptr);
        free(errptr);
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (whole) atomic_store_explicit(&vf->ready, true, memory_order_release);
    return NULL;
}

static void scan_stop(view_filter *vf)
{
    if (!vf->scanning) return;
    atomic_store(&vf->stop, true);
    pthread_join(vf->scanner, NULL);
    vf->scanning = false;
}

/* A new keyfilter of room for `keys` in f, not scanned yet; f is NULL (no filter) when it does
 * not fit or memory is lacking. The scan must be stopped. */
static void filter_new(view_filter *vf, size_t keys)
{
    keyfilter_free(vf->f);
    vf->f = NULL;
    atomic_store(&vf->ready, false);
    atomic_store(&vf->stop, false);
    if (keys > vf->max_keys) {
        fprintf(stderr, "view: %zu keys outgrow the filter's bound; lookups go to the store\n",
                keys);
        return;
    }
    if (keys < FILTER_MIN_KEYS)
        keys = FILTER_MIN_KEYS < vf->max_keys ? FILTER_MIN_KEYS : vf->max_keys;
    vf->f = keyfilter_new(keys);
}

void view_filter_scan(view_filter *vf)
{
    if (!vf->f || vf->scanning) return;
    if (pthread_create(&vf->scanner, NULL, scan_main, vf)) {
        keyfilter_free(vf->f); /* never ready: no filter */
        vf->f = NULL;
        return;
    }
    vf->scanning = true;
}

view_filter *view_filter_open(rocksdb_t *db, rocksdb_column_family_handle_t *cf, size_t max_bytes)
{
    view_filter *vf = calloc(1, sizeof *vf);
    if (!vf) return NULL;
    vf->db = db;
    vf->cf = cf;
    vf->max_keys = max_bytes * 8 / KEYFILTER_BITS_PER_KEY;
    char *estimate = rocksdb_property_value_cf(db, cf, "rocksdb.estimate-num-keys");
    size_t keys = estimate ? (size_t)strtoull(estimate, NULL, 10) : 0;
    free(estimate);
    filter_new(vf, 2 * keys);
    return vf;
}

void view_filter_close(view_filter *vf)
{
    if (!vf) return;
    scan_stop(vf);
    keyfilter_free(vf->f);
    free(vf);
}

bool view_filter_ready(const view_filter *vf)
{
    return vf->f && atomic_load_explicit(&vf->ready, memory_order_acquire);
}

bool view_filter_absent(const view_filter *vf, const void *key, size_t klen)
{
    return view_filter_ready(vf) && !keyfilter_may_contain(vf->f, key, klen);
}

void view_filter_add(view_filter *vf, const void *key, size_t klen)
{
    if (vf->f) keyfilter_add(vf->f, key, klen);
}

void view_filter_prefetch(const view_filter *vf, const void *key, size_t klen)
{
    if (vf->f) keyfilter_prefetch(vf->f, key, klen);
}

bool view_filter_maintain(view_filter *vf)
{
    if (!vf->f || keyfilter_count(vf->f) <= keyfilter_capacity(vf->f)) return false;
    size_t keys = 2 * keyfilter_count(vf->f);
    scan_stop(vf);
    filter_new(vf, keys);
    return vf->f != NULL;
}
