/*
 * test_cluster_streams.c: live streams in cluster mode (daemon/cluster.c, docs/cluster.md) against
 * a real NATS JetStream server (Debian nats-server, `-js` with a file store on a loopback port,
 * started by the test) and three real vigild nodes with the random tiny test model, leases of
 * cluster_lease_ttl_s = 3 (renewed every second).
 *
 * The camera is a 10-minute 64x64 file in the shared media root, read at its own rate (a file is
 * paced like a live input: a new owner starts it again, its records continue the sequence).
 *
 * Covers:
 *  - `watch` on node 1 is recorded in the cluster: the same watch on node 2 answers existing: true,
 *    another question for the same name on node 3 is a conflict; exactly one node claims it;
 *  - failover: the owner is killed with SIGKILL once it published a few records; another node
 *    claims the stream (the time is printed: no timed assertion), publishes records that continue
 *    the sequence, and `events --since 0` on every node (the killed one restarted included) returns
 *    1..last with no gap and no duplicate, records of both owners (the `node` field);
 *  - fencing: the new owner is stopped with SIGSTOP past the lease TTL; a third node takes the
 *    stream over; after SIGCONT the stopped node publishes nothing more: nothing on its bus,
 *    every record in JetStream after the takeover is the new owner's, the sequence still has no
 *    gap or duplicate, and its `info` shows it holds no lease;
 *  - `unwatch` on any node stops the stream on its owner and releases the lease;
 *  - three streams: each runs on one node, and `streams` on every node lists the three with their
 *    owner;
 *  - SIGTERM of every node: exit 0, no sanitizer report.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "ipc.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define NODES 3
#define TTL_S 3

static char dir[256], model[320], media[320], conf[320], video[400];
static char rt[NODES][320], st[NODES][320], cmd_url[NODES][400], ev_url[NODES][400],
    logpath[NODES][400];
static pid_t node_pid[NODES] = {-1, -1, -1}, nats = -1;
static int port, owner = -1;

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
    const char *sets[] = {url,
                          name,
                          "cluster_lease_ttl_s=3",
                          "stream_max_new_tokens=8",
                          "stream_stall_timeout_s=5",
                          "inference_threads=1",
                          NULL};
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

static int setup(void **state)
{
    (void)state;
    if (vg_testd_need_tools() < 0 || vg_testd_sh(NULL, 0, "command -v nats-server") != 0) {
        fprintf(stderr, "missing: vigild/vigil/vigil-model/ffmpeg or nats-server "
                        "(scripts/install-deps.sh)\n");
        return -1;
    }
    char rt0[320], st0[320], url0[400];
    if (vg_testd_tmpdir("/tmp/vg-cstreams-XXXXXX", dir, model, media, rt0, st0, url0) < 0)
        return -1;
    for (int n = 0; n < NODES; n++) {
        snprintf(rt[n], sizeof rt[n], "%s/run%d", dir, n + 1);
        snprintf(st[n], sizeof st[n], "%s/state%d", dir, n + 1);
        snprintf(cmd_url[n], sizeof cmd_url[n], "ipc://%s/vigil.cmd", rt[n]);
        snprintf(ev_url[n], sizeof ev_url[n], "ipc://%s/vigil.events", rt[n]);
        snprintf(logpath[n], sizeof logpath[n], "%s/vigild%d.log", dir, n + 1);
    }
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    vg_testd_write_file(conf, "");
    snprintf(video, sizeof video, "%s/cam.mp4", media);
    if (vg_testd_make_model(dir, model) != 0) {
        fprintf(stderr, "cannot make the test model\n");
        return -1;
    }
    if (vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=64x64:rate=4 -t 600 "
                    "-pix_fmt yuv420p -g 8 '%s'",
                    video) != 0)
        return -1;
    port = 14000 + (int)(getpid() % 4000) * 2;
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
    for (int n = 0; n < NODES; n++) {
        if (node_pid[n] > 0)
            kill(node_pid[n], SIGCONT);
        vg_testd_kill_wait(&node_pid[n], SIGKILL);
    }
    vg_testd_kill_wait(&nats, SIGTERM);
    if (getenv("VG_KEEP_TMP") == NULL && dir[0])
        vg_testd_sh(NULL, 0, "rm -rf %s", dir);
    return 0;
}

/* info.cluster.streams.owned of node n (-1 when it does not answer). */
static int owned_by(int n)
{
    cJSON *r = call(n, "{\"v\":1,\"op\":\"info\"}");
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(r, "cluster");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(cl, "streams");
    int v = so ? (int)vg_testd_jnum(so, "owned") : -1;
    cJSON_Delete(r);
    return v;
}

