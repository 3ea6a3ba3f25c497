"""The example client prints what a real publisher sends."""

from __future__ import annotations

import argparse
import json
import threading
import time

import zmq

from protocols import codec
from protocols.messages import Action, Event
from tools import print_actions


def test_print_actions_prints_actions_and_events_as_json(zmq_context, bind_random, capsys, monkeypatch):
    pub = zmq_context.socket(zmq.PUB)
    endpoint = bind_random(pub)
    monkeypatch.setattr(zmq.Context, "instance", staticmethod(lambda: zmq_context))
    action = Action(seq=3, t_acq_ns=1, t_recv_ns=2, t_done_ns=3, t_pub_ns=4, state="decoding",
                    action="resting", index=2, probs=(0.1, 0.9), confidence=0.9, model_id="m")
    event = Event(kind="onset", action="resting", index=2, seq=3, t_acq_ns=1, t_pub_ns=5, confidence=0.9, model_id="m")
    stop = threading.Event()

    def keep_publishing():  # until the subscriber has joined and read its two messages
        while not stop.is_set():
            pub.send_multipart(codec.encode(action))
            pub.send_multipart(codec.encode(event))
            time.sleep(0.02)

    thread = threading.Thread(target=keep_publishing, daemon=True)
    thread.start()
    try:
        args = argparse.Namespace(endpoint=endpoint, events_only=False, json=True, count=2, timeout=5.0)
        assert print_actions.run(args) == 0
    finally:
        stop.set()
        thread.join(5)
        pub.close(linger=0)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["type"] for line in lines} <= {"action", "event"}
    assert any(line["type"] == "action" and line["action"] == "resting" and line["seq"] == 3 for line in lines)


def test_format_message_is_readable():
    filling = Action(seq=1, t_acq_ns=1, t_recv_ns=2, t_done_ns=3, t_pub_ns=4, state="filling",
                     action="", index=-1, probs=(), confidence=0.0, model_id="m")
    assert "filling" in print_actions.format_message(filling)
