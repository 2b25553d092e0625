"""PDUs against the hex worked out in TS 23.040 layouts (each vector decoded independently
with python-gsmmodem's pdu.py when it was written down)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from drivers.modem import pdu

TO = "+8613800000000"
CST = timezone(timedelta(hours=8))


def test_ascii_submit_matches_the_reference_vector():
    [part] = pdu.encode_submit(TO, "Fall alert. Reply OK", validity_s=24 * 3600)
    assert part.hex == "0011000D91683108000000F00000A714C6309B0D0AB3CB72BA0B242DC3D979D07309"
    assert part.tpdu_length == 33


def test_chinese_submit_is_ucs2_and_matches_the_reference_vector():
    [part] = pdu.encode_submit(TO, "王奶奶跌倒，请回复OK", validity_s=24 * 3600)
    assert part.hex == "0011000D91683108000000F00008A716738B597659768DCC5012FF0C8BF756DE590D004F004B"
    assert part.tpdu_length == 37


def test_status_report_request_sets_srr():
    [part] = pdu.encode_submit(TO, "Fall alert. Reply OK", validity_s=24 * 3600, status_report=True)
    assert part.hex.startswith("0031")


@pytest.mark.parametrize("seconds, octet", [(6 * 3600, 0x47), (12 * 3600, 0x8F), (24 * 3600, 0xA7),
                                            (3 * 86400, 169), (5 * 60, 0)])
def test_validity_period_octet(seconds, octet):
    assert pdu.validity_octet(seconds) == octet


def test_seven_bit_part_with_udh_has_its_fill_bit():
    # Reference example 4: "Hello" as part 1 of 2, ref 0x5A, shifted by one fill bit.
    sub = pdu.decode_submit("0051000D91683108000000F00000A70C0500035A0201906536FB0D")
    assert sub.text == "Hello" and sub.concat == pdu.Concat(0x5A, 2, 1)
    assert pdu.pack_septets(pdu.gsm7_septets("Hello"), 1).hex().upper() == "906536FB0D"
    assert pdu.pack_septets(pdu.gsm7_septets("Hello")).hex().upper() == "C8329BFD06"


def test_ucs2_part_with_udh_decodes():
    sub = pdu.decode_submit("0051000D91683108000000F00008A71C0500035A0201738B597659768DCC5012FF0C8BF756DE590D004F004B")
    assert sub.text == "王奶奶跌倒，请回复OK" and sub.concat == pdu.Concat(0x5A, 2, 1) and sub.dcs == 8


@pytest.mark.parametrize("text, parts, per_part", [
    ("x" * 160, 1, 160), ("x" * 161, 2, 153), ("x" * 307, 3, 153),
    ("好" * 70, 1, 70), ("好" * 71, 2, 67), ("好" * 135, 3, 67)])
def test_long_texts_split_into_concatenated_parts(text, parts, per_part):
    out = pdu.encode_submit(TO, text, concat_ref=7)
    assert len(out) == parts
    decoded = [pdu.decode_submit(p.hex) for p in out]
    assert "".join(d.text for d in decoded) == text
    assert len(decoded[0].text) == per_part
    if parts > 1:
        assert [d.concat for d in decoded] == [pdu.Concat(7, parts, i) for i in range(1, parts + 1)]
        assert all(p.hex[2:4] == "51" for p in out)
    for p in out:  # the length given to AT+CMGS counts the TPDU only
        assert len(p.hex) == 2 * (1 + p.tpdu_length)


def test_an_escape_pair_is_never_split_across_parts():
    text = "x" * 152 + "€" + "y" * 10
    out = pdu.encode_submit(TO, text)
    decoded = [pdu.decode_submit(p.hex).text for p in out]
    assert decoded[0] == "x" * 152 and decoded[1].startswith("€")
    assert "".join(decoded) == text


def test_a_surrogate_pair_is_never_split_across_parts():
    text = "好" * 66 + "😀" + "好" * 3  # 71 UTF-16 units: two parts, 67 units each at most
    out = pdu.encode_submit(TO, text)
    decoded = [pdu.decode_submit(p.hex).text for p in out]
    assert decoded == ["好" * 66, "😀好好好"]


def test_gsm_alphabet_differs_from_ascii_where_23038_says():
    assert pdu.gsm7_septets("@$_") == [0x00, 0x02, 0x11]
    assert pdu.gsm7_septets("[€]") == [0x1B, 0x3C, 0x1B, 0x65, 0x1B, 0x3E]
    assert pdu.gsm7_septets("`") is None  # no mapping: the text goes UCS-2
    [part] = pdu.encode_submit(TO, "a`b")
    assert pdu.decode_submit(part.hex).dcs == pdu.DCS_UCS2


def test_deliver_ok_reply_from_the_reference():
    d = pdu.decode("0891683108100005F0040D91683108000000F000005250100103002302CF25", 22)
    assert (d.sender, d.text, d.smsc) == (TO, "OK", "+8613800100500")
    assert d.sent_at == datetime(2025, 5, 1, 10, 30, tzinfo=CST)
    assert not d.alphanumeric_sender


def test_deliver_ucs2_and_full_width_replies():
    good = pdu.decode("0891683108100005F0040D91683108000000F000085250100103002302597D")
    assert good.text == "好"
    full = pdu.decode("0891683108100005F0040D91683108000000F0000852501001030023" + "04FF2FFF2B")
    assert full.text == "ＯＫ"


def test_negative_time_zone_has_its_sign_bit():
    d = pdu.decode("0891683108100005F0040D91683108000000F00000525010010300" + "0A" + "02CF25")
    assert d.sent_at.utcoffset() == timedelta(hours=-5)


def test_status_report_with_and_without_the_smsc_field():
    with_sca = "0891683108100005F0062A0D91683108000000F0525010010300235250100103502300"
    r = pdu.decode(with_sca, 26)
    assert (r.ref, r.recipient, r.status, r.delivered) == (42, TO, 0, True)
    assert r.discharged_at == datetime(2025, 5, 1, 10, 30, 5, tzinfo=CST)
    assert pdu.decode(with_sca[18:], 26) == r


def test_alphanumeric_sender_is_marked():
    # "Bank" from an alphanumeric originator (TOA D0): 4 chars = 28 bits -> 7 semi-octets
    oa = bytes([7, 0xD0]) + pdu.pack_septets(pdu.gsm7_septets("Bank"))
    tpdu = bytes([0x04]) + oa + bytes([0, 0]) + bytes.fromhex("52501001030023") + bytes([2]) + bytes.fromhex("CF25")
    d = pdu.decode("00" + tpdu.hex())
    assert d.sender == "Bank" and d.alphanumeric_sender


def test_encode_deliver_round_trips_and_matches_the_reference():
    hexpdu, n = pdu.encode_deliver(TO, "OK", datetime(2025, 5, 1, 10, 30, tzinfo=CST))
    assert (hexpdu, n) == ("0891683108100005F0040D91683108000000F000005250100103002302CF25", 22)
    hexpdu, n = pdu.encode_deliver("+4915112345678", "收到 ok", datetime(2026, 1, 2, 3, 4, 5, tzinfo=CST))
    d = pdu.decode(hexpdu, n)
    assert (d.sender, d.text) == ("+4915112345678", "收到 ok")


@pytest.mark.parametrize("bad", ["", "zz", "0891683108", "0004", "0891683108100005F0040D9168310800"])
def test_garbage_pdus_raise_pdu_error_never_anything_else(bad):
    with pytest.raises(pdu.PduError):
        pdu.decode(bad)


@pytest.mark.parametrize("number", ["", "+", "+86-138", "12ab", "+" + "1" * 21])
def test_bad_numbers_are_refused(number):
    with pytest.raises(pdu.PduError):
        pdu.encode_submit(number, "x")
