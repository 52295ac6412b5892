/*
 * test_cluster_e2e.c: vigild's cluster mode (daemon/cluster.c, docs/cluster.md) against a real
 * NATS JetStream server (Debian nats-server, `-js` with a file store on a loopback port, started
 * and killed by the test) and three real vigild nodes on it (cluster_ack_wait_s = 2).
 *
 * The model is a random-weight checkpoint made by `vigil-model random` with a text model big
 * enough (6 layers, width 512) that a 1500-token greedy answer runs for seconds, so a node can be
 * killed mid-generation; the trained demo model answers in milliseconds and stops at its EOS.
 * Every node loads the same checkpoint, so the answers are deterministic across nodes.
 *
 * Covers:
 *  - nine clip jobs asked on node 1: each completes once, the view of `job ID` is the same JSON on
 *    all three nodes, more than one node ran them (pull only with capacity: cluster_max_jobs = 1),
 *    a repeated `ask` with a known job id on another node returns that job (existing: true), and
 *    `vigil ask` on node 3 prints the answer whatever node ran the job (`done` from the bucket);
 *  - twelve jobs asked at once, one of them long: the node running the long one is killed with
 *    SIGKILL after 20 generated tokens; the job is redelivered after the ack wait and completes on
 *    another node; all twelve complete once, are the same JSON on both survivors, stay the same
 *    after three more ack waits (no second result), and the killed node, restarted with its state
 *    directory (its journal says "interrupted"), answers `job ID` with the cluster's result for
 * each;
 *  - a node stopped with SIGSTOP mid-generation past the ack wait: the job completes on another
 *    node; after SIGCONT the stalled node finishes its own run, finds the result recorded and keeps
 *    it (its log says so), and every node still answers with the first result;
 *  - nats-server restarted (same file store) while a node runs a long job: the nodes reconnect,
 *    the job's one result is readable on every node, and a job asked afterwards runs;
 *  - SIGTERM of the node running a job: exit 0, the job handed back and completed by another node;
 *  - tokens of jobs asked on node 1 and run on other nodes reach node 1's bus (state, every
 *    token in order, done);
 *  - `cancel` from any node: a queued job (every node busy) cancelled on node 3 is recorded
 *    cancelled and never run (the node that pulls it later acks it), a running job cancelled on a
 *    node that does not run it is cancelled by its node; one final state `cancelled`, the same JSON
 *    on every node;
 *  - SIGTERM of the nodes: exit 0, no sanitizer report.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "ipc.h"
#include "../support/vg_testd.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define NODES     3
#define N_JOBS    9
#define LONG_TOKS 1500

static char dir[256], model[320], media[320], conf[320], video[400];
static char rt[NODES][320], st[NODES][320], cmd_url[NODES][400], logpath[NODES][400];
static pid_t node_pid[NODES] = {-1, -1, -1}, nats = -1;
static int port;

static cJSON *call(int n, const char *req)
{
    return vg_testd_call(cmd_url[n], req, strlen(req), 10000);
}

/* nats-server with JetStream and a file store under dir, on the test's loopback port. */
static int start_nats(void)
{
    char sd[400], log[400];
    snprintf(sd, sizeof sd, "%s/jetstream", dir);
    snprintf(log, sizeof log, "%s/nats.log", dir);
    nats = vg_testd_nats_start(sd, port, log);
    return nats > 0 ? 0 : -1;
}

static int start_node(int n)
{
    char url[128], name[64];
    snprintf(url, sizeof url, "cluster_url=nats://127.0.0.1:%d", port);
    snprintf(name, sizeof name, "cluster_node=n%d", n + 1);
    const char *sets[] = {url, name, "cluster_ack_wait_s=2", "cluster_max_jobs=1", NULL};
    vg_testd_spec spec = {.log = logpath[n],
                          .conf = conf,
                          .model = model,
                          .rt = rt[n],
                          .st = st[n],
                          .media = media,
                          .cmd_url = cmd_url[n],
                          .log_level = "info",
                          .sets = sets,
                          .call_timeout_ms = 10000};
    return vg_testd_start(&spec, &node_pid[n]);
}

