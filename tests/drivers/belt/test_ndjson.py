"""NDJSON belt protocol: the schema of docs/belt-ndjson.md."""

import pytest
from hypothesis import given, settings, strategies as st

from drivers.belt import ndjson
from drivers.belt.decoder import make_decoder
from drivers.belt.reading import Reading

LINES = [
    (b'{"heart_rate_bpm": 62, "resp_rate_per_min": 14.5}\n',
     dict(heart_rate_bpm=62.0, resp_rate_per_min=14.5, kind="instant")),
    (b'{"presence": true, "in_bed": false, "distance_m": 0.8}\r\n',
     dict(presence=True, in_bed=False, distance_m=0.8)),
    (b'{"heart_rate_bpm": 0, "resp_rate_per_min": null}\n',
     dict(heart_rate_bpm=None, resp_rate_per_min=None)),
    (b'{"resp_rate_per_min": 0, "resp_state": "apnea"}\n',
     dict(resp_rate_per_min=0.0, resp_state="apnea")),
    (b'{"kind": "window", "window_s": 600, "turnover_count": 3, "sleep_stage": "deep"}\n',
     dict(kind="window", window_s=600.0, turnover_count=3, sleep_stage="deep")),
    (b'{"v": 1, "firmware": "belt-bridge 1.2"}\n', dict(firmware="belt-bridge 1.2")),
]


def check(reading, expected):
    for key, value in expected.items():
        assert getattr(reading, key) == value, (key, reading)


@pytest.mark.parametrize("line,expected", LINES)
@pytest.mark.parametrize("how", ["whole", "byte_by_byte", "garbage"])
def test_lines(line, expected, how):
    d = make_decoder("ndjson")
    if how == "whole":
        got = d.feed(line)
    elif how == "byte_by_byte":
        got = [r for b in line for r in d.feed(bytes((b,)))]
    else:
        got = d.feed(b"\x00\xff garbage\n" + line + b"[1,2]\n{not json\n")
        assert d.counters["bad_json"] == 3
    [reading] = got
    check(reading, expected)


def test_bad_field_is_dropped_the_rest_kept_and_logged_once(caplog):
    d = make_decoder("ndjson")
    line = b'{"heart_rate_bpm": "fast", "resp_rate_per_min": 15, "colour": "red"}\n'
    a, b = d.feed(line * 2)
    assert a.heart_rate_bpm is None and a.resp_rate_per_min == 15.0
    assert d.counters["bad_field"] == 2
    assert sum("heart_rate_bpm" in r.getMessage() for r in caplog.records) == 1
    assert sum("colour" in r.getMessage() for r in caplog.records) == 1


def test_oversize_line_is_dropped_and_the_next_line_decodes():
    d = make_decoder("ndjson")
    big = b'{"firmware": "' + b"x" * 5000 + b'"}\n'
    got = []
    for i in range(0, len(big), 700):
        got += d.feed(big[i:i + 700])
        assert d.buffered <= ndjson.MAX_LINE + 700
    got += d.feed(b'{"heart_rate_bpm": 70}\n')
    assert [r.heart_rate_bpm for r in got] == [70.0]
    assert d.counters["oversize"] == 1


def test_encode_round_trip():
    r = Reading("ndjson", presence=True, heart_rate_bpm=58.0, resp_rate_per_min=12.0)
    [back] = make_decoder("ndjson").feed(ndjson.encode_reading(r))
    assert back == r


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=400), max_size=12))
def test_random_bytes_never_raise_and_stay_bounded(chunks):
    d = make_decoder("ndjson")
    for chunk in chunks:
        d.feed(chunk)
        assert d.buffered <= ndjson.MAX_LINE + 400
    got = d.feed(b'\n{"heart_rate_bpm": 66}\n')
    assert got[-1].heart_rate_bpm == 66.0
