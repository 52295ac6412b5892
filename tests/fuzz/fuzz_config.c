/*
 * fuzz_config.c: libFuzzer harness for vigild's configuration parser (vg_daemon_config_parse in
 * daemon/config.c, through daemon.h only) on top of the built-in defaults, then the derived
 * defaults and checks of vg_daemon_config_finish (which may realpath() a media root named by the
 * input; it creates nothing).
 */
#define _GNU_SOURCE
#include "common.h"
#include "daemon.h"
#include "fuzz_util.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static vg_daemon_config c; /* large: keep it off the stack */
    char err[512];
    vg_daemon_config_defaults(&c);
    err[0] = 0;
    if (vg_daemon_config_parse(&c, (const char *)data, size, err, sizeof err) == 0)
        vg_daemon_config_finish(&c, err, sizeof err);
    FUZZ_CHECK(memchr(err, 0, sizeof err) != NULL, "an unterminated error sentence");
    return 0;
}
