"""The transport-floor echo: speaks the daemon's protocol, does no work, survives bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from protocols.client import ActionSubscriber, FramePublisher
from protocols.codec import encode_frame, make_frame_header
from protocols.messages import TOPIC_ACTION, TOPIC_FRAME, Action, Status

REPO = Path(__file__).resolve().parents[2]


def _next_action(sub: ActionSubscriber) -> Action:
    while True:
        message = sub.recv(timeout=5)
        if isinstance(message, Action):
            return message


def test_echo_answers_each_frame_with_an_undecided_action_carrying_its_stamps(echo_server, zmq_context) -> None:  # type: ignore[no-untyped-def]
    sub = ActionSubscriber(echo_server.actions_endpoint, context=zmq_context)
    pub = FramePublisher(echo_server.frames_endpoint, bind=False, session="s1", context=zmq_context)
    try:
        assert isinstance(sub.recv(timeout=5), Status)  # the heartbeat proves we are connected
        assert pub.wait_for_subscriber(5)
        headers = [pub.publish(np.full((64, 64), i, dtype=np.uint16), seq=100 + i) for i in range(20)]
        actions = [_next_action(sub) for _ in range(20)]
    finally:
        pub.close(0)
        sub.close()
    assert [a.seq for a in actions] == [h.seq for h in headers]
    for header, action in zip(headers, actions, strict=True):
        assert header.t_pub_ns <= action.t_recv_ns <= action.t_done_ns <= action.t_pub_ns
        assert action.t_acq_ns == header.t_acq_ns
        assert (action.state, action.index, action.probs, action.session) == ("filling", -1, (), "s1")
    assert echo_server.echo.echoed == 20


def test_echo_counts_malformed_frames_and_keeps_going(echo_server, zmq_context) -> None:  # type: ignore[no-untyped-def]
    sub = ActionSubscriber(echo_server.actions_endpoint, topics=[TOPIC_ACTION], context=zmq_context)
    raw = zmq_context.socket(zmq.XPUB)  # one connection, so the echo sees our messages in order
    raw.linger = 0
    raw.connect(echo_server.frames_endpoint)
    try:
        assert raw.poll(5000)  # the echo's subscription arrived
        time.sleep(0.2)  # our SUB must be connected before the action is published
        raw.send_multipart([TOPIC_FRAME, b"\xc1not msgpack", b"\x00" * 8])
        raw.send_multipart([TOPIC_FRAME])
        pixels = np.zeros((8, 8), dtype=np.uint16)
        raw.send_multipart(encode_frame(make_frame_header(pixels, 7), pixels))
        assert _next_action(sub).seq == 7
    finally:
        raw.close(0)
        sub.close()
    assert echo_server.echo.rejected == 2


def test_echo_process_stops_cleanly_on_sigterm(zmq_context) -> None:  # type: ignore[no-untyped-def]
    probe = zmq_context.socket(zmq.PUB)
    actions_port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)  # a free port for the echo's PUB (tiny race, acceptable in a test)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.bench.echo", "--frames-endpoint", "tcp://127.0.0.1:*", "--frames-bind",
         "--actions-endpoint", f"tcp://127.0.0.1:{actions_port}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
    )
    sub = ActionSubscriber(f"tcp://127.0.0.1:{actions_port}", context=zmq_context)
    try:
        assert isinstance(sub.recv(timeout=20), Status)  # it is up and publishing
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        sub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
