"""TiffTail, DirectoryWatch, AcquisitionClock and the ScanImage metadata readers, on real files."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tools.bridges.acq_clock import AcquisitionClock
from tools.bridges.frame_format import FrameFormat, FrameRefused
from tools.bridges.tiff_dir import DirectoryWatch, natural_key
from tools.bridges.tiff_meta import declared_channels, scanimage_timestamp_s
from tools.bridges.tiff_pages import TiffTail, TiffUnreadable


def tiff_bytes(frames: np.ndarray, **write: object) -> bytes:
    """A complete multi-page TIFF in memory, one page per frame."""
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, bigtiff=bool(write.pop("bigtiff", False)), byteorder=write.pop("byteorder", None)) as tw:
        for frame in frames:
            tw.write(frame, metadata=None, **write)
    return buf.getvalue()


FRAMES = np.random.default_rng(0).integers(0, 65535, size=(3, 5, 7), dtype=np.uint16)


@pytest.mark.parametrize("write", [{}, {"bigtiff": True}, {"byteorder": ">"}, {"compression": "zlib"},
                                   {"description": "frameTimestamps_sec = 0.5"}],
                         ids=["classic", "bigtiff", "big-endian", "zlib", "out-of-line-description"])
def test_every_prefix_of_a_file_yields_each_complete_page_once(tmp_path: Path, write: dict[str, object]) -> None:
    """The file grows one byte at a time: each page comes out exactly once, whole, in order."""
    data = tiff_bytes(FRAMES, **write)
    path = tmp_path / "grow.tif"
    path.write_bytes(b"")
    tail = TiffTail(path)
    got: list[tuple[int, np.ndarray]] = []
    for length in range(len(data) + 1):
        with open(path, "r+b") as fh:
            fh.seek(0, os.SEEK_END)
            fh.write(data[fh.tell():length])
        got += [(index, page.asarray()) for index, page in tail.read_new()]
    assert [index for index, _ in got] == [0, 1, 2]
    for index, pixels in got:
        np.testing.assert_array_equal(pixels.astype(np.uint16), FRAMES[index])


def test_tifffile_writer_states_are_never_read_early(tmp_path: Path) -> None:
    """tifffile points the previous page at the new IFD before writing it: read after every step."""
    path = tmp_path / "live.tif"
    tail = TiffTail(path)
    got = []
    with tifffile.TiffWriter(path) as tw:
        for frame in FRAMES:
            tw.write(frame, metadata=None)
            got += [page.asarray() for _, page in tail.read_new()]
    got += [page.asarray() for _, page in tail.read_new()]
    np.testing.assert_array_equal(np.stack(got), FRAMES)


def test_pages_not_wanted_are_passed_over_unparsed_once_the_next_one_is_there(tmp_path: Path) -> None:
    path = tmp_path / "skip.tif"
    path.write_bytes(tiff_bytes(FRAMES))
    got = [(i, page) for i, page in TiffTail(path).read_new(wanted=lambda index: index == 0)]
    assert [i for i, _ in got] == [0, 1, 2]
    assert got[0][1] is not None and got[1][1] is None
    assert got[2][1] is not None  # the last page has no successor yet: checked in full all the same
    data = tiff_bytes(FRAMES)
    path.write_bytes(data[:-5])  # the last page's pixels not all there: not passed over
    assert [i for i, _ in TiffTail(path).read_new(wanted=lambda index: False)] == [0, 1]


def test_not_a_tiff_and_a_broken_chain_are_unreadable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a TIFF file at all")
    with pytest.raises(TiffUnreadable, match="not a TIFF"):
        list(TiffTail(junk).read_new())
    data = bytearray(tiff_bytes(FRAMES))
    first_ifd = int.from_bytes(data[4:8], "little")
    data[first_ifd:first_ifd + 2] = (60000).to_bytes(2, "little")  # an IFD with 60000 entries
    broken = tmp_path / "broken.tif"
    broken.write_bytes(bytes(data))
    with pytest.raises(TiffUnreadable, match="corrupt IFD"):
        list(TiffTail(broken).read_new())


def test_an_ifd_chain_that_loops_is_refused_not_read_twice(tmp_path: Path) -> None:
    data = bytearray(tiff_bytes(FRAMES[:1]))
    first_ifd = int.from_bytes(data[4:8], "little")
    entries = int.from_bytes(data[first_ifd:first_ifd + 2], "little")
    pointer = first_ifd + 2 + 12 * entries
    data[pointer:pointer + 4] = first_ifd.to_bytes(4, "little")  # next page: itself
    path = tmp_path / "loop.tif"
    path.write_bytes(bytes(data))
    tail = TiffTail(path)
    pages = []
    with pytest.raises(TiffUnreadable, match="chain is broken"):
        pages += [i for i, _ in tail.read_new()]
    assert tail.pages_read == 1


def test_directory_watch_orders_numerically_and_follows_renames(tmp_path: Path) -> None:
    for name in ("file_10.tif", "file_9.tif", "file_00002.tif"):
        (tmp_path / name).write_bytes(b"II*\x00")
    watch = DirectoryWatch(tmp_path, listing_share=1.0)  # list the directory on every scan
    assert [f.path.name for f in watch.scan()] == ["file_00002.tif", "file_9.tif", "file_10.tif"]
    assert watch.scan() == []  # nothing changed
    followed = next(f for f in watch.files.values() if f.path.name == "file_9.tif")
    followed.state = "followed"
    (tmp_path / "file_9.tif").rename(tmp_path / "zzz_done.tif")
    (tmp_path / "file_1.tif").write_bytes(b"II*\x00")  # appears later: after the others
    assert [f.path.name for f in watch.scan()] == ["zzz_done.tif", "file_1.tif"]
    assert [f.path.name for f in watch.ordered] == ["file_00002.tif", "zzz_done.tif", "file_10.tif", "file_1.tif"]
    renamed = next(f for f in watch.files.values() if f.path.name == "zzz_done.tif")
    assert renamed is followed and renamed.state == "followed"  # the same file: what the follower knows survives
    with open(tmp_path / "file_10.tif", "ab") as fh:
        fh.write(b"more")
    assert [f.path.name for f in watch.scan()] == ["file_10.tif"]
    (tmp_path / "file_10.tif").write_bytes(b"II")  # rewritten, shorter: a new file
    rewritten = watch.scan()
    assert [f.path.name for f in rewritten] == ["file_10.tif"] and rewritten[0].state is None
    assert natural_key("a9b") < natural_key("a10b") < natural_key("b1")


def test_directory_watch_looks_at_finished_files_less_often(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"II*\x00")
    (tmp_path / "b.tif").write_bytes(b"II*\x00")
    watch = DirectoryWatch(tmp_path, quiet_after_s=1.0, recheck_s=0.25, listing_share=1.0)
    watch.scan(now=100.0)
    watch.scan(now=101.5)  # both unchanged for 1.5 s: quiet
    with open(tmp_path / "a.tif", "ab") as fh:
        fh.write(b"x")
    with open(tmp_path / "b.tif", "ab") as fh:
        fh.write(b"x")
    assert [f.path.name for f in watch.scan(now=101.6)] == ["b.tif"]  # the newest is always looked at
    assert [f.path.name for f in watch.scan(now=101.8)] == ["a.tif"]  # the other at its next look


def test_a_large_directory_is_listed_less_often_but_the_newest_file_always(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"II*\x00")
    watch = DirectoryWatch(tmp_path, listing_share=1e-6, max_listing_gap_s=1e6)  # listing "expensive": next one far away
    watch.scan(now=10.0)
    (tmp_path / "b.tif").write_bytes(b"II*\x00")
    with open(tmp_path / "a.tif", "ab") as fh:
        fh.write(b"x")
    assert [f.path.name for f in watch.scan(now=10.001)] == ["a.tif"]  # the newest: looked at
    assert [f.path.name for f in watch.scan(now=1e9)] == ["b.tif"]  # the new file: at the next listing
    (tmp_path / "b.tif").rename(tmp_path / "c.tif")
    assert [f.path.name for f in watch.scan(now=1e9 + 0.001)] == ["c.tif"]  # newest gone: listed at once
    capped = DirectoryWatch(tmp_path, listing_share=1e-6, max_listing_gap_s=0.1)
    capped.scan(now=10.0)
    (tmp_path / "d.tif").write_bytes(b"II*\x00")
    assert capped.scan(now=10.05) == []
    assert [f.path.name for f in capped.scan(now=10.11)] == ["d.tif"]  # listed again within the cap


def test_acquisition_clock_bounds_by_the_fastest_frame_and_restarts() -> None:
    clock = AcquisitionClock(window_s=5.0, restart_s=0.5)
    ms = 1_000_000
    start = 1_000 * ms
    delays = [7, 3, 9, 4, 12]  # ms between taking each frame and the bridge seeing it
    acquired = [clock.acquired_ns(i * 0.01, start + i * 10 * ms + d * ms) for i, d in enumerate(delays)]
    for i, t in enumerate(acquired):
        assert t <= start + i * 10 * ms + delays[i] * ms  # never after the bridge saw it
    # from frame 1 on the offset is bounded by the 3 ms frame: exact spacing, 3 ms late
    assert acquired[1:] == [start + i * 10 * ms + 3 * ms for i in range(1, 5)]
    # a new acquisition restarts the microscope's clock at 0, 2 s later on this host
    later = start + 2_000 * ms
    assert clock.acquired_ns(0.0, later + 5 * ms) == later + 5 * ms
    assert clock.restarts == 1


def test_scanimage_metadata_is_read_as_tifffile_reads_it(tmp_path: Path, scanimage_writer: Any) -> None:
    path = tmp_path / "si_00001.tif"
    frames = np.random.default_rng(1).integers(0, 4000, size=(3, 2, 6, 8), dtype=np.uint16)
    scanimage_writer(path, frames, rate_hz=30.0)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_scanimage  # tifffile takes this file for ScanImage's
    found = [(declared_channels(page), scanimage_timestamp_s(page)) for _, page in TiffTail(path).read_new()]
    assert found[0][0] == 2
    assert [t for _, t in found] == pytest.approx([0, 0, 1 / 30, 1 / 30, 2 / 30, 2 / 30], abs=1e-6)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, FRAMES[0])
    with tifffile.TiffFile(plain) as tif:
        assert declared_channels(tif.pages[0]) is None and scanimage_timestamp_s(tif.pages[0]) is None


def test_frame_format_checks_and_fixes_nothing_silently() -> None:
    fmt = FrameFormat(np.dtype("uint16"), None, "test")
    out = fmt.conform(FRAMES[0].astype(">u2"))
    assert out.dtype == np.dtype("<u2") and fmt.shape == (5, 7)
    np.testing.assert_array_equal(out, FRAMES[0])
    np.testing.assert_array_equal(fmt.conform(FRAMES[0].astype(np.uint8)), FRAMES[0].astype(np.uint8))
    with pytest.raises(FrameRefused, match="5 x 7"):
        fmt.conform(np.zeros((6, 7), np.uint16))
    # ScanImage's default int16 becomes float32 (the importers' rule, protocols/pixels.py): refused
    # for a uint16 model, published exactly for a float32 one
    signed = np.array([[-3, 0, 5, 32767, -32768, 1, 2]] * 5, np.int16)
    with pytest.raises(FrameRefused, match="int16 .published as float32.*uint16"):
        fmt.conform(signed)
    as_float = FrameFormat(np.dtype("float32"), (5, 7), "test").conform(signed)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, signed.astype(np.float32))
    with pytest.raises(FrameRefused, match="int32"):
        fmt.conform(np.zeros((5, 7), np.int32))
    with pytest.raises(FrameRefused, match="2-D"):
        fmt.conform(np.zeros((5, 7, 3), np.uint16))
