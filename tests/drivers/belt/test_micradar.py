"""MicRadar codec and reassembler on the reference's checked frames (sleep-sensors.md 1.1-1.4)."""

import pytest
from hypothesis import given, settings, strategies as st

from drivers.belt import micradar as m
from drivers.belt.decoder import make_decoder

H = bytes.fromhex

# The reference's checked example frames and what each must decode to.
CHECKED = [
    ("53 59 81 02 00 01 43 73 54 43", dict(resp_rate_per_min=67.0)),      # real capture
    ("53 59 01 02 00 01 0F BF 54 43", dict(kind="event")),                  # reset
    ("53 59 84 0C 00 08 01 01 0E 3E 02 05 14 00 AD 54 43",
     dict(kind="window", window_s=600.0, presence=True, in_bed=True, sleep_stage="light",
          resp_rate_per_min=14.0, heart_rate_bpm=62.0, turnover_count=2)),
    ("53 59 80 00 00 01 01 2E 54 43", dict(kind="info")),                   # presence on (echo)
    ("53 59 84 0F 00 01 00 40 54 43", dict(kind="unknown")),                # removed in V3.1
    ("53 59 80 81 00 01 0F BD 54 43", dict(kind="unknown")),                # host's own query
]


def frames_of(hexes):
    return b"".join(H(h) for h, _ in hexes)


def check(reading, expected):
    for key, value in expected.items():
        assert getattr(reading, key) == value, (key, reading)


@pytest.mark.parametrize("hex_frame,expected", CHECKED)
def test_checked_frames_whole(hex_frame, expected):
    d = make_decoder("micradar")
    [reading] = d.feed(H(hex_frame))
    check(reading, expected)
    assert d.counters["frames_ok"] == 1 and d.counters["garbage_bytes"] == 0


@pytest.mark.parametrize("hex_frame,expected", CHECKED)
def test_checked_frames_byte_by_byte(hex_frame, expected):
    d = make_decoder("micradar")
    got = []
    for b in H(hex_frame):
        got += d.feed(bytes((b,)))
    [reading] = got
    check(reading, expected)


@pytest.mark.parametrize("hex_frame,expected", CHECKED)
def test_checked_frames_inside_garbage(hex_frame, expected):
    d = make_decoder("micradar")
    noise = b"\x00\x53\x54\x43\xff\x53\x59\x00"   # a false header start, a lone tail
    [reading] = d.feed(noise + H(hex_frame) + b"\x43\x53")
    check(reading, expected)
    assert d.counters["garbage_bytes"] >= len(noise) - 2
    assert d.buffered <= 1       # a trailing 0x53 may begin the next header


def test_encoders_reproduce_checked_frames():
    assert m.encode(0x80, 0x81, b"\x0f") == H("53 59 80 81 00 01 0F BD 54 43")
    assert m.composite(True, 1, 14, 62, 2, 5, 20) == H(
        "53 59 84 0C 00 08 01 01 0E 3E 02 05 14 00 AD 54 43")
    assert m.resp_rate(0x43) == H("53 59 81 02 00 01 43 73 54 43")


def test_handshake_is_the_documented_frames():
    assert m.handshake_frames() == [
        H("53 59 02 A4 00 01 0F 62 54 43"),      # firmware query
        H("53 59 80 00 00 01 01 2E 54 43"),      # presence on
        H("53 59 81 00 00 01 01 2F 54 43"),      # breathing on
        H("53 59 85 00 00 01 01 33 54 43"),      # heart rate on
        H("53 59 84 00 00 01 01 32 54 43"),      # sleep on
        H("53 59 80 81 00 01 0F BD 54 43"),      # presence query (manual, Appendix 1)
        H("53 59 84 81 00 01 0F C1 54 43"),      # in-bed query
    ]


def test_query_replies_carry_the_current_state():
    assert m.interpret(m.Reassembler().feed(m.encode(0x84, 0x81, b"\x01"))[0]).in_bed is True
    assert m.interpret(m.Reassembler().feed(m.encode(0x80, 0x81, b"\x00"))[0]).presence is False


def test_heart_rate_67_is_not_mistaken_for_a_tail():
    frame = m.heart_rate(67)
    assert frame[6] == 0x43
    d = make_decoder("micradar")
    got = []
    for b in frame + m.heart_rate(0x54) + m.resp_rate(0x43):
        got += d.feed(bytes((b,)))
    assert [r.heart_rate_bpm for r in got[:2]] == [67.0, 84.0]
    assert got[2].resp_rate_per_min == 67.0


def test_bad_checksum_then_good_frame():
    bad = bytearray(m.heart_rate(60))
    bad[7] ^= 0x01
    d = make_decoder("micradar")
    readings = d.feed(bytes(bad) + m.heart_rate(61))
    assert [r.heart_rate_bpm for r in readings] == [61.0]
    assert d.counters["bad_checksum"] == 1 and d.counters["frames_ok"] == 1


