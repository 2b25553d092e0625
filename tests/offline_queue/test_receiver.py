"""The reference receiver over real HTTP on 127.0.0.1 (requests as the client)."""

from __future__ import annotations

import gzip
import json
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
    ({"ts": "soon"}, "Timestamp is missing"),
])
def test_authentication_failures_are_401_and_store_nothing(server, clock, kw, message):
    r = post(server, clock, _events(clock), **kw)
    assert r.status_code == 401 and message in r.json()["error"]
    assert server.events() == []


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
    alerts = requests.get(f"{server.url}/v1/alerts", timeout=5).json()["alerts"]
    assert alerts[0]["state"] == "acknowledged" and alerts[0]["ack"]["by"] == "nurse"  # first ack stands
    hubs = requests.get(f"{server.url}/v1/hubs", timeout=5).json()["hubs"]
    assert hubs[0]["hub_id"] == HUB and hubs[0]["events"] == 2
    page = requests.get(server.url + "/", timeout=5).text
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
