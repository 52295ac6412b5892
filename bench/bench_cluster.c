/*
 * bench_cluster.c: clip jobs per minute in cluster mode (daemon/cluster.c) with 1, 2 and 3 vigild
 * nodes on one NATS JetStream server (nats-server -js, file store, loopback), the single-node
 * daemon without cluster_url measured in the same run as the peer, and the failover time (SIGKILL
 * of the node running a job until another node runs it). Not a test.
 *
 * Model: the random test checkpoint of tests/cluster (6 layers, width 512; greedy decoding never
 * meets a stop id, so every job generates exactly --tokens tokens). J jobs are asked at once on
 * node 1; the time runs from the first ask to the last result readable on node 1. Every node has
 * its own inference thread: with more nodes than cores they share the CPU, so the ceiling on this
 * machine is the number of cores (printed), not the number of nodes.
 *
 * Streams (the same run, after the jobs): with 1, 2 and 3 nodes of the random tiny model (the
 * tests' one), max_streams M per node and cluster_lease_ttl_s T, S streams of a 10-minute 64x64
 * file read at its own rate are watched on node 1 at once: how many run and where once every node
 * claimed what it can (min(S, nodes x M)), the time from the first watch until then, and the
 * records the cluster published to JetStream per second over 5 s. With 3 nodes, S - 3 streams are
 * then unwatched and the owner of one of the others is killed (SIGKILL): the failover time runs
 * until another node publishes that stream's next record (read with `events` on a survivor).
 *
 * usage: bench_cluster [--jobs 12] [--tokens 200] [--ack-wait 2] [--streams 6] [--max-streams 2]
 *                      [--lease-ttl 3]
 * Run from the build tree (it uses BIN/daemon/vigild, BIN/tools/vigil-model).
 */
#define _GNU_SOURCE
#include "common.h"
#include "../tests/support/vg_testd.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_NODES 3

static char dir[256], model[320], tiny[320], media[320], conf[320], video[400], cam[400];
static char rt[MAX_NODES][320], st[MAX_NODES][320], url[MAX_NODES][400], logpath[MAX_NODES][400];
static pid_t node_pid[MAX_NODES] = {-1, -1, -1}, nats = -1;
static int port, n_jobs = 12, tokens = 200;
static double ack_wait = 2;
static int n_streams = 6, max_streams = 2, lease_ttl = 3;

static int start_nats(int round)
{
    char sd[400], log[400];
    port = 12001 + (int)(getpid() % 4000) * 2;
    snprintf(sd, sizeof sd, "%s/js%d", dir, round);
    snprintf(log, sizeof log, "%s/nats.log", dir);
    nats = vg_testd_nats_start(sd, port, log);
    return nats > 0 ? 0 : -1;
}

static void stop_nats(void)
{
    vg_testd_kill_wait(&nats, SIGTERM);
}

/* cluster: 0 = the single-node daemon, 1 = cluster jobs, 2 = cluster streams (tiny model, leases
 * of lease_ttl, max_streams). */
