#!/usr/bin/python3
"""A real RTSP server for test_streams_rtsp: GStreamer's RTSP server library (gst-rtsp-server,
Debian's gir1.2-gst-rtsp-server-1.0) serving a live H.264 test pattern (160x120, 10 fps, a
keyframe every second) at rtsp://127.0.0.1:PORT/PATH.

  rtsp_server.py PORT PATH [--transport tcp|udp|any] [--user NAME --password SECRET]
  rtsp_server.py --check      exits 0 when everything it needs is installed, else 77

--transport limits the lower transports the server accepts (a client asking for another one gets
461 Unsupported Transport); --user/--password require HTTP Basic authentication (RTSPAuth).
Prints "ready" on stdout once it listens; runs until killed. Exits 77 when GStreamer's RTSP server
or the elements it needs are missing (the test then skips).

GStreamer's RTSP server 1.22 (Debian 12) can abort on its own assertion
(gst_rtsp_media_get_rates: "assertion failed: (FALSE)") when a client's PLAY races the first data of
the shared live media, which a loaded machine (the sanitizer runs) makes likely. The server therefore
runs in a child process that is started again on the same port when it dies that way, as a camera
comes back after a crash (the test's client reconnects as it would to the camera); each restart is
logged on stderr. The child dies with this process (PR_SET_PDEATHSIG), and a new server retries
its port for a few seconds while the previous one's socket closes."""
import argparse
import os
import signal
import subprocess
import sys
import time

CHILD = "--serve"  # first argument of the child process that runs the server itself
RESTARTS = 10  # aborts survived at most
PORT_WAIT_S = 5.0  # how long a new server retries a port still held by a previous one


def load_gst():
    """GStreamer's modules (the child and --check only), or exit 77 when they are missing."""
    global GLib, Gst, GstRtsp, GstRtspServer
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtsp", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
    except (ImportError, ValueError) as e:
        print(f"GStreamer's RTSP server is not installed: {e}", file=sys.stderr)
        sys.exit(77)


ELEMENTS = ("videotestsrc", "x264enc", "rtph264pay")


def die_with_parent():
    """In the child, before exec: SIGKILL when the parent goes (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def supervise(args):
    """Runs the server in a child, again after each abort (SIGABRT), up to RESTARTS times; returns
    the child's exit status otherwise. SIGTERM or SIGINT end the child and this process."""
    child = None

    def stop(signum, frame):
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for attempt in range(RESTARTS + 1):
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), CHILD] + args,
            preexec_fn=die_with_parent,
        )
        rc = child.wait()
        if rc != -signal.SIGABRT:
            return rc if rc >= 0 else 128 - rc
        print(
            f"rtsp_server.py: GStreamer's RTSP server aborted; restarting it ({attempt + 1})",
            file=sys.stderr,
            flush=True,
        )
    return 1


def main():
    if sys.argv[1:2] != [CHILD] and sys.argv[1:] != ["--check"]:
        sys.exit(supervise(sys.argv[1:]))
    if sys.argv[1:2] == [CHILD]:
        del sys.argv[1]
    load_gst()
    if sys.argv[1:] == ["--check"]:  # is everything there? (0, else 77 above or below)
        Gst.init(None)
        missing = [e for e in ELEMENTS if Gst.ElementFactory.find(e) is None]
        if missing:
            print(f"GStreamer elements missing: {missing}", file=sys.stderr)
            sys.exit(77)
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("--transport", choices=("tcp", "udp", "any"), default="any")
    ap.add_argument("--user")
    ap.add_argument("--password")
    a = ap.parse_args()
    Gst.init(None)
    for el in ELEMENTS:
        if Gst.ElementFactory.find(el) is None:
            print(f"GStreamer element {el} is missing", file=sys.stderr)
            sys.exit(77)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( videotestsrc is-live=true pattern=ball ! "
        "video/x-raw,width=160,height=120,framerate=10/1 ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    lt = GstRtsp.RTSPLowerTrans
    factory.set_protocols(
        {"tcp": lt.TCP, "udp": lt.UDP, "any": lt.TCP | lt.UDP}[a.transport]
    )
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password or ""), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role_from_structure(
            Gst.Structure.new_from_string(
                "viewer, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(perms)
    server.get_mount_points().add_factory("/" + a.path.lstrip("/"), factory)
    deadline = time.monotonic() + PORT_WAIT_S
    while server.attach(None) == 0:  # the previous server's socket may not be closed yet
        if time.monotonic() > deadline:
            print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
