#!/usr/bin/python3
"""Records every message a real MQTT client (paho-mqtt) receives, one JSON line each.

Usage: mqtt_capture.py PORT OUTFILE

Subscribes to '#' at QoS 1 with a persistent session (clean_session false, a fixed client id), so
messages published while it is disconnected (a broker restarted with its persistence file) are
delivered when it reconnects; reconnects by itself. Each line: {"t": topic, "r": retain flag,
"q": qos, "p": the payload as text (UTF-8, or "b64:" + base64 when it is not text)}. Once
subscribed it publishes test/capture-ready so the test knows the subscription is live.
"""
import base64
import json
import sys

import paho.mqtt.client as mqtt

port, path = int(sys.argv[1]), sys.argv[2]
out = open(path, "a", buffering=1)


def on_connect(c, userdata, flags, rc):
    if rc != 0:
        return
    if not flags.get("session present"):
        c.subscribe("#", qos=1)
    else:
        c.publish("test/capture-ready", "again", qos=1)


def on_subscribe(c, userdata, mid, granted):
    c.publish("test/capture-ready", "1", qos=1)


def on_message(c, userdata, m):
    try:
        p = m.payload.decode("utf-8")
    except UnicodeDecodeError:
        p = "b64:" + base64.b64encode(m.payload).decode()
    out.write(json.dumps({"t": m.topic, "r": int(m.retain), "q": m.qos, "p": p}) + "\n")


c = mqtt.Client(client_id="vg-test-capture", clean_session=False, protocol=mqtt.MQTTv311)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.reconnect_delay_set(min_delay=1, max_delay=1)
c.connect("127.0.0.1", port, keepalive=10)
c.loop_forever(retry_first_connection=True)