static int start_node(int n, int round, int cluster)
{
    char cu[128], name[64], ack[64], th[64], ms[64], ttl[64];
    /* The cores split between the nodes of this machine (each node's engine would otherwise use
     * them all and they would oversubscribe the CPU). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(th, sizeof th, "inference_threads=%ld", VG_MAX(1, cores / VG_MAX(round, 1)));
    snprintf(rt[n], sizeof rt[n], "%s/r%d-run%d", dir, round, n + 1);
    snprintf(st[n], sizeof st[n], "%s/r%d-state%d", dir, round, n + 1);
    snprintf(url[n], sizeof url[n], "ipc://%s/vigil.cmd", rt[n]);
    snprintf(logpath[n], sizeof logpath[n], "%s/vigild%d.log", dir, n + 1);
    snprintf(cu, sizeof cu, "cluster_url=nats://127.0.0.1:%d", port);
    snprintf(name, sizeof name, "cluster_node=n%d", n + 1);
    snprintf(ack, sizeof ack, "cluster_ack_wait_s=%g", ack_wait);
    snprintf(ms, sizeof ms, "max_streams=%d", max_streams);
    snprintf(ttl, sizeof ttl, "cluster_lease_ttl_s=%d", lease_ttl);
    const char *sets[] = {cu, name, ack, th, NULL};
    const char *none[] = {th, NULL};
    const char *ssets[] = {cu,
                           name,
                           ms,
                           ttl,
                           "stream_max_new_tokens=8",
                           "stream_stall_timeout_s=5",
                           "inference_threads=1",
                           NULL};
    vg_testd_spec spec = {.log = logpath[n],
                          .conf = conf,
                          .model = cluster == 2 ? tiny : model,
                          .rt = rt[n],
                          .st = st[n],
                          .media = media,
                          .cmd_url = url[n],
                          .log_level = "notice",
                          .sets = cluster == 2 ? ssets
                                  : cluster    ? sets
                                               : none,
                          .call_timeout_ms = 10000};
    return vg_testd_start(&spec, &node_pid[n]);
}

static cJSON *call(int n, const char *req)
{
    return vg_testd_call(url[n], req, strlen(req), 10000);
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

static int ask(int n, const char *id, int toks)
{
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"%s\",\"video\":\"%s\",\"question\":\"What "
             "happens?\",\"generation\":{\"greedy\":true,\"max_new_tokens\":%d}}",
             id, video, toks);
    cJSON *r = call(n, req);
    int ok = vg_testd_is_ok(r);
    cJSON_Delete(r);
    return ok ? 0 : -1;
}

static int is_final(const char *s)
{
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

/* Asks n_jobs on node 0 and waits until all are final there; jobs per minute, or -1. */
static double run_jobs(int round, int *spread, int n_nodes)
{
    double t0 = vg_now_ms();
    char id[64];
    for (int i = 0; i < n_jobs; i++) {
        snprintf(id, sizeof id, "b%d-%d", round, i);
        if (ask(0, id, tokens) < 0)
            return -1;
    }
    for (int i = 0; i < n_jobs; i++) {
        snprintf(id, sizeof id, "b%d-%d", round, i);
        for (;;) {
            cJSON *j = get_job(0, id);
            int fin = j && is_final(vg_testd_jstr(j, "state"));
            if (fin) {
                if (strcmp(vg_testd_jstr(j, "state"), "completed")) {
                    cJSON_Delete(j);
                    return -1;
                }
                const char *node = vg_testd_jstr(j, "node");
                if (node[0] == 'n' && node[1] >= '1' && node[1] < '1' + n_nodes)
                    spread[node[1] - '1']++;
                cJSON_Delete(j);
                break;
            }
            cJSON_Delete(j);
            vg_testd_sleep_ms(20);
        }
    }
    return n_jobs * 60000.0 / (vg_now_ms() - t0);
}

static void stop_nodes(void)
{
    for (int n = 0; n < MAX_NODES; n++)
        if (node_pid[n] > 0)
            vg_testd_stop(&node_pid[n], 3000, NULL);
}

static int runner(int n_nodes)
{
    for (int n = 0; n < n_nodes; n++) {
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

/* With 2 nodes: SIGKILL of the runner of a long job; seconds until the other node runs it. */
static double failover(void)
{
    if (ask(0, "fo-1", 4000) < 0)
        return -1;
    int k = -1;
    for (int i = 0; i < 3000 && k < 0; i++) {
        k = runner(2);
        if (k < 0)
            vg_testd_sleep_ms(10);
    }
    if (k < 0)
        return -1;
    vg_testd_sleep_ms(300);
    kill(node_pid[k], SIGKILL);
    waitpid(node_pid[k], NULL, 0);
    node_pid[k] = -1;
    double t0 = vg_now_ms();
    int other = 1 - k;
    for (int i = 0; i < 60000 / 10; i++) {
        if (runner(2) == other) {
            double s = (vg_now_ms() - t0) / 1000.0;
            cJSON_Delete(call(other, "{\"v\":1,\"op\":\"cancel\",\"job\":\"fo-1\"}"));
            return s;
        }
        vg_testd_sleep_ms(10);
    }
    return -1;
}

/* info.cluster.streams of node n: owned (-1 when it does not answer); *published: records it
 * published to JetStream; lease: the first stream it holds (may be NULL). */
static int streams_info(int n, double *published, char *lease, size_t cap)
{
    if (lease)
        lease[0] = 0;
    if (node_pid[n] <= 0)
        return -1;
    cJSON *r = call(n, "{\"v\":1,\"op\":\"info\"}");
    const cJSON *so =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "cluster"), "streams");
    int v = so ? (int)vg_testd_jnum(so, "owned") : -1;
    if (published)
        *published = so ? vg_testd_jnum(so, "records_published") : 0;
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(so, "leases");
    if (lease && cJSON_GetArraySize(la) > 0)
        snprintf(lease, cap, "%s", vg_testd_jstr(cJSON_GetArrayItem(la, 0), "stream"));
    cJSON_Delete(r);
    return v;
}

/* Sum of streams owned by the running nodes (per[] filled), waiting up to timeout_s for want. */
static int wait_owned(int n_nodes, int want, int *per, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    int sum = 0;
    do {
        sum = 0;
        for (int n = 0; n < n_nodes; n++)
            sum += per[n] = VG_MAX(0, streams_info(n, NULL, NULL, 0));
        if (sum == want)
            break;
        vg_testd_sleep_ms(50);
    } while (vg_now_ms() < until);
    return sum;
}

/* The last record of stream name that `events` on node n returns after since: its seq, and its
 * node in by (cap bytes); 0 when none. */
static long last_event(int n, const char *name, long since, char *by, size_t cap)
{
    char req[256];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"events\",\"name\":\"%s\",\"since\":%ld,\"limit\":10000}", name,
             since);
    cJSON *r = call(n, req);
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(r, "events");
    long seq = 0;
    by[0] = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ev)
    {
        long s = (long)vg_testd_jnum(e, "seq");
        if (s > seq) {
            seq = s;
            snprintf(by, cap, "%s", vg_testd_jstr(e, "node"));
        }
    }
    cJSON_Delete(r);
    return seq;
}

