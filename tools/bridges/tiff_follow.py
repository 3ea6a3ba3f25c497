"""Follow the TIFF files of one directory as acquisition software writes them; publish each new frame.

One thread, one loop: scan the directory (`DirectoryWatch`), read the pages that became
complete since the last poll (`TiffTail`), keep the chosen channel, check the frame against
the published format (`FrameFormat`), stamp its acquisition time (`AcquisitionClock`) and
publish it. Rules:

- Sequence numbers count frames in acquisition order, across files, from 0 when the bridge
  starts. A frame the bridge cannot publish (wrong shape or dtype, pixels that do not decode)
  still uses its number, so the decoder sees a hole, as for a frame lost upstream.
- Frames already in the directory when the bridge starts are not published (a bridge
  restarted during an acquisition does not replay it) unless `publish_existing`.
- A file that is not a TIFF, or whose pages stay unreadable for `settle_s` although all
  their bytes are there, is logged and left; the bridge carries on with the other files.
  A file that does not fit the settings (several channels and no channel chosen, no
  timestamps and no rate) is logged, with the option that fixes it, and left.
- Acquisition time: ScanImage's ``frameTimestamps_sec`` where the page has it, else
  seq / `rate_hz`; either way through `AcquisitionClock` onto this host's monotonic clock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from protocols.client import FramePublisher
from tools.bridges.acq_clock import AcquisitionClock
from tools.bridges.frame_format import FrameFormat, FrameRefused
from tools.bridges.tiff_dir import DirectoryWatch, WatchedFile
from tools.bridges.tiff_meta import SI_TIMESTAMP_KEY, declared_channels, scanimage_timestamp_s
from tools.bridges.tiff_pages import NotATiff, TiffTail, TiffUnreadable

log = structlog.get_logger(__name__)


class FileRefused(Exception):
    """This file cannot be published with the bridge's settings (the message says which option fixes it)."""


@dataclass
class _FileState:
    tail: TiffTail
    publish: bool                            # False: pages present at start, consumed unpublished
    next_retry: float = 0.0                  # while waiting for a page: when to read again
    channels: int = 1
    failing_since: float | None = None
    left: bool = False                       # unreadable or refused: not read again
    refused_frames: int = 0
    published: int = 0
    out_of_order: bool = False               # warned that it grew after a later file started
    channel: int = 0                         # the channel published

    def wanted(self, index: int) -> bool:
        """Whether page `index` is needed: the first (it says how many channels), and the chosen
        channel's pages once publishing (not those already there when the bridge started)."""
        return index == 0 or (self.publish and index % self.channels == self.channel)


@dataclass
class FollowCounters:
    published: int = 0
    refused_frames: int = 0     # frames skipped (their seq left as a hole)
    files_left: int = 0         # files given up on (unreadable, or not fitting the settings)


