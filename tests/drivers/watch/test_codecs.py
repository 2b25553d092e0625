"""Watch codecs on real byte strings: the reference layouts' own examples, whole, split, with
garbage; and a property that no input raises."""

import pytest
from hypothesis import given, strategies as st

from drivers.watch import bthome, gatt, pattern
from drivers.watch.decoder import WatchDecoder
from drivers.watch.profiles import make_profile
from drivers.watch.reports import Battery, HeartRate, Location, Press

H = bytes.fromhex


# --- Heart Rate Measurement 0x2A37 -------------------------------------------------------------
@pytest.mark.parametrize("hexes,bpm,rr,energy,contact", [
    ("16 48 00 04", 72, (1.0,), None, True),          # SIG example: contact, RR 1024/1024 s
    ("00 48", 72, (), None, None),                     # InfiniTime's minimal form
    ("06 3c", 60, (), None, True),                     # Bangle.js app: [0x06, bpm]
    ("04 3c", 60, (), None, False),                    # contact supported, not detected
    ("01 2c 01", 300, (), None, None),                 # uint16 bpm
    ("19 48 00 10 27 00 02 00 04", 72, (0.5, 1.0), 10000, None),  # uint16 + energy + 2 RR
    ("10 48 00 04 00", 72, (1.0,), None, None),        # a trailing odd byte is not an RR
])
def test_heart_rate(hexes, bpm, rr, energy, contact):
    hr = gatt.decode_heart_rate(H(hexes))
    assert hr == HeartRate(bpm, rr, energy, contact)


@pytest.mark.parametrize("hexes", ["", "00", "01 48", "08 48 10"])
def test_heart_rate_too_short_is_none(hexes):
    assert gatt.decode_heart_rate(H(hexes)) is None


# --- Battery Level 0x2A19 ----------------------------------------------------------------------
@pytest.mark.parametrize("hexes,pct", [("60", 96), ("00", 0), ("64", 100), ("65", None), ("", None),
                                       ("60 00", None)])
def test_battery(hexes, pct):
    b = gatt.decode_battery(H(hexes))
    assert (b.battery_pct if b else None) == pct


# --- Location and Speed 0x2A67 -----------------------------------------------------------------
BERLIN = "84 00 80 ea 4d 1f d0 70 fd 07"     # reference example: location, status OK


def test_location_reference_example():
    ls = gatt.decode_location_speed(H(BERLIN))
    assert (ls.lat, ls.lon, ls.status) == (52.52, 13.405, "ok")


def test_location_with_speed_and_distance_then_second_part():
    # packet 1: speed 1.50 m/s, distance 12.3 m, location (status estimated: bits 7-8 = 2)
    p1 = H("07 01 96 00 7b 00 00 80 ea 4d 1f d0 70 fd 07")
    # packet 2: elevation 34.56 m, heading 90.00 deg, UTC 2026-11-23 14:05:09
    p2 = H("58 00 80 0d 00 28 23 ea 07 0b 17 0e 05 09")
    a, b = gatt.decode_location_speed(p1), gatt.decode_location_speed(p2)
    assert (a.speed_mps, a.distance_m, a.lat, a.lon, a.status) == (1.5, 12.3, 52.52, 13.405, "estimated")
    assert (b.lat, b.elevation_m, b.heading_deg, b.utc) == (None, 34.56, 90.0, "2026-11-23T14:05:09Z")


def test_split_location_joins_into_one_fix_in_the_decoder():
    d = WatchDecoder(make_profile("standard"))
    first = d.notification(gatt.LOCATION_AND_SPEED, H(BERLIN), mono=10.0)
    second = d.notification(gatt.LOCATION_AND_SPEED, H("58 00 80 0d 00 28 23 ea 07 0b 17 0e 05 09"), 10.1)
    assert first == [Location(52.52, 13.405, None, "ok", mono=10.0)]
    assert second == [Location(52.52, 13.405, None, "ok", 34.56, None, 90.0, "2026-11-23T14:05:09Z", 10.0)]
    assert d.location == second[0]
    # a second part long after the fix belongs to nothing
    assert d.notification(gatt.LOCATION_AND_SPEED, H("08 00 80 0d 00"), 60.0) == []