/* With 3 nodes running 3 streams: SIGKILL of the owner of one; seconds until another node
 * published its next record, or -1. */
static double stream_failover(void)
{
    char name[128] = "", by[64];
    int k = -1;
    for (int n = 0; n < 3 && k < 0; n++)
        if (streams_info(n, NULL, name, sizeof name) > 0 && name[0])
            k = n;
    if (k < 0)
        return -1;
    int other = (k + 1) % 3;
    /* The record the owner published last (JetStream, read on another node). */
    long last = 0;
    for (int i = 0; i < 200 && last == 0; i++) {
        last = last_event(other, name, 0, by, sizeof by);
        if (!last)
            vg_testd_sleep_ms(50);
    }
    if (!last)
        return -1;
    kill(node_pid[k], SIGKILL);
    waitpid(node_pid[k], NULL, 0);
    node_pid[k] = -1;
    double t0 = vg_now_ms();
    char dead[16];
    snprintf(dead, sizeof dead, "n%d", k + 1);
    for (;;) {
        long s = last_event(other, name, last, by, sizeof by);
        if (s > last && strcmp(by, dead))
            return (vg_now_ms() - t0) / 1000.0;
        if (s > last)
            last = s; /* the dead node's records that reached JetStream just before */
        if (vg_now_ms() - t0 > 120000)
            return -1;
        vg_testd_sleep_ms(20);
    }
}

