#!/usr/bin/env python3
"""The deployment files in deploy/ checked against the real programs (no cluster, no image build).

- deploy/kubernetes: every manifest parses; the vigild Deployment's probes, ports, mounts and
  arguments agree with the vigild.conf of its ConfigMap; that configuration passes
  `vigild --check-config` with the Deployment's own arguments; and, run for real on loopback (paths
  and ports moved into a scratch directory, cluster_url pointed at a nats-server started here with
  the ConfigMap's nats-server.conf), the node connects to JetStream and answers the probes' path with
  200 as the kubelet would ask it, and stops cleanly on SIGTERM within the grace period. The NATS
  readiness probe's path answers 200 on that server.
- deploy/container: the image's vigild.conf passes --check-config; every Debian package that provides
  a library vigild links directly is installed in the runtime stage of the Containerfile, and every
  -dev package cmake/deps.cmake requires is installed in its build stage.

usage: test_deploy.py SOURCE_DIR BUILD_DIR
"""
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

SRC, BUILD = sys.argv[1], sys.argv[2]
VIGILD = os.path.join(BUILD, "daemon", "vigild")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(port, path, timeout=5):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except OSError:
        return None, b""


def parse_conf(text):
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, v = line.partition("=")
        conf[k.strip()] = v.strip()
    return conf


def under(path, mounts):
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


# ---- Kubernetes manifests -------------------------------------------------------------------
docs = []
for f in sorted(glob.glob(os.path.join(SRC, "deploy", "kubernetes", "*.yaml"))):
    with open(f) as fh:
        docs += [(os.path.basename(f), d) for d in yaml.safe_load_all(fh) if d]
check(len(docs) >= 7, "deploy/kubernetes: %d objects parsed" % len(docs))
kinds = {}
for name, d in docs:
    kinds.setdefault((d.get("kind"), d.get("metadata", {}).get("name")), d)
kust = kinds.get(("Kustomization", None))
if check(kust is not None, "kustomization.yaml is a Kustomization"):
    for r in kust.get("resources", []):
        check(os.path.exists(os.path.join(SRC, "deploy", "kubernetes", r)), "kustomization resource " + r)