/* The random test model, wider and deeper than vg_testd_make_model's tiny one. */
static int make_model(void)
{
    char small[400], cfgpath[400], err[256];
    snprintf(small, sizeof small, "%s/model-small", dir);
    if (vg_testd_make_model(dir, small) != 0)
        return -1;
    snprintf(cfgpath, sizeof cfgpath, "%s/config-small.json", dir);
    char *data;
    size_t len;
    if (vg_read_file(cfgpath, 1 << 20, &data, &len, err, sizeof err) < 0)
        return -1;
    cJSON *c = cJSON_ParseWithLength(data, len);
    free(data);
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(c, "text_config");
    cJSON *vc = cJSON_GetObjectItemCaseSensitive(c, "vision_config");
    if (!tc || !vc) {
        cJSON_Delete(c);
        return -1;
    }
    cJSON_ReplaceItemInObjectCaseSensitive(tc, "hidden_size", cJSON_CreateNumber(512));
    cJSON_ReplaceItemInObjectCaseSensitive(tc, "intermediate_size", cJSON_CreateNumber(1536));
    cJSON_ReplaceItemInObjectCaseSensitive(tc, "num_hidden_layers", cJSON_CreateNumber(6));
    cJSON_ReplaceItemInObjectCaseSensitive(tc, "num_attention_heads", cJSON_CreateNumber(16));
    cJSON_ReplaceItemInObjectCaseSensitive(tc, "num_key_value_heads", cJSON_CreateNumber(4));
    cJSON_ReplaceItemInObjectCaseSensitive(vc, "out_hidden_size", cJSON_CreateNumber(512));
    char *s = cJSON_Print(c);
    cJSON_Delete(c);
    snprintf(cfgpath, sizeof cfgpath, "%s/config-big.json", dir);
    int rc = s ? vg_testd_write_file(cfgpath, s) : -1;
    free(s);
    if (rc < 0)
        return -1;
    return vg_testd_sh(NULL, 0,
                       "'%s/tools/vigil-model' random --config '%s' --out '%s' >/dev/null 2>&1",
                       VG_BINARY_DIR, cfgpath, model);
}

static int setup(void **state)
{
    (void)state;
    if (vg_testd_need_tools() < 0 || vg_testd_sh(NULL, 0, "command -v nats-server") != 0) {
        fprintf(stderr, "missing: vigild/vigil/vigil-model/ffmpeg or nats-server "
                        "(scripts/install-deps.sh)\n");
        return -1;
    }
    char rt0[320], st0[320], url0[400];
    if (vg_testd_tmpdir("/tmp/vg-cluster-XXXXXX", dir, model, media, rt0, st0, url0) < 0)
        return -1;
    for (int n = 0; n < NODES; n++) {
        snprintf(rt[n], sizeof rt[n], "%s/run%d", dir, n + 1);
        snprintf(st[n], sizeof st[n], "%s/state%d", dir, n + 1);
        snprintf(cmd_url[n], sizeof cmd_url[n], "ipc://%s/vigil.cmd", rt[n]);
        snprintf(logpath[n], sizeof logpath[n], "%s/vigild%d.log", dir, n + 1);
    }
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    vg_testd_write_file(conf, "");
    snprintf(video, sizeof video, "%s/clip.mp4", media);
    if (make_model() != 0) {
        fprintf(stderr, "cannot make the test model\n");
        return -1;
    }
    if (vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=64x64:rate=4 -t 4 "
                    "-pix_fmt yuv420p '%s'",
                    video) != 0)
        return -1;
    port = 12000 + (int)(getpid() % 4000) * 2;
    if (start_nats() != 0)
        return -1;
    for (int n = 0; n < NODES; n++)
        if (start_node(n) != 0) {
            fprintf(stderr, "node %d did not start (%s)\n", n + 1, logpath[n]);
            return -1;
        }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int n = 0; n < NODES; n++)
        vg_testd_kill_wait(&node_pid[n], SIGKILL);
    vg_testd_kill_wait(&nats, SIGTERM);
    if (getenv("VG_KEEP_TMP") == NULL && dir[0])
        vg_testd_sh(NULL, 0, "rm -rf %s", dir);
    return 0;
}

