/*
 * fuzz_journal.c: libFuzzer harness for the journal and stream-log readers (daemon/journal.c,
 * through daemon.h only): vg_journal_load over the input, then a compaction of a copy, as the jobs
 * journal (grouped by "job", expiring by "finished") or as a stream's log (its newest records), as
 * the first byte says. The copy lives in a per-process directory under /dev/shm (or /tmp).
 * Invariant: every record handed to the callback is NUL-terminated at its length.
 */
#define _GNU_SOURCE
#include "common.h"
#include "daemon.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void on_record(const char *json, size_t len, void *opaque)
{
    FUZZ_CHECK(json[len] == 0, "a record not terminated at its length");
    (*(size_t *)opaque)++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64], path[96];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/vg-fuzz-journal-%ld",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (long)getpid());
        mkdir(dir, 0700);
        snprintf(path, sizeof path, "%s/j.journal", dir);
    }
    if (size < 1)
        return 0;
    char err[512];
    size_t n = 0;
    vg_journal_stats st;
    vg_journal_load(fuzz_as_file(data + 1, size - 1), on_record, &n, &st, err, sizeof err);
    if (n > 64 && !(data[0] & 2))
        return 0; /* the compaction of big inputs is slow (fsync); the load covered the parsing */
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot write the scratch journal");
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    vg_journal_compaction jobs = {"job", "finished", 3600.0, 0, 0};
    vg_journal_compaction log = {NULL, NULL, 0, 0, 4};
    size_t kept = 0;
    vg_journal_compact(path, (data[0] & 1) ? &log : &jobs, &kept, err, sizeof err);
    unlink(path);
    return 0;
}