def test_bad_tail_oversize_and_frame_hidden_in_a_bad_one():
    good = m.resp_rate(15)
    bad_tail = m.heart_rate(60)[:-1] + b"\x00"
    oversize = H("53 59 85 02 01 00")       # length 256: noise, never buffered whole
    d = make_decoder("micradar")
    readings = d.feed(bad_tail + oversize + good)
    assert [r.resp_rate_per_min for r in readings] == [15.0]
    c = d.counters
    assert (c["bad_tail"], c["oversize"], c["frames_ok"]) == (1, 1, 1)


def test_a_frame_inside_a_corrupt_length_is_found():
    # a header whose length says 60 swallows the next real frame: resync must find it
    d = make_decoder("micradar")
    readings = d.feed(H("53 59 85 02 00 3C") + m.heart_rate(70) + bytes(60))
    assert [r.heart_rate_bpm for r in readings] == [70.0]
    assert d.counters["bad_checksum"] == 1


def test_zero_rates_are_no_reading():
    d = make_decoder("micradar")
    hr, rr = d.feed(m.heart_rate(0) + m.resp_rate(0))
    assert hr.heart_rate_bpm is None and rr.resp_rate_per_min is None
    assert hr.kind == rr.kind == "instant"


def test_report_messages():
    d = make_decoder("micradar")
    r = d.feed(m.presence(True) + m.motion(2) + m.movement(35) + m.distance(82)
               + m.in_bed(1) + m.in_bed(2) + m.sleep_stage(0) + m.sleep_stage(3)
               + m.resp_state(3) + m.heart_rate(120) + m.heart_rate(99)
               + m.encode(0x85, 0x82, b"\x48"))       # reply to an HR query
    assert r[0].presence is True
    assert r[1].motion == "active"
    assert r[2].movement_index == 35.0
    assert r[3].distance_m == 0.82
    assert (r[4].in_bed, r[5].in_bed) == (True, None)
    assert (r[6].sleep_stage, r[7].sleep_stage) == ("deep", None)
    assert r[8].resp_state == "slow"
    assert (r[9].heart_rate_bpm, r[9].hr_clamped) == (120.0, True)
    assert r[10].hr_clamped is False
    assert r[11].heart_rate_bpm == 72.0


def test_composite_out_of_bed_and_night_summary():
    d = make_decoder("micradar")
    out_of_bed, summary = d.feed(
        m.composite(True, 3, 0, 0, 0, 0, 0)
        + m.encode(0x84, 0x0D, bytes((80, 0x01, 0xC2, 10, 60, 30, 25, 2, 14, 13, 58, 0))))
    assert (out_of_bed.in_bed, out_of_bed.sleep_stage) == (False, None)
    assert out_of_bed.heart_rate_bpm is None and out_of_bed.resp_rate_per_min is None
    assert summary.kind == "night_summary" and summary.window_s == 450 * 60.0
    assert (summary.out_of_bed_count, summary.out_of_bed_min, summary.turnover_count) == (2, 25.0, 14)
    assert (summary.resp_rate_per_min, summary.heart_rate_bpm) == (13.0, 58.0)
    assert summary.raw["sleep_score"] == 80


def test_firmware_is_read_and_reinit_queues_the_handshake():
    d = make_decoder("micradar")
    [fw] = d.feed(m.firmware_reply("G60SM1SYv010009"))
    assert fw.firmware == d.firmware == "G60SM1SYv010009"
    assert d.take_outgoing() == []
    d.feed(m.init_complete())
    assert d.take_outgoing() == m.handshake_frames()
    assert d.take_outgoing() == []


def test_unknown_pairs_kept_raw_and_logged_once(caplog):
    d = make_decoder("micradar")
    frame = m.encode(0x81, 0x08, b"\x01\x02")
    readings = d.feed(frame * 3)
    assert [r.kind for r in readings] == ["unknown"] * 3
    assert readings[0].raw["hex"] == "0102" and readings[0].raw["control"] == 0x81
    assert d.counters["unknown"] == 3
    logged = [r for r in caplog.records if "does not know" in r.getMessage()]
    assert len(logged) == 1


def test_wrong_length_for_a_known_message_is_unknown_not_guessed():
    d = make_decoder("micradar")
    [r] = d.feed(m.encode(0x85, 0x02, b"\x40\x41"))
    assert r.kind == "unknown" and r.heart_rate_bpm is None


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200), max_size=20),
       hr=st.integers(min_value=1, max_value=255), cut=st.integers(min_value=1, max_value=40))
def test_random_bytes_never_raise_stay_bounded_and_frames_are_found(chunks, hr, cut):
    d = make_decoder("micradar")
    for chunk in chunks:
        d.feed(chunk)
        assert d.buffered <= m.MAX_FRAME_LEN
    # flush whatever partial header the noise left, then embed a frame in more noise
    d.feed(bytes(m.MAX_FRAME_LEN))
    noise = b"".join(chunks)[:100].replace(b"\x53", b"\x00")
    stream = noise + m.heart_rate(hr) + noise
    got = []
    for i in range(0, len(stream), cut):
        got += d.feed(stream[i:i + cut])
        assert d.buffered <= m.MAX_FRAME_LEN
    assert [r.heart_rate_bpm for r in got if r.heart_rate_bpm] == [float(hr)]