/* Polls the nodes in mask (running, not stopped) until one owns the stream; its index or -1. */
static int wait_owner(unsigned mask, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    while (vg_now_ms() < until) {
        for (int n = 0; n < NODES; n++)
            if ((mask & (1u << n)) && owned_by(n) == 1)
                return n;
        vg_testd_sleep_ms(50);
    }
    return -1;
}

/* `events cam --since 0` on node n: the records (owned by the caller) or NULL. */
static cJSON *all_events(int n)
{
    cJSON *r = call(n, "{\"v\":1,\"op\":\"events\",\"name\":\"cam\",\"since\":0,\"limit\":10000}");
    if (!vg_testd_is_ok(r)) {
        char *s = r ? cJSON_PrintUnformatted(r) : NULL;
        fprintf(stderr, "events on node %d: %s\n", n + 1, s ? s : "(no reply)");
        free(s);
        cJSON_Delete(r);
        return NULL;
    }
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "more")));
    cJSON *ev = cJSON_DetachItemFromObject(r, "events");
    cJSON_Delete(r);
    return ev;
}

/* Checks that ev holds the records 1..N in order (no gap, no duplicate); returns N. Counts the
 * records whose node is `node_a` / `node_b` (NULL: not counted). */
static int check_contiguous(const cJSON *ev, const char *node_a, int *n_a, const char *node_b,
                            int *n_b)
{
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ev)
    {
        i++;
        if ((int)vg_testd_jnum(e, "seq") != i) {
            char *s = cJSON_PrintUnformatted(e);
            fprintf(stderr, "record %d is %s\n", i, s);
            free(s);
        }
        assert_int_equal((int)vg_testd_jnum(e, "seq"), i);
        assert_string_equal(vg_testd_jstr(e, "stream"), "cam");
        if (node_a && !strcmp(vg_testd_jstr(e, "node"), node_a))
            (*n_a)++;
        if (node_b && !strcmp(vg_testd_jstr(e, "node"), node_b))
            (*n_b)++;
    }
    return i;
}

/* Waits until the stream's records (read on node n) hold at least `more` records by node name;
 * returns the last seq or -1. */
static int wait_records_by(int n, const char *name, int more, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    while (vg_now_ms() < until) {
        cJSON *ev = all_events(n);
        int k = 0, last = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, ev)
        {
            last = (int)vg_testd_jnum(e, "seq");
            k += !strcmp(vg_testd_jstr(e, "node"), name);
        }
        cJSON_Delete(ev);
        if (k >= more)
            return last;
        vg_testd_sleep_ms(200);
    }
    return -1;
}

static void node_name(int n, char out[8])
{
    snprintf(out, 8, "n%d", n + 1);
}

static void test_watch_recorded(void **state)
{
    (void)state;
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"cam\",\"url\":\"%s\",\"question\":\"What "
             "happens?\",\"fps\":2,\"window_s\":4,\"update_s\":1,\"min_window_s\":1}",
             video);
    cJSON *r = call(0, req);
    assert_true(vg_testd_is_ok(r));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")));
    cJSON_Delete(r);
    r = call(1, req);
    assert_true(vg_testd_is_ok(r));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")));
    cJSON_Delete(r);
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"cam\",\"url\":\"%s\",\"question\":\"Other?\"}",
             video);
    r = call(2, req);
    assert_false(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code"),
                        "conflict");
    cJSON_Delete(r);

    /* A stream the cluster has no record of, nor this node a log. */
    r = call(2, "{\"v\":1,\"op\":\"events\",\"name\":\"nosuch\",\"since\":0}");
    assert_false(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code"),
                        "not_found");
    cJSON_Delete(r);

    owner = wait_owner(7u, 60);
    assert_true(owner >= 0);
    vg_testd_sleep_ms(3000); /* several renewals: nobody else claims it */
    int owners = 0;
    for (int n = 0; n < NODES; n++)
        owners += owned_by(n) == 1;
    assert_int_equal(owners, 1);
    printf("stream cam runs on node %d\n", owner + 1);
}

