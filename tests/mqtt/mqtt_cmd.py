#!/usr/bin/python3
"""Sends one vigil command over MQTT 5 with a response topic and correlation data (paho-mqtt) and
prints the reply as {"corr": correlation data, "reply": the JSON reply}.

Usage: mqtt_cmd.py PORT TOPIC PAYLOAD [TIMEOUT_S]
Exits 0 with the reply printed, 1 when none arrived in time.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port, topic, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3]
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
done = threading.Event()
resp = "test/resp/%d" % port


def on_connect(c, userdata, flags, rc, props=None):
    c.subscribe(resp, qos=1)


def on_subscribe(c, userdata, mid, rc, props=None):
    p = Properties(PacketTypes.PUBLISH)
    p.ResponseTopic = resp
    p.CorrelationData = b"corr-42"
    c.publish(topic, payload, qos=1, properties=p)


def on_message(c, userdata, m):
    cd = getattr(m.properties, "CorrelationData", None)
    print(json.dumps({"corr": cd.decode() if cd else None, "reply": json.loads(m.payload)}))
    done.set()


c = mqtt.Client(client_id="vg-test-cmd-%d" % port, protocol=mqtt.MQTTv5)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_start()
ok = done.wait(timeout)
c.disconnect()
c.loop_stop()
sys.exit(0 if ok else 1)