/* One streams round: n_nodes nodes, n_streams watched on node 1. 0 or -1. */
static int run_streams(int round, int n_nodes)
{
    char req[1024];
    double t0 = vg_now_ms();
    for (int i = 0; i < n_streams; i++) {
        snprintf(req, sizeof req,
                 "{\"v\":1,\"op\":\"watch\",\"name\":\"cam%d\",\"url\":\"%s\",\"question\":"
                 "\"What happens?\",\"fps\":2,\"window_s\":4,\"update_s\":1,\"min_window_s\":1}",
                 i + 1, cam);
        cJSON *r = call(0, req);
        int ok = vg_testd_is_ok(r);
        cJSON_Delete(r);
        if (!ok)
            return -1;
    }
    int want = VG_MIN(n_streams, n_nodes * max_streams), per[MAX_NODES] = {0};
    int sum = wait_owned(n_nodes, want, per, 120);
    double claim = (vg_now_ms() - t0) / 1000.0;
    if (sum != want)
        return -1;
    double p0 = 0, p1 = 0, v;
    for (int n = 0; n < n_nodes; n++) {
        streams_info(n, &v, NULL, 0);
        p0 += v;
    }
    vg_testd_sleep_ms(5000);
    int held = 0;
    for (int n = 0; n < n_nodes; n++) {
        held += VG_MAX(0, streams_info(n, &v, NULL, 0));
        p1 += v;
    }
    char share[64] = "";
    for (int n = 0; n < n_nodes; n++)
        snprintf(share + strlen(share), sizeof share - strlen(share), "%s%d", n ? " / " : "",
                 per[n]);
    printf("| cluster, %d node%s | %d | %d (%d after 5 s) | %s | %.2f s | %.1f |\n", n_nodes,
           n_nodes > 1 ? "s" : "", n_streams, sum, held, share, claim, (p1 - p0) / 5.0);
    fflush(stdout);
    (void)round;
    if (n_nodes == 3) {
        for (int i = 3; i < n_streams; i++) {
            snprintf(req, sizeof req, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"cam%d\"}", i + 1);
            cJSON_Delete(call(0, req));
        }
        if (wait_owned(3, VG_MIN(3, n_streams), per, 60) != VG_MIN(3, n_streams))
            return -1;
        vg_testd_sleep_ms(2000);
        double fo = stream_failover();
        printf("| stream failover (3 nodes running %d streams, lease TTL %d s): SIGKILL of an "
               "owner until another node publishes the stream's next record | %.2f s | | | | |\n",
               VG_MIN(3, n_streams), lease_ttl, fo);
        if (fo < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--jobs"))
            n_jobs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens"))
            tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ack-wait"))
            ack_wait = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--streams"))
            n_streams = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-streams"))
            max_streams = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--lease-ttl"))
            lease_ttl = atoi(argv[i + 1]);
    }
    if (n_jobs < 1 || tokens < 1 || ack_wait < 1 || n_streams < 1 || max_streams < 1 ||
        lease_ttl < 1 || vg_testd_need_tools() < 0) {
        fprintf(stderr, "usage: bench_cluster [--jobs N] [--tokens N] [--ack-wait S] [--streams N] "
                        "[--max-streams N] [--lease-ttl S] (needs vigild, vigil-model, ffmpeg and "
                        "nats-server)\n");
        return 2;
    }
    char r0[320], s0[320], u0[400];
    if (vg_testd_tmpdir("/tmp/vg-bench-cluster-XXXXXX", dir, model, media, r0, s0, u0) < 0)
        return 1;
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    vg_testd_write_file(conf, "");
    snprintf(video, sizeof video, "%s/clip.mp4", media);
    snprintf(cam, sizeof cam, "%s/cam.mp4", media);
    snprintf(tiny, sizeof tiny, "%s/model-small", dir); /* the tests' tiny model */
    char small[400];
    snprintf(small, sizeof small, "%s/model-small", dir);
    if (vg_testd_make_model(dir, small) != 0 ||
        vg_testd_sh(NULL, 0,
                    "python3 -c \"import json,sys; c=json.load(open('%s/config-small.json')); "
                    "t=c['text_config']; t.update(hidden_size=512, intermediate_size=1536, "
                    "num_hidden_layers=6, num_attention_heads=16, num_key_value_heads=4); "
                    "c['vision_config']['out_hidden_size']=512; "
                    "json.dump(c, open('%s/config-big.json','w'))\" && "
                    "'%s/tools/vigil-model' random --config '%s/config-big.json' --out '%s' "
                    ">/dev/null 2>&1",
                    dir, dir, VG_BINARY_DIR, dir, model) != 0 ||
        vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=64x64:rate=4 -t 4 "
                    "-pix_fmt yuv420p '%s'",
                    video) != 0 ||
        vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=64x64:rate=4 -t 600 "
                    "-pix_fmt yuv420p -g 8 '%s'",
                    cam) != 0) {
        fprintf(stderr, "cannot make the model or the clip\n");
        return 1;
    }
    char cpu[256] = "";
    vg_testd_sh(cpu, sizeof cpu,
                "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' | tr -d '\\n'");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char load[128] = "";
    vg_testd_sh(load, sizeof load, "cut -d' ' -f1-3 /proc/loadavg | tr -d '\n'");
    printf("CPU: %s, %ld cores online, load average %s at start; %d jobs of %d tokens each, asked "
           "on node 1\n\n",
           cpu, cores, load, n_jobs, tokens);
    printf("| setup | jobs/min | vs single node | jobs run per node |\n|---|---|---|---|\n");
    double single = -1;
    int rc = 0;
    for (int round = 0; round <= MAX_NODES && !rc; round++) {
        int n_nodes = round ? round : 1, spread[MAX_NODES] = {0};
        if (round && start_nats(round) < 0) {
            fprintf(stderr, "nats-server did not start\n");
            rc = 1;
            break;
        }
        for (int n = 0; n < n_nodes && !rc; n++)
            if (start_node(n, round, round > 0) != 0) {
                fprintf(stderr, "vigild did not start (%s)\n", logpath[n]);
                rc = 1;
            }
        double jpm = rc ? -1 : run_jobs(round, spread, n_nodes);
        if (jpm < 0)
            rc = 1;
        if (!round)
            single = jpm;
        char label[64], share[64] = "";
        snprintf(label, sizeof label, round ? "cluster, %d node%s" : "single node (no cluster_url)",
                 n_nodes, n_nodes > 1 ? "s" : "");
        for (int n = 0; round && n < n_nodes; n++)
            snprintf(share + strlen(share), sizeof share - strlen(share), "%s%d", n ? " / " : "",
                     spread[n]);
        printf("| %s | %.1f | %.2f | %s |\n", label, jpm, single > 0 ? jpm / single : 0,
               round ? share : "-");
        fflush(stdout);
        if (round == 2 && !rc) {
            double fo = failover();
            printf("| failover (2 nodes, ack wait %g s): SIGKILL to running elsewhere | %.2f s | "
                   "| |\n",
                   ack_wait, fo);
        }
        stop_nodes();
        stop_nats();
    }
    if (!rc)
        printf("\nStreams: %d watched on node 1, max_streams %d per node, tiny model, a 64x64 file "
               "read at its own rate (2 frames/s sampled)\n\n| setup | watched | running | per "
               "node | claim time | records/s to JetStream |\n|---|---|---|---|---|---|\n",
               n_streams, max_streams);
    for (int k = 1; k <= MAX_NODES && !rc; k++) {
        int round = MAX_NODES + k;
        if (start_nats(round) < 0) {
            fprintf(stderr, "nats-server did not start\n");
            rc = 1;
            break;
        }
        for (int n = 0; n < k && !rc; n++)
            if (start_node(n, round, 2) != 0) {
                fprintf(stderr, "vigild did not start (%s)\n", logpath[n]);
                rc = 1;
            }
        if (!rc && run_streams(round, k) < 0) {
            fprintf(stderr, "the streams round with %d nodes failed (%s)\n", k, dir);
            rc = 1;
        }
        stop_nodes();
        stop_nats();
    }
    vg_testd_sh(load, sizeof load, "cut -d' ' -f1-3 /proc/loadavg | tr -d '\n'");
    printf("\nload average at the end: %s\n", load);
    if (!getenv("VG_KEEP_TMP") && !rc)
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}
