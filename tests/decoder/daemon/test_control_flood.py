"""Issue 14, finding 4: a control flood must not starve frame intake, and must show in status.

The real daemon process, real sockets: another process floods the control socket with at
least 20,000 requests (20,000 per second for 3 s: malformed ones, unknown commands, valid pings
and status requests) while this test streams frames at 30 frames/s. The daemon must decode nearly every frame with a short
acquisition -> publish time, refuse what is over its control rate limit as busy (each refusal
echoing its request's id), count it, spend a bounded share of a core on control, and still
carry out an operator's requests from another connection.

Without the limit (the behaviour before it, reproduced with control.rate_per_s = 1e9,
control.burst = 1e9, control.batch = 4096 on 2 shared cores) the daemon read 41,000-45,000
requests in 4 s (24,000-35,000 when the flood is paced at 20,000 per second), used 0.63-0.87
of a core against 0.14-0.21 with the limit, and its own receive -> publish p99 reached 3-10 ms;
no frame was skipped on the one-thread hot path (the 48 of 84 skipped in the issue were on the
earlier event-loop intake), so what fails there is the bound on control reads, the CPU share
and the busy counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from decoder.settings import ControlSettings
from protocols.client import ActionSubscriber, ControlBusy, ControlClient, ControlError, FramePublisher
from protocols.messages import Action

FLOOD_SECONDS = 3.0
FLOOD_RATE = 20_000.0
RATE_FPS = 30.0

# The flooder: FLOOD_RATE requests per second for FLOOD_SECONDS (far more than the daemon
# carries out), one of four kinds per request, queued on its own side (sndhwm 0: the daemon reads
# at the pace it chooses); it reads the replies it gets without waiting for them.
FLOOD = r"""
import json, sys, time
import msgpack, zmq
endpoint, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = zmq.Context().socket(zmq.DEALER)
s.linger = 0
s.sndhwm = 0  # queue everything here: the daemon reads at the pace it chooses
s.rcvhwm = 0
s.connect(endpoint)
time.sleep(0.2)
kinds = [b"\xc1", {"cmd": "halt"}, {"cmd": "ping"}, {"cmd": "status"}]
sent, ids, replies, busy, busy_echoed, busy_no_id = 0, set(), 0, 0, 0, 0
start = time.monotonic()
end = start + seconds
def read():
    global replies, busy, busy_echoed, busy_no_id
    while True:
        try:
            parts = s.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        reply = msgpack.unpackb(parts[-1])
        replies += 1
        if not reply["ok"] and "busy" in (reply.get("error") or ""):
            busy += 1
            busy_echoed += reply["id"] in ids
            busy_no_id += reply["id"] == 0  # the malformed ones had no id to echo
while time.monotonic() < end:
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    for _ in range(100):
        kind = kinds[sent % len(kinds)]
        if isinstance(kind, bytes):
            payload = kind
        else:
            ids.add(sent + 1)
            payload = msgpack.packb({"v": 1, "id": sent + 1, **kind})
        s.send_multipart([b"", payload])
        sent += 1
    read()
time.sleep(0.5)
read()
s.close()
print(json.dumps({"sent": sent, "replies": replies, "busy": busy, "busy_echoed": busy_echoed, "busy_no_id": busy_no_id}))
"""


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _operator_ping(control: ControlClient) -> tuple[str, float]:
    """An operator's request during the flood: answered (ok or busy) and how fast."""
    started = time.monotonic()
    try:
        control.request("ping", timeout=2.0)
        answer = "ok"
    except ControlBusy:
        answer = "busy"
    return answer, time.monotonic() - started


def _stream_during_flood(daemon: Any, publisher: FramePublisher, subscriber: ActionSubscriber,
                         operator: ControlClient, control: str,
                         kit: Any) -> tuple[list[Action], int, dict[str, Any], float, list[tuple[str, float]]]:
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, control, str(FLOOD_SECONDS), str(FLOOD_RATE)],
                             stdout=subprocess.PIPE)
    pings: list[tuple[str, float]] = []
    cpu_before, wall_before = _cpu_s(daemon.proc.pid), time.monotonic()
    try:
        time.sleep(0.5)  # the flood is under way before the first frame
        frames = kit.frames_for(int(RATE_FPS * (FLOOD_SECONDS - 1.0)))
        start = time.monotonic()
        for i, frame in enumerate(frames):
            time.sleep(max(0.0, start + i / RATE_FPS - time.monotonic()))
            publisher.publish(frame, seq=i)
            if i % 10 == 5:
                pings.append(_operator_ping(operator))
        out, _ = flood.communicate(timeout=60)
        cpu_share = (_cpu_s(daemon.proc.pid) - cpu_before) / (time.monotonic() - wall_before)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    actions: list[Action] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            message = subscriber.recv(timeout=0.5)
        except TimeoutError:
            break
        if isinstance(message, Action):
            actions.append(message)
    return actions, len(frames), json.loads(out), cpu_share, pings


