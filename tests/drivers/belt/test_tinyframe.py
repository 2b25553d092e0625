"""TinyFrame codec and reassembler on the reference's checked frames (sleep-sensors.md 2)."""

import pytest
from hypothesis import given, settings, strategies as st

from drivers.belt import tinyframe as t
from drivers.belt.decoder import make_decoder

H = bytes.fromhex

CHECKED = [
    ("01 04 AF 00 04 FF FF 51 06 03 0A 00 F0", dict(kind="info", firmware="6.3.10.0")),
    ("01 00 03 00 01 30 00 CC FF 00", dict(kind="unknown")),
    ("01 00 01 00 04 0A 14 E5 00 00 88 41 36", dict(resp_rate_per_min=17.0)),
    ("01 00 01 00 00 FF FF FF", dict(kind="info", firmware=None)),    # the host's query
]


def check(reading, expected):
    for key, value in expected.items():
        assert getattr(reading, key) == value, (key, reading)


@pytest.mark.parametrize("hex_frame,expected", CHECKED)
@pytest.mark.parametrize("how", ["whole", "byte_by_byte", "garbage"])
def test_checked_frames(hex_frame, expected, how):
    d = make_decoder("tinyframe")
    frame = H(hex_frame)
    if how == "whole":
        got = d.feed(frame)
    elif how == "byte_by_byte":
        got = [r for b in frame for r in d.feed(bytes((b,)))]
    else:
        got = d.feed(b"\xaa\x01\x02\x03\xff" + frame + b"\xee\x01")
        assert d.counters["garbage_bytes"] >= 5
    [reading] = got
    check(reading, expected)
    assert d.counters["frames_ok"] == 1


def test_encoders_reproduce_checked_frames():
    assert t.resp_rate(17.0, frame_id=1) == H("01 00 01 00 04 0A 14 E5 00 00 88 41 36")
    assert t.query_firmware() == H("01 00 01 00 00 FF FF FF")
    assert t.firmware_reply(6, 3, 10, 0, frame_id=0x04AF) == H("01 04 AF 00 04 FF FF 51 06 03 0A 00 F0")
    assert t.handshake_frames() == [H("01 00 01 00 00 FF FF FF")]


def test_hlk_presence_typo_is_rejected_and_the_corrected_frame_decodes():
    d = make_decoder("tinyframe")
    assert d.feed(H("01 00 00 00 02 0F 09 F9 01 00 FE")) == []
    assert d.counters["bad_header_checksum"] == 1
    [r] = d.feed(H("01 00 00 00 02 0F 09 FA 01 00 FE"))
    assert r.presence is True


def test_floats_little_endian_and_zero_is_no_reading():
    d = make_decoder("tinyframe")
    hr, no_hr, rr0, dist, no_dist, absent = d.feed(
        t.heart_rate(73.0) + t.heart_rate(0.0) + t.resp_rate(0.0) + t.distance(38.08)
        + t.distance(50.0, valid=False) + t.presence(False))
    assert hr.heart_rate_bpm == 73.0 and H("00 00 92 42") in t.heart_rate(73.0)
    assert no_hr.heart_rate_bpm is None and rr0.resp_rate_per_min is None
    assert dist.distance_m == pytest.approx(0.3808)
    assert no_dist.distance_m is None
    assert absent.presence is False


def test_bad_data_checksum_then_good_frame():
    bad = bytearray(t.heart_rate(70.0))
    bad[-1] ^= 0xFF
    d = make_decoder("tinyframe")
    assert [r.heart_rate_bpm for r in d.feed(bytes(bad) + t.heart_rate(71.0))] == [71.0]
    assert d.counters["bad_checksum"] == 1


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=12),
       bpm=st.integers(min_value=30, max_value=200))
def test_random_bytes_never_raise_and_stay_bounded(chunks, bpm):
    d = make_decoder("tinyframe")
    limit = t.HEADER_LEN + t.MAX_DATA_LEN + 1
    for chunk in chunks:
        d.feed(chunk)
        assert d.buffered <= limit
    d.feed(bytes(limit))               # flush a partial frame the noise may have begun
    noise = b"".join(chunks)[:100].replace(b"\x01", b"\x00")
    got = d.feed(noise + t.heart_rate(float(bpm)) + noise)
    assert [r.heart_rate_bpm for r in got] == [float(bpm)]
