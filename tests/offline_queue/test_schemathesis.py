"""schemathesis (the OpenAPI fuzzer) against the live receiver through docs/openapi.yaml.

Every operation: generated positive and negative requests, deterministic (derandomized, a fixed
number of examples), all of schemathesis' checks. Uploads generated as valid are signed the way
a hub signs them, with the body's hub_id set to the path's, so they reach the event validation.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from offline_queue.receiver import make_server, sign
from tests.offline_queue.synckit import TOKEN, new_clock

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC_PATH)
EXAMPLES = 10


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    clock = new_clock()
    server = make_server("127.0.0.1", 0, tmp_path_factory.mktemp("st") / "receiver.db", TOKEN, now=clock.now)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server, clock
    server.shutdown()
    server.server_close()
    thread.join(5)


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_receiver_conforms_to_its_openapi(case, live):
    server, clock = live
    headers = {}
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive:  # the right credentials, given explicitly: schemathesis then probes without them
        headers["Authorization"] = f"Bearer {TOKEN}"
        if case.operation.path == "/v1/hubs/{hub_id}/events":
            if isinstance(case.body, dict):
                case.body["hub_id"] = case.path_parameters["hub_id"]
            # Signed as a hub signs: over the body bytes as sent (schemathesis writes json.dumps).
            ts = str(int(clock.now().timestamp()))
            headers.update({"X-CareHub-Timestamp": ts,
                            "X-CareHub-Signature": sign(TOKEN, ts, json.dumps(case.body).encode())})
    case.call_and_validate(base_url=server.url, headers=headers)

