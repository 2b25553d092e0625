"""The uploader against the real receiver on 127.0.0.1 and the real store on a tmp file."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from offline_queue.errors import ServerConfigError
from offline_queue.receiver import Fault
from offline_queue.uploader import Uploader, check_url, parse_retry_after, sign
from tests.offline_queue.synckit import (
    HUB, TOKEN, assert_exactly_once, commit_mix, drain, make_factory, make_uploader, new_clock,
    open_store, running_receiver, wait_for,
)


# --- pure parts ----------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.9.9.9/api/", "http://localhost:1",
                                 "http://[::1]:8080", "https://care.example.org/api"])
def test_allowed_urls(url):
    assert not check_url(url).endswith("/")


@pytest.mark.parametrize("url", ["http://care.example.org/api", "http://10.0.0.5:8080", "ftp://x", "care.example.org"])
def test_plain_http_off_loopback_is_refused_clearly(url):
    with pytest.raises(ServerConfigError) as e:
        check_url(url)
    assert e.value.problems[0].startswith("server.url:")


def test_signature_is_hmac_over_timestamp_dot_body():
    # The worked example of docs/sync-protocol.md, computed independently with
    # printf '1795000000.{"hub_id":"home-0042","events":[]}' | openssl dgst -sha256 -hmac s3cr3t-token
    body = b'{"hub_id":"home-0042","events":[]}'
    assert sign("s3cr3t-token", 1795000000, body) == \
        "v1=eaae11c2495ef94b4e743a9cff90ef93346087547ffd639a59655acb49d071b5"


def test_request_carries_the_spec_headers_and_a_signature_over_the_gzip_bytes(tmp_path):
    """Checked by the receiver: a wrong signature, or one over the uncompressed body, is a 401."""
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                for i in range(30):
                    await store.commit(factory.make("vitals.minute", {"i": i}))
                up = make_uploader(store, server, clock)
                batch = await store.take_batch()
                raw = up._encode(batch)
                payload, headers = up._prepare(raw)
                assert headers["Content-Encoding"] == "gzip" and gzip.decompress(payload) == raw
                assert headers["Authorization"] == f"Bearer {TOKEN}"
                assert headers["X-CareHub-Timestamp"] == str(int(clock.now().timestamp()))
                assert headers["X-CareHub-Signature"] == sign(TOKEN, headers["X-CareHub-Timestamp"], payload)
                import requests
                ok = requests.post(up.endpoint, data=payload, headers=headers, timeout=5)
                assert ok.status_code == 200 and len(ok.json()["results"]) == 30
                bad = dict(headers, **{"X-CareHub-Signature": sign(TOKEN, headers["X-CareHub-Timestamp"], raw)})
                assert requests.post(up.endpoint, data=payload, headers=bad, timeout=5).status_code == 401

    _run(go())


def test_retry_after_forms():
    server_now = datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", server_now) == 120
    assert parse_retry_after("Mon, 23 Nov 2026 22:05:00 GMT", server_now) == 300
    assert parse_retry_after("Mon, 23 Nov 2026 21:00:00 GMT", server_now) == 0  # in the past
    assert parse_retry_after("soon", server_now) is None
    assert parse_retry_after(None, server_now) is None


def test_full_jitter_stays_under_the_capped_exponential():
    class S:
        def subscribe(self, cb):
            return None

    up = Uploader(S(), url="http://127.0.0.1:1", hub_id=HUB, token=TOKEN, clock=new_clock(),
                  rng=random.Random(3), backoff_base_s=5, backoff_max_s=60)
    for failures, ceiling in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (30, 60)]:
        up.failures = failures
        draws = [up.backoff_s() for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # the whole range is used, not a fixed value
    up.jitter = False
    up.failures = 3
    assert up.backoff_s() == 20


# --- against the real receiver -------------------------------------------------------------

def _run(coro):
    return asyncio.run(coro)


def test_priority_then_seq_order_and_status_recorded(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                events = await commit_mix(store, factory, clock, n_vitals=9, n_alerts=3)
                events.append(await store.commit(factory.make("alert.resolved", {"alert_id": "a-0", "reason": "ok"})))
                up = make_uploader(store, server, clock, batch_max=4)
                await drain(up, clock)
                got = [(e["priority"], e["seq"]) for e in server.events()]
                assert got == sorted(got)
                assert [p for p, _ in got] == [1] * 3 + [2] + [3] * 9
                assert_exactly_once(server, events)
                last = await store.get_state("sync.last_success")
                assert last["at"] == "2026-11-23T22:09:00.000Z" and last["delivered"] >= 1
                assert up.state == "online"

    _run(go())


def test_gzip_above_threshold_only(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                up = make_uploader(store, server, clock, gzip_min_bytes=1024)
                await store.commit(factory.make("vitals.minute", {"hr_bpm": 60}))
                small = await up.sync_once()
                assert small.raw_bytes < 1024 and small.body_bytes == small.raw_bytes
                for i in range(20):
                    await store.commit(factory.make("vitals.minute", {"hr_bpm": 60 + i}))
                big = await up.sync_once()
                assert big.raw_bytes >= 1024 and big.body_bytes < big.raw_bytes / 3
                assert len(server.events()) == 21

    _run(go())


def test_batches_respect_500_events_and_1_mib(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                for i in range(1100):
                    store.enqueue(factory.make("vitals.minute", {"i": i}))
                for i in range(300):  # ~4 KiB each: 1.2 MB in all
                    store.enqueue(factory.make("device.status", {"device": "belt", "pad": "x" * 4000}))
                await store.flush()
                up = make_uploader(store, server, clock)
                results = [r for r in await drain(up, clock) if r.outcome == "sent"]
                assert max(r.sent for r in results) == 500
                assert all(r.raw_bytes <= 1024 * 1024 for r in results)
                assert any(r.raw_bytes > 900_000 for r in results)  # the byte cap, not the count, bit
                assert len(server.events()) == 1400

    _run(go())


def test_rejected_events_become_dead_letters_and_the_rest_flows(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            stranger = make_factory(clock, hub_id="someone-else")
            async with open_store(tmp_path / "q.db", factory) as store:
                good = [await store.commit(factory.make("vitals.minute", {"i": i})) for i in range(3)]
                bad = await store.commit(stranger.make("vitals.minute", {"i": 9}))
                up = make_uploader(store, server, clock)
                res = await up.sync_once()
                assert (res.delivered, res.rejected) == (3, 1)
                assert await store.depth() == {1: 0, 2: 0, 3: 0}
                dead = await store.dead_letters()
                assert [d["id"] for d in dead] == [bad.id] and "hub_id" in json.dumps(dead)
                assert_exactly_once(server, good)

    _run(go())


def test_acks_reach_the_alert_engine_once(tmp_path):
    async def go():
        clock = new_clock()
        acks = []
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await store.commit(factory.make("alert.raised", {"alert_id": "al-1", "rule": "sos", "priority": 1,
                                                                 "message": "SOS", "details": {}}))
                up = make_uploader(store, server, clock, on_ack=lambda a, by, at: acks.append((a, by, at)))
                await up.sync_once()
                clock.advance(30)
                assert server.ack("al-1", by="nurse Li") is not None
                await store.commit(factory.make("vitals.minute", {"i": 1}))
                await up.sync_once()
                await store.commit(factory.make("vitals.minute", {"i": 2}))
                await up.sync_once()  # the server still offers it; the hub does not repeat it
                assert acks == [("al-1", "nurse Li", "2026-11-23T22:00:30.000Z")]
                await store.commit(factory.make("alert.acknowledged", {"alert_id": "al-1", "by": "nurse Li"}))
                await up.sync_once()
                assert server.db.pending_acks(HUB) == []  # the hub confirmed: no longer offered
                # a restarted uploader remembers what it has delivered
                again = make_uploader(store, server, clock, on_ack=lambda *a: acks.append(a))
                server.db.ack("al-1", "x", "2026-11-23T22:01:00.000Z")
                await store.commit(factory.make("vitals.minute", {"i": 3}))
                await again.sync_once()
                assert len(acks) == 1

    _run(go())


def test_unsynchronised_clock_learns_the_servers_time_and_signs_with_it(tmp_path):
    async def go():
        hub_clock = new_clock()
        server_now = lambda: hub_clock.now() + timedelta(hours=2)  # the hub booted with a stale clock
        with running_receiver(tmp_path, server_now) as server:
            factory = make_factory(hub_clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await store.commit(factory.make("alert.raised", {"alert_id": "a", "rule": "sos"}))
                up = make_uploader(store, server, hub_clock, clock_synced=lambda: False)
                first = await up.sync_once()
                assert first.status == 401 and first.error == "clock skew" and first.delay_s == 0
                assert abs(up.clock_offset_s - 7200) < 2
                second = await up.sync_once()
                assert second.delivered == 1 and up.state == "online"

    _run(go())


def test_wrong_token_is_reported_once_and_everything_kept(tmp_path):
    async def go():
        clock = new_clock()
        statuses = []
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await commit_mix(store, factory, clock, 3, 1)
                up = make_uploader(store, server, clock, token="not-the-token",
                                   on_status=lambda s, d: statuses.append(s), auth_backoff_s=1800)
                delays = []
                for _ in range(3):
                    clock.advance(up.due_in_s)
                    r = await up.sync_once()
                    delays.append(r.delay_s)
                    assert r.outcome == "unauthorised"
                assert statuses == ["unauthorised"]
                assert all(900 <= d <= 1800 for d in delays)
                assert await store.depth() == {1: 1, 2: 0, 3: 3}
                assert server.events() == []

    _run(go())


def test_state_changes_are_reported_once_not_per_retry(tmp_path):
    async def go():
        clock = new_clock()
        statuses = []
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await commit_mix(store, factory, clock, 3, 1)
                up = make_uploader(store, server, clock, on_status=lambda s, d: statuses.append(s))
                server.faults.push(*[Fault("status", status=503)] * 5)
                await drain(up, clock)
                assert statuses == ["offline", "online"]
                assert up.failures == 0

    _run(go())


# --- the schedule survives a restart -------------------------------------------------------

def test_backoff_survives_a_restart_in_the_same_boot(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await commit_mix(store, factory, clock, 2, 0)
                up = make_uploader(store, server, clock)
                server.faults.push(Fault("status", status=503, retry_after="600"))
                r = await up.sync_once()
                clock.advance(100)
            async with open_store(tmp_path / "q.db", factory) as store:  # the daemon restarted
                up2 = make_uploader(store, server, clock)
                await up2._load()
                assert up2.due_in_s == pytest.approx(r.delay_s - 100, abs=0.01)
                assert up2.failures == 1
                assert up2.state == "offline"  # no second "offline" report after a restart

    _run(go())


@pytest.mark.parametrize("wall_jump_s, expect", [(-86400, "full"), (+300, "remaining"), (+86400, "zero")])
def test_backoff_after_a_reboot_uses_the_wall_clock_but_never_waits_longer(tmp_path, wall_jump_s, expect):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await commit_mix(store, factory, clock, 2, 0)
                up = make_uploader(store, server, clock)
                server.faults.push(Fault("status", status=503, retry_after="1200"))
                r = await up.sync_once()
            clock.set_wall(clock.now() + timedelta(seconds=wall_jump_s))  # stale or corrected clock
            async with open_store(tmp_path / "q.db", factory) as store:
                up2 = make_uploader(store, server, clock, boot_id="another-boot")
                await up2._load()
                want = {"full": r.delay_s, "remaining": r.delay_s - 300, "zero": 0.0}[expect]
                assert up2.due_in_s == pytest.approx(want, abs=0.01)

    _run(go())


# --- the run loop --------------------------------------------------------------------------

def test_priority_one_commit_wakes_the_idle_loop_at_once(tmp_path):
    async def go():
        clock = new_clock()
        never = asyncio.Event()

        async def frozen_sleep(_s):  # simulated time stands still: only a wake-up can help
            await never.wait()

        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                up = make_uploader(store, server, clock, sleep=frozen_sleep)
                task = asyncio.create_task(up.run())
                await wait_for(lambda: up.due_in_s > 0)  # idle, waiting for the interval
                await store.commit(factory.make("vitals.minute", {"i": 1}))  # p3 waits its turn
                sos = await store.commit(factory.make("alert.raised", {"alert_id": "s", "rule": "sos"}))
                await wait_for(lambda: any(e["id"] == sos.id for e in server.events()))
                up.stop()
                await asyncio.wait_for(task, 5)

    _run(go())


def test_priority_one_does_not_wait_for_a_p3_backoff(tmp_path):
    async def go():
        clock = new_clock()
        never = asyncio.Event()

        async def frozen_sleep(_s):
            await never.wait()

        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await store.commit(factory.make("vitals.minute", {"i": 1}))
                server.faults.push(Fault("status", status=503, retry_after="1800"))
                up = make_uploader(store, server, clock, sleep=frozen_sleep)
                task = asyncio.create_task(up.run())
                await wait_for(lambda: up.state == "offline" and up.due_in_s > 1000)
                sos = await store.commit(factory.make("alert.raised", {"alert_id": "s", "rule": "sos"}))
                await wait_for(lambda: len(server.events()) == 2)
                assert server.events()[0]["id"] == sos.id  # and it went first
                up.stop()
                await asyncio.wait_for(task, 5)

    _run(go())


async def _until_empty(store) -> None:
    while any((await store.depth()).values()):
        await asyncio.sleep(0.005)


def test_run_drains_through_failures_on_simulated_time(tmp_path):
    async def go():
        clock = new_clock()

        async def fast_sleep(s):
            clock.advance(s)
            await asyncio.sleep(0)

        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                events = await commit_mix(store, factory, clock, 20, 3)
                server.faults.push(Fault("status", status=503), Fault("reset"), Fault("status", status=429,
                                   retry_after="90"), Fault("malformed"))
                up = make_uploader(store, server, clock, sleep=fast_sleep, batch_max=5)
                task = asyncio.create_task(up.run())
                await wait_for(lambda: len({e["id"] for e in server.events()}) == len(events))
                # The server has them all; the hub forgets the last batch once its reply is read.
                await asyncio.wait_for(_until_empty(store), 5)
                up.stop()
                await asyncio.wait_for(task, 5)
                assert_exactly_once(server, events)
                assert await store.depth() == {1: 0, 2: 0, 3: 0}

    _run(go())


def test_run_survives_a_failing_store_and_carries_on(tmp_path):
    async def go():
        clock = new_clock()

        async def fast_sleep(s):
            clock.advance(s)
            await asyncio.sleep(0.001)

        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                up = make_uploader(store, server, clock, sleep=fast_sleep)
                await store.close()  # every store call now raises StoreError
                task = asyncio.create_task(up.run())
                await wait_for(lambda: up._store_failing)
                await store.open()
                ev = await store.commit(factory.make("alert.raised", {"alert_id": "z", "rule": "sos"}))
                await wait_for(lambda: [e["id"] for e in server.events()] == [ev.id])
                up.stop()
                await asyncio.wait_for(task, 5)
                assert not task.exception()

    _run(go())


def test_run_after_a_restart_waits_out_the_saved_backoff(tmp_path):
    async def go():
        clock = new_clock()
        never = asyncio.Event()

        async def frozen_sleep(_s):
            await never.wait()

        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await store.commit(factory.make("vitals.minute", {"i": 1}))
                server.faults.push(Fault("status", status=503, retry_after="600"))
                await make_uploader(store, server, clock).sync_once()
                assert server.requests_seen == 1
                up = make_uploader(store, server, clock, sleep=frozen_sleep)  # the daemon restarted
                task = asyncio.create_task(up.run())
                await wait_for(lambda: up._loaded and up.due_in_s > 500)
                for _ in range(20):
                    await asyncio.sleep(0)
                assert server.requests_seen == 1  # no attempt before the saved time
                up.stop()
                await asyncio.wait_for(task, 5)

    _run(go())


def test_stop_abandons_a_hanging_request_at_once_and_forgets_nothing(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await store.commit(factory.make("alert.raised", {"alert_id": "h", "rule": "sos"}))
                server.faults.push(Fault("delay", delay_s=60))
                up = make_uploader(store, server, clock, timeout_s=60)
                task = asyncio.create_task(up.run())
                await wait_for(lambda: server.requests_seen == 1)
                up.stop()
                await asyncio.wait_for(task, 2)  # not the 60 s the request would take
                assert await store.depth() == {1: 1, 2: 0, 3: 0}  # re-sent next time, a duplicate

    _run(go())  # and asyncio.run returns: there is no executor thread for it to join


# --- the HTTP client trusts only what it was told (issue 9, item 6) ------------------------

@pytest.mark.parametrize("value", ["١٢", "1e3", "-5", "+5", "²", "5.5", "0x10", "12 s", "",
                                   "06 Nov 2026 08:49:37 GMT", "2026-11-23T22:05:00Z"])
def test_retry_after_takes_ascii_digits_and_http_dates_only(value):
    assert parse_retry_after(value, datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc)) is None


@pytest.mark.parametrize("value", ["Mon, 23 Nov 2026 22:05:00 GMT",  # IMF-fixdate
                                   "Monday, 23-Nov-26 22:05:00 GMT",  # obsolete RFC 850
                                   "Mon Nov 23 22:05:00 2026"])  # asctime
def test_retry_after_http_date_forms_of_rfc_9110(value):
    assert parse_retry_after(value, datetime(2026, 11, 23, 22, 0, tzinfo=timezone.utc)) == 300


def test_retry_after_huge_number_is_a_number_not_a_crash():
    assert parse_retry_after("9" * 400, None) >= 10**9


@pytest.mark.parametrize("value", ["²", "¹²⁰⁰"])  # str.isdigit() is true for these; float() fails
def test_retry_after_in_other_digits_is_ignored_on_the_wire(tmp_path, value):
    first, *_ = _run(_one_fault(tmp_path, Fault("status", status=503, retry_after=value)))
    assert first.outcome == "failed" and first.delay_s <= 5  # the ordinary backoff


async def _one_fault(tmp_path, fault, **kw):
    clock = new_clock()
    with running_receiver(tmp_path, clock.now) as server:
        factory = make_factory(clock)
        async with open_store(tmp_path / "q.db", factory) as store:
            await commit_mix(store, factory, clock, 3, 1)
            up = make_uploader(store, server, clock, **kw)
            server.faults.push(fault)
            first = await up.sync_once()
            depth = await store.depth()
            return first, depth, up, server


def test_a_redirect_is_not_followed_and_is_reported_once(tmp_path, caplog):
    async def go():
        clock = new_clock()
        statuses = []
        with running_receiver(tmp_path, clock.now) as server, \
                running_receiver(tmp_path, clock.now, name="elsewhere.db") as elsewhere:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                events = await commit_mix(store, factory, clock, 3, 1)
                up = make_uploader(store, server, clock, on_status=lambda s, d: statuses.append((s, d)))
                server.faults.hold(Fault("status", status=307, location=f"{elsewhere.url}/v1/hubs/{HUB}/events"))
                with caplog.at_level(logging.INFO, logger="offline_queue.uploader"):
                    results = []
                    for _ in range(4):
                        clock.advance(up.due_in_s)
                        results.append(await up.sync_once())
                assert elsewhere.requests_seen == 0, "the body was re-posted to the redirect target"
                assert all(r.outcome == "failed" and r.status == 307 and r.delay_s > 0 for r in results)
                assert await store.depth() == {1: 1, 2: 0, 3: 3}
                assert [s for s, _ in statuses] == ["redirected"] and elsewhere.url in statuses[0][1]
                assert len([r for r in caplog.records if r.levelno >= logging.INFO]) == 1
                server.faults.clear()
                await drain(up, clock)
                assert_exactly_once(server, events)

    _run(go())


@pytest.fixture(scope="module")
def tls():
    """A private CA and a server certificate for 127.0.0.1; another CA that did not sign it."""
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    return ca, ca.issue_cert("127.0.0.1"), other


def _pem(tmp_path, ca, name):
    path = tmp_path / name
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize("env", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_ca_file_is_not_replaced_by_the_environment(tmp_path, tls, monkeypatch, env):
    ca, cert, other = tls
    monkeypatch.setenv(env, _pem(tmp_path, other, "other.pem"))  # a CA that did not sign the server

    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now, tls=cert) as server:
            assert server.url.startswith("https://127.0.0.1:")
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                events = await commit_mix(store, factory, clock, 2, 1)
                up = make_uploader(store, server, clock, ca_file=_pem(tmp_path, ca, "private.pem"))
                await drain(up, clock)
                assert_exactly_once(server, events)

    _run(go())


@pytest.mark.parametrize("env", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
@pytest.mark.parametrize("configured", ["system", "other"])
def test_the_environment_cannot_add_trust(tmp_path, tls, monkeypatch, env, configured):
    ca, cert, other = tls
    monkeypatch.setenv(env, _pem(tmp_path, ca, "private.pem"))  # would make the server trusted

    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now, tls=cert) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                await commit_mix(store, factory, clock, 2, 1)
                ca_file = None if configured == "system" else _pem(tmp_path, other, "other.pem")
                up = make_uploader(store, server, clock, ca_file=ca_file)
                r = await up.sync_once()
                assert r.outcome == "failed" and "certificate" in r.error
                assert server.events() == [] and await store.depth() == {1: 1, 2: 0, 3: 2}

    _run(go())


def _traced_peak(coro) -> tuple:
    tracemalloc.start()
    try:
        result = _run(coro)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip-bomb"])
def test_a_huge_reply_is_read_only_up_to_a_cap(tmp_path, gz):
    """200 MB of reply (or 200 MB inside a small gzip body) costs the hub at most a few MB."""
    size = 200 * 1024 * 1024
    (first, depth, up, server), peak = _traced_peak(_one_fault(tmp_path, Fault("huge_reply", size_bytes=size, gzip=gz)))
    assert first.outcome == "failed" and "reply" in first.error
    assert depth == {1: 1, 2: 0, 3: 3}  # nothing forgotten on an unreadable reply
    assert peak < 16 * 1024 * 1024, f"reading the reply cost {peak / 2**20:.0f} MiB"