static cJSON *get_job(int n, const char *id)
{
    char req[200];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"job\",\"job\":\"%s\"}", id);
    cJSON *r = call(n, req);
    cJSON *j = vg_testd_is_ok(r) ? cJSON_DetachItemFromObject(r, "job") : NULL;
    cJSON_Delete(r);
    return j;
}

static int is_final(const char *s)
{
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

/* Polls node n's `job id` until it is final (up to timeout_s); returns the view or NULL. */
static cJSON *wait_final(int n, const char *id, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    while (vg_now_ms() < until) {
        cJSON *j = get_job(n, id);
        if (j && is_final(vg_testd_jstr(j, "state")))
            return j;
        cJSON_Delete(j);
        vg_testd_sleep_ms(100);
    }
    fprintf(stderr, "job %s not final on node %d\n", id, n + 1);
    return NULL;
}

static void ask(int n, const char *id, int max_tokens)
{
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"%s\",\"video\":\"%s\",\"question\":\"What "
             "happens in the clip?\",\"generation\":{\"greedy\":true,\"max_new_tokens\":%d}}",
             id, video, max_tokens);
    cJSON *r = call(n, req);
    assert_true(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(r, "job"), id);
    cJSON_Delete(r);
}

static void test_jobs_shared(void **state)
{
    (void)state;
    char ids[N_JOBS][16];
    for (int i = 0; i < N_JOBS; i++) {
        snprintf(ids[i], sizeof ids[i], "clip-%d", i);
        ask(0, ids[i], 120);
    }
    int ran_on[NODES] = {0};
    for (int i = 0; i < N_JOBS; i++) {
        char *first = NULL;
        for (int n = 0; n < NODES; n++) {
            cJSON *j = wait_final(n, ids[i], 90);
            assert_non_null(j);
            assert_string_equal(vg_testd_jstr(j, "state"), "completed");
            assert_true(vg_testd_jnum(j, "n_tokens") > 0);
            char *s = cJSON_PrintUnformatted(j);
            if (!first) {
                first = s;
                const char *node = vg_testd_jstr(j, "node");
                assert_true(node[0] == 'n' && node[1] >= '1' && node[1] <= '0' + NODES);
                ran_on[node[1] - '1']++;
            } else {
                if (strcmp(first, s))
                    fprintf(stderr, "node 1: %s\nnode %d: %s\n", first, n + 1, s);
                assert_string_equal(first, s);
                free(s);
            }
            cJSON_Delete(j);
        }
        free(first);
    }
    int used = 0;
    for (int n = 0; n < NODES; n++) {
        printf("node %d ran %d of the %d jobs\n", n + 1, ran_on[n], N_JOBS);
        used += ran_on[n] > 0;
    }
    assert_true(used >= 2);
    /* The same job id asked again on another node is that job, not a second run. */
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"clip-0\",\"video\":\"%s\",\"question\":\"What "
             "happens in the clip?\",\"generation\":{\"greedy\":true,\"max_new_tokens\":120}}",
             video);
    cJSON *r = call(2, req);
    assert_true(vg_testd_is_ok(r));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")));
    assert_string_equal(vg_testd_jstr(r, "state"), "completed");
    cJSON_Delete(r);
    /* The CLI waits for `done` on the node it asked, whatever node runs the job. */
    char out[1 << 16];
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/tools/vigil' --runtime-dir '%s' --timeout 60000 ask --json "
                                 "--job cli-1 --max-new-tokens 40 --greedy '%s' 'What happens?'",
                                 VG_BINARY_DIR, rt[2], video),
                     0);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "text")));
    cJSON_Delete(o);
    cJSON *j = wait_final(0, "cli-1", 30);
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "completed");
    cJSON_Delete(j);
}

/* The node whose `info` says it runs a cluster job, or -1. */
static int runner(void)
{
    for (int n = 0; n < NODES; n++) {
        if (node_pid[n] <= 0)
            continue;
        cJSON *r = call(n, "{\"v\":1,\"op\":\"info\"}");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "cluster");
        int running = c ? (int)vg_testd_jnum(c, "running") : 0;
        cJSON_Delete(r);
        if (running > 0)
            return n;
    }
    return -1;
}