def test_position_quality_gives_accuracy():
    d = WatchDecoder(make_profile("standard"))
    d.notification(gatt.LOCATION_AND_SPEED, H(BERLIN), 1.0)
    (fix,) = d.notification(gatt.POSITION_QUALITY, H("0d 00 07 1e 00 00 0c 00 00"), 1.2)  # 7 beacons, TTFF 3 s, EHPE 30.72 m
    assert fix.accuracy_m == 30.72 and fix.details(now_mono=31.0) == {
        "lat": 52.52, "lon": 13.405, "accuracy_m": 30.72, "age_s": 30.0}


@pytest.mark.parametrize("hexes", ["", "84", "84 00 80 ea 4d", "04 00 ff ff ff 7f 00 00 00 00"])
def test_location_truncated_or_impossible_is_none(hexes):
    assert gatt.decode_location_speed(H(hexes)) is None


# --- iTag button, custom patterns --------------------------------------------------------------
def test_itag_press_and_garbage():
    d = WatchDecoder(make_profile("itag"))
    assert d.notification(pattern.ITAG_BUTTON, b"\x01", 5.0) == [Press("sos", None, 5.0)]
    assert d.notification(pattern.ITAG_BUTTON, b"\x02", 9.0) == []
    assert d.notification(pattern.ITAG_BUTTON, b"\x01\x01", 9.0) == []
    assert d.garbage == 2


def test_duplicate_press_within_the_window_counts_once():
    d = WatchDecoder(make_profile("itag"), dedupe_s=2.0)
    assert len(d.notification(pattern.ITAG_BUTTON, b"\x01", 5.0)) == 1
    assert d.notification(pattern.ITAG_BUTTON, b"\x01", 5.001) == []
    assert d.duplicates == 1 and d.garbage == 0
    assert len(d.notification(pattern.ITAG_BUTTON, b"\x01", 7.5)) == 1


def test_custom_patterns():
    p = make_profile("custom", event_char="ffa3", sos_pattern="01 ?? ??", fall_pattern="?? ?? 01",
                     ok_pattern="02")
    d = WatchDecoder(p)
    c = "0000ffa3-0000-1000-8000-00805f9b34fb"
    assert d.notification(c, H("00 00 01"), 1.0) == [Press("fall", None, 1.0)]
    assert d.notification(c, H("01 00 00"), 2.0) == [Press("sos", None, 2.0)]
    assert d.notification(c, H("02"), 3.0) == [Press("ok", None, 3.0)]
    assert d.notification(c, H("00 00 00"), 4.0) == [] and d.garbage == 1
    # the standard characteristics still decode on a custom watch
    assert d.notification(gatt.BATTERY_LEVEL, H("2a"), 5.0) == [Battery(42, 5.0)]


@pytest.mark.parametrize("text,parsed", [("01", (1,)), ("01 ?? 02", (1, None, 2)),
                                         ("01??02", (1, None, 2)), ("", ())])
def test_parse_pattern(text, parsed):
    assert pattern.parse_pattern(text) == parsed


@pytest.mark.parametrize("bad", ["0x01", "1", "zz", "01 ? 02"])
def test_bad_pattern_says_so(bad):
    with pytest.raises(ValueError, match="byte pattern"):
        pattern.parse_pattern(bad)


def test_normalize_uuid():
    assert pattern.normalize_uuid("0xFFE1") == pattern.ITAG_BUTTON
    assert pattern.normalize_uuid("6E400003-B5A3-F393-E0A9-E50E24DCCA9E") == \
        "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
    with pytest.raises(ValueError):
        pattern.normalize_uuid("ffe")


