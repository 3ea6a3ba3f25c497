"""The MATLAB/Octave clients (tools/matlab) run in real GNU Octave: frames they publish are
decoded by the Python codec and by the real daemon, and the messages they decode are compared
with what Python sends or reads. Every test runs twice, once per ZeroMQ binding of
tools/matlab/actionloop_zmq.m: octave-zeromq (Octave's; skipped, with the reason, where Octave
or the package is missing; .ci/run installs both) and JeroMQ through the Java interface (the one
MATLAB uses; skipped unless Octave has a JVM and a JeroMQ jar, e.g. Debian's libjeromq-java, or
ACTIONLOOP_JEROMQ_JAR). MATLAB itself cannot run here, nor ScanImage: its user function is
called with a struct laid out as ScanImage's lastStripeData."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from protocols.codec import decode_frame, encode
from protocols.messages import Action, Event, Status

MATLAB_DIR = Path(__file__).resolve().parents[2] / "tools" / "matlab"
OCTAVE = shutil.which("octave-cli") or shutil.which("octave")
_FLAGS = ("--quiet", "--norc", "--no-history", "--no-window-system")


@functools.cache
def _octave_missing() -> str:
    """Why the Octave tests cannot run here ("" when they can)."""
    if OCTAVE is None:
        return "octave is not installed (Debian: apt-get install octave octave-zeromq)"
    probe = subprocess.run([OCTAVE, *_FLAGS, "--eval", "pkg load zeromq; disp(zmq_version())"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"octave's zeromq package is missing (Debian: apt-get install octave-zeromq): {probe.stderr.strip()}"
    return ""


JEROMQ_JAR = os.environ.get("ACTIONLOOP_JEROMQ_JAR", "/usr/share/java/jeromq.jar")


@functools.cache
def _jeromq_missing() -> str:
    """Why the JeroMQ variant cannot run here ("" when it can)."""
    if not Path(JEROMQ_JAR).is_file():
        return f"no JeroMQ jar at {JEROMQ_JAR} (Debian: apt-get install libjeromq-java; or set ACTIONLOOP_JEROMQ_JAR)"
    probe = subprocess.run([OCTAVE or "octave-cli", *_FLAGS, "--eval", "disp(usejava('jvm'))"],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "1":
        return "octave has no Java VM (Debian: apt-get install default-jre-headless)"
    return ""


pytestmark = pytest.mark.skipif(bool(_octave_missing()), reason=_octave_missing() or "octave present")


@pytest.fixture(autouse=True, params=["octave-zeromq", "jeromq"])
def zmq_binding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ZeroMQ binding the Octave processes of a test use (ACTIONLOOP_ZMQ, read by actionloop_zmq.m)."""
    if request.param == "jeromq" and _jeromq_missing():
        pytest.skip(_jeromq_missing())
    monkeypatch.setenv("ACTIONLOOP_ZMQ", request.param)
    return str(request.param)


