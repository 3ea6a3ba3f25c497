"""`actionloop top`: a live view of one daemon, to leave open beside the microscope.

    actionloop top                                  # the daemon of the settings (sockets.actions)
    actionloop top --endpoint tcp://10.0.0.5:5556   # another one
    actionloop top --once                           # one snapshot, then exit (scripts, tests)

Everything comes from what the daemon publishes anyway (protocols.client.ActionSubscriber on
the `status` and `event` topics; per-frame actions are not subscribed, so a fast daemon costs
this view nothing): state, model, rates (from the counters of successive heartbeats), latency
percentiles, counters and the last onsets/offsets. Redrawn once a second; a daemon that is not
there yet, or whose heartbeats stop, is said so on screen while the view keeps listening
(ZeroMQ reconnects by itself). Ctrl-C leaves the terminal as it found it.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import zmq

from protocols.client import ActionSubscriber
from protocols.messages import TOPIC_EVENT, TOPIC_STATUS, Event, Status
from tools.daemon_args import DaemonArgsError, add_daemon_arguments, daemon_endpoint

RATE_COUNTERS = ("frames_received", "frames_decoded", "frames_skipped", "frames_lost")
BAD_INPUT = (("malformed_messages", "malformed"), ("wrong_shape_frames", "wrong shape"), ("non_finite_frames", "non-finite"))
WINDOW = (("frames_paused", "paused frames"), ("window_resets", "resets"), ("sequence_restarts", "seq restarts"))
CONTROL = (("control_requests", "requests"), ("control_refused_busy", "busy"), ("reloads", "reloads"),
           ("reloads_refused", "refused"), ("auth_failures", "auth failures"))
RATE_SPAN_S = 5.0  # frame rates over the heartbeats of the last few seconds
MIN_STALE_S = 3.0  # heartbeats missing this long (or 3 intervals) count as stopped


def configure(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "actions")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit (2 if no status came)")
    parser.add_argument("--timeout", type=float, default=10.0, help="--once: seconds to wait for the daemon's first status")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    parser.add_argument("--events", type=int, default=8, help="how many of the last events to show")


@dataclass
class View:
    """What the screen shows, folded from the messages as they come (no I/O here)."""

    endpoint: str
    max_events: int = 8
    status: Status | None = None
    status_seen: float = 0.0  # local monotonic time of the last status
    interval_s: float = 0.0  # between the daemon's last two heartbeats
    history: collections.deque[tuple[int, dict[str, int]]] = field(default_factory=collections.deque)
    events: collections.deque[tuple[float, Event]] = field(default_factory=collections.deque)
    active: Event | None = None  # the last onset without its offset yet
    active_since: float = 0.0  # local monotonic time it was received

    def add(self, message: object, now: float, wall: float) -> None:
        if isinstance(message, Status):
            self._add_status(message, now)
        elif isinstance(message, Event):
            self.events.appendleft((wall, message))
            while len(self.events) > self.max_events:
                self.events.pop()
            if message.kind == "onset":
                self.active, self.active_since = message, now
            elif self.active is not None and self.active.action == message.action:
                self.active = None

    def _add_status(self, status: Status, now: float) -> None:
        previous = self.status
        restarted = previous is not None and (status.t_ns <= previous.t_ns or status.uptime_s < previous.uptime_s)
        if restarted:  # another daemon process: its counters start again
            self.history.clear()
            self.active = None
        elif previous is not None:
            self.interval_s = (status.t_ns - previous.t_ns) / 1e9
        self.status, self.status_seen = status, now
        self.history.append((status.t_ns, dict(status.counters)))
        while len(self.history) > 2 and (status.t_ns - self.history[1][0]) / 1e9 >= RATE_SPAN_S:
            self.history.popleft()

    def rates(self) -> dict[str, float]:
        """Counter increase per second over the heartbeats kept (empty before the second one)."""
        if len(self.history) < 2:
            return {}
        (t0, first), (t1, last) = self.history[0], self.history[-1]
        span = (t1 - t0) / 1e9
        return {k: (last.get(k, 0) - first.get(k, 0)) / span for k in RATE_COUNTERS} if span > 0 else {}

    def stale_after_s(self) -> float:
        return max(MIN_STALE_S, 3 * self.interval_s)


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f} ms"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def render(view: View, now: float, wall: float, color: bool = False) -> list[str]:
    """The screen as lines of text (no cursor control)."""

    def bold(text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if color else text

    def alert(text: str) -> str:
        return f"\x1b[1;31m{text}\x1b[0m" if color else text

    lines = [f"actionloop top  {view.endpoint}  {time.strftime('%H:%M:%S', time.localtime(wall))}"]
    s = view.status
    if s is None:
        lines.append(alert(f"waiting for {view.endpoint}: no status yet (is the daemon running? its sockets.actions?)"))
        return lines
    silent = now - view.status_seen
    if silent > view.stale_after_s():
        lines.append(alert(f"NO STATUS for {silent:.0f} s: the daemon stopped or is stuck; last known state below"))
    state = bold(f"{s.state:<10}") if s.state == "running" else alert(f"{s.state:<10}")
    lines.append(f"state     {state} uptime {_duration(s.uptime_s)}   backend {s.backend}")
    lines.append(f"model     {s.model_id}")
    c = s.counters
    rates = view.rates()
    if rates:
        lines.append("frames/s  " + "  ".join(f"{k.removeprefix('frames_')} {rates[k]:.1f}" for k in RATE_COUNTERS)
                     + f"   (last {(view.history[-1][0] - view.history[0][0]) / 1e9:.0f} s)")
    else:
        lines.append("frames/s  - (after the next heartbeat)")
    lines.append("frames    " + "  ".join(f"{k.removeprefix('frames_')} {c.get(k, 0)}" for k in RATE_COUNTERS))
    bad = "  ".join(f"{label} {c.get(k, 0)}" for k, label in BAD_INPUT)
    lines.append("bad input " + (alert(bad) if any(c.get(k, 0) for k, _ in BAD_INPUT) else bad))
    lat = s.latency_us
    lines.append(f"latency   receive->publish p50 {_ms(lat.get('p50_us'))}  p99 {_ms(lat.get('p99_us'))}  "
                 f"max {_ms(lat.get('max_us'))}")
    lines.append(f"          inference p50 {_ms(lat.get('infer_p50_us'))}  p99 {_ms(lat.get('infer_p99_us'))}")
    if "age_p99_us" in lat:
        lines.append(f"          frame age p50 {_ms(lat.get('age_p50_us'))}  p99 {_ms(lat.get('age_p99_us'))}  "
                     f"max {_ms(lat.get('age_max_us'))}")
    lines.append(f"window    {s.window_fill}/{s.window} filled  "
                 + "  ".join(f"{label} {c[k]}" for k, label in WINDOW if k in c)
                 + (f"  session {s.session}" if s.session else ""))
    lines.append("control   " + "  ".join(f"{label} {c[k]}" for k, label in CONTROL if k in c))
    if view.active is not None:
        lines.append(f"active    {bold(view.active.action)} for {now - view.active_since:.1f} s "
                     f"(onset p={view.active.confidence:.2f})")
    else:
        lines.append("active    -")
    lines.append(f"events    last {view.max_events}, newest first" if view.events else "events    none since top started")
    for received, event in view.events:
        lasted = f"  lasted {event.duration_ns / 1e9:.2f} s" if event.kind == "offset" else ""
        lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(received))}  {event.kind:<6} {event.action:<16} "
                     f"frame {event.seq}  p={event.confidence:.2f}{lasted}")
    return lines


class Screen:
    """Redraws in place on a terminal (alternate screen, like top); plain snapshots otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()

    @contextmanager
    def session(self) -> Iterator[None]:
        if self.tty:
            self.out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden
        try:
            yield
        finally:
            if self.tty:
                self.out.write("\x1b[?25h\x1b[?1049l")
                self.out.flush()

    def draw(self, lines: list[str]) -> None:
        if self.tty:
            width = shutil.get_terminal_size().columns
            self.out.write("\x1b[H" + "".join(_clip(line, width) + "\x1b[K\n" for line in lines) + "\x1b[J")
        else:
            self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()