cm = kinds[("ConfigMap", "vigild-config")]
dep = kinds[("Deployment", "vigild")]
svc = kinds[("Service", "vigild")]
natscm = kinds[("ConfigMap", "nats-config")]
nats_ss = kinds[("StatefulSet", "nats")]
conf_text = cm["data"]["vigild.conf"]
conf = parse_conf(conf_text)
pod = dep["spec"]["template"]["spec"]
ctr = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
mounts = {m["name"]: m for m in ctr["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}

check(dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
      "Deployment selector matches its pod labels")
check(svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
      "Service vigild selects the Deployment's pods")
m = re.match(r"^https?://([^:/]+):(\d+)$", conf.get("http_url", ""))
check(m is not None, "vigild.conf sets http_url with a port: %s" % conf.get("http_url"))
http_port = int(m.group(2)) if m else 0
check(ports.get("http") == http_port, "containerPort 'http' (%s) is http_url's port (%d)" % (ports.get("http"), http_port))
check(m and m.group(1) not in ("127.0.0.1", "localhost", "::1") and conf.get("allow_remote") == "yes",
      "http_url listens beyond loopback with allow_remote = yes (probes come from the kubelet)")
for pr in ("startupProbe", "readinessProbe", "livenessProbe"):
    g = ctr.get(pr, {}).get("httpGet", {})
    check(g.get("path") == "/health" and g.get("port") in ("http", http_port), "%s asks GET /health on the http port" % pr)
for sp in svc["spec"]["ports"]:
    check(sp["targetPort"] in ports or sp["targetPort"] in ports.values(), "Service port %s targets a container port" % sp["name"])

args = ctr["args"]
cfg_path = args[args.index("--config") + 1]
cfg_mount = next((mm for mm in mounts.values() if cfg_path.startswith(mm["mountPath"].rstrip("/") + "/")), None)
check(cfg_mount is not None and volumes[cfg_mount["name"]].get("configMap", {}).get("name") == "vigild-config"
      and os.path.basename(cfg_path) == "vigild.conf",
      "--config %s is the ConfigMap's vigild.conf" % cfg_path)
mpaths = [mm["mountPath"] for mm in mounts.values()]
writable = [mm["mountPath"] for mm in mounts.values() if not mm.get("readOnly")]
check(under(conf["model_dir"], mpaths), "model_dir %s is on a mounted volume" % conf["model_dir"])
for root in conf.get("media_roots", "").split(":"):
    check(under(root, mpaths), "media root %s is on a mounted volume" % root)
if ctr.get("securityContext", {}).get("readOnlyRootFilesystem"):
    for k in ("runtime_dir", "state_dir"):
        check(under(conf[k], writable), "%s %s is writable under a read-only root" % (k, conf[k]))
check(pod.get("terminationGracePeriodSeconds", 30) >= 60, "the grace period leaves vigild time to hand jobs back")
nats_svc = kinds[("Service", "nats")]
cu = re.match(r"^nats://([^:,]+):(\d+)$", conf.get("cluster_url", ""))
check(cu and cu.group(1) == "nats" and int(cu.group(2)) == nats_svc["spec"]["ports"][0]["port"],
      "cluster_url %s is the nats Service" % conf.get("cluster_url"))

# The ConfigMap's configuration with the Deployment's arguments, as the container would start it.
work = tempfile.mkdtemp(prefix="vg-deploy-")
procs = []
try:
    pod_name = "vigild-7d9f8c6b5-x2x4q"
    conf_file = os.path.join(work, "vigild.conf")
    with open(conf_file, "w") as fh:
        fh.write(conf_text)
    real_args = [a.replace("$(POD_NAME)", pod_name) for a in args]
    real_args[real_args.index("--config") + 1] = conf_file
    r = subprocess.run([VIGILD] + real_args + ["--check-config"], capture_output=True, text=True, timeout=30)
    eff = parse_conf(r.stdout)
    check(r.returncode == 0, "vigild --check-config accepts the ConfigMap with the Deployment's args: %s" % r.stderr.strip())
    check(eff.get("cluster_node") == pod_name, "cluster_node is the pod's name (%s)" % eff.get("cluster_node"))

    # nats-server with the ConfigMap's configuration (ports and store moved here).
    nport, mport = free_port(), free_port()
    ntext = natscm["data"]["nats-server.conf"]
    ntext = re.sub(r"(?m)^port: \d+", "port: %d" % nport, ntext)
    ntext = re.sub(r"(?m)^http_port: \d+", "http_port: %d" % mport, ntext)
    ntext = ntext.replace("store_dir: /data", "store_dir: %s" % os.path.join(work, "js"))
    check("port: %d" % nport in ntext and "http_port: %d" % mport in ntext and work in ntext,
          "nats-server.conf has port, http_port and store_dir")
    with open(os.path.join(work, "nats-server.conf"), "w") as fh:
        fh.write("listen: 127.0.0.1:%d\n" % nport + "\n".join(l for l in ntext.splitlines() if not l.startswith("port:"))
                 .replace("http_port: %d" % mport, "http: 127.0.0.1:%d" % mport))
    nats_args = nats_ss["spec"]["template"]["spec"]["containers"][0]["args"]
    check(nats_args[:1] == ["-c"] and nats_args[1].endswith("/nats-server.conf"), "nats container reads its ConfigMap")
    nlog = open(os.path.join(work, "nats.log"), "w")
    procs.append(subprocess.Popen(["nats-server", "-c", os.path.join(work, "nats-server.conf")],
                                  stdout=nlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    nprobe = nats_ss["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    st = None
    for _ in range(100):
        st, _b = http_get(mport, nprobe)
        if st == 200:
            break
        time.sleep(0.1)
    check(st == 200, "nats readiness probe %s answers 200 (%s)" % (nprobe, st))

    # vigild as the pod runs it, with its paths and ports moved into the scratch directory.
    hport = free_port()
    moved = dict(conf)
    moved["model_dir"] = os.path.join(SRC, "models", "demo")
    moved["runtime_dir"] = os.path.join(work, "run")
    moved["state_dir"] = os.path.join(work, "state")
    moved["http_www_dir"] = os.path.join(SRC, "daemon", "www")
    moved["media_roots"] = os.path.join(work, "media")
    moved["http_url"] = "http://127.0.0.1:%d" % hport
    moved["cluster_url"] = "nats://127.0.0.1:%d" % nport
    for d in ("run", "state", "media"):
        os.makedirs(os.path.join(work, d), mode=0o700)
    check(set(moved) == set(conf), "only paths and addresses were moved")
    with open(conf_file, "w") as fh:
        fh.write("".join("%s = %s\n" % kv for kv in moved.items()))
    vlog = open(os.path.join(work, "vigild.log"), "w")
    vp = subprocess.Popen([VIGILD] + real_args, stdout=vlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(vp)
    sp = ctr["startupProbe"]
    budget = min(60, sp["periodSeconds"] * sp["failureThreshold"])
    t0, st, body = time.time(), None, b""
    while time.time() - t0 < budget and vp.poll() is None:
        st, body = http_get(hport, "/health", timeout=ctr["livenessProbe"].get("timeoutSeconds", 1))
        if st == 200:
            break
        time.sleep(0.2)
    check(st == 200 and b'"ok"' in body, "vigild answers the startup/readiness/liveness probe: %s %s" % (st, body[:80]))
    # The node joined the cluster under the pod's name (GET /v1/info through the Service's port).
    cl = {}
    for _ in range(50):
        st, body = http_get(hport, "/v1/info")
        try:
            cl = json.loads(body).get("cluster", {})
        except ValueError:
            cl = {}
        if cl.get("connection") == "connected":
            break
        time.sleep(0.1)
    check(cl.get("connection") == "connected" and cl.get("node") == pod_name,
          "the node is connected to JetStream as the pod (%s)" % cl)
    vp.send_signal(signal.SIGTERM)
    try:
        rc = vp.wait(timeout=pod["terminationGracePeriodSeconds"])
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 0, "vigild stops on SIGTERM within terminationGracePeriodSeconds (exit %s)" % rc)
    if failures:
        for f in ("vigild.log", "nats.log"):
            print("---- " + f)
            print(open(os.path.join(work, f)).read()[-4000:])
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(work, ignore_errors=True)

# ---- Container image ------------------------------------------------------------------------
cdir = os.path.join(SRC, "deploy", "container")
with open(os.path.join(cdir, "vigild.conf")) as fh:
    cconf = parse_conf(fh.read())
with tempfile.NamedTemporaryFile("w", suffix=".conf") as tf:
    tf.write("".join("%s = %s\n" % kv for kv in cconf.items()))
    tf.flush()
    r = subprocess.run([VIGILD, "--config", tf.name, "--check-config"], capture_output=True, text=True, timeout=30)
check(r.returncode == 0, "the image's vigild.conf passes --check-config: %s" % r.stderr.strip())
with open(os.path.join(cdir, "Containerfile")) as fh:
    cf = fh.read()
stages = cf.split("\nFROM ")
check(len(stages) == 3, "Containerfile has a build stage and a runtime stage")


def apt_list(stage):
    pk = set()
    for m2 in re.finditer(r"apt-get install ([^&]*)", stage.replace("\\\n", " ")):
        pk |= {w for w in m2.group(1).split() if not w.startswith("-")}
    return pk


build_pk, run_pk = apt_list(stages[1]), apt_list(stages[2])
with open(os.path.join(SRC, "cmake", "deps.cmake")) as fh:
    for m2 in re.finditer(r"vg_require\(\S+ \S+ (\S+)\)", fh.read()):
        check(m2.group(1) in build_pk, "build stage installs %s (cmake/deps.cmake)" % m2.group(1))
check("libdnnl-dev" in build_pk, "build stage installs libdnnl-dev")
needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                    subprocess.run(["readelf", "-d", VIGILD], capture_output=True, text=True).stdout)
ldc = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
base = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "ld-linux-x86-64.so.2", "libgcc_s.so.1",
        "libasan.so.8", "libubsan.so.1", "libstdc++.so.6"}
sanitized = any(lib.startswith(("libasan", "libubsan")) for lib in needed)
if sanitized:
    # Sanitizer builds link more (e.g. libcap through libwebsockets' flags); the image is a release
    # build, whose libraries the release run of this test checks.
    print("skip the runtime-package check: vigild is a sanitizer build")
    needed = []
for lib in needed:
    if lib in base:
        continue
    m2 = re.search(r"^\s+%s \(.*x86-64.*\) => (\S+)$" % re.escape(lib), ldc, re.M)
    if not check(m2 is not None, "%s is a system library" % lib):
        continue
    pkg = "?"
    real = os.path.realpath(m2.group(1))
    # merged /usr: dpkg knows a library under the path its package installed it to
    for path in (real, re.sub(r"^/usr/lib/", "/lib/", real), m2.group(1)):
        r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if r.returncode == 0:
            pkg = r.stdout.split(":")[0]
            break
    check(pkg in run_pk, "runtime stage installs %s (for %s)" % (pkg, lib))
m3 = re.search(r'ENTRYPOINT \["([^"]+)", "--config", "([^"]+)"\]', stages[2])
check(m3 and m3.group(1) == "/usr/local/sbin/vigild" and m3.group(2) == "/etc/vigil/vigild.conf"
      and "COPY deploy/container/vigild.conf /etc/vigil/vigild.conf" in stages[2],
      "ENTRYPOINT runs the installed vigild on the copied configuration")
with open(os.path.join(SRC, "daemon", "CMakeLists.txt")) as fh:
    check("DESTINATION sbin" in fh.read(), "vigild installs to sbin")

print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