def octave(script: str) -> subprocess.Popen[str]:
    """An Octave process running ``script`` with tools/matlab (and JeroMQ, when chosen) on its path."""
    assert OCTAVE is not None
    java = f"javaaddpath('{JEROMQ_JAR}'); " if os.environ.get("ACTIONLOOP_ZMQ") == "jeromq" else ""
    quiet_exit = "crash_dumps_octave_core(false); sigterm_dumps_octave_core(false); "  # no octave-workspace file
    return subprocess.Popen([OCTAVE, *_FLAGS, "--eval", f"{quiet_exit}{java}addpath('{MATLAB_DIR}'); {script}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)


def run_octave(script: str, timeout: float = 60) -> str:
    process = octave(script)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, f"octave failed ({process.returncode}):\n{err}\n{out}"
    return out


def read_until(process: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The first line ``process`` prints that starts with ``prefix`` (other lines are skipped)."""
    assert process.stdout is not None and process.stderr is not None
    stdout = process.stdout
    result: list[str] = []

    def read() -> None:
        for line in stdout:
            if line.startswith(prefix):
                result.append(line.rstrip("\n"))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        if process.poll() is None:
            process.kill()
        raise AssertionError(f"octave printed no {prefix!r} line within {timeout} s; stderr:\n{process.stderr.read()}")
    return result[0]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Octave processes of a test, killed if the test ends without them having exited."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- msgpack and the frame message, no daemon ---------------------------------------------------------------------

def test_octave_frames_decode_in_python(zmq_context: zmq.Context, processes: list[subprocess.Popen[str]]) -> None:
    """Octave connects to a bound SUB (the daemon's frames_mode = "bind"), waits for it on its XPUB
    and publishes frames of every accepted pixel class; the daemon's own frame decoder reads them
    and the pixels are the ones Octave meant (row-major, the importers' type rule)."""
    sub = zmq_context.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"frame")
    sub.bind("tcp://127.0.0.1:*")
    endpoint = sub.getsockopt_string(zmq.LAST_ENDPOINT)
    script = f"""
        pub = actionloop_publisher('{endpoint}', 'bind', false, 'session', 'rig-é');
        [ok, pub] = actionloop_wait_subscriber(pub, 20);
        assert(ok, 'no subscriber');
        m = reshape(0:11, 3, 4);  % 3 x 4, m(r, c) = (r - 1) + 3 (c - 1)
        pub = actionloop_publish(pub, uint16(m));
        pub = actionloop_publish(pub, uint8(m), 'channel', 2, 'plane', 7);
        pub = actionloop_publish(pub, int16(m) - 5, 'seq', uint64(18446744073709551615), 't_acq_ns', 123);
        pub = actionloop_publish(pub, single(m) / 4, 'seq', 5);
        pub = actionloop_publish(pub, m', 'layout', 'rowmajor');  % 4 x 3 in memory = row-major 3 x 4
        actionloop_close(pub);
    """
    frames = []
    try:
        process = octave(script)
        processes.append(process)
        deadline = time.monotonic() + 60
        # a bound SUB takes in a new connection (and sends it its subscription) while it is polled
        while len(frames) < 5 and time.monotonic() < deadline:
            if sub.poll(100):
                frames.append(decode_frame(sub.recv_multipart()))
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
    finally:
        sub.close(0)
    expected = np.arange(12).reshape(4, 3).T  # what MATLAB's reshape(0:11, 3, 4) holds
    assert len(frames) == 5
    (h0, p0), (h1, p1), (h2, p2), (h3, p3), (h4, p4) = frames
    assert [h.seq for h in (h0, h1, h2, h3, h4)] == [0, 1, 2**64 - 1, 5, 6]
    assert {h.session for h, _ in frames} == {"rig-é"} and {h.shape for h, _ in frames} == {(3, 4)}
    assert (h0.dtype, h1.dtype, h2.dtype, h3.dtype, h4.dtype) == ("uint16", "uint16", "float32", "float32", "float32")
    assert (h1.channel, h1.plane, h0.channel, h0.plane) == (2, 7, 0, 0)
    np.testing.assert_array_equal(p0, expected)
    np.testing.assert_array_equal(p1, expected)  # uint8 widened to uint16
    np.testing.assert_array_equal(p2, expected - 5)  # int16 as float32, negative values kept
    np.testing.assert_array_equal(p3, expected / 4)
    np.testing.assert_array_equal(p4, expected)
    assert h2.t_acq_ns == 123
    assert all(h.t_acq_ns == h.t_pub_ns for h in (h0, h1, h3, h4))  # stamped when sent, by default
    assert all(0 < h.t_pub_ns < 60 * 10**9 for h, _ in frames)  # the publisher's clock, from its start
    assert h0.t_pub_ns <= h1.t_pub_ns <= h3.t_pub_ns <= h4.t_pub_ns


def test_octave_publisher_refuses_bad_frames() -> None:
    """Each bad frame is an error naming the problem; nothing is sent for it."""
    out = run_octave("""
        pub = actionloop_publisher('tcp://127.0.0.1:*');
        bad = {{zeros(2, 2, 2, 'uint16')}, {uint16([])}, {int32(ones(2))}, {zeros(20000, 1, 'uint8')}, ...
               {uint16(ones(2)), 'seq', -1}, {uint16(ones(2)), 'seq', 1.5}, {uint16(ones(2)), 'channel', 256}, ...
               {uint16(ones(2)), 'colour', 1}, {uint16(ones(2)), 'layout', 'fortran'}};
        for k = 1:numel(bad)
            try
                pub = actionloop_publish(pub, bad{k}{:});
                printf('sent %d\\n', k);
            catch err
                printf('refused %d: %s\\n', k, err.message);
            end
        end
        printf('next_seq %d\\n', pub.next_seq);
        actionloop_close(pub);
    """)
    lines = out.strip().splitlines()
    assert lines[-1] == "next_seq 0", out  # nothing counted as sent
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) == 9, out
    for needle, line in zip(["2-D", "non-empty", "int32", "16384", "seq", "seq", "channel", "colour", "layout"],
                            refused, strict=True):
        assert needle in line, (needle, line)


def _messages() -> list[Action | Event | Status]:
    """Published messages at the edges of the spec: 64-bit extremes, filling, unicode, maps."""
    top = 2**64 - 1
    return [
        Action(seq=top, t_acq_ns=top - 3, t_recv_ns=2**53 + 1, t_done_ns=2**32, t_pub_ns=0, state="decoding",
               action="reach", index=2, probs=(0.1, 0.2, 0.7), confidence=0.7, model_id="ab" * 32, dropped=top,
               skipped=3, session="mäus-12"),
        Action(seq=0, t_acq_ns=1, t_recv_ns=2, t_done_ns=3, t_pub_ns=4, state="filling", action="", index=-1,
               probs=(), confidence=0.0, model_id="m"),
        Event(kind="offset", action="grooming", index=0, seq=17, t_acq_ns=99, t_pub_ns=100, confidence=1.0,
              model_id="m", duration_ns=2**40),
        Status(t_ns=5, state="running", uptime_s=1.25, model_id="m", backend="onnxruntime", window=8, window_fill=8,
               counters={"frames_received": 2**63, "malformed": 0}, latency_us={"p50_us": 312.5, "max_us": 1e3}),
    ]


def _malformed() -> list[tuple[list[bytes], str]]:
    """Messages a subscriber must skip, each with a word its rejection reason must contain."""
    good = encode(_messages()[2])
    header = msgpack.unpackb(good[1])
    return [
        ([b"event", good[1][:-3]], "truncated"),
        ([b"event", good[1] + b"\x00"], "left over"),
        ([b"event", msgpack.packb({**header, "v": 2})], "version"),
        ([b"event", msgpack.packb({k: v for k, v in header.items() if k != "model_id"})], "model_id"),
        ([b"event", msgpack.packb({**header, "session": b"bytes"}, use_bin_type=True)], "bin"),
        ([b"event", b"\xc1"], "0xc1"),
        ([b"event", msgpack.packb({1: 2})], "not a string"),
        ([b"event", msgpack.packb([1, 2])], "not a map"),
        ([b"event", b"\x81\xa1k" + b"\x91" * 40 + b"\x00"], "nesting"),
        ([b"event", b"\xdd\xff\xff\xff\xff"], "truncated"),
        ([b"event", b"\xa1" * 70000], "65536"),
        ([b"eventual", good[1]], "unknown topic"),  # passes the "event" prefix filter
        ([b"event", good[1], b"extra"], "2 message parts"),
    ]


SUBSCRIBER = """
    sub = actionloop_subscriber('{endpoint}', 'format', '{format}');
    n = 0;
    while n < {count}
        [topic, msg, sub] = actionloop_receive(sub, 20);
        if isempty(topic), break; end
        n = n + 1;
        printf('msg %s %s\\n', topic, {dump});
        fflush(stdout);
        {after}
    end
    printf('rejected %d %s\\n', sub.rejected, sub.last_rejection);
    actionloop_close(sub);
"""


def _send_to_octave_subscriber(zmq_context: zmq.Context, processes: list[subprocess.Popen[str]],
                               messages: list[list[bytes]], count: int, fmt: str, dump: str) -> list[str]:
    """Octave subscribes to a Python XPUB, which sends ``messages`` once the subscription is in."""
    pub = zmq_context.socket(zmq.XPUB)
    pub.linger = 0
    pub.bind("tcp://127.0.0.1:*")
    try:
        process = octave(SUBSCRIBER.format(endpoint=pub.getsockopt_string(zmq.LAST_ENDPOINT), format=fmt,
                                           count=count, dump=dump, after=""))
        processes.append(process)
        subscribed: set[bytes] = set()
        while len(subscribed) < 3:  # action, event, status
            assert pub.poll(30_000), "the octave subscriber never subscribed"
            subscribed.add(pub.recv()[1:])
        for parts in messages:
            pub.send_multipart(parts)
        out, err = process.communicate(timeout=60)
    finally:
        pub.close(0)
    assert process.returncode == 0, err
    return out.splitlines()


def test_octave_subscriber_decodes_what_the_daemon_encodes(zmq_context: zmq.Context,
                                                          processes: list[subprocess.Popen[str]]) -> None:
    """Every message Octave decodes, encoded again by the Octave encoder, is the map Python sent
    (64-bit integers exact); broken messages between them are skipped, counted and explained."""
    sent = _messages()
    malformed = _malformed()
    stream = [encode(sent[0]), *[parts for parts, _ in malformed[:7]], *[encode(m) for m in sent[1:]],
              *[parts for parts, _ in malformed[7:]], encode(sent[0])]
    lines = _send_to_octave_subscriber(zmq_context, processes, stream, len(sent) + 1, "msgpack",
                                       "sprintf('%02x', actionloop_msgpack_encode(msg))")
    received = [line.split(" ") for line in lines if line.startswith("msg ")]
    assert [topic for _, topic, _ in received] == ["action", "action", "event", "status", "action"]
    for message, (_, _, dump) in zip([*sent, sent[0]], received, strict=True):
        assert msgpack.unpackb(bytes.fromhex(dump)) == message.to_wire()
    rejected = lines[-1]
    assert rejected.startswith(f"rejected {len(malformed)} "), lines
    assert malformed[-1][1] in rejected  # the last reason is kept


def test_octave_decoder_explains_each_malformed_message() -> None:
    """Each malformed message gives a reason naming its problem (and never an error)."""
    cases = _malformed()
    cells = "; ".join("{" + ", ".join(f"uint8(sscanf('{part.hex()}', '%2x')')" for part in parts) + "}"
                      for parts, _ in cases if len(parts[1]) < 1000)
    out = run_octave(f"""
        cases = {{{cells}}};
        for k = 1:numel(cases)
            [topic, msg, reason] = actionloop_decode_message(cases{{k}}, 'msgpack');
            assert(isempty(topic) && isempty(msg));
            printf('%s\\n', reason);
        end
    """)
    expected = [word for parts, word in cases if len(parts[1]) < 1000]
    reasons = out.strip().splitlines()
    assert len(reasons) == len(expected)
    for word, reason in zip(expected, reasons, strict=True):
        assert word in reason, (word, reason)


def test_octave_subscriber_json_mode(zmq_context: zmq.Context, processes: list[subprocess.Popen[str]]) -> None:
    """(topic, UTF-8 JSON) messages, as a JSON mirror would send them, decoded with jsondecode."""
    sent = [  # JSON has no 64-bit integers: values below 2^53
        _messages()[1], _messages()[2],
        Status(t_ns=5, state="paused", uptime_s=1.25, model_id="m", backend="torch", window=8, window_fill=3,
               counters={"frames_received": 2**52, "malformed": 0}, latency_us={"p50_us": 312.5}, session="mäus"),
    ]
    stream = [[m_parts[0], json.dumps(m.to_wire(), ensure_ascii=False).encode()]
              for m, m_parts in ((m, encode(m)) for m in sent)]
    stream.insert(1, [b"action", b"{not json"])
    lines = _send_to_octave_subscriber(zmq_context, processes, stream, len(sent), "json", "jsonencode(msg)")
    received = [line.split(" ", 2) for line in lines if line.startswith("msg ")]
    assert [topic for _, topic, _ in received] == ["action", "event", "status"]
    for message, (_, _, dump) in zip(sent, received, strict=True):
        decoded = json.loads(dump)
        wire = message.to_wire()
        if wire.get("probs") == []:
            wire["probs"] = decoded["probs"]  # jsondecode turns [] into an empty matrix; jsonencode writes []
        assert decoded == wire
    assert lines[-1].startswith("rejected 1 action header:"), lines


# --- the real daemon ----------------------------------------------------------------------------------------------

FRAMES = 40

PUBLISHER = """
    % ScanImage's side, as its UserFunctions component calls a user function: src.hSI is the
    % ScanImage object, evt.EventName the event; hDisplay.lastStripeData as ScanImage's source
    % defines it (roiData{{1}}.imageData{{channel}}{{z}}, transposed, frameNumberAcqMode,
    % frameTimestamp). ScanImage itself cannot run here.
    args = {{'tcp://127.0.0.1:{port}', 2, 'octave-rig'}};
    roi = struct('channels', [1 2], 'transposed', true, 'imageData', {{{{{{[]}}, {{[]}}}}}});
    stripe = struct('frameNumberAcqMode', 0, 'frameTimestamp', 0, 'roiData', {{{{roi}}}});
    src.hSI.hDisplay.lastStripeData = stripe;
    actionloop_scanimage(src, struct('EventName', 'acqModeStart'), args{{:}});
    printf('bound\\n'); fflush(stdout);
    actionloop_scanimage('wait', 30);
    printf('subscribed\\n'); fflush(stdout);
    % a file, not stdin, says go: here fgetl on a piped stdin returned no line before the pipe closed
    while ~exist('{go}', 'file'), pause(0.01); end
    rand('seed', 1);
    period = 1 / 30;
    started = tic;
    for k = 1:{frames}
        frame = uint16(floor(rand(32, 32) * 4000));  % ScanImage's transposed image: width x height
        stripe.frameNumberAcqMode = k;
        stripe.frameTimestamp = (k - 1) * 0.020;  % ScanImage's clock: 20 ms steps, paced here at 33 ms
        stripe.roiData{{1}}.imageData{{2}}{{1}} = frame;
        src.hSI.hDisplay.lastStripeData = stripe;
        actionloop_scanimage(src, struct('EventName', 'frameAcquired'), args{{:}});
        pause(max(0, k * period - toc(started)));
    end
    printf('published %d\\n', k); fflush(stdout);
    while ~exist('{quit}', 'file'), pause(0.01); end
    actionloop_scanimage('close');
"""


async def test_octave_publishes_into_the_real_daemon_and_reads_its_actions(
        tmp_path: Path, tiny_daemon_settings: Callable[..., Any], zmq_context: zmq.Context,
        processes: list[subprocess.Popen[str]]) -> None:
    """ScanImage's user function in Octave publishes 40 frames into the daemon (the publisher binds,
    the daemon connects: the default set-up); an Octave subscriber reads the daemon's actions.
    Every frame comes back as one action (or counted as skipped/dropped), and what Octave decoded
    is, field by field, what a Python subscriber of the same daemon received."""
    from decoder.service import DecoderService

    port = free_port()
    go, quit = tmp_path / "go", tmp_path / "quit"
    publisher = octave(PUBLISHER.format(port=port, frames=FRAMES, go=go, quit=quit))
    processes.append(publisher)
    await asyncio.to_thread(read_until, publisher, "bound", 60)

    service = DecoderService(tiny_daemon_settings(f"tcp://127.0.0.1:{port}", {"frames_clock": "separate"}))
    task = asyncio.create_task(service.serve(install_signal_handlers=False))
    python_sub = zmq_context.socket(zmq.SUB)
    python_sub.linger = 0
    try:
        await asyncio.wait_for(service.ready.wait(), timeout=60)
        await asyncio.to_thread(read_until, publisher, "subscribed", 30)
        actions_endpoint = service.endpoints["actions"]
        python_sub.subscribe(b"action")
        python_sub.subscribe(b"status")
        python_sub.connect(actions_endpoint)
        subscriber = octave(SUBSCRIBER.format(
            endpoint=actions_endpoint, format="msgpack", count=10_000,
            dump="sprintf('%02x', actionloop_msgpack_encode(msg))",
            after=(f"if n == 1, printf('ready\\n'); fflush(stdout); end\n"
                   f"if strcmp(topic, 'action') && msg.seq == {FRAMES - 1}, break; end")))
        processes.append(subscriber)
        assert subscriber.stdout is not None
        await asyncio.to_thread(read_until, subscriber, "ready", 60)  # it has seen a status
        assert await asyncio.to_thread(python_sub.poll, 10_000)  # and so has the Python one: both are in
        go.touch()
        await asyncio.to_thread(read_until, publisher, f"published {FRAMES}", 60)
        octave_lines = (await asyncio.to_thread(subscriber.communicate, timeout=60))[0].splitlines()
        python_actions: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while (not python_actions or python_actions[-1]["seq"] < FRAMES - 1) and time.monotonic() < deadline:
            if await asyncio.to_thread(python_sub.poll, 1000):
                topic, header = python_sub.recv_multipart()
                if topic == b"action":
                    python_actions.append(msgpack.unpackb(header))
        quit.touch()
        await asyncio.to_thread(publisher.communicate, timeout=30)
    finally:
        python_sub.close(0)
        service.request_shutdown()
        await asyncio.wait_for(task, timeout=15)

    assert publisher.returncode == 0 and subscriber.returncode == 0
    octave_actions = [msgpack.unpackb(bytes.fromhex(line.split(" ")[2]))
                      for line in octave_lines if line.startswith("msg action ")]
    assert octave_actions and octave_actions[-1]["seq"] == FRAMES - 1
    # frames in, actions out: every frame decoded (one action) or accounted for as skipped or dropped
    accounted = len(octave_actions) + sum(a.get("skipped", 0) + a.get("dropped", 0) for a in octave_actions)
    assert accounted == FRAMES, [(a["seq"], a.get("skipped"), a.get("dropped")) for a in octave_actions]
    seqs = [a["seq"] for a in octave_actions]
    assert seqs == sorted(set(seqs))
    assert octave_actions == python_actions  # field by field, integers exact
    assert {a["session"] for a in octave_actions} == {"octave-rig"}
    decoding = [a for a in octave_actions if a["state"] == "decoding"]
    assert decoding and all(a["action"] and len(a["probs"]) > 0 for a in decoding)
    assert any(line.startswith("msg status ") for line in octave_lines)
    # t_acq_ns is ScanImage's frame timestamp plus the smallest (arrival - timestamp) offset: with
    # ScanImage's clock running slower than the frames arrive, that offset is the first frame's,
    # so acquisition times keep ScanImage's 20 ms steps (not the 33 ms of arrival)
    settled = [a for a in octave_actions if a["seq"] >= 10]
    assert len(settled) >= 10
    for a in settled:
        assert abs(a["t_acq_ns"] - settled[0]["t_acq_ns"] - (a["seq"] - settled[0]["seq"]) * 20_000_000) <= 10, a
    assert octave_lines[-1].startswith("rejected 0"), octave_lines[-1]


async def test_octave_reads_the_daemons_json_mirror(tiny_daemon_settings: Callable[..., Any], zmq_context: zmq.Context,
                                                    processes: list[subprocess.Popen[str]]) -> None:
    """Frames in from Python, the daemon's JSON mirror read by Octave with jsondecode: one action per
    frame (or counted as skipped/dropped), as the msgpack stream."""
    from decoder.service import DecoderService
    from protocols.client import FramePublisher

    publisher = FramePublisher("tcp://127.0.0.1:*", context=zmq_context)
    settings = tiny_daemon_settings(publisher.endpoint, {"json_mirror": "tcp://127.0.0.1:*"})
    service = DecoderService(settings)
    task = asyncio.create_task(service.serve(install_signal_handlers=False))
    try:
        await asyncio.wait_for(service.ready.wait(), timeout=60)
        endpoint = service.endpoints["json_mirror"]
        subscriber = octave(SUBSCRIBER.format(
            endpoint=endpoint, format="json", count=10_000, dump="jsonencode(msg)",
            after=(f"if n == 1, printf('ready\\n'); fflush(stdout); end\n"
                   f"if strcmp(topic, 'action') && msg.seq == {FRAMES - 1}, break; end")))
        processes.append(subscriber)
        await asyncio.to_thread(read_until, subscriber, "ready", 60)
        assert await asyncio.to_thread(publisher.wait_for_subscriber, 10.0)
        frames = np.random.default_rng(0).integers(0, 4000, size=(FRAMES, 32, 32), dtype=np.uint16)
        for frame in frames:
            publisher.publish(frame)
            await asyncio.sleep(1 / 30)
        out, err = await asyncio.to_thread(subscriber.communicate, timeout=60)
    finally:
        service.request_shutdown()
        await asyncio.wait_for(task, timeout=15)
        publisher.close(0)
    assert subscriber.returncode == 0, err
    actions = [json.loads(line.split(" ", 2)[2]) for line in out.splitlines() if line.startswith("msg action ")]
    assert actions and actions[-1]["seq"] == FRAMES - 1
    assert len(actions) + sum(a.get("skipped", 0) + a.get("dropped", 0) for a in actions) == FRAMES
