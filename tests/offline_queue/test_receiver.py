"""The reference receiver over real HTTP on 127.0.0.1 (requests as the client)."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import requests

from hub.clock import ManualClock
from hub.events import EventFactory
from offline_queue.receiver import Fault, parse_fault, sign, validate_event
from tests.offline_queue.synckit import HUB, TOKEN, WALL0, make_factory, new_clock, running_receiver


@pytest.fixture
def clock():
    return new_clock()


@pytest.fixture
def server(tmp_path, clock):
    with running_receiver(tmp_path, clock.now) as s:
        yield s


def _events(clock, n=3, hub_id=HUB, type="vitals.minute"):
    f = make_factory(clock, hub_id)
    return [dict(f.make(type, {"i": i}).to_dict(), seq=i + 1) for i in range(n)]


def post(server, clock, events=None, *, body=None, token=TOKEN, ts=None, gz=False, hub_id=HUB, sig=None):
    raw = body if body is not None else json.dumps({"hub_id": hub_id, "events": events}).encode()
    payload = gzip.compress(raw) if gz else raw
    ts = str(int(clock.now().timestamp())) if ts is None else str(ts)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
               "X-CareHub-Timestamp": ts, "X-CareHub-Signature": sig or sign(token, ts, payload)}
    if gz:
        headers["Content-Encoding"] = "gzip"
    return requests.post(f"{server.url}/v1/hubs/{hub_id}/events", data=payload, headers=headers, timeout=5)


def test_accepts_then_reports_duplicates(server, clock):
    evs = _events(clock)
    r = post(server, clock, evs)
    assert r.status_code == 200
    doc = r.json()
    assert [x["status"] for x in doc["results"]] == ["accepted"] * 3
    assert doc["server_time"] == "2026-11-23T22:00:00.000Z" and doc["acks"] == []
    r2 = post(server, clock, evs + _events(clock, 1), gz=True)
    assert [x["status"] for x in r2.json()["results"]] == ["duplicate"] * 3 + ["accepted"]
    assert len(server.events(HUB)) == 4


def test_events_of_any_age_are_taken(server, clock):
    f = EventFactory(HUB, "R-1", ManualClock(WALL0 - timedelta(days=60)), boot_id="b")
    old = dict(f.make("vitals.minute", {}).to_dict(), seq=1)
    assert post(server, clock, [old]).json()["results"][0]["status"] == "accepted"


@pytest.mark.parametrize("change, reason", [
    (lambda e: e.pop("id"), "id is missing"),
    (lambda e: e.update(priority=4), "priority must be 1, 2 or 3"),
    (lambda e: e.update(seq="7"), "seq must be"),
    (lambda e: e.update(occurred_at="yesterday"), "occurred_at must be"),
    (lambda e: e.update(clock_synced="yes"), "clock_synced must be"),
    (lambda e: e.update(data=[1]), "data must be an object"),
    (lambda e: e.update(hub_id="other"), "does not match"),
])
def test_invalid_events_are_rejected_with_a_reason_and_others_kept(server, clock, change, reason):
    good, bad = _events(clock, 2)
    change(bad)
    res = post(server, clock, [good, bad]).json()["results"]
    assert res[0]["status"] == "accepted"
    assert res[1]["status"] == "rejected" and reason in res[1]["reason"]
    assert [e["id"] for e in server.events()] == [good["id"]]


@pytest.mark.parametrize("kw, message", [
    ({"token": "wrong"}, "bearer token"),
    ({"sig": "v1=00"}, "Signature does not match"),
    ({"ts": int(WALL0.timestamp()) - 301}, "from the server's clock"),
])
def test_authentication_failures_are_401_and_store_nothing(server, clock, kw, message):
    r = post(server, clock, _events(clock), **kw)
    assert r.status_code == 401 and message in r.json()["error"]
    assert server.events() == []


@pytest.mark.parametrize("ts", ["soon", "9" * 5000, "1" * 13, "²", "1e9", ""])
def test_a_timestamp_that_is_not_unix_seconds_is_a_400_not_a_traceback(server, clock, ts, caplog):
    r = post(server, clock, _events(clock), ts=ts)
    assert r.status_code == 400 and "X-CareHub-Timestamp" in r.json()["error"]
    assert server.events() == []
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_limits_are_413(server, clock):
    assert post(server, clock, _events(clock, 501)).status_code == 413
    big = json.dumps({"hub_id": HUB, "events": [], "pad": "x" * (1024 * 1024)}).encode()
    assert post(server, clock, body=big).status_code == 413
    assert post(server, clock, body=big, gz=True).status_code == 413  # checked after decompression


def test_bad_bodies_are_400_with_a_message(server, clock):
    assert "not JSON" in post(server, clock, body=b"{nope").json()["error"]
    assert post(server, clock, body=b'{"hub_id": "home-test"}').status_code == 400
    other = post(server, clock, _events(clock), hub_id="other-hub")  # events of another hub
    assert other.status_code == 200 and {x["status"] for x in other.json()["results"]} == {"rejected"}
    r = post(server, clock, body=json.dumps({"hub_id": "x", "events": []}).encode())
    assert r.status_code == 400 and "does not match" in r.json()["error"]


def test_ack_api_and_form_and_the_views(server, clock):
    alert = dict(make_factory(clock).make("alert.raised", {"alert_id": "al-9", "rule": "sos", "priority": 1,
                                                            "message": "SOS <pressed>", "details": {}}).to_dict(), seq=1)
    post(server, clock, [alert])
    assert requests.post(f"{server.url}/v1/alerts/al-9/ack", json={"by": "x"}, timeout=5).status_code == 401
    r = requests.post(f"{server.url}/v1/alerts/al-9/ack", json={"by": "nurse"}, timeout=5,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["by"] == "nurse"
    assert requests.post(f"{server.url}/v1/alerts/nope/ack", json={}, timeout=5,
                         headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    acks = post(server, clock, _events(clock, 1)).json()["acks"]
    assert acks == [{"alert_id": "al-9", "by": "nurse", "at": "2026-11-23T22:00:00.000Z"}]
    form = requests.post(f"{server.url}/v1/alerts/al-9/ack", data={"by": "other", "token": TOKEN},
                         allow_redirects=False, timeout=5)
    assert form.status_code == 303
    staff = {"Authorization": f"Bearer {TOKEN}"}
    alerts = requests.get(f"{server.url}/v1/alerts", headers=staff, timeout=5).json()["alerts"]
    assert alerts[0]["state"] == "acknowledged" and alerts[0]["ack"]["by"] == "nurse"  # first ack stands
    hubs = requests.get(f"{server.url}/v1/hubs", headers=staff, timeout=5).json()["hubs"]
    assert hubs[0]["hub_id"] == HUB and hubs[0]["events"] == 2
    page = requests.get(server.url + "/", auth=("staff", TOKEN), timeout=5).text  # a browser's Basic
    assert "SOS &lt;pressed&gt;" in page and "<pressed>" not in page


def test_fault_queue_applies_in_order_then_behaves(server, clock):
    server.faults.push(Fault("status", status=429, retry_after="7"), Fault("missing_results"))
    r1 = post(server, clock, _events(clock, 1))
    assert r1.status_code == 429 and r1.headers["Retry-After"] == "7"
    r2 = post(server, clock, _events(clock, 1))
    assert r2.status_code == 200 and "results" not in r2.json()
    assert "results" in post(server, clock, _events(clock, 1)).json()


@pytest.mark.parametrize("spec, fault", [
    ("503", Fault("status", status=503)),
    ("429,retry-after=30", Fault("status", status=429, retry_after="30")),
    ("503,retry-after=Wed, 21 Oct 2026 07:28:00 GMT",
     Fault("status", status=503, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")),
    ("delay=35", Fault("delay", delay_s=35.0)),
    ("reset", Fault("reset")),
    ("missing-results", Fault("missing_results")),
])
def test_fault_specs(spec, fault):
    assert parse_fault(spec) == fault


@pytest.mark.parametrize("spec", ["600", "delay=soon", "explode", "503,wait=3"])
def test_bad_fault_specs_say_what_is_allowed(spec):
    with pytest.raises(ValueError):
        parse_fault(spec)


def test_validate_event_accepts_the_hubs_own_envelope(clock):
    assert validate_event(_events(clock, 1)[0], HUB) is None


def test_cli_serves_on_a_free_port_with_a_token_file_and_faults(tmp_path, clock):
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_queue.receiver", "--port", "0", "--db", str(tmp_path / "r.db"),
         "--token-file", str(token_file), "--fault", "503"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        ts = str(int(time.time()))
        body = json.dumps({"hub_id": HUB, "events": []}).encode()
        headers = {"Authorization": "Bearer cli-token", "X-CareHub-Timestamp": ts,
                   "X-CareHub-Signature": sign("cli-token", ts, body)}
        assert requests.post(f"{url}/v1/hubs/{HUB}/events", data=body, headers=headers, timeout=5).status_code == 503
        r = requests.post(f"{url}/v1/hubs/{HUB}/events", data=body, headers=headers, timeout=5)
        assert r.status_code == 200 and r.json()["results"] == []
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_reports_a_bad_token_file_without_a_traceback(tmp_path):
    from offline_queue.receiver import main

    assert main(["--token-file", str(tmp_path / "missing"), "--port", "0", "--db", str(tmp_path / "r.db")]) == 2
    assert main(["--fault", "explode"]) == 2


# --- safe to start from (issue 9, item 9) --------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/v1/alerts", "/v1/hubs"])
def test_every_view_needs_the_staff_token(server, path):
    anonymous = requests.get(server.url + path, timeout=5)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(server.url + path, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    assert requests.get(server.url + path, auth=("staff", "nope"), timeout=5).status_code == 401
    assert requests.get(server.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200
    assert requests.get(server.url + path, auth=("anyone", TOKEN), timeout=5).status_code == 200


def test_acknowledging_needs_the_staff_token_in_a_form_or_as_bearer(server, clock):
    alert = dict(make_factory(clock).make("alert.raised", {"alert_id": "al-1", "rule": "sos"}).to_dict(), seq=1)
    post(server, clock, [alert])
    url = f"{server.url}/v1/alerts/al-1/ack"
    assert requests.post(url, data={"by": "x"}, allow_redirects=False, timeout=5).status_code == 401
    # a browser attaches Basic credentials to a cross-site form post on its own: not enough
    assert requests.post(url, data={"by": "x"}, auth=("s", TOKEN), allow_redirects=False, timeout=5).status_code == 401
    # text/plain is what a cross-site page can send without asking first: not taken as JSON
    assert requests.post(url, data=b'{"by": "x"}', headers={"Content-Type": "text/plain",
                         "Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 415
    assert server.db.pending_acks(HUB) == []


def _two_hub_server(tmp_path, clock):
    return running_receiver(tmp_path, clock.now, tokens={"hub-a": "token-a", "hub-b": "token-b"},
                            staff_token="staff-1")


def test_per_hub_tokens_a_hub_posts_only_as_itself(tmp_path, clock):
    with _two_hub_server(tmp_path, clock) as server:
        a_events = _events(clock, 1, hub_id="hub-a")
        assert post(server, clock, a_events, token="token-a", hub_id="hub-a").status_code == 200
        b_events = _events(clock, 1, hub_id="hub-b")
        as_b = post(server, clock, b_events, token="token-a", hub_id="hub-b")
        assert as_b.status_code == 403 and "another hub" in as_b.json()["error"]
        assert post(server, clock, b_events, token="token-x", hub_id="hub-b").status_code == 401
        assert post(server, clock, _events(clock, 1, hub_id="hub-c"), token="token-a", hub_id="hub-c").status_code == 403
        assert [e["hub_id"] for e in server.events()] == ["hub-a"]
        # the views take the staff token, not a hub's
        assert requests.get(f"{server.url}/v1/hubs", headers={"Authorization": "Bearer token-a"},
                            timeout=5).status_code == 401
        assert requests.get(f"{server.url}/v1/hubs", headers={"Authorization": "Bearer staff-1"},
                            timeout=5).status_code == 200


def test_faults_apply_only_after_authentication(server, clock):
    server.faults.push(Fault("status", status=503))
    assert post(server, clock, _events(clock), token="wrong").status_code == 401
    assert server.faults.pending() == 1  # an anonymous client neither sees nor uses up a fault
    assert post(server, clock, _events(clock)).status_code == 503


def _raw_upload(server, clock, body: bytes):
    ts = str(int(clock.now().timestamp()))
    return requests.post(f"{server.url}/v1/hubs/{HUB}/events", data=body, timeout=5, headers={
        "Authorization": f"Bearer {TOKEN}", "X-CareHub-Timestamp": ts, "X-CareHub-Signature": sign(TOKEN, ts, body)})


@pytest.mark.parametrize("body", [
    b'{"hub_id": "home-test", "events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deep nesting
    b'{"hub_id": "home-test", "events": [], "n": ' + b"9" * 5000 + b"}",  # a 5000-digit number
    b'{"hub_id": "home-test", "events": [], "t": "\\ud800"}' + b" " * 10,
    b"\xff\xfe{}",
])
def test_hostile_bodies_are_a_400_never_a_traceback(server, clock, body, caplog):
    r = _raw_upload(server, clock, body)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert r.json()["results"] == []
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


@pytest.mark.parametrize("change, reason", [
    (lambda e: e.update(seq=2**70), "seq must be"),
    (lambda e: e.update(uptime_s=float("inf")), "uptime_s must be"),
    (lambda e: e["data"].update(x=float("nan")), "NaN"),
    (lambda e: e.update(data=json.loads('{"a":' * 40 + "1" + "}" * 40)), "nested deeper"),
    (lambda e: e.update(occurred_at="+99999-01-01T00:00:00Z"), "occurred_at must be"),
    (lambda e: e.update(type="\ud800"), "cannot be stored"),
])
def test_hostile_events_are_rejected_one_by_one_never_a_traceback(server, clock, change, reason, caplog):
    good, bad = _events(clock, 2)
    change(bad)
    body = json.dumps({"hub_id": HUB, "events": [good, bad]}).encode()  # NaN/Infinity as Python writes them
    res = _raw_upload(server, clock, body).json()["results"]
    assert res[0]["status"] == "accepted"
    assert res[1]["status"] == "rejected" and reason in res[1]["reason"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
@pytest.mark.parametrize("path, allow", [(f"/v1/hubs/{HUB}/events", "POST"), ("/v1/alerts/a/ack", "POST"),
                                         ("/v1/alerts", "GET, HEAD"), ("/", "GET, HEAD")])
def test_undeclared_methods_are_405_with_allow(server, method, path, allow):
    r = requests.request(method, server.url + path, timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == allow


def test_get_on_the_upload_path_is_405_and_an_unknown_path_404(server):
    assert requests.get(f"{server.url}/v1/hubs/{HUB}/events", timeout=5).status_code == 405
    assert requests.put(f"{server.url}/nowhere", timeout=5).status_code == 404


def test_an_idle_connection_is_closed_after_the_socket_timeout(tmp_path, clock):
    with running_receiver(tmp_path, clock.now, timeout_s=0.3) as server:
        with socket.create_connection(server.server_address[:2], timeout=30) as s:
            s.sendall(b"POST /v1/hubs/home-test/events HTTP/1.1\r\nHost: x\r\n")  # and then nothing
            assert s.recv(1024) == b""  # closed by the server, long before our 30 s


def test_connections_are_bounded_and_the_next_one_told_to_come_back(tmp_path, clock):
    with running_receiver(tmp_path, clock.now, max_connections=2) as server:
        idle = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(2)]
        try:
            # the accept loop has handed both to handler threads once the third is refused
            with socket.create_connection(server.server_address[:2], timeout=10) as third:
                answer = third.recv(1024)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After" in answer
            assert server.refused_busy == 1
        finally:
            for s in idle:
                s.close()
        for _ in range(100):  # the slots come back as the handler threads end
            r = requests.get(server.url + "/v1/hubs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            if r.status_code == 200:
                break
        assert r.status_code == 200


def test_tokens_file_format(tmp_path):
    from offline_queue.receiver import read_tokens_file

    f = tmp_path / "tokens"
    f.write_text("# hub_id token\n\nhome-0042  s3cr3t-a\nhome-0043\ts3cr3t-b  \n")
    assert read_tokens_file(f) == {"home-0042": "s3cr3t-a", "home-0043": "s3cr3t-b"}
    for text, problem in [("home-1 a b\n", ":1: expected 'HUB_ID TOKEN'"), ("a t\na u\n", ":2: hub 'a' is listed twice"),
                          ("a t\nb t\n", ":2: hub 'b' has the same token as 'a'"), ("bad/id t\n", ":1: 'bad/id'"),
                          ("# nothing\n", "no 'HUB_ID TOKEN' line")]:
        f.write_text(text)
        with pytest.raises(ValueError) as e:
            read_tokens_file(f)
        assert str(e.value).startswith(str(f)) and problem in str(e.value)


def test_cli_with_a_tokens_file_and_a_staff_token_file(tmp_path, clock):
    tokens, staff = tmp_path / "tokens", tmp_path / "staff"
    tokens.write_text("home-test cli-a\nother cli-b\n")
    staff.write_text("cli-staff\n")
    for f in (tokens, staff):
        f.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_queue.receiver", "--port", "0", "--db", str(tmp_path / "r.db"),
         "--tokens-file", str(tokens), "--staff-token-file", str(staff)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        ts = str(int(time.time()))
        body = json.dumps({"hub_id": HUB, "events": []}).encode()

        def upload(token):
            return requests.post(f"{url}/v1/hubs/{HUB}/events", data=body, timeout=5, headers={
                "Authorization": f"Bearer {token}", "X-CareHub-Timestamp": ts,
                "X-CareHub-Signature": sign(token, ts, body)}).status_code

        assert (upload("cli-a"), upload("cli-b"), upload("cli-staff")) == (200, 403, 401)
        assert requests.get(f"{url}/v1/hubs", auth=("x", "cli-staff"), timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_refuses_both_token_options_and_a_bad_tokens_file(tmp_path, capsys):
    from offline_queue.receiver import main

    (tmp_path / "t").write_text("tok\n")
    (tmp_path / "ts").write_text("only-one-field\n")
    db = str(tmp_path / "r.db")
    assert main(["--token-file", str(tmp_path / "t"), "--tokens-file", str(tmp_path / "t"), "--db", db]) == 2
    assert main(["--tokens-file", str(tmp_path / "ts"), "--port", "0", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "not both" in err and f"{tmp_path / 'ts'}:1:" in err and "Traceback" not in err
