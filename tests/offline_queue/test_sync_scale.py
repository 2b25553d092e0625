"""A week offline drains alerts first; a fleet whose server returns at once spreads its retries."""

from __future__ import annotations

import asyncio

from offline_queue.receiver import Fault
from tests.offline_queue.synckit import (
    assert_exactly_once, drain, make_factory, make_uploader, new_clock, open_store, running_receiver,
    simulate_fleet,
)

WEEK_MINUTES = 7 * 24 * 60  # 10,080 per-minute vitals


def test_a_week_offline_drains_alerts_first_then_everything_once(tmp_path):
    async def go():
        clock = new_clock()
        with running_receiver(tmp_path, clock.now) as server:
            factory = make_factory(clock)
            async with open_store(tmp_path / "q.db", factory) as store:
                server.faults.hold(Fault("status", status=503))
                up = make_uploader(store, server, clock)
                events = []
                for minute in range(WEEK_MINUTES):
                    clock.advance(60)
                    ev = factory.make("vitals.minute", {"hr_bpm": 60, "minute": minute})
                    store.enqueue(ev)
                    events.append(ev)
                    if minute % 1000 == 500:  # an alert now and then, and its resolution
                        alert_id = f"al-{minute}"
                        events.append(await store.commit(factory.make(
                            "alert.raised", {"alert_id": alert_id, "rule": "night_bed_exit", "priority": 1})))
                        events.append(await store.commit(factory.make(
                            "alert.resolved", {"alert_id": alert_id, "reason": "back in bed"})))
                    if minute % 1440 == 720:  # the hub keeps trying all week and keeps failing
                        clock.advance(up.due_in_s)
                        assert (await up.sync_once()).outcome == "failed"
                await store.flush()
                assert await store.depth() == {1: 10, 2: 10, 3: WEEK_MINUTES}
                server.faults.clear()  # the server is back
                results = await drain(up, clock)
                assert_exactly_once(server, events)
                assert await store.depth() == {1: 0, 2: 0, 3: 0}
                arrived = server.events()
                order = [(e["priority"], e["seq"]) for e in arrived]
                assert [p for p, _ in order[:10]] == [1] * 10  # alerts first
                assert order == sorted(order)  # then warnings, then vitals, each in seq order
                sent = [r for r in results if r.outcome == "sent"]
                assert len(sent) <= WEEK_MINUTES // 500 + 3

    asyncio.run(go())


def test_jitter_spreads_a_fleets_retries(tmp_path):
    async def both():
        spread = await simulate_fleet(tmp_path, hubs=100, jitter=True)
        herd = await simulate_fleet(tmp_path, hubs=100, jitter=False)
        return spread, herd

    spread, herd = asyncio.run(both())
    assert spread["delivered"] == spread["expected"] and herd["delivered"] == herd["expected"]
    assert herd["peak_retry_rps"] == 100  # without jitter every hub retries in the same second
    assert spread["peak_retry_rps"] <= herd["peak_retry_rps"] / 2
    assert spread["peak_after_recovery_rps"] <= herd["peak_after_recovery_rps"] / 5
