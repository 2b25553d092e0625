"""The fault matrix: whatever the server does, every event arrives exactly once and none is left.

Real receiver on 127.0.0.1, real store on a tmp file, time on a ManualClock.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta
from email.utils import format_datetime

import pytest

from offline_queue.receiver import Fault
from tests.offline_queue.synckit import (
    assert_exactly_once, commit_mix, drain, make_factory, make_uploader, new_clock, open_store,
    running_receiver,
)

STATUSES = [401, 403, 408, 413, 425, 429, 500, 502, 503, 504]


async def _scenario(tmp_path, fault: Fault, *, first_fails: bool = True, **uploader_kw):
    clock = new_clock()
    with running_receiver(tmp_path, clock.now) as server:
        factory = make_factory(clock)
        async with open_store(tmp_path / "queue.db", factory) as store:
            events = await commit_mix(store, factory, clock, n_vitals=8, n_alerts=2)
            uploader = make_uploader(store, server, clock, **uploader_kw)
            server.faults.push(fault)
            first = await uploader.sync_once()
            if first_fails:
                assert await store.depth() == {1: 2, 2: 0, 3: 8}, "a failed attempt must forget nothing"
            rest = await drain(uploader, clock)
            assert_exactly_once(server, events)
            assert await store.depth() == {1: 0, 2: 0, 3: 0}
            assert await store.dead_letter_count() == 0
            assert await store.get_state("sync.last_success") is not None
            assert await store.get_state("sync.next_attempt_at") is None
            return first, rest, uploader, server


@pytest.mark.parametrize("status", STATUSES)
def test_status_fault_keeps_everything_then_delivers_once(tmp_path, status):
    first, rest, uploader, _ = asyncio.run(_scenario(tmp_path, Fault("status", status=status)))
    assert first.status == status and first.delivered == 0
    if status in (401, 403):
        assert first.outcome == "unauthorised"
        assert first.delay_s >= uploader.auth_backoff_s / 2  # long backoff, not the short one
    elif status == 413:
        assert first.outcome == "too_large" and first.delay_s == 0
        assert rest[0].sent == first.sent // 2  # halved, then grows back
    else:
        assert first.outcome == "failed"
        assert 0 <= first.delay_s <= uploader.backoff_base_s
    assert sum(r.duplicates for r in rest) == 0  # nothing was stored by the failed attempt


def test_retry_after_seconds_is_honoured(tmp_path):
    first, *_ = asyncio.run(_scenario(tmp_path, Fault("status", status=429, retry_after="120")))
    assert 120 <= first.delay_s <= 120 + 12


def test_retry_after_http_date_is_honoured_against_the_servers_date(tmp_path):
    clock = new_clock()
    # commit_mix moves the clock 8 minutes before the request; the date is 300 s after that.
    when = format_datetime(clock.now() + timedelta(seconds=8 * 60 + 300), usegmt=True)
    first, *_ = asyncio.run(_scenario(tmp_path, Fault("status", status=503, retry_after=when)))
    assert 300 <= first.delay_s <= 300 + 31


def test_retry_after_is_capped_by_backoff_max(tmp_path):
    first, *_ = asyncio.run(_scenario(tmp_path, Fault("status", status=503, retry_after="86400"),
                                      backoff_max_s=600))
    assert 600 <= first.delay_s <= 660


@pytest.mark.parametrize("fault, error", [
    (Fault("reset"), "connection error"),
    (Fault("malformed"), "malformed JSON"),
    (Fault("missing_results"), "without usable results"),
])
def test_server_stored_but_hub_never_heard_resends_as_duplicates(tmp_path, fault, error):
    first, rest, _, server = asyncio.run(_scenario(tmp_path, fault))
    assert first.outcome == "failed" and error in first.error
    assert sum(r.duplicates for r in rest) == 10  # the resend is absorbed by id


def test_timeout_then_resend_is_absorbed(tmp_path):
    first, rest, *_ = asyncio.run(_scenario(tmp_path, Fault("delay", delay_s=30), timeout_s=0.3))
    assert first.outcome == "failed" and "timeout" in first.error
    assert sum(r.duplicates for r in rest) == 10


def test_partial_results_forget_only_what_was_confirmed(tmp_path):
    first, rest, *_ = asyncio.run(_scenario(tmp_path, Fault("partial_results"), first_fails=False))
    assert first.outcome == "sent" and first.delivered == 5 and first.kept == 5
    assert sum(r.duplicates for r in rest) == 5


def test_connection_refused_backs_off_and_keeps_everything(tmp_path):
    async def go():
        clock = new_clock()
        factory = make_factory(clock)
        async with open_store(tmp_path / "queue.db", factory) as store:
            await commit_mix(store, factory, clock, 3, 1)
            with running_receiver(tmp_path, clock.now) as server:
                url = server.url
            from offline_queue.uploader import Uploader
            from tests.offline_queue.synckit import TOKEN, HUB
            up = Uploader(store, url=url, hub_id=HUB, token=TOKEN, clock=clock, clock_synced=lambda: True)
            results = [await up.sync_once() for _ in range(4)]
            assert all(r.outcome == "failed" and "connection" in r.error for r in results)
            assert await store.depth() == {1: 1, 2: 0, 3: 3}
            assert up.failures == 4 and up.state == "offline"

    asyncio.run(go())


async def _attempts(up, clock, n: int) -> list:
    """``n`` scheduled attempts, each when the uploader says it is due."""
    out = []
    for _ in range(n):
        clock.advance(up.due_in_s)
        out.append(await up.sync_once())
    return out


def _server_states(batch) -> list[str]:
    return [e["data"]["state"] for e in batch if e["type"] == "device.status" and e["data"]["device"] == "server"]


def test_a_proxy_that_413s_everything_costs_no_event(tmp_path, caplog):
    """Spec section 4: a 413 is never a reason to give up an event; only `rejected` is."""
    from hub.status import main as status_main

    async def go():
        clock = new_clock()
        statuses = []
        cfg = {"hub": {"id": "home-test", "state_dir": str(tmp_path / "state")}}
        (tmp_path / "state").mkdir()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "state" / "events.db", factory) as store:
                events = await commit_mix(store, factory, clock, n_vitals=8, n_alerts=2)
                events.append(await store.commit(factory.make(
                    "alert.escalated", {"alert_id": "a-0", "priority": 2}, 2)))
                up = make_uploader(store, server, clock, make_event=factory.make,
                                   on_status=lambda s, d: statuses.append(s))
                server.faults.hold(Fault("status", status=413))
                t0 = clock.monotonic()
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="offline_queue.uploader"):
                    results = await _attempts(up, clock, 40)
                assert await store.dead_letter_count() == 0, "a 413 dead-lettered an event"
                left = await store.take_batch(limit=500, max_bytes=10**9)
                assert {e.id for e in events} <= {e["id"] for e in left}
                assert _server_states(left) == ["payload_too_large"]  # one sync-state event
                assert statuses == ["payload_too_large"]
                assert len([r for r in caplog.records if r.levelno >= logging.INFO]) == 1
                assert up.state == "payload_too_large"
                # long backoff: 40 refused attempts take hours, not a burst of requests
                assert clock.monotonic() - t0 > 3600
                assert max(r.delay_s for r in results) >= 900
                out = io.StringIO()
                status_main(cfg, out=out)
                assert "payload_too_large" in out.getvalue()
                server.faults.clear()
                await drain(up, clock)
                got = [e["id"] for e in server.events()]
                assert len(got) == len(set(got)) and {e.id for e in events} <= set(got)
                assert await store.depth() == {1: 0, 2: 0, 3: 0}
                assert statuses == ["payload_too_large", "online"]

    asyncio.run(go())


def test_one_event_too_large_for_a_proxy_is_kept_and_the_rest_flows(tmp_path):
    """A reverse proxy with a tight body limit: small events pass, the big alert waits, never dies."""
    async def go():
        clock = new_clock()
        statuses = []
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "queue.db", factory) as store:
                big = await store.commit(factory.make("alert.raised", {
                    "alert_id": "a-big", "rule": "fall", "priority": 1, "message": "Fall",
                    "details": {"trace": "x" * 6000}}))
                small = [await store.commit(factory.make("vitals.minute", {"i": i})) for i in range(12)]
                up = make_uploader(store, server, clock, gzip_min_bytes=10**9, make_event=factory.make,
                                   on_status=lambda s, d: statuses.append(s))
                server.faults.hold(Fault("body_limit", limit_bytes=4000))
                for _ in range(30):
                    clock.advance(up.due_in_s)
                    await up.sync_once()
                    if {e.id for e in small} <= {e["id"] for e in server.events()}:
                        break
                assert {e.id for e in small} <= {e["id"] for e in server.events()}, "the rest did not flow"
                assert big.id not in {e["id"] for e in server.events()}
                assert await store.dead_letter_count() == 0
                assert await store.depth() == {1: 1, 2: 0, 3: 0}  # the big alert, kept
                assert statuses == ["payload_too_large"]
                server.faults.clear()
                await drain(up, clock)  # after its long backoff it goes
                assert big.id in {e["id"] for e in server.events()}
                assert await store.depth() == {1: 0, 2: 0, 3: 0}
                assert statuses == ["payload_too_large", "online"]
                assert _server_states(server.events()) == ["payload_too_large", "online"]

    asyncio.run(go())
