/*
 * fuzz_eventlog.c - libFuzzer harness for the embedded log's segment files
 * (common/eventlog_embedded.c): what opening and reading a topic does with whatever bytes its
 * files hold, as after a torn write, a damaged disk or a hand edit.
 *
 * The input's first byte chooses the layout: one segment (the input is the last segment, at
 * offset 0), or two (the input is cut at its second byte's share; the first part is an older
 * segment at 0, the rest the last segment at an offset from the third byte). Then the topic is
 * opened. Opening must succeed unless an older segment is empty while the next starts later,
 * and must cut the last segment to a prefix of what it held. Reading from 0 must give records
 * with dense offsets, each inside the log's end, until the end or an error from the error
 * space (a damaged older segment); the last segment's records must all read. An append after
 * that must get the end offset and read back equal, and survive a reopen.
 *
 * Build and run: tests/fuzz/run.sh eventlog SECONDS OUT_DIR SCHEMAS_EMBEDDED_C
 */
#define _GNU_SOURCE
#include "err.h"
#include "eventlog.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_check.h"

static char root[256];
static const char *TOPIC = "registry.fuzz.events";

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(len == 0 || write(fd, data, len) == (ssize_t)len);
    close(fd);
}

/* The file's bytes (the caller frees them) and their number. */
static uint8_t *read_file(const char *path, size_t *len)
{
    struct stat st;
    CHECK(stat(path, &st) == 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    CHECK(buf);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    CHECK(read(fd, buf, (size_t)st.st_size) == st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void empty_dir(const char *path)
{
    DIR *d = opendir(path);
    CHECK(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') CHECK(unlinkat(dirfd(d), de->d_name, 0) == 0);
    closedir(d);
}

/* Reads [from, end) and checks the offsets; returns how many records read, stops at an error. */
static int64_t read_all(elog *log, int64_t from, int64_t end, int *err)
{
    elog_reader *rd = NULL;
    CHECK(elog_reader_open(log, from, &rd) == 0);
    elog_record recs[32];
    int64_t next = from;
    *err = 0;
    while (next < end) {
        int n = elog_reader_next(rd, recs, 32, 0);
        if (n < 0) {
            CHECK(n == REG_EDECODE || n == REG_EIO);
            *err = n;
            break;
        }
        CHECK(n > 0);
        for (int i = 0; i < n; i++, next++) {
            CHECK(recs[i].offset == next);
            CHECK(recs[i].key_len < (1u << 30) && recs[i].value_len < (1u << 30));
        }
    }
    elog_reader_close(rd);
    return next - from;
}

static void remove_root(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_eventlog: could not remove %s\n", root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(root, sizeof root, "%s/fuzz-eventlog-%d",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/log/%s", root, TOPIC);
    CHECK(system(cmd) == 0);
    atexit(remove_root); /* libFuzzer ends a timed run with exit() */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/log/%s", root, TOPIC);
    empty_dir(dir);

    int two = data[0] & 1;
    const uint8_t *body = data + 3;
    size_t len = size - 3;
    size_t cut = two ? len * data[1] / 256 : 0;
    int64_t second_base = two ? data[2] % 64 : 0;
    char last[600], older[600];
    snprintf(older, sizeof older, "%s/%020d.seg", dir, 0);
    if (two && second_base == 0) return 0; /* two files cannot share a name */
    snprintf(last, sizeof last, "%s/%020lld.seg", dir, (long long)second_base);
    if (two) write_file(older, body, cut);
    write_file(last, body + cut, len - cut);

    elog_config cfg = {.topic = TOPIC, .dir = root, .segment_bytes = 1 << 16};
    elog *log = NULL;
    int err = elog_open(&cfg, &log);
    if (two && cut == 0) {
        CHECK(err == REG_EDECODE); /* an empty older segment before a later one */
        return 0;
    }
    CHECK(err == 0);
    int64_t end = elog_end_offset(log);
    CHECK(end >= second_base);
    size_t kept;
    uint8_t *now = read_file(last, &kept);
    CHECK(kept <= len - cut && memcmp(now, body + cut, kept) == 0); /* cut, never changed */
    free(now);

    int rerr;
    int64_t n = read_all(log, 0, end, &rerr);
    CHECK(rerr ? n < end : n == end);
    CHECK(read_all(log, second_base, end, &rerr) == end - second_base && rerr == 0);

    CHECK(elog_append(log, "k", 1, "fuzz", 4, 42, NULL, NULL) == 0);
    CHECK(elog_flush(log, 10000) == 0);
    CHECK(elog_end_offset(log) == end + 1);
    elog_close(log);

    CHECK(elog_open(&cfg, &log) == 0);
    CHECK(elog_end_offset(log) == end + 1);
    elog_reader *rd = NULL;
    elog_record rec;
    CHECK(elog_reader_open(log, end, &rd) == 0);
    CHECK(elog_reader_next(rd, &rec, 1, 0) == 1);
    CHECK(rec.offset == end && rec.time_ms == 42 && rec.value_len == 4);
    CHECK(memcmp(rec.key, "k", 1) == 0 && memcmp(rec.value, "fuzz", 4) == 0);
    elog_reader_close(rd);
    elog_close(log);
    return 0;
}