/* Issue #17's job failover: 12 clip jobs asked at once (one long, eleven short); the node running
 * the long one is killed with SIGKILL mid-generation; every job completes exactly once, the long
 * one on another node, and each reads the same on every node, the killed one after its restart. */
#define FO_SHORT 11
static void test_failover_exactly_once(void **state)
{
    (void)state;
    char ids[FO_SHORT + 1][16];
    snprintf(ids[0], sizeof ids[0], "long-1");
    ask(1, ids[0], LONG_TOKS); /* first in the queue: pulled at once */
    for (int i = 1; i <= FO_SHORT; i++) {
        snprintf(ids[i], sizeof ids[i], "fo-%d", i);
        ask(1, ids[i], 120);
    }
    /* The node running long-1 (the bucket's view names it), once it generated 20 tokens. */
    int k = -1, tokens = 0;
    double until = vg_now_ms() + 60000;
    while (vg_now_ms() < until) {
        /* A node's view while it runs the job is its job manager's (no "node" field); the
         * others answer from the cluster's record, which names the node. */
        for (int n = 0; k < 0 && n < NODES; n++) {
            cJSON *j = get_job(n, ids[0]);
            const char *node = j ? vg_testd_jstr(j, "node") : "";
            if (j && !strcmp(vg_testd_jstr(j, "state"), "running")) {
                if (!node[0])
                    k = n;
                else if (node[0] == 'n' && node[1] >= '1' && node[1] <= '0' + NODES && !node[2])
                    k = node[1] - '1';
            }
            cJSON_Delete(j);
        }
        if (k >= 0) {
            cJSON *j = get_job(k, ids[0]);
            tokens = j ? (int)vg_testd_jnum(j, "n_tokens") : 0;
            int fin = j && is_final(vg_testd_jstr(j, "state"));
            cJSON_Delete(j);
            assert_false(fin); /* too short a job to kill mid-generation */
            if (tokens >= 20)
                break;
        }
        vg_testd_sleep_ms(20);
    }
    assert_true(k >= 0 && tokens >= 20);
    printf("killing node %d (SIGKILL) at %d generated tokens of %s, %d jobs in flight\n", k + 1,
           tokens, ids[0], FO_SHORT + 1);
    vg_testd_kill_wait(&node_pid[k], SIGKILL);
    char killed[8];
    snprintf(killed, sizeof killed, "n%d", k + 1);

    /* Every job final and completed, the same JSON on both survivors. */
    int a = (k + 1) % NODES, b = (k + 2) % NODES;
    char *views[FO_SHORT + 1];
    for (int i = 0; i <= FO_SHORT; i++) {
        cJSON *ja = wait_final(a, ids[i], 120), *jb = wait_final(b, ids[i], 30);
        assert_non_null(ja);
        assert_non_null(jb);
        assert_string_equal(vg_testd_jstr(ja, "state"), "completed");
        views[i] = cJSON_PrintUnformatted(ja);
        char *sb = cJSON_PrintUnformatted(jb);
        assert_string_equal(views[i], sb);
        free(sb);
        if (i == 0) {
            assert_string_not_equal(vg_testd_jstr(ja, "node"), killed);
            assert_true(vg_testd_jnum(ja, "n_tokens") > tokens);
            printf("%s completed on %s after the failover: %d tokens\n", ids[0],
                   vg_testd_jstr(ja, "node"), (int)vg_testd_jnum(ja, "n_tokens"));
        }
        cJSON_Delete(ja);
        cJSON_Delete(jb);
    }
    /* Three more ack waits: no redelivery writes a second result. */
    vg_testd_sleep_ms(6000);
    for (int i = 0; i <= FO_SHORT; i++) {
        cJSON *again = get_job(a, ids[i]);
        char *s2 = cJSON_PrintUnformatted(again);
        assert_string_equal(views[i], s2);
        free(s2);
        cJSON_Delete(again);
    }

    /* The killed node comes back with its journal (long-1 "interrupted" there): `job` answers
     * with the cluster's one result for every job. */
    assert_int_equal(start_node(k), 0);
    for (int i = 0; i <= FO_SHORT; i++) {
        char *sk = NULL;
        until = vg_now_ms() + 30000;
        while (vg_now_ms() < until) {
            cJSON *jk = get_job(k, ids[i]);
            free(sk);
            sk = jk ? cJSON_PrintUnformatted(jk) : NULL;
            cJSON_Delete(jk);
            if (sk && !strcmp(sk, views[i]))
                break;
            vg_testd_sleep_ms(100);
        }
        if (!sk || strcmp(sk, views[i]))
            fprintf(stderr, "restarted node, %s: %s\nothers: %s\n", ids[i], sk ? sk : "(none)",
                    views[i]);
        assert_non_null(sk);
        assert_string_equal(sk, views[i]);
        free(sk);
        free(views[i]);
    }
}

