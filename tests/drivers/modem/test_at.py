"""The AT codec on real modem output: whole, byte by byte, and with garbage around it."""

from __future__ import annotations

import pytest

from drivers.modem import at

CMGR = (b"\r\n+CMGR: 0,,22\r\n0891683108100005F0040D91683108000000F000005250100103002302CF25\r\n"
        b"\r\nOK\r\n")


def feed_whole(data: bytes, reader=None):
    return (reader or at.AtReader()).feed(data)


def feed_bytewise(data: bytes, reader=None):
    reader = reader or at.AtReader()
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i:i + 1])
    return out


FEEDERS = [feed_whole, feed_bytewise]


@pytest.mark.parametrize("line, item", [
    ("OK", at.Final("OK")),
    ("ERROR", at.Final("ERROR")),
    ("NO CARRIER", at.Final("NO CARRIER")),
    ("BUSY", at.Final("BUSY")),
    ("+CMS ERROR: 38", at.CmsError(38)),
    ("+CME ERROR: 10", at.CmeError(10)),
    ("+CME ERROR: SIM not inserted", at.CmeError(None, "SIM not inserted")),
    ("+CMGS: 42", at.Submitted(42)),
    ("+CREG: 1,5", at.Registration("CREG", 5, True, 1)),
    ("+CREG: 5", at.Registration("CREG", 5, False)),
    ('+CREG: 2,1,"1A2B","01C3",7', at.Registration("CREG", 1, True, 2, "1A2B", "01C3", 7)),
    ('+CEREG: 1,"1A2B","01C3",7', at.Registration("CEREG", 1, False, None, "1A2B", "01C3", 7)),
    ("+CSQ: 17,99", at.SignalQuality(17, 99)),
    ("+CPIN: READY", at.SimStatus("READY")),
    ("+CPIN: SIM PIN", at.SimStatus("SIM PIN")),
    ('+CMTI: "SM",3', at.NewMessage("SM", 3)),
    ('+CDSI: "SM",4', at.NewMessage("SM", 4, report=True)),
    ("RING", at.Ring()),
    ('+CLIP: "+8613800000000",145,,,,0', at.CallerId("+8613800000000")),
    ('+CLCC: 1,0,3,0,0,"+8613800000000",145', at.CallState(1, 0, 3, 0, "+8613800000000")),
    ("RDY", at.Boot("RDY")),
    ("+CFUN: 1", at.Boot("+CFUN: 1")),
    ("SMS Ready", at.Boot("SMS Ready")),
    ("+QIND: SMS DONE", at.Boot("+QIND: SMS DONE")),
    ("UNDER-VOLTAGE WARNNING", at.PowerWarning("UNDER-VOLTAGE WARNNING")),
    ('+CSCA: "+8613800100500",145', at.Info('+CSCA: "+8613800100500",145')),
    ("+CSQ: x,y", at.Info("+CSQ: x,y")),  # malformed: never raises
])
def test_parse_line(line, item):
    assert at.parse_line(line) == item


def test_registration_and_signal_meaning():
    assert at.Registration("CREG", 5, True).registered
    assert at.Registration("CEREG", 6, True).registered  # SMS only is enough to text
    assert not at.Registration("CREG", 2, True).registered
    assert not at.Registration("CREG", 3, True).registered
    assert at.SignalQuality(10, 99).dbm == -93 and at.SignalQuality(99, 99).dbm is None


@pytest.mark.parametrize("feed", FEEDERS)
def test_cmgr_header_and_pdu_come_out_as_one_item(feed):
    items = feed(CMGR)
    assert items == [at.StoredMessage(None, 0, 22, "0891683108100005F0040D91683108000000F000005250100103002302CF25"),
                     at.Final("OK")]


@pytest.mark.parametrize("feed", FEEDERS)
def test_cmgl_lists_every_entry(feed):
    data = (b"\r\n+CMGL: 1,0,,22\r\n0891683108100005F0040D91683108000000F000005250100103002302CF25\r\n"
            b"+CMGL: 4,1,,22\r\n0891683108100005F0040D91683108000000F000005250100103002302CF25\r\n\r\nOK\r\n")
    items = feed(data)
    assert [i.index for i in items[:2]] == [1, 4] and items[2] == at.Final("OK")


@pytest.mark.parametrize("feed", FEEDERS)
def test_cds_and_cmt_are_two_line_urcs(feed):
    data = (b"\r\n+CDS: 26\r\n0891683108100005F0062A0D91683108000000F0525010010300235250100103502300\r\n"
            b"\r\n+CMT: ,22\r\n0891683108100005F0040D91683108000000F000005250100103002302CF25\r\n")
    a, b = feed(data)
    assert a == at.RoutedMessage(26, a.pdu, report=True) and a.pdu.startswith("0891")
    assert b == at.RoutedMessage(22, b.pdu) and b.pdu.endswith("CF25")


@pytest.mark.parametrize("feed", FEEDERS)
def test_prompt_without_line_end(feed):
    reader = at.AtReader()
    reader.echo = "AT+CMGS=33"
    assert feed(b"AT+CMGS=33\r\r\n> ", reader) == [at.Prompt()]


def test_bare_prompt_counts_only_while_expected():
    reader = at.AtReader()
    assert reader.feed(b"\r\n>") == []
    reader.reset()
    reader.expect_prompt = True
    assert reader.feed(b"\r\n>") == [at.Prompt()]


@pytest.mark.parametrize("feed", FEEDERS)
def test_echo_is_dropped_once_and_odd_line_ends_are_tolerated(feed):
    reader = at.AtReader()
    reader.echo = "AT+CSQ"
    items = feed(b"AT+CSQ\r\r\n+CSQ: 20,99\r\r\n\r\n\r\nOK\r\n", reader)
    assert items == [at.SignalQuality(20, 99), at.Final("OK")]


@pytest.mark.parametrize("feed", FEEDERS)
def test_garbage_around_real_lines_is_skipped_and_counted(feed):
    reader = at.AtReader()
    data = b"\xff\x00\xfe\r\n\r\nOK\r\n\x00\x00\r\n+CMTI: \"SM\",3\r\n\x1b[2J\x07\r\n"
    items = feed(data, reader)
    real = [i for i in items if not isinstance(i, at.Garbage)]
    assert real == [at.Final("OK"), at.NewMessage("SM", 3)]
    assert reader.garbage == 3


def test_a_line_without_end_is_bounded():
    reader = at.AtReader(max_line=64)
    items = reader.feed(b"A" * 200)
    assert any(isinstance(i, at.Garbage) for i in items)
    assert reader.feed(b"AAAA\r\nOK\r\n") == [at.Final("OK")]  # the rest of the long line is dropped too
    assert reader.garbage == 1


def test_header_without_its_pdu_still_comes_out():
    items = at.AtReader().feed(b"\r\n+CMGR: 0,,22\r\n\r\n+CMS ERROR: 321\r\n")
    assert items == [at.StoredMessage(None, 0, 22, ""), at.CmsError(321)]


@pytest.mark.parametrize("code, action", [
    (38, at.RETRY), (42, at.RETRY), (500, at.RETRY), (331, at.RETRY), (600, at.RETRY),
    (304, at.OUR_BUG), (50, at.PERMANENT_SIM), (1, at.PERMANENT_NUMBER), (330, at.REINIT),
    (302, at.REINIT)])
def test_cms_error_actions(code, action):
    assert at.cms_action(code) == action

