"""AsyncStore: durable commits, batched enqueue, subscribers, one owning thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hub.errors import StoreError
from offline_queue.store import AsyncStore, Store


class FakeTime:
    """The monotonic source AsyncStore measures batch_interval_s with; moves only when told."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def wait_for(predicate, timeout=5.0):
    """Poll a condition on the loop (no fixed sleeps standing in for synchronisation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def run(coro):
    return asyncio.run(coro)


def test_commit_is_durable_when_it_returns(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make).open()
        done = await store.commit(make("alert.raised", 1, alert_id="a"))
        await store.close()
        return done

    done = run(main())
    assert done.seq == 1
    fresh = Store(db_path, make_event=factory.make)
    assert fresh.take_batch() == [done.to_dict()]
    fresh.close()


def test_enqueue_commits_nothing_before_the_interval_then_all_in_one_transaction(db_path, factory, make):
    fake = FakeTime()

    async def main():
        store = await AsyncStore(db_path, make_event=factory.make, batch_interval_s=60,
                                 batch_max=100, now=fake).open()
        seen = []
        store.subscribe(seen.append)
        events = [make() for _ in range(3)]
        store.enqueue(events[0])
        fake.t = 30.0
        store.enqueue(events[1])
        fake.t = 59.9
        await asyncio.sleep(0)
        assert await store.depth() == {1: 0, 2: 0, 3: 0}
        assert store.committed_transactions == 0 and seen == [] and store.buffered == 2
        fake.t = 60.0
        store.enqueue(events[2])         # the interval has passed since the first: commit all
        await wait_for(lambda: len(seen) == 3)
        assert store.committed_transactions == 1
        assert [e.id for e in seen] == [e.id for e in events]
        assert [e.seq for e in seen] == [1, 2, 3]
        assert (await store.depth())[3] == 3
        await store.close()

    run(main())


def test_enqueue_commits_when_batch_max_is_reached(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make, batch_max=100,
                                 now=FakeTime()).open()
        for _ in range(99):
            store.enqueue(make())
        await asyncio.sleep(0)
        assert store.committed_transactions == 0 and (await store.depth())[3] == 0
        store.enqueue(make())
        await wait_for(lambda: store.committed_transactions == 1)
        assert (await store.depth())[3] == 100
        assert store.buffered == 0
        await store.close()

    run(main())


def test_the_interval_timer_commits_without_further_events(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make, batch_interval_s=0.01).open()
        seen = []
        store.subscribe(seen.append)
        store.enqueue(make())
        await wait_for(lambda: seen)
        assert seen[0].seq == 1
        await store.close()

    run(main())


def test_commit_flushes_buffered_events_first_in_one_transaction(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make, now=FakeTime()).open()
        a, b = make(), make()
        store.enqueue(a)
        store.enqueue(b)
        alert = await store.commit(make("alert.raised", 1, alert_id="x"))
        assert store.committed_transactions == 1
        assert alert.seq == 3
        batch = await store.take_batch()
        assert [(d["id"], d["seq"]) for d in batch] == [(alert.id, 3), (a.id, 1), (b.id, 2)]
        await store.close()

    run(main())


def test_close_flushes_the_buffer(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make, now=FakeTime()).open()
        store.enqueue(make())
        store.enqueue(make())
        await store.close()

    run(main())
    fresh = Store(db_path, make_event=factory.make)
    assert fresh.depth()[3] == 2
    fresh.close()


def test_enqueue_of_a_higher_priority_is_committed_at_once(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make, now=FakeTime()).open()
        seen = []
        store.subscribe(seen.append)
        store.enqueue(make())
        store.enqueue(make("device.status", 2, device="belt", state="disconnected"))
        await wait_for(lambda: len(seen) == 2)
        assert [e.priority for e in seen] == [3, 2]
        await store.close()

    run(main())


def test_subscribers_see_the_stores_own_reports(db_path, factory, make):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"\x00garbage" * 512)

    async def main():
        store = AsyncStore(db_path, make_event=factory.make, quota_bytes=96 * 1024, now=FakeTime())
        seen = []
        store.subscribe(seen.append)
        await store.open()
        assert [e.type for e in seen] == ["store.reset"]
        for _ in range(60):
            await store.commit(make(pad="z" * 1500))
        types = [e.type for e in seen]
        assert "store.evicted" in types
        evicted = next(e for e in seen if e.type == "store.evicted")
        assert evicted.seq is not None and evicted.priority == 2
        await store.close()

    run(main())


def test_a_failing_subscriber_does_not_stop_the_others(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make).open()
        seen = []
        store.subscribe(lambda e: 1 / 0)
        store.subscribe(seen.append)
        await store.commit(make())
        await wait_for(lambda: seen)
        await store.close()

    run(main())


def test_sqlite_is_only_touched_from_the_store_thread(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make).open()
        threads = set()
        await store._call("add_commit_listener", lambda evs: threads.add(threading.get_ident()))
        await store.commit(make())
        await store.put_state("k", {"v": 1})
        assert await store.get_state("k") == {"v": 1}
        await store.commit(make())
        assert threads == {store.thread_ident}
        assert store.thread_ident != threading.get_ident()
        await store.close()

    run(main())


def test_state_and_reads_through_the_bridge(db_path, factory, make):
    async def main():
        store = await AsyncStore(db_path, make_event=factory.make).open()
        done = [await store.commit(make()) for _ in range(3)]
        assert await store.last_seq() == 3
        assert await store.forget([done[0].id]) == 1
        assert await store.dead_letter([(done[1].id, "nope")]) == 1
        assert await store.dead_letter_count() == 1
        assert (await store.dead_letters())[0]["reason"] == "nope"
        assert [r["seq"] for r in await store.recent()] == [3, 2, 1]
        await store.put_state("sync.last_success", "t")
        await store.delete_state("sync.last_success")
        assert await store.get_state("sync.last_success") is None
        await store.close()
        with pytest.raises(StoreError, match="not open"):
            await store.depth()

    run(main())