def _status(control: ControlClient) -> dict[str, Any]:
    """Status once the flood has passed (a request may still meet an empty bucket)."""
    for _ in range(50):
        try:
            return dict(control.request("status", timeout=5).data)
        except ControlError as exc:
            assert "busy" in str(exc)
            time.sleep(0.1)
    raise AssertionError("status refused as busy for 5 s after the flood ended")


def test_a_control_flood_does_not_starve_frames_of_the_daemon_process(
    daemon_process: Any, daemon_bundle: Path, kit: Any
) -> None:
    context = zmq.Context()
    publisher = FramePublisher("tcp://127.0.0.1:*", context=context)
    daemon = daemon_process(daemon_bundle, publisher.endpoint)
    subscriber = control = None
    try:
        endpoints = daemon.wait_ready()
        subscriber = ActionSubscriber(endpoints["actions"], context=context, topics=(b"action",))
        control = ControlClient(endpoints["control"], context=context)
        assert publisher.wait_for_subscriber(10)
        time.sleep(0.3)  # our subscription reaches the daemon's PUB
        started = time.monotonic()
        actions, sent, flood, cpu_share, pings = _stream_during_flood(daemon, publisher, subscriber, control,
                                                                      endpoints["control"], kit)
        status = _status(control)
        elapsed_s = time.monotonic() - started
        assert daemon.proc.poll() is None
    finally:
        for sock in (subscriber, control):
            if sock is not None:
                sock.close()
        publisher.close(0)
        context.term()
    counters = status["counters"]
    ages_ms = sorted((a.t_pub_ns - a.t_acq_ns) / 1e6 for a in actions)
    skipped = sum(a.skipped for a in actions)
    print(f"flood {flood}; frames sent {sent}, actions {len(actions)}, skipped {skipped}, "
          f"acquisition -> publish p50 {ages_ms[len(ages_ms) // 2]:.1f} ms, max {ages_ms[-1]:.1f} ms; "
          f"control requests {counters['control_requests']}, refused busy {counters.get('control_refused_busy')}; "
          f"operator pings {[(a, round(dt * 1e3, 1)) for a, dt in pings]} (answer, ms); "
          f"daemon latency {status['latency_us']}; daemon CPU {cpu_share:.2f} of a core over {elapsed_s:.1f} s")
    assert flood["sent"] >= 20_000
    # Frames first: nearly every frame decoded, none waiting long in the socket queue.
    assert len(actions) >= 0.9 * sent, (len(actions), sent)
    assert skipped <= 0.1 * sent
    assert ages_ms[-1] < 250, ages_ms[-5:]
    assert status["frames_clock"] == "shared"  # loopback: the daemon measures the same age itself
    assert status["latency_us"]["age_max_us"] < 250_000, status["latency_us"]
    # The flood was read, counted and refused as busy, each refusal echoing its request's id.
    # Control work is bounded: without the limit the event loop read every request it could
    # (0.7-0.9 of a core on a 2-core machine); with it, about batch x rate_per_s per second.
    assert cpu_share < 0.4, cpu_share
    # The reads themselves: at most batch + 1 per token the bucket held or gained (a turn that
    # empties the bucket waits for the next token); noise can only lower this count.
    limits = ControlSettings()
    most = (limits.batch + 1) * (limits.rate_per_s * elapsed_s + limits.burst)
    assert counters["control_requests"] <= most, (counters["control_requests"], most)
    assert counters["control_refused_busy"] > 0
    assert counters["control_requests"] >= counters["control_refused_busy"]
    assert flood["busy_echoed"] > 0 and flood["busy_echoed"] + flood["busy_no_id"] == flood["busy"]
    # An operator's requests during the flood are carried out, soon: one client may use only half
    # of the control budget, and ROUTER takes turns between connections, so the flood's queue is
    # not in front of them.
    assert [answer for answer, _ in pings] == ["ok"] * 6, pings
    assert max(dt for _, dt in pings) < 1.0, pings
