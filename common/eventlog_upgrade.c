/*
 * eventlog_upgrade.c - brings an embedded topic from the embedded log's first layout, a RocksDB
 * database per topic keyed by the 8-byte big-endian offset (value: time_ms, 8 bytes big-endian;
 * key length, 4 bytes big-endian; the key; the payload), into segment files
 * (eventlog_embedded.c).
 *
 * The records are copied into DIR/log/<topic>.upgrading through the log's own append path, at
 * the same offsets, and synced. Then the database's directory is renamed to
 * <topic>.rocksdb-old, the copy's to <topic>, and the old one is removed. Each step is one
 * rename, so after a crash at any point the next open finds one of these states and goes on:
 *
 *   <topic> holds a database (CURRENT)        copy again, from the start
 *   <topic>.rocksdb-old but no <topic>        the copy is whole: rename it into place
 *   <topic> and <topic>.rocksdb-old           remove the old database
 *
 * An flock on DIR/log is held throughout, so a second process opening the topic waits and then
 * finds it upgraded.
 */
#define _GNU_SOURCE
#include "eventlog_impl.h"
#include "err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static uint64_t get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Renames from to to, both in the directory open as dir_fd, and syncs it: the rename is
 * durable when this returns 0. */
static int rename_durably(const char *from, const char *to, int dir_fd)
{
    if (rename(from, to) != 0) {
        fprintf(stderr, "eventlog: cannot rename %s to %s: %s\n", from, to, strerror(errno));
        return REG_EIO;
    }
    return fsync(dir_fd) == 0 ? 0 : REG_EIO;
}

/* Removes a directory of plain files (both layouts keep no subdirectories). Absent: 0. */
static int remove_flat_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT ? 0 : REG_EIO;
    int err = 0;
    struct dirent *de;
    while (!err && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (unlinkat(dirfd(d), de->d_name, 0) != 0) {
            fprintf(stderr, "eventlog: cannot remove %s/%s: %s\n", path, de->d_name,
                    strerror(errno));
            err = REG_EIO;
        }
    }
    closedir(d);
    if (!err && rmdir(path) != 0) err = REG_EIO;
    return err;
}

/* Copies every record of the database at `path` into a new log for topic `tmp_topic`. */
static int copy_records(const elog_config *cfg, const char *path, const char *tmp_topic,
                        int64_t *copied)
{
    char *errptr = NULL;
    rocksdb_options_t *opts = rocksdb_options_create();
    rocksdb_t *db = rocksdb_open_for_read_only(opts, path, 0, &errptr);
    if (errptr) {
        fprintf(stderr, "eventlog: cannot open %s to upgrade it: %s\n", path, errptr);
        free(errptr);
        rocksdb_options_destroy(opts);
        return REG_ESTORE;
    }
    elog_config tc = *cfg;
    tc.topic = tmp_topic;
    tc.fsync = 0; /* closing the log syncs it, once */
    elog *log = NULL;
    int err = elog_segments_open(&tc, &log);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = err ? NULL : rocksdb_create_iterator(db, ro);
    int64_t next = 0;
    if (it) rocksdb_iter_seek_to_first(it);
    for (; it && !err && rocksdb_iter_valid(it); rocksdb_iter_next(it), next++) {
        size_t klen, vlen;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &klen);
        const unsigned char *v = (const unsigned char *)rocksdb_iter_value(it, &vlen);
        uint64_t key_len = vlen >= 12 ? get_be(v + 8, 4) : 0;
        if (klen != 8 || get_be(k, 8) != (uint64_t)next || vlen < 12 || key_len > vlen - 12) {
            fprintf(stderr, "eventlog: %s: the record at offset %lld is not readable\n", path,
                    (long long)next);
            err = REG_EDECODE;
            break;
        }
        while ((err = elog_append(log, v + 12, key_len, v + 12 + key_len, vlen - 12 - key_len,
                                  (int64_t)get_be(v, 8), NULL, NULL)) == REG_EAGAIN)
            elog_flush(log, 60000);
    }
    if (it) rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    rocksdb_options_destroy(opts);
    if (log) {
        int flushed = elog_flush(log, 600000);
        if (!err) err = flushed;
        if (!err && elog_end_offset(log) != next) err = REG_ESTORE;
        elog_close(log);
    }
    *copied = next;
    return err;
}

/* The upgrade of the topic at path, with DIR/log open as dir_fd and locked. */
static int upgrade_locked(const elog_config *cfg, const char *path, int dir_fd)
{
    char old[4200], tmp[4200], current[4200], tmp_topic[4200];
    snprintf(old, sizeof old, "%s.rocksdb-old", path);
    snprintf(tmp, sizeof tmp, "%s.upgrading", path);
    snprintf(current, sizeof current, "%s/CURRENT", path);
    snprintf(tmp_topic, sizeof tmp_topic, "%s.upgrading", cfg->topic);

    int err = 0;
    if (exists(old) && !exists(path) && (err = rename_durably(tmp, path, dir_fd))) {
        fprintf(stderr, "eventlog: %s: an upgrade was cut short and cannot be finished\n", path);
        return err;
    }
    if (exists(old) && (err = remove_flat_dir(old))) return err;
    if (!exists(current)) return 0;

    fprintf(stderr,
            "eventlog: %s is in the earlier layout (RocksDB); copying it into segment "
            "files\n",
            path);
    int64_t copied = 0;
    if ((err = remove_flat_dir(tmp)) || (err = copy_records(cfg, path, tmp_topic, &copied)) ||
        (err = rename_durably(path, old, dir_fd)) || (err = rename_durably(tmp, path, dir_fd)) ||
        (err = remove_flat_dir(old)))
        return err;
    fprintf(stderr, "eventlog: %s: %lld records upgraded\n", path, (long long)copied);
    return 0;
}

int elog_embedded_upgrade(const elog_config *cfg)
{
    char parent[4096], path[4096];
    snprintf(parent, sizeof parent, "%s/log", cfg->dir);
    if (elog_embedded_path(cfg, path, sizeof path)) return REG_EINVAL;
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : REG_EIO; /* no log yet: nothing to upgrade */
    int err = flock(fd, LOCK_EX) == 0 ? upgrade_locked(cfg, path, fd) : REG_EIO;
    close(fd); /* releases the flock */
    return err;
}