static void test_failover(void **state)
{
    (void)state;
    assert_true(owner >= 0);
    char a[8], b[8];
    node_name(owner, a);
    int other = (owner + 1) % NODES;
    assert_true(wait_records_by(other, a, 6, 60) > 0); /* read from JetStream on another node */
    int killed = owner;
    double t0 = vg_now_ms();
    vg_testd_kill_wait(&node_pid[killed], SIGKILL);
    owner = wait_owner(7u & ~(1u << killed), 60);
    assert_true(owner >= 0);
    printf("failover: node %d killed, node %d owns the stream %.2f s later (lease TTL %d s, "
           "renewal every %.1f s)\n",
           killed + 1, owner + 1, (vg_now_ms() - t0) / 1000.0, TTL_S, TTL_S / 3.0);
    node_name(owner, b);
    assert_true(wait_records_by(owner, b, 4, 60) > 0);
    assert_int_equal(start_node(killed), 0);
    for (int n = 0; n < NODES; n++) {
        cJSON *ev = all_events(n);
        assert_non_null(ev);
        int na = 0, nb = 0;
        int last = check_contiguous(ev, a, &na, b, &nb);
        assert_true(na >= 6);
        assert_true(nb >= 4);
        assert_int_equal(na + nb, last);
        printf("node %d: records 1..%d contiguous (%d by %s, %d by %s)\n", n + 1, last, na, a, nb,
               b);
        cJSON_Delete(ev);
    }
}

static void test_fencing(void **state)
{
    (void)state;
    assert_true(owner >= 0);
    int stopped = owner;
    char b[8], c[8];
    node_name(stopped, b);
    vg_ipc_sub *sub = NULL;
    char err[256];
    assert_int_equal(vg_ipc_sub_open(ev_url[stopped], "stream/cam/", &sub, err, sizeof err), 0);
    /* The subscription works: a record of the owner arrives on its bus first. */
    char *msg;
    const char *topic, *payload;
    size_t plen;
    int live = vg_ipc_sub_recv(sub, 20000, &msg, &topic, &payload, &plen) == 0;
    if (live)
        free(msg);
    assert_true(live);
    assert_int_equal(kill(node_pid[stopped], SIGSTOP), 0);
    double t0 = vg_now_ms();
    owner = wait_owner(7u & ~(1u << stopped), 60);
    assert_true(owner >= 0);
    printf("fencing: node %d stopped, node %d owns the stream %.2f s later\n", stopped + 1,
           owner + 1, (vg_now_ms() - t0) / 1000.0);
    node_name(owner, c);
    assert_true(wait_records_by(owner, c, 3, 60) > 0);
    /* What the stopped node sent before it was stopped is read now. */
    int before = 1;
    while (vg_ipc_sub_recv(sub, 300, &msg, &topic, &payload, &plen) == 0) {
        before++;
        free(msg);
    }
    assert_int_equal(kill(node_pid[stopped], SIGCONT), 0);
    /* Two lease TTLs after it resumed: not a record of the stream on its bus. */
    int after = 0;
    double until = vg_now_ms() + 2 * TTL_S * 1000;
    while (vg_now_ms() < until) {
        if (vg_ipc_sub_recv(sub, 200, &msg, &topic, &payload, &plen) == 0) {
            fprintf(stderr, "node %d published after SIGCONT: %s %.*s\n", stopped + 1, topic,
                    (int)plen, payload);
            after++;
            free(msg);
        }
    }
    vg_ipc_sub_close(sub);
    printf("fencing: node %d's bus: %d records before SIGSTOP, %d after SIGCONT\n", stopped + 1,
           before, after);
    assert_int_equal(after, 0);
    assert_int_equal(owned_by(stopped), 0);
    assert_int_equal(
        vg_testd_sh(NULL, 0, "grep -q 'stream cam: lease lost' '%s'", logpath[stopped]), 0);
    /* JetStream: contiguous, and once the third node published, only it did. */
    assert_true(wait_records_by(owner, c, 6, 60) > 0);
    for (int n = 0; n < NODES; n++) {
        cJSON *ev = all_events(n);
        assert_non_null(ev);
        int x = 0, y = 0;
        int last = check_contiguous(ev, c, &x, NULL, &y);
        /* The stopped node's records, then the new owner's from first_c on: nobody else's
         * after (the new owner may have run the stream before the stopped node did). */
        int seen_b = 0, first_c = 0, late_b = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, ev)
        {
            const char *who = vg_testd_jstr(e, "node");
            seen_b |= !strcmp(who, b);
            if (seen_b && !first_c && !strcmp(who, c))
                first_c = (int)vg_testd_jnum(e, "seq");
            if (first_c && strcmp(who, c))
                late_b++;
        }
        printf("node %d: records 1..%d contiguous; %s's from %d on, %d by anyone else after\n",
               n + 1, last, c, first_c, late_b);
        assert_true(first_c > 0);
        assert_int_equal(late_b, 0);
        cJSON_Delete(ev);
    }
}