/* Waits until node n's `info` says it runs no cluster job (up to timeout_s). 0 or -1. */
static int wait_idle(int n, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    while (vg_now_ms() < until) {
        cJSON *r = call(n, "{\"v\":1,\"op\":\"info\"}");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "cluster");
        int running = c ? (int)vg_testd_jnum(c, "running") : -1;
        cJSON_Delete(r);
        if (running == 0)
            return 0;
        vg_testd_sleep_ms(100);
    }
    return -1;
}

/* A node that stalls (SIGSTOP) past the ack wait loses its job to another node; when it resumes
 * and finishes its own run, the cluster keeps the first result: one result per job id. */
static void test_stalled_node_result_kept(void **state)
{
    (void)state;
    ask(0, "long-2", LONG_TOKS);
    int k = -1, tokens = 0;
    double until = vg_now_ms() + 60000;
    while (vg_now_ms() < until) {
        if (k < 0)
            k = runner();
        if (k >= 0) {
            cJSON *j = get_job(k, "long-2");
            tokens = j ? (int)vg_testd_jnum(j, "n_tokens") : 0;
            cJSON_Delete(j);
            if (tokens >= 20)
                break;
        }
        vg_testd_sleep_ms(20);
    }
    assert_true(k >= 0 && tokens >= 20);
    printf("stopping node %d (SIGSTOP) at %d generated tokens\n", k + 1, tokens);
    assert_int_equal(kill(node_pid[k], SIGSTOP), 0);
    int a = (k + 1) % NODES;
    cJSON *ja = wait_final(a, "long-2", 120);
    assert_non_null(ja);
    assert_string_equal(vg_testd_jstr(ja, "state"), "completed");
    char stalled[8];
    snprintf(stalled, sizeof stalled, "n%d", k + 1);
    assert_string_not_equal(vg_testd_jstr(ja, "node"), stalled);
    char *sa = cJSON_PrintUnformatted(ja);
    printf("completed on %s while node %d was stopped\n", vg_testd_jstr(ja, "node"), k + 1);
    assert_int_equal(kill(node_pid[k], SIGCONT), 0);
    /* The resumed node finishes its own run, then finds the result recorded and keeps it. */
    assert_int_equal(wait_idle(k, 120), 0);
    int kept = 0;
    for (int i = 0; i < 100 && !kept; i++) {
        kept = vg_testd_sh(NULL, 0, "grep -q 'job long-2: already final in the cluster; kept' '%s'",
                           logpath[k]) == 0;
        if (!kept)
            vg_testd_sleep_ms(100);
    }
    assert_true(kept);
    for (int n = 0; n < NODES; n++) {
        cJSON *j = get_job(n, "long-2");
        char *s = j ? cJSON_PrintUnformatted(j) : NULL;
        if (!s || strcmp(s, sa))
            fprintf(stderr, "node %d: %s\nfirst: %s\n", n + 1, s ? s : "(none)", sa);
        assert_non_null(s);
        assert_string_equal(s, sa);
        free(s);
        cJSON_Delete(j);
    }
    free(sa);
    cJSON_Delete(ja);
}

/* nats-server restarts (SIGTERM, then again on the same file store) while a node runs a long job:
 * the nodes reconnect, the job's result is recorded once and readable everywhere, and a job asked
 * after the restart runs. */