# --- BTHome v2 ---------------------------------------------------------------------------------
def test_bthome_button_with_packet_id_and_battery():
    # Shelly BLU Button1 style: trigger-based v2, packet id 0x2a, battery 100 %, press
    pkt = bthome.decode_bthome(H("44 00 2a 01 64 3a 01"))
    assert pkt == bthome.BTHomePacket(42, 100, ("press",), True)


def test_bthome_skips_known_objects_and_stops_at_unknown():
    # temperature (0x02, 2 bytes) before the button; then an unknown id 0x99 ends it
    assert bthome.decode_bthome(H("40 00 07 02 c4 09 3a 04 99 01")).buttons == ("long_press",)


@pytest.mark.parametrize("hexes", ["", "41 00 01", "20 00 01", "44 00"])
def test_bthome_encrypted_wrong_version_or_empty(hexes):
    pkt = bthome.decode_bthome(H(hexes))
    assert pkt is None or (pkt.buttons == () and pkt.battery_pct is None)


def test_bthome_decoder_dedupes_by_packet_id():
    d = WatchDecoder(make_profile("bthome"))
    adv = {bthome.BTHOME_UUID: H("44 00 07 3a 01")}
    assert d.advertisement(adv, 1.0) == [Press("sos", 7, 1.0)]
    assert d.advertisement(adv, 1.1) == []          # the same packet, advertised again
    assert d.advertisement({bthome.BTHOME_UUID: H("44 00 08 3a 02")}, 9.0) == [Press("ok", 8, 9.0)]
    assert d.advertisement({bthome.BTHOME_UUID: H("44 00 09 3a 01")}, 9.1) == [Press("sos", 9, 9.1)]
    assert d.advertisement({"0000feaf-0000-1000-8000-00805f9b34fb": b"\x01"}, 10.0) == []


# --- nothing raises ----------------------------------------------------------------------------
CHARS = [gatt.HEART_RATE_MEASUREMENT, gatt.BATTERY_LEVEL, gatt.LOCATION_AND_SPEED,
         gatt.POSITION_QUALITY, pattern.ITAG_BUTTON, "0000ffa3-0000-1000-8000-00805f9b34fb",
         "00002a00-0000-1000-8000-00805f9b34fb"]


@given(st.sampled_from(CHARS), st.binary(max_size=40), st.floats(0, 1e6))
def test_no_notification_raises(char, data, mono):
    d = WatchDecoder(make_profile("custom", event_char="ffa3", sos_pattern="01", fall_pattern="?? 01"))
    for report in d.notification(char, data, mono):
        assert report.mono == mono


@given(st.binary(max_size=40))
def test_no_advertisement_raises(data):
    WatchDecoder(make_profile("bthome")).advertisement({bthome.BTHOME_UUID: data}, 0.0)


@given(st.binary(max_size=40))
def test_codecs_return_none_or_a_report(data):
    for decode in (gatt.decode_heart_rate, gatt.decode_battery, gatt.decode_location_speed,
                   gatt.decode_position_quality, bthome.decode_bthome):
        decode(data)


@given(st.binary(max_size=30), st.binary(max_size=30))
def test_real_frames_survive_garbage_around_them(before, after):
    """A press or a fix between garbage notifications still decodes, exactly once."""
    d = WatchDecoder(make_profile("standard"))
    d.notification(gatt.LOCATION_AND_SPEED, before, 0.0)
    fix = d.notification(gatt.LOCATION_AND_SPEED, H(BERLIN), 10.0)
    later = d.notification(gatt.LOCATION_AND_SPEED, after, 20.0)
    assert fix == [Location(52.52, 13.405, None, "ok", mono=10.0)]
    assert d.location == (later[0] if later else fix[0])


def test_a_fix_with_position_status_none_is_no_fix():
    assert gatt.location_of(gatt.decode_location_speed(H("04 00" + "00" * 8))) is None
