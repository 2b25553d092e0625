"""Every belt decoder against hostile input: nothing raises, buffers stay bounded, what it
returns is sane, and a valid frame after the garbage still decodes.

Arbitrary bytes are covered per protocol in test_micradar/test_tinyframe/test_ndjson; here the
input is shaped to get past the framing: correctly framed frames with any payload, NDJSON lines
with huge numbers, NaN, deep nesting, lone surrogates, invalid UTF-8, endless lines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from drivers.belt import micradar as m
from drivers.belt import ndjson
from drivers.belt import tinyframe as t
from drivers.belt.decoder import PROTOCOLS, make_decoder
from drivers.belt.reading import Reading

BOUND = {"micradar": m.MAX_FRAME_LEN, "tinyframe": t.HEADER_LEN + t.MAX_DATA_LEN + 1,
         "ndjson": ndjson.MAX_LINE}
# What resynchronises each protocol after any garbage: more than its longest frame of bytes
# that cannot start one.
FLUSH = {"micradar": bytes(m.MAX_FRAME_LEN + 1), "tinyframe": bytes(BOUND["tinyframe"] + 1),
         "ndjson": b"\n"}
VALID = {"micradar": m.heart_rate(66), "tinyframe": t.heart_rate(66.0),
         "ndjson": b'{"heart_rate_bpm": 66}\n'}


def assert_sane(reading: Reading) -> None:
    """A reading the rules can use: finite numbers, text that survives JSON and UTF-8."""
    assert isinstance(reading, Reading)
    for f in dataclasses.fields(reading):
        v = getattr(reading, f.name)
        if isinstance(v, float):
            assert math.isfinite(v), (f.name, v)
        if isinstance(v, int) and not isinstance(v, bool):
            assert 0 <= v <= ndjson.MAX_COUNT, (f.name, v)
        if isinstance(v, str):
            v.encode("utf-8")
    json.dumps(dataclasses.asdict(reading), ensure_ascii=False, allow_nan=False).encode("utf-8")


def feed_all(decoder, data: bytes, cut: int) -> list[Reading]:
    out = []
    for i in range(0, len(data), cut):
        out += decoder.feed(data[i:i + cut])
        assert decoder.buffered <= BOUND[decoder.protocol] + cut
    return out


def still_decodes(decoder) -> None:
    got = decoder.feed(FLUSH[decoder.protocol] + VALID[decoder.protocol])
    assert [r.heart_rate_bpm for r in got if r.heart_rate_bpm] == [66.0], got


# --- framed frames with any payload ------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255),
                                 st.binary(max_size=m.MAX_DATA_LEN)), max_size=8),
       cut=st.integers(1, 80))
def test_micradar_any_framed_payload(frames, cut):
    d = make_decoder("micradar")
    got = feed_all(d, b"".join(m.encode(c, k, data) for c, k, data in frames), cut)
    for r in got:
        assert_sane(r)
    still_decodes(d)


_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.tuples(
    st.sampled_from([t.TYPE_HEART_RATE, t.TYPE_RESP_RATE, t.TYPE_DISTANCE, t.TYPE_PRESENCE,
                     t.TYPE_FIRMWARE, t.TYPE_PHASES]) | st.integers(0, 0xFFFF),
    st.binary(max_size=64) | st.builds(lambda a, b: struct.pack("<If", a, b), st.integers(0, 2**32 - 1), _FLOATS)
    | _FLOATS.map(lambda f: struct.pack("<f", f))), max_size=8),
    cut=st.integers(1, 80))
def test_tinyframe_any_framed_payload(frames, cut):
    d = make_decoder("tinyframe")
    got = feed_all(d, b"".join(t.encode(ty, data, i) for i, (ty, data) in enumerate(frames)), cut)
    for r in got:
        assert_sane(r)
    still_decodes(d)


def test_tinyframe_absurd_rates_are_no_reading():
    d = make_decoder("tinyframe")
    got = d.feed(t.heart_rate(3e38) + t.resp_rate(1e30) + t.heart_rate(float("inf")))
    assert [r.heart_rate_bpm for r in got] == [None, None, None]
    assert [r.resp_rate_per_min for r in got] == [None, None, None]


# --- NDJSON lines built to reach the field checks ------------------------------------------
huge_ints = st.builds(lambda sign, digits, k: sign * (10 ** digits + k), st.sampled_from([1, -1]),
                      st.integers(0, 500), st.integers(0, 10))
hostile_scalars = (huge_ints | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()
                   | st.none() | st.text(max_size=20) | st.integers(-(2 ** 64), 2 ** 64))
hostile_values = st.recursive(hostile_scalars, lambda inner: st.lists(inner, max_size=3)
                              | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
keys = st.sampled_from(sorted(ndjson.FIELDS) + sorted(ndjson.IGNORED)) | st.text(max_size=8)


def encode_line(obj) -> bytes:
    # Python's json writes NaN/Infinity and lone surrogates (as \ud800 escapes): what a buggy
    # bridge could send.
    return json.dumps(obj).encode() + b"\n"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objs=st.lists(st.dictionaries(keys, hostile_values, max_size=5), max_size=4),
       cut=st.integers(1, 200))
def test_ndjson_hostile_values_never_raise_and_what_is_kept_is_sane(objs, cut):
    d = make_decoder("ndjson")
    got = feed_all(d, b"".join(encode_line(o) for o in objs), cut)
    for r in got:
        assert_sane(r)
    still_decodes(d)


@pytest.mark.parametrize("digits", [20, 309, 400, 900])
@pytest.mark.parametrize("key", ["heart_rate_bpm", "window_s", "turnover_count", "apnea_count"])
def test_ndjson_huge_integer_is_rejected_not_raised(key, digits):
    d = make_decoder("ndjson")
    got = d.feed(b'{"in_bed": true, "%s": 1%s}\n' % (key.encode(), b"0" * digits))
    assert [r.in_bed for r in got] == [True]
    assert getattr(got[0], key) is None
    assert d.counters["bad_field"] == 1
    still_decodes(d)


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(1, 20000), opener=st.sampled_from(["[", '{"a":']))
def test_ndjson_deep_nesting(depth, opener):
    closer = "]" if opener == "[" else "}"
    d = make_decoder("ndjson")
    line = ('{"x":' + opener * depth + "1" + closer * depth + "}\n").encode()
    feed_all(d, line, 4096)
    still_decodes(d)


@settings(max_examples=30, deadline=None)
@given(length=st.integers(ndjson.MAX_LINE - 5, 3_000_000), cut=st.integers(1000, 65536))
def test_ndjson_endless_line_stays_bounded(length, cut):
    d = make_decoder("ndjson")
    feed_all(d, b'{"firmware": "' + b"a" * length, cut)
    still_decodes(d)


@given(junk=st.binary(min_size=1, max_size=40).filter(lambda b: not _utf8(b)))
def test_ndjson_invalid_utf8_is_dropped_and_counted(junk):
    d = make_decoder("ndjson")
    junk = junk.replace(b"\n", b"\xff")
    assert d.feed(b'{"firmware": "' + junk + b'", "in_bed": true}\n') == []
    assert d.counters["bad_json"] == 1
    still_decodes(d)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.parametrize("value", [[], {}, ["deep"], {"a": 1}, 3, 1.5])
@pytest.mark.parametrize("key", ["kind", "resp_state", "motion", "sleep_stage"])
def test_ndjson_unhashable_or_wrong_type_enumerations_are_rejected(key, value):
    d = make_decoder("ndjson")
    got = d.feed(encode_line({key: value, "in_bed": True}))
    assert [r.in_bed for r in got] == [True]
    assert d.counters["bad_field"] == 1


@pytest.mark.parametrize("text", ["\ud800", "bridge\x00", "a\nb".replace("\n", "\x1b")])
def test_ndjson_text_that_would_not_survive_json_is_rejected(text):
    d = make_decoder("ndjson")
    [r] = d.feed(encode_line({"firmware": text, "in_bed": True}))
    assert r.firmware is None and d.counters["bad_field"] == 1


# --- every decoder: arbitrary bytes then a valid frame --------------------------------------
@settings(max_examples=100, deadline=None)
@given(protocol=st.sampled_from(PROTOCOLS), junk=st.binary(max_size=3000), cut=st.integers(1, 512))
def test_every_decoder_recovers_after_any_bytes(protocol, junk, cut):
    d = make_decoder(protocol)
    for r in feed_all(d, junk, cut):
        assert_sane(r)
    still_decodes(d)


# --- the re-handshake after a reset is rate-limited ------------------------------------------
class FakeMonotonic:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_flood_of_reset_frames_sends_one_handshake_per_interval():
    clock = FakeMonotonic()
    d = make_decoder("micradar", monotonic=clock)
    hs = m.handshake_frames()
    reset = m.encode(0x01, 0x02, b"\x0f")
    d.feed(reset)
    assert d.take_outgoing() == hs            # the first reset: at once
    for _ in range(500):
        d.feed(reset + m.init_complete())
        clock.t += 0.01
    assert d.take_outgoing() == []            # a flood within the interval: nothing more
    assert d.counters["handshakes_deferred"] >= 1
    clock.t += m.REHANDSHAKE_MIN_S
    d.feed(m.heartbeat())
    assert d.take_outgoing() == hs            # the radar did reset meanwhile: once, late
    d.feed(m.heartbeat())
    clock.t += m.REHANDSHAKE_MIN_S * 3
    assert d.take_outgoing() == []            # and nothing while it stays quiet
    d.feed(reset)
    assert d.take_outgoing() == hs