static void test_broker_restart(void **state)
{
    (void)state;
    ask(2, "br-long", LONG_TOKS);
    int k = -1, tokens = 0;
    double until = vg_now_ms() + 60000;
    while (vg_now_ms() < until) {
        if (k < 0)
            k = runner();
        if (k >= 0) {
            cJSON *j = get_job(k, "br-long");
            tokens = j ? (int)vg_testd_jnum(j, "n_tokens") : 0;
            cJSON_Delete(j);
            if (tokens >= 20)
                break;
        }
        vg_testd_sleep_ms(20);
    }
    assert_true(k >= 0 && tokens >= 20);
    printf("restarting nats-server while node %d runs br-long (%d tokens)\n", k + 1, tokens);
    vg_testd_kill_wait(&nats, SIGTERM);
    assert_int_equal(start_nats(), 0);
    for (int round = 0; round < 2; round++) {
        const char *id = round ? "br-after" : "br-long";
        if (round)
            ask(0, id, 60);
        char *first = NULL;
        for (int n = 0; n < NODES; n++) {
            cJSON *j = wait_final(n, id, 120);
            assert_non_null(j);
            assert_string_equal(vg_testd_jstr(j, "state"), "completed");
            char *s = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            if (!first) {
                first = s;
                continue;
            }
            assert_string_equal(first, s);
            free(s);
        }
        free(first);
    }
}

/* SIGTERM of the node running a job: it exits 0 and hands the job back; another node completes
 * it (not `cancelled`). */
static void test_sigterm_hands_back(void **state)
{
    (void)state;
    ask(0, "term-1", LONG_TOKS);
    int k = -1, tokens = 0;
    double until = vg_now_ms() + 60000;
    while (vg_now_ms() < until) {
        if (k < 0)
            k = runner();
        if (k >= 0) {
            cJSON *j = get_job(k, "term-1");
            tokens = j ? (int)vg_testd_jnum(j, "n_tokens") : 0;
            cJSON_Delete(j);
            if (tokens >= 20)
                break;
        }
        vg_testd_sleep_ms(20);
    }
    assert_true(k >= 0 && tokens >= 20);
    printf("stopping node %d (SIGTERM) at %d generated tokens\n", k + 1, tokens);
    assert_int_equal(vg_testd_stop(&node_pid[k], 3000, NULL), 0);
    assert_int_equal(
        vg_testd_sh(NULL, 0, "grep -q 'job term-1: handed back to the cluster' '%s'", logpath[k]),
        0);
    int a = (k + 1) % NODES;
    cJSON *j = wait_final(a, "term-1", 120);
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "completed");
    char stopped[8];
    snprintf(stopped, sizeof stopped, "n%d", k + 1);
    assert_string_not_equal(vg_testd_jstr(j, "node"), stopped);
    cJSON_Delete(j);
    assert_int_equal(start_node(k), 0);
}

/* Tokens of jobs run on other nodes reach the accepting node's bus: three 40-token jobs asked at
 * once on node 1 spread over the nodes (one each: cluster_max_jobs = 1); for each that ran on
 * another node, node 1's bus carried its `state`, every token (seq 0..n_tokens-1, in order) and
 * `done`. */