static void test_unwatch(void **state)
{
    (void)state;
    assert_true(owner >= 0);
    int n = (owner + 1) % NODES;
    cJSON *r = call(n, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"cam\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    double until = vg_now_ms() + 30000;
    int left = 1;
    while (vg_now_ms() < until && left) {
        left = 0;
        for (int k = 0; k < NODES; k++)
            left += owned_by(k) != 0;
        vg_testd_sleep_ms(100);
    }
    assert_int_equal(left, 0);
    r = call(owner, "{\"v\":1,\"op\":\"streams\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    r = call(n, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"cam\"}");
    assert_false(vg_testd_is_ok(r));
    cJSON_Delete(r);
    /* Watched again (the keys were deleted: created again over their delete markers): a node
     * claims it and the records go on after the last one in JetStream. */
    cJSON *ev = all_events(n);
    assert_non_null(ev);
    int x = 0, y = 0, last = check_contiguous(ev, NULL, &x, NULL, &y);
    cJSON_Delete(ev);
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"cam\",\"url\":\"%s\",\"question\":\"What "
             "happens?\",\"fps\":2,\"window_s\":4,\"update_s\":1,\"min_window_s\":1}",
             video);
    r = call(n, req);
    assert_true(vg_testd_is_ok(r));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")));
    cJSON_Delete(r);
    owner = wait_owner(7u, 60);
    assert_true(owner >= 0);
    char o[8];
    node_name(owner, o);
    double until2 = vg_now_ms() + 60000;
    int now_last = last;
    while (vg_now_ms() < until2 && now_last < last + 3) {
        ev = all_events((owner + 2) % NODES);
        now_last = ev ? check_contiguous(ev, NULL, &x, NULL, &y) : last;
        cJSON_Delete(ev);
        vg_testd_sleep_ms(200);
    }
    printf("watched again: node %d runs it, records %d.. after %d\n", owner + 1, last + 1, last);
    assert_true(now_last >= last + 3);
}