def _clip(line: str, width: int) -> str:
    return line if "\x1b" in line or len(line) <= width else line[: width - 1] + "…"


def _once(view: View, subscriber: ActionSubscriber, timeout: float, out: TextIO) -> int:
    deadline = time.monotonic() + timeout
    while view.status is None:  # the first heartbeat
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out.write("\n".join(render(view, time.monotonic(), time.time())) + "\n")
            print(f"no status from {view.endpoint} within {timeout} s", file=sys.stderr)
            return 2
        try:
            view.add(subscriber.recv(timeout=remaining), time.monotonic(), time.time())
        except TimeoutError:
            pass
    # and the next, for the rates (events that come meanwhile are shown too)
    first = view.status
    deadline = time.monotonic() + min(MIN_STALE_S, timeout)
    while view.status is first and time.monotonic() < deadline:
        try:
            view.add(subscriber.recv(timeout=max(0.0, deadline - time.monotonic())), time.monotonic(), time.time())
        except TimeoutError:
            break
    out.write("\n".join(render(view, time.monotonic(), time.time())) + "\n")
    return 0


def _live(view: View, subscriber: ActionSubscriber, interval: float, out: TextIO) -> int:
    screen = Screen(out)
    with screen.session():
        next_draw = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_draw:
                screen.draw(render(view, now, time.time(), color=screen.tty))
                next_draw = now + interval
            try:
                view.add(subscriber.recv(timeout=max(0.0, next_draw - time.monotonic())), time.monotonic(), time.time())
            except TimeoutError:
                pass


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM leaves the terminal as cleanly as Ctrl-C (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.interval <= 0 or args.events < 0:
        print("--interval must be > 0 and --events >= 0", file=sys.stderr)
        return 2
    try:
        endpoint, curve = daemon_endpoint(args, "actions")
    except DaemonArgsError as exc:
        print(exc, file=sys.stderr)
        return 2
    view = View(endpoint, max_events=args.events)
    context = zmq.Context()
    try:
        with _sigterm_as_interrupt(), ActionSubscriber(endpoint, topics=[TOPIC_STATUS, TOPIC_EVENT],
                                                       context=context, curve=curve) as subscriber:
            if args.once:
                return _once(view, subscriber, args.timeout, out)
            return _live(view, subscriber, args.interval, out)
    except KeyboardInterrupt:
        return 0
    except zmq.ZMQError as exc:
        print(f"cannot subscribe to {endpoint}: {exc}", file=sys.stderr)
        return 2
    finally:
        context.destroy(linger=0)