static void test_tokens_forwarded(void **state)
{
    (void)state;
    char url[400], err[256];
    snprintf(url, sizeof url, "ipc://%s/vigil.events", rt[0]);
    vg_ipc_sub *sub = NULL;
    assert_int_equal(vg_ipc_sub_open(url, "job/fw-", &sub, err, sizeof err), 0);
    char *msg;
    const char *topic, *payload;
    size_t plen;
    int live = 0;
    for (int i = 0; i < 50 && !live; i++) {
        cJSON_Delete(call(0, "{\"v\":1,\"op\":\"sync\",\"job\":\"fw-0\"}"));
        while (!live && vg_ipc_sub_recv(sub, 100, &msg, &topic, &payload, &plen) == 0) {
            live = !strcmp(topic, "job/fw-0/sync");
            free(msg);
        }
    }
    assert_true(live);
    const char *ids[3] = {"fw-1", "fw-2", "fw-3"};
    int next[3] = {0}, bad[3] = {0}, states[3] = {0}, done[3] = {0};
    for (int i = 0; i < 3; i++)
        ask(0, ids[i], 40);
    double until = vg_now_ms() + 120000;
    while (vg_now_ms() < until && !(done[0] && done[1] && done[2])) {
        if (vg_ipc_sub_recv(sub, 200, &msg, &topic, &payload, &plen) != 0)
            continue;
        int k = -1;
        for (int i = 0; i < 3; i++)
            if (!strncmp(topic + 4, ids[i], 4) && topic[8] == '/')
                k = i;
        if (k >= 0) {
            const char *kind = topic + 9;
            cJSON *o = cJSON_ParseWithLength(payload, plen);
            if (!strcmp(kind, "token")) {
                if ((int)vg_testd_jnum(o, "seq") != next[k])
                    bad[k]++;
                next[k]++;
            } else if (!strcmp(kind, "state")) {
                states[k]++;
            } else if (!strcmp(kind, "done")) {
                done[k] = 1;
            }
            cJSON_Delete(o);
        }
        free(msg);
    }
    vg_ipc_sub_close(sub);
    int elsewhere = 0;
    for (int i = 0; i < 3; i++) {
        cJSON *j = wait_final(0, ids[i], 60);
        assert_non_null(j);
        assert_string_equal(vg_testd_jstr(j, "state"), "completed");
        int n = (int)vg_testd_jnum(j, "n_tokens");
        printf("%s ran on %s: node 1's bus had %d state, %d of %d tokens (%d out of order), %s\n",
               ids[i], vg_testd_jstr(j, "node"), states[i], next[i], n, bad[i],
               done[i] ? "done" : "no done");
        assert_true(done[i]);
        if (strcmp(vg_testd_jstr(j, "node"), "n1")) {
            elsewhere++;
            assert_true(states[i] > 0);
            assert_int_equal(next[i], n);
            assert_int_equal(bad[i], 0);
        }
        cJSON_Delete(j);
    }
    assert_true(elsewhere > 0);
}

/* info.cluster.running of node n (-1 when it does not answer). */
static int running_on(int n)
{
    cJSON *r = call(n, "{\"v\":1,\"op\":\"info\"}");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "cluster");
    int v = c ? (int)vg_testd_jnum(c, "running") : -1;
    cJSON_Delete(r);
    return v;
}

/* `cancel ID` on node n: the reply (owned by the caller), asserted ok. */
static cJSON *cancel_on(int n, const char *id)
{
    char req[200];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"cancel\",\"job\":\"%s\"}", id);
    cJSON *r = call(n, req);
    char *s = r ? cJSON_PrintUnformatted(r) : NULL;
    printf("cancel %s on node %d: %s\n", id, n + 1, s ? s : "(no reply)");
    free(s);
    assert_true(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(r, "job"), id);
    return r;
}

/* `cancel` from any node: three long jobs asked on node 1 occupy the three nodes (one each), a
 * fourth waits in the queue. The queued one cancelled on node 3 is recorded `cancelled` before any
 * node runs it (and no node runs it once they are free); a running one cancelled on a node that
 * does not run it is cancelled by its node. Each has one final state, `cancelled`, the same JSON on
 * every node. */
