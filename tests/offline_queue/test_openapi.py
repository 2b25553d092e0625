"""docs/openapi.yaml against the live receiver: every documented status is produced for real, every
real response validates against its documented schema, and the hub's requests match the request schema.

(test_schemathesis.py fuzzes the same spec; this one makes sure each documented status is real.)
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from pathlib import Path

import jsonschema
import requests
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from offline_queue.receiver import Fault, sign
from offline_queue.uploader import Uploader
from tests.offline_queue.synckit import HUB, TOKEN, make_factory, new_clock, running_receiver

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
ROOT = "urn:carehub-openapi"
REGISTRY = Registry().with_resource(ROOT, Resource.from_contents(SPEC, default_specification=DRAFT202012))


def _validator(pointer: str):
    return jsonschema.Draft202012Validator({"$ref": f"{ROOT}#{pointer}"}, registry=REGISTRY,
                                          format_checker=jsonschema.FormatChecker())


def _esc(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _response_spec(path: str, method: str, status: int) -> tuple[dict, str]:
    """The documented response and its JSON pointer in the spec (following a $ref)."""
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which is not documented"
    spec = responses[str(status)]
    pointer = f"/paths/{_esc(path)}/{method}/responses/{status}"
    if "$ref" in spec:
        pointer = spec["$ref"][1:]
        spec = SPEC["components"]["responses"][pointer.rsplit("/", 1)[-1]]
    return spec, pointer


def _check(seen: set, path: str, method: str, resp) -> None:
    status = resp.status_code
    spec, pointer = _response_spec(path, method, status)
    seen.add((path, method, str(status)))
    content = spec.get("content")
    if not content:
        return
    ctype = resp.headers.get("Content-Type", "").split(";")[0]
    assert ctype in content, f"{status} came as {ctype}, documented {list(content)}"
    if ctype == "application/json":
        _validator(f"{pointer}/content/{_esc(ctype)}/schema").validate(json.loads(resp.content))


def _headers(body: bytes, token=TOKEN, ts="now", clock=None):
    ts = str(int(clock.now().timestamp())) if ts == "now" else ts
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
            "X-CareHub-Timestamp": ts, "X-CareHub-Signature": sign(token, ts, body)}


def _no_length(server, path: str) -> requests.Response:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    try:
        conn.putrequest("POST", path)  # no Content-Length
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.endheaders()
        raw = conn.getresponse()
        r = requests.Response()
        r.status_code, r._content = raw.status, raw.read()
        r.headers.update(dict(raw.getheaders()))
        return r
    finally:
        conn.close()


def test_every_documented_status_is_real_and_every_response_matches(tmp_path):
    clock = new_clock()
    seen: set = set()
    up_path, ack_path = "/v1/hubs/{hub_id}/events", "/v1/alerts/{alert_id}/ack"
    with running_receiver(tmp_path, clock.now) as server:
        factory = make_factory(clock)
        events = [dict(factory.make("alert.raised", {"alert_id": "al-1", "rule": "sos", "priority": 1,
                                                     "message": "SOS", "details": {}}).to_dict(), seq=1)]
        events.append(dict(events[0], id="x", priority=9))  # one rejected
        uploader = Uploader(type("S", (), {"subscribe": lambda *a: None})(), url=server.url, hub_id=HUB,
                            token=TOKEN, clock=clock)
        _validator("/components/schemas/UploadRequest").validate(json.loads(uploader._encode(events[:1])))
        body = uploader._encode(events)
        url = f"{server.url}/v1/hubs/{HUB}/events"

        def upload(data=body, **kw):
            return requests.post(url, data=data, headers=kw.pop("headers", None) or _headers(data, clock=clock, **kw),
                                 timeout=5)

        _check(seen, up_path, "post", upload())
        requests.post(f"{server.url}/v1/alerts/al-1/ack", json={"by": "nurse"}, timeout=5,
                      headers={"Authorization": f"Bearer {TOKEN}"})
        with_acks = upload()
        assert with_acks.json()["acks"] and with_acks.json()["results"][0]["status"] == "duplicate"
        _check(seen, up_path, "post", with_acks)
        gz = gzip.compress(body)
        _check(seen, up_path, "post", upload(gz, headers=dict(_headers(gz, clock=clock), **{"Content-Encoding": "gzip"})))
        _check(seen, up_path, "post", upload(b"{not json"))
        _check(seen, up_path, "post", upload(token="wrong"))
        _check(seen, up_path, "post", requests.post(f"{server.url}/v1/hubs/bad%20hub/events", data=body,
                                                     headers=_headers(body, clock=clock), timeout=5))
        _check(seen, up_path, "post", upload(json.dumps({"hub_id": HUB, "events": events * 251}).encode()))
        _check(seen, up_path, "post", upload(headers=dict(_headers(body, clock=clock), **{"Content-Encoding": "br"})))
        for status in (403, 408, 425, 429, 500, 502, 503, 504):
            server.faults.push(Fault("status", status=status, retry_after="5"))
            r = upload()
            assert r.status_code == status
            _check(seen, up_path, "post", r)
        _check(seen, up_path, "post", _no_length(server, f"/v1/hubs/{HUB}/events"))

        ack = f"{server.url}/v1/alerts/al-1/ack"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        _check(seen, ack_path, "post", requests.post(ack, json={"by": "x"}, headers=auth, timeout=5))
        _check(seen, ack_path, "post", requests.post(ack, json={"by": "x"}, timeout=5))
        _check(seen, ack_path, "post", requests.post(f"{server.url}/v1/alerts/none/ack", json={}, headers=auth,
                                                      timeout=5))
        _check(seen, ack_path, "post", requests.post(ack, data={"token": TOKEN}, allow_redirects=False, timeout=5))
        as_json = dict(auth, **{"Content-Type": "application/json"})
        _check(seen, ack_path, "post", requests.post(ack, data=b"[1]", headers=as_json, timeout=5))
        _check(seen, ack_path, "post", requests.post(ack, data=b"x" * 70_000, headers=as_json, timeout=5))
        _check(seen, ack_path, "post", requests.post(ack, data=b"{}", headers=dict(auth, **{"Content-Type": "text/plain"}),
                                                      timeout=5))
        _check(seen, ack_path, "post", _no_length(server, "/v1/alerts/al-1/ack"))
        _check(seen, ack_path, "post", requests.delete(ack, timeout=5))
        _check(seen, up_path, "post", requests.put(url, data=body, timeout=5))
        for path in ("/v1/alerts", "/v1/hubs", "/"):
            _check(seen, path, "get", requests.get(server.url + path, timeout=5))
            _check(seen, path, "get", requests.get(server.url + path, headers=auth, timeout=5))
            _check(seen, path, "get", requests.patch(server.url + path, timeout=5))

    with running_receiver(tmp_path, clock.now, name="busy.db", max_connections=1) as busy:
        with socket.create_connection(busy.server_address[:2], timeout=5):  # holds the only slot
            for path, method in [("/v1/alerts", "get"), ("/v1/hubs", "get"), ("/", "get"),
                                 ("/v1/alerts/al-1/ack", "post")]:
                r = requests.request(method, busy.url + path, timeout=5)
                assert r.status_code == 503
                _check(seen, path if "ack" not in path else ack_path, method, r)

    documented = {(p, m, s) for p, ops in SPEC["paths"].items() for m, op in ops.items()
                  for s in op["responses"]}
    assert documented - seen == set(), "documented but never produced"
