"""Recording format of spec section 1: writer, reader, clear errors with line numbers."""

from datetime import datetime, timedelta, timezone

import pytest

from hub.errors import ParsingError
from drivers.recording import RecordingWriter, read_recording

TZ = timezone(timedelta(hours=8))


def test_round_trip(tmp_path):
    path = tmp_path / "night.jsonl"
    t0 = datetime(2026, 11, 23, 22, 14, 5, 120000, tzinfo=TZ)
    with RecordingWriter(path) as w:
        w.write(b"\x53\x59\x85\x02", t0)
        w.write(b"\x00\x01\x42\x76\x54\x43", t0 + timedelta(milliseconds=5))
    first = path.read_text().splitlines()[0]
    assert first == '{"t": "2026-11-23T22:14:05.120+08:00", "source": "belt", "hex": "53598502"}'
    chunks = list(read_recording(path))
    assert [c.data for c in chunks] == [b"\x53\x59\x85\x02", b"\x00\x01\x42\x76\x54\x43"]
    assert chunks[1].t == t0 + timedelta(milliseconds=5) and chunks[1].line == 2


def test_spec_example_with_spaces_in_hex_and_blank_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"t": "2026-11-23T22:14:05.120+08:00", "source": "belt", '
                    '"hex": "5359850200014276 5443"}\n\n'
                    '{"t": "2026-11-23T14:14:06Z", "source": "watch", "hex": "00"}\n')
    [chunk] = read_recording(path, source="belt")
    assert chunk.data == bytes.fromhex("53598502000142765443")
    assert chunk.t.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize("line,message", [
    ('{"t": "2026-11-23T22:14:05", "source": "belt", "hex": "00"}', "no UTC offset"),
    ('{"t": "yesterday", "source": "belt", "hex": "00"}', "not an RFC 3339 time"),
    ('{"t": "2026-11-23T22:14:05Z", "source": "belt", "hex": "5G"}', "not hex digits"),
    ('{"t": "2026-11-23T22:14:05Z", "hex": "00"}', "missing source"),
    ('not json', "not a JSON object"),
])
def test_bad_line_is_a_clear_error_with_its_line_number(tmp_path, line, message):
    path = tmp_path / "r.jsonl"
    path.write_text('{"t": "2026-11-23T22:14:05Z", "source": "belt", "hex": "00"}\n' + line + "\n")
    with pytest.raises(ParsingError) as err:
        list(read_recording(path))
    assert f"{path}:2:" in str(err.value) and message in str(err.value)