static void test_cancel_anywhere(void **state)
{
    (void)state;
    const char *ids[3] = {"can-1", "can-2", "can-3"};
    for (int i = 0; i < 3; i++)
        ask(0, ids[i], LONG_TOKS);
    int all = 0;
    double until = vg_now_ms() + 60000;
    while (vg_now_ms() < until && !all) {
        all = 1;
        for (int n = 0; n < NODES; n++)
            all &= running_on(n) == 1;
        if (!all)
            vg_testd_sleep_ms(50);
    }
    assert_true(all);
    ask(0, "can-q", LONG_TOKS); /* every node is full: it stays in the queue */
    vg_testd_sleep_ms(500);
    cJSON *r = cancel_on(2, "can-q");
    assert_string_equal(vg_testd_jstr(r, "state"), "cancelled");
    assert_string_equal(vg_testd_jstr(r, "where"), "queued");
    cJSON_Delete(r);

    /* can-1 runs on node k; cancelled on another node (not node 1 when k is not node 1). */
    int k = -1; /* the cluster's view (on the nodes that do not run it) names the node */
    for (int n = 0; n < NODES && k < 0; n++) {
        cJSON *j = get_job(n, "can-1");
        const char *nd = vg_testd_jstr(j, "node");
        if (nd[0] == 'n' && nd[1] >= '1' && nd[1] < '1' + NODES && !nd[2] &&
            !strcmp(vg_testd_jstr(j, "state"), "running"))
            k = nd[1] - '1';
        cJSON_Delete(j);
    }
    assert_true(k >= 0);
    int other = k == 2 ? 1 : 2;
    char runner_name[8];
    snprintf(runner_name, sizeof runner_name, "n%d", k + 1);
    r = cancel_on(other, "can-1");
    assert_string_equal(vg_testd_jstr(r, "state"), "cancelling");
    assert_string_equal(vg_testd_jstr(r, "where"), "running");
    assert_string_equal(vg_testd_jstr(r, "node"), runner_name);
    cJSON_Delete(r);
    /* The others from node 1, wherever they run. */
    cJSON_Delete(cancel_on(0, "can-2"));
    cJSON_Delete(cancel_on(0, "can-3"));
    const char *all_ids[4] = {"can-q", "can-1", "can-2", "can-3"};
    for (int i = 0; i < 4; i++) {
        cJSON *first = wait_final(0, all_ids[i], 120);
        assert_non_null(first);
        assert_string_equal(vg_testd_jstr(first, "state"), "cancelled");
        if (i == 1)
            assert_string_equal(vg_testd_jstr(first, "node"), runner_name);
        char *sa = cJSON_PrintUnformatted(first);
        for (int n = 1; n < NODES; n++) {
            cJSON *j = wait_final(n, all_ids[i], 60);
            char *s = j ? cJSON_PrintUnformatted(j) : NULL;
            if (!s || strcmp(s, sa))
                fprintf(stderr, "%s on node %d: %s\nnode 1: %s\n", all_ids[i], n + 1,
                        s ? s : "(none)", sa);
            assert_non_null(s);
            assert_string_equal(s, sa);
            free(s);
            cJSON_Delete(j);
        }
        free(sa);
        cJSON_Delete(first);
    }
    /* The nodes are free again: one pulls can-q, finds it final and acks it without running it. */
    int acked = 0;
    for (int i = 0; i < 200 && !acked; i++) {
        for (int n = 0; n < NODES; n++)
            acked |= vg_testd_sh(NULL, 0,
                                 "grep -q 'job can-q: final in the cluster already; acked' '%s'",
                                 logpath[n]) == 0;
        if (!acked)
            vg_testd_sleep_ms(100);
    }
    assert_true(acked);
    for (int n = 0; n < NODES; n++) {
        assert_int_equal(wait_idle(n, 60), 0);
        assert_int_not_equal(
            vg_testd_sh(NULL, 0, "grep -q 'job can-q: running here' '%s'", logpath[n]), 0);
        cJSON *j = get_job(n, "can-q");
        assert_string_equal(vg_testd_jstr(j, "state"), "cancelled");
        cJSON_Delete(j);
    }
    /* A cancel of a final job answers its state from any node. */
    r = cancel_on(1, "can-q");
    assert_string_equal(vg_testd_jstr(r, "state"), "cancelled");
    assert_string_equal(vg_testd_jstr(r, "where"), "final");
    cJSON_Delete(r);
}

static void test_stop(void **state)
{
    (void)state;
    for (int n = 0; n < NODES; n++) {
        assert_true(node_pid[n] > 0);
        assert_int_equal(vg_testd_stop(&node_pid[n], 3000, NULL), 0);
        assert_int_equal(vg_testd_sh(NULL, 0,
                                     "! grep -q 'ERROR: AddressSanitizer\\|runtime error\\|"
                                     "LeakSanitizer' '%s'",
                                     logpath[n]),
                         0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_shared),
        cmocka_unit_test(test_failover_exactly_once),
        cmocka_unit_test(test_stalled_node_result_kept),
        cmocka_unit_test(test_broker_restart),
        cmocka_unit_test(test_sigterm_hands_back),
        cmocka_unit_test(test_tokens_forwarded),
        cmocka_unit_test(test_cancel_anywhere),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