/* Two more streams: each of the three runs on exactly one node (how they spread is printed). */
static void test_three_streams(void **state)
{
    (void)state;
    for (int k = 2; k <= 3; k++) {
        char req[1024];
        snprintf(req, sizeof req,
                 "{\"v\":1,\"op\":\"watch\",\"name\":\"cam%d\",\"url\":\"%s\",\"question\":"
                 "\"What happens?\",\"fps\":2,\"window_s\":4,\"update_s\":1,\"min_window_s\":1}",
                 k, video);
        cJSON *r = call(k - 1, req);
        assert_true(vg_testd_is_ok(r));
        cJSON_Delete(r);
    }
    int per[NODES] = {0}, sum = 0;
    double until = vg_now_ms() + 60000;
    while (vg_now_ms() < until && sum != 3) {
        sum = 0;
        for (int n = 0; n < NODES; n++)
            sum += per[n] = owned_by(n);
        vg_testd_sleep_ms(100);
    }
    assert_int_equal(sum, 3);
    vg_testd_sleep_ms(2000); /* two renewals: still one owner each */
    sum = 0;
    for (int n = 0; n < NODES; n++)
        sum += per[n] = owned_by(n);
    assert_int_equal(sum, 3);
    printf("three streams: %d / %d / %d on nodes 1 / 2 / 3\n", per[0], per[1], per[2]);
    /* `streams` on every node lists the three with their owner: as many per owner as it runs. */
    for (int n = 0; n < NODES; n++) {
        cJSON *r = call(n, "{\"v\":1,\"op\":\"streams\"}");
        assert_true(vg_testd_is_ok(r));
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(r, "streams"), *e;
        int by[NODES] = {0}, total = 0;
        cJSON_ArrayForEach(e, arr)
        {
            const char *ow = vg_testd_jstr(e, "owner");
            assert_true(ow[0] == 'n' && ow[1] >= '1' && ow[1] < '1' + NODES && !ow[2]);
            by[ow[1] - '1']++;
            total++;
            if (ow[1] - '1' != n)
                assert_string_equal(vg_testd_jstr(e, "state"), "running_elsewhere");
        }
        assert_int_equal(total, 3);
        for (int k = 0; k < NODES; k++)
            assert_int_equal(by[k], per[k]);
        cJSON_Delete(r);
    }
}

/* `events NAME --since 0` on node n: the last seq when 1..N are contiguous, else -1. */
static int contiguous_of(int n, const char *name)
{
    char req[256];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"events\",\"name\":\"%s\",\"since\":0,\"limit\":10000}", name);
    cJSON *r = call(n, req);
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(r, "events");
    int i = 0, ok = vg_testd_is_ok(r) && cJSON_IsArray(ev);
    const cJSON *e;
    cJSON_ArrayForEach(e, ev)
    {
        if ((int)vg_testd_jnum(e, "seq") != ++i)
            ok = 0;
    }
    cJSON_Delete(r);
    return ok ? i : -1;
}

/* nats-server restarted on its file store: the leases cannot be renewed while it is down (every
 * stream stops), the nodes reconnect, the three streams are claimed again and their records go on
 * after the ones stored before, with no gap or duplicate, on every node. */
static void test_broker_restart(void **state)
{
    (void)state;
    const char *names[3] = {"cam", "cam2", "cam3"};
    int before[3];
    for (int k = 0; k < 3; k++) {
        before[k] = contiguous_of(0, names[k]);
        assert_true(before[k] > 0);
    }
    vg_testd_kill_wait(&nats, SIGTERM);
    vg_testd_sleep_ms(TTL_S * 1000 + 1500); /* past the leases' trust and a tick */
    int sum = 0;
    for (int n = 0; n < NODES; n++)
        sum += owned_by(n);
    printf("broker down: %d streams still owned\n", sum);
    assert_int_equal(sum, 0);
    double t0 = vg_now_ms();
    assert_int_equal(start_nats(), 0);
    double until = vg_now_ms() + 90000;
    while (vg_now_ms() < until && sum != 3) {
        sum = 0;
        for (int n = 0; n < NODES; n++)
            sum += owned_by(n);
        vg_testd_sleep_ms(100);
    }
    assert_int_equal(sum, 3);
    printf("broker restarted: the three streams run again %.2f s later\n",
           (vg_now_ms() - t0) / 1000.0);
    for (int k = 0; k < 3; k++) {
        int last = -1;
        until = vg_now_ms() + 60000;
        while (vg_now_ms() < until && last < before[k] + 2) {
            last = contiguous_of(k, names[k]);
            vg_testd_sleep_ms(200);
        }
        assert_true(last >= before[k] + 2);
        for (int n = 0; n < NODES; n++)
            assert_true(contiguous_of(n, names[k]) >= last);
        printf("%s: records 1..%d contiguous on every node (%d before the restart)\n", names[k],
               last, before[k]);
    }
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
        cmocka_unit_test(test_watch_recorded), cmocka_unit_test(test_failover),
        cmocka_unit_test(test_fencing),        cmocka_unit_test(test_unwatch),
        cmocka_unit_test(test_three_streams),  cmocka_unit_test(test_broker_restart),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
