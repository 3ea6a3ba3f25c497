"""The client library against real ZeroMQ sockets on loopback."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import zmq

from protocols import codec
from protocols.client import (
    ActionSubscriber,
    AsyncActionSubscriber,
    AsyncControlClient,
    ControlBusy,
    ControlClient,
    ControlError,
    FramePublisher,
)
from protocols.messages import Action, ControlReply, Event, Status


def _action(seq: int) -> Action:
    return Action(
        seq=seq, t_acq_ns=1, t_recv_ns=2, t_done_ns=3, t_pub_ns=4, state="decoding",
        action="resting", index=2, probs=(0.1, 0.9), confidence=0.9, model_id="m",
    )


def test_frame_publisher_waits_for_subscriber_and_sends_sequenced_frames(zmq_context):
    publisher = FramePublisher("tcp://127.0.0.1:*", session="rig-1", context=zmq_context)
    sub = zmq_context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        sub.connect(publisher.endpoint)
        assert publisher.wait_for_subscriber(timeout=5.0)
        frames = [np.full((8, 16), i, np.uint16) for i in range(3)]
        for frame in frames:
            publisher.publish(frame, t_acq_ns=1000 + frame[0, 0])
        for i, frame in enumerate(frames):
            assert sub.poll(5000)
            header, pixels = codec.decode_frame(sub.recv_multipart(copy=False))
            assert (header.seq, header.session, header.t_acq_ns) == (i, "rig-1", 1000 + i)
            assert header.t_pub_ns >= header.t_acq_ns or header.t_acq_ns == 1000 + i
            np.testing.assert_array_equal(pixels, frame)
    finally:
        publisher.close()
        sub.close(linger=0)


def test_wait_for_subscriber_times_out_when_nobody_listens(zmq_context):
    with FramePublisher("tcp://127.0.0.1:*", context=zmq_context) as publisher:
        assert publisher.wait_for_subscriber(timeout=0.2) is False


def _publish_until_received(pub, subscriber_recv, message, timeout=5.0):
    """PUB/SUB joins asynchronously: resend until the subscriber sees the first message."""
    for _ in range(int(timeout / 0.05)):
        pub.send_multipart(codec.encode(message))
        try:
            return subscriber_recv(0.05)
        except TimeoutError:
            continue
    raise AssertionError("subscriber never joined")


def test_blocking_subscriber_receives_actions_events_status_and_skips_garbage(zmq_context, bind_random):
    pub = zmq_context.socket(zmq.PUB)
    endpoint = bind_random(pub)
    subscriber = ActionSubscriber(endpoint, context=zmq_context)
    try:
        assert _publish_until_received(pub, subscriber.recv, _action(0)) == _action(0)
        pub.send_multipart([b"action", b"\xc1garbage"])  # malformed: counted and skipped
        event = Event(kind="onset", action="resting", index=2, seq=9, t_acq_ns=1, t_pub_ns=2, confidence=0.9, model_id="m")
        status = Status(t_ns=5, state="running", uptime_s=1.0, model_id="m", backend="onnxruntime", window=8, window_fill=8)
        pub.send_multipart(codec.encode(event))
        pub.send_multipart(codec.encode(status))
        received = [subscriber.recv(timeout=5.0), subscriber.recv(timeout=5.0)]
        assert received[0] == event and received[1] == status
        assert subscriber.rejected == 1 and "msgpack" in subscriber.last_rejection
        with pytest.raises(TimeoutError):
            subscriber.recv(timeout=0.05)
    finally:
        subscriber.close()
        pub.close(linger=0)


def test_strict_subscriber_raises_on_malformed(zmq_context, bind_random):
    pub = zmq_context.socket(zmq.PUB)
    endpoint = bind_random(pub)
    subscriber = ActionSubscriber(endpoint, context=zmq_context)
    subscriber.strict = True
    try:
        _publish_until_received(pub, subscriber.recv, _action(0))
        pub.send_multipart([b"action", b"\xc1"])
        with pytest.raises(codec.ProtocolError):
            subscriber.recv(timeout=5.0)
    finally:
        subscriber.close()
        pub.close(linger=0)


async def test_async_subscriber_receives_in_order(async_zmq_context):
    pub = async_zmq_context.socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    subscriber = AsyncActionSubscriber(endpoint, topics=[b"action"], context=async_zmq_context)
    try:
        for attempt in range(100):  # wait for the subscription to reach the publisher
            await pub.send_multipart(codec.encode(_action(0)))
            try:
                await subscriber.recv(timeout=0.05)
                break
            except TimeoutError:
                continue
        for seq in range(1, 6):
            await pub.send_multipart(codec.encode(_action(seq)))
        seqs = [(await subscriber.recv(timeout=5.0)).seq for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        with pytest.raises(TimeoutError):
            await subscriber.recv(timeout=0.05)
    finally:
        subscriber.close()
        pub.close(linger=0)


def _serve_control(router: zmq.Socket, stop: threading.Event, answers: dict[str, ControlReply | None]) -> None:
    """A minimal ROUTER responder; ``None`` means never answer (to test timeouts)."""
    while not stop.is_set():
        if not router.poll(20):
            continue
        identity, empty, payload = router.recv_multipart()
        request = codec.decode_control_request(payload)
        template = answers[request.cmd]
        if template is None:
            continue
        reply = ControlReply(id=request.id, ok=template.ok, error=template.error, data={**template.data, **request.args})
        router.send_multipart([identity, empty, codec.encode_control(reply)])


@pytest.fixture
def control_server(zmq_context, bind_random):
    router = zmq_context.socket(zmq.ROUTER)
    endpoint = bind_random(router)
    stop = threading.Event()
    answers = {
        "ping": ControlReply(id=0, ok=True, data={"pong": True}),
        "reload": ControlReply(id=0, ok=False, error="bundle checksum mismatch"),
        "pause": None,
        "resume": codec.busy_reply(None, 200.0),
        "status": ControlReply(id=0, ok=True, data={"state": "running"}),
    }
    thread = threading.Thread(target=_serve_control, args=(router, stop, answers), daemon=True)
    thread.start()
    yield endpoint
    stop.set()
    thread.join(timeout=5)
    router.close(linger=0)


def test_control_client_request_refusal_and_timeout(control_server, zmq_context):
    with ControlClient(control_server, context=zmq_context) as client:
        assert client.request("ping").data == {"pong": True}
        with pytest.raises(ControlError, match="checksum mismatch"):
            client.request("reload", bundle="/tmp/b")
        with pytest.raises(ControlBusy, match="busy: more than 200 control requests per second"):
            client.request("resume")
        with pytest.raises(ControlError) as refused:
            client.request("reload", bundle="/tmp/b")
        assert not isinstance(refused.value, ControlBusy)
        with pytest.raises(TimeoutError):
            client.request("pause", timeout=0.1)
        # The socket is not wedged by the unanswered request.
        assert client.request("status", verbose=True).data == {"state": "running", "verbose": True}


async def test_async_control_client(control_server, async_zmq_context):
    async with AsyncControlClient(control_server, context=async_zmq_context) as client:
        reply = await client.request("ping", timeout=5.0)
        assert reply.ok and reply.data["pong"] is True
        with pytest.raises(TimeoutError):
            await client.request("pause", timeout=0.1)
        await asyncio.sleep(0)