class TiffFollower:
    def __init__(
        self,
        watch: DirectoryWatch,
        publisher: FramePublisher,
        frame_format: FrameFormat,
        *,
        channel: int | None = None,
        channels: int | None = None,
        rate_hz: float | None = None,
        settle_s: float = 1.0,
        publish_existing: bool = False,
        clock: AcquisitionClock | None = None,
    ) -> None:
        self.watch = watch
        self.publisher = publisher
        self.format = frame_format
        self.channel = channel
        self.channels = channels
        self.rate_hz = rate_hz
        self.settle_s = settle_s
        self.publish_existing = publish_existing
        self.clock = clock or AcquisitionClock()
        self.next_seq = 0
        self.counters = FollowCounters()
        self._latest_order: tuple[Any, ...] | None = None
        self._scan_failed = False
        self._again: dict[tuple[int, int], WatchedFile] = {}

    # --- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event, interval_s: float = 0.002, summary_s: float = 10.0) -> None:
        """Poll until `stop` is set, logging a summary every `summary_s` seconds."""
        next_summary = time.monotonic() + summary_s
        while not stop.is_set():
            self.poll()
            if time.monotonic() >= next_summary:
                self.log_summary()
                next_summary = time.monotonic() + summary_s
            stop.wait(interval_s)
        self.log_summary()

    def log_summary(self) -> None:
        c = self.counters
        log.info("tiff bridge", published=c.published, refused_frames=c.refused_frames, files_left=c.files_left,
                 files=len(self.watch.files), next_seq=self.next_seq, clock_restarts=self.clock.restarts)

    def baseline(self) -> None:
        """The first scan: note the files and pages already there (published only with `publish_existing`)."""
        if self.watch.scans == 0:
            self.poll()

    def poll(self) -> int:
        """One pass over the directory; returns the number of frames published."""
        first = self.watch.scans == 0
        try:
            changed = self.watch.scan()
        except OSError as exc:
            if not self._scan_failed:
                log.error("cannot list the followed directory; retrying", directory=str(self.watch.directory),
                          error=str(exc))
                self._scan_failed = True
            return 0
        if self._scan_failed:
            log.info("followed directory readable again", directory=str(self.watch.directory))
            self._scan_failed = False
        now = time.monotonic()
        # files whose last read stopped at an incomplete or unreadable page are read again even if
        # they look unchanged: filling in a page's IFD does not change the file's size, and some
        # file systems keep modification times to the second
        again = [w for key, w in list(self._again.items())
                 if self.watch.files.get(key) is w and w not in changed and w.state.next_retry <= now]
        published = 0
        for watched in sorted(changed + again, key=lambda f: f.order) if again else changed:
            state = watched.state
            if state is None:
                state = watched.state = _FileState(TiffTail(watched.path), publish=self.publish_existing or not first,
                                                   channel=self.channel or 0)
            if state.left:
                continue
            state.tail.path = watched.path
            published += self._read(watched, state, now)
            state.publish = True  # what was there at start is consumed; whatever comes next is new
            if not state.left and (state.failing_since is not None or state.tail.waiting):
                self._again[watched.key] = watched
                hurry = now - watched.changed_at < self.settle_s
                state.next_retry = now if hurry else now + self.watch.recheck_s
            else:
                self._again.pop(watched.key, None)
        for key in [k for k in self._again if k not in self.watch.files]:
            del self._again[key]
        return published

    # --- one file -----------------------------------------------------------------------

    def _read(self, watched: WatchedFile, state: _FileState, now: float) -> int:
        published = 0
        try:
            for index, page in state.tail.read_new(expect_inode=watched.key[1], wanted=state.wanted):
                if page is not None:
                    published += self._page(watched, state, index, page, time.monotonic_ns())
            state.failing_since = None
        except FileNotFoundError:
            pass  # renamed or removed since the scan: the next scan says which
        except (TiffUnreadable, OSError) as exc:
            if state.failing_since is None:
                state.failing_since = now
                log.debug("file unreadable, retrying", path=str(watched.path), error=str(exc))
            elif now - state.failing_since >= self.settle_s:
                # a file named like a TIFF is worth an error; other files in the folder (ScanImage
                # and others write logs and settings next to the images) only a note
                quiet = isinstance(exc, NotATiff) and not watched.path.suffix.lower() in (".tif", ".tiff")
                self._leave(watched, state, f"unreadable for {self.settle_s:g} s: {exc}", quiet=quiet)
        except FileRefused as exc:
            self._leave(watched, state, str(exc))
        return published

    def _leave(self, watched: WatchedFile, state: _FileState, reason: str, quiet: bool = False) -> None:
        state.left = True
        self.counters.files_left += 1
        (log.info if quiet else log.error)(
            "skipping file; the bridge carries on with the others", path=str(watched.path),
            reason=reason, pages_read=state.tail.pages_read, frames_published=state.published)

    def _page(self, watched: WatchedFile, state: _FileState, index: int, page: Any, seen_ns: int) -> int:
        if index == 0:
            state.channels = self._channels_of(watched, page)
        if not (state.publish and index % state.channels == state.channel):
            return 0
        taken_s = scanimage_timestamp_s(page)
        if taken_s is None and self.rate_hz is None:
            raise FileRefused(f"no ScanImage frame timestamps ({SI_TIMESTAMP_KEY}) in its pages: "
                              "restart the bridge with --rate HZ (the imaging frame rate)")
        seq = self.next_seq
        self.next_seq += 1
        try:
            pixels = self.format.conform(_decode(page))
        except FrameRefused as exc:
            self._refuse(watched, state, index, str(exc))
            return 0
        if taken_s is None:
            assert self.rate_hz is not None
            taken_s = seq / self.rate_hz
        self._check_order(watched, state)
        self.publisher.publish(pixels, seq=seq, t_acq_ns=self.clock.acquired_ns(taken_s, seen_ns),
                               channel=self.channel or 0)
        state.published += 1
        self.counters.published += 1
        return 1

    def _refuse(self, watched: WatchedFile, state: _FileState, index: int, reason: str) -> None:
        if state.refused_frames == 0:
            log.warning("frame not published (its seq is left as a hole); further ones in this file are only counted",
                        path=str(watched.path), page=index, reason=reason)
        state.refused_frames += 1
        self.counters.refused_frames += 1

    def _check_order(self, watched: WatchedFile, state: _FileState) -> None:
        if self._latest_order is not None and watched.order < self._latest_order and not state.out_of_order:
            state.out_of_order = True
            log.warning("an earlier file grew after a later one started: its frames are published as they come",
                        path=str(watched.path))
        if self._latest_order is None or watched.order > self._latest_order:
            self._latest_order = watched.order

    def _channels_of(self, watched: WatchedFile, first_page: Any) -> int:
        declared = declared_channels(first_page)
        if self.channels is not None:
            if declared is not None and declared != self.channels:
                log.warning("--channels differs from what the file declares; using --channels",
                            path=str(watched.path), channels=self.channels, declared=declared)
            channels = self.channels
        else:
            channels = declared or 1
        if self.channel is None and channels > 1:
            raise FileRefused(f"its pages interleave {channels} channels; pick one with --channel (0..{channels - 1})")
        if self.channel is not None and not 0 <= self.channel < channels:
            if channels == 1:
                raise FileRefused(f"--channel {self.channel} given but the file declares one channel "
                                  "(give --channels N if its pages interleave N channels)")
            raise FileRefused(f"--channel {self.channel} outside 0..{channels - 1} ({channels} channels interleaved)")
        return channels


def _decode(page: Any) -> Any:
    try:
        return page.asarray()
    except Exception as exc:  # third-party decoders on bytes from disk raise many unrelated types
        raise FrameRefused(f"pixels do not decode ({type(exc).__name__}: {exc})") from None
