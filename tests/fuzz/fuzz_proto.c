/*
 * fuzz_proto.c: libFuzzer harness for the request parser (daemon/proto.c, vg_proto_parse) and the
 * error reply built from its result, plus the media policy's URL/path classification with no media
 * roots (no filesystem access). Invariants: a refused request gives a wire code and a reply that is
 * valid UTF-8 without raw control bytes; an accepted one holds only valid UTF-8 text without NUL
 * (issue #13 item 3).
 */
#define _GNU_SOURCE
#include "common.h"
#include "daemon.h"
#include "fuzz_util.h"

#include <string.h>

static void check_text(const char *s)
{
    if (!s)
        return;
    FUZZ_CHECK(vg_utf8_check(s, strlen(s)) == strlen(s), "accepted text is not UTF-8");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const vg_proto_limits lim = {1 << 20, 4096, 600, 768, 1 << 24};
    vg_request r;
    const char *wire = NULL;
    char err[768];
    int rc = vg_proto_parse((const char *)data, size, &lim, &r, &wire, err, sizeof err);
    if (rc < 0) {
        FUZZ_CHECK(wire != NULL, "a refusal without a wire code");
        size_t len = 0;
        char *rep = vg_proto_error_reply(r.id_json, wire, err, &len);
        FUZZ_CHECK(rep != NULL, "no error reply");
        FUZZ_CHECK(vg_utf8_check(rep, len) == len, "the error reply is not UTF-8");
        for (size_t i = 0; i < len; i++)
            FUZZ_CHECK((unsigned char)rep[i] >= 0x20, "a raw control byte in the error reply");
        free(rep);
        return 0;
    }
    check_text(r.video);
    check_text(r.question);
    check_text(r.system);
    for (int i = 0; i < r.n_questions; i++)
        check_text(r.questions[i]);
    if (r.video) {
        char resolved[4096], e2[512];
        int is_url = 0;
        vg_daemon_media_check(r.video, NULL, 0, "http,https,rtsp", resolved, sizeof resolved,
                              &is_url, e2, sizeof e2);
    }
    vg_request_clear(&r);
    return 0;
}
