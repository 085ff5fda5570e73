/**
 * The registry store in memory, with a fake clock: revisions, the history and resumable
 * watches, `compacted` answers, lease expiry and keepalive, revoke, instances moving
 * between leases, slow watchers, fan-out to many watchers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Status, type SkeinError } from '../../../src/errors.js';
import type { Instance } from '../../../src/discovery/types.js';
import type { WatchMessage } from '../../../src/discovery/embedded/api.js';
import { RegistryStore, type Watcher } from '../../../src/discovery/embedded/store.js';
import { FakeClock } from '../../helpers/clock.js';
import { withTimeout } from '../../helpers/wait.js';

function inst(service: string, id: string, extra: Partial<Instance> = {}): Instance {
  return { service, id, address: `127.0.0.1:${1000 + Number(id.replace(/\D/g, '') || 0)}`, metadata: {}, ...extra };
}

/** Take every message the watcher has queued now (never waits). */
async function drain(w: Watcher): Promise<WatchMessage[]> {
  const out: WatchMessage[] = [];
  while (w.buffered > 0) {
    const r = await w.next();
    if (r.done === true) break;
    out.push(r.value);
  }
  return out;
}

async function nextMsg(w: Watcher): Promise<WatchMessage | undefined> {
  const r = await withTimeout(w.next(), 2000, 'a watch message');
  return r.done === true ? undefined : r.value;
}

describe('registry store', () => {
  it('store - every change gets the next revision; puts of a known key are updates', async () => {
    const store = new RegistryStore({ clock: new FakeClock() });
    const { leaseId } = await store.grant(5000);
    assert.equal(store.revision, 0, 'a grant changes no instance, so no revision');
    assert.equal((await store.put(leaseId, inst('a', 'i1'))).revision, 1);
    assert.equal((await store.put(leaseId, inst('a', 'i2'))).revision, 2);
    assert.equal((await store.put(leaseId, inst('a', 'i1', { metadata: { v: '2' } }))).revision, 3);
    assert.deepEqual(await store.remove('a', 'i2'), { removed: true, revision: 4 });
    assert.deepEqual(await store.remove('a', 'nope'), { removed: false, revision: 4 });
    const w = await store.watch('a', 1, store.epoch);
    const msgs = await drain(w);
    assert.deepEqual(
      msgs.map((m) => [m.type, m.revision]),
      [
        ['added', 1],
        ['added', 2],
        ['updated', 3],
        ['removed', 4],
      ],
    );
    w.close();
    await store.close();
  });

  it('store - a watch starts with a snapshot of its service, then gets only that service, in order', async () => {
    const store = new RegistryStore({ clock: new FakeClock() });
    const { leaseId } = await store.grant(5000);
    await store.put(leaseId, inst('a', 'i1'));
    await store.put(leaseId, inst('b', 'i1'));
    const wa = await store.watch('a');
    const all = await store.watch(undefined);
    const snap = await nextMsg(wa);
    assert.equal(snap?.type, 'snapshot');
    assert.equal(snap.type === 'snapshot' && snap.revision, 2);
    assert.deepEqual(snap.type === 'snapshot' && snap.instances.map((i) => i.id), ['i1']);
    const snapAll = await nextMsg(all);
    assert.equal(snapAll?.type === 'snapshot' && snapAll.instances.length, 2);
    await store.put(leaseId, inst('b', 'i2'));
    await store.put(leaseId, inst('a', 'i2'));
    assert.deepEqual((await drain(wa)).map((m) => [m.type, m.revision]), [['added', 4]]);
    assert.deepEqual((await drain(all)).map((m) => m.revision), [3, 4]);
    assert.equal(store.watchers, 2);
    wa.close();
    all.close();
    assert.equal(store.watchers, 0);
    await store.close();
  });

  it('store - resume from a revision replays exactly the changes from it, with no snapshot', async () => {
    const store = new RegistryStore({ clock: new FakeClock() });
    const { leaseId } = await store.grant(5000);
    for (let i = 1; i <= 5; i++) await store.put(leaseId, inst('a', `i${i}`));
    const w = await store.watch('a', 3, store.epoch);
    assert.deepEqual((await drain(w)).map((m) => m.revision), [3, 4, 5]);
    await store.put(leaseId, inst('a', 'i6'));
    assert.deepEqual((await drain(w)).map((m) => m.revision), [6]);
    // Resuming at revision + 1 (nothing missed) is valid and quiet.
    const w2 = await store.watch('a', store.revision + 1, store.epoch);
    assert.equal(w2.buffered, 0);
    w.close();
    w2.close();
    await store.close();
  });

  it('store - a revision older than the history, from another epoch or from the future gets compacted', async () => {
    const store = new RegistryStore({ clock: new FakeClock(), historyLimit: 3 });
    const { leaseId } = await store.grant(5000);
    for (let i = 1; i <= 6; i++) await store.put(leaseId, inst('a', `i${i}`));
    assert.equal(store.compactedThrough, 3);
    const cases: Array<[number, string, RegExp]> = [
      [3, store.epoch, /compacted/],
      [1, store.epoch, /compacted/],
      [4, 'some-other-epoch', /another registry epoch/],
      [9, store.epoch, /ahead of the registry/],
    ];
    for (const [from, epoch, why] of cases) {
      const w = await store.watch('a', from, epoch);
      const msgs = await drain(w);
      assert.equal(msgs.length, 1, `from ${from}`);
      const m = msgs[0]!;
      assert.equal(m.type, 'compacted');
      assert.match(m.type === 'compacted' ? m.reason : '', why);
      assert.equal((await w.next()).done, true, 'compacted is the last message');
      assert.equal(store.watchers, 0);
    }
    const ok = await store.watch('a', 4, store.epoch);
    assert.deepEqual((await drain(ok)).map((m) => m.revision), [4, 5, 6]);
    ok.close();
    await store.close();
  });

  it('store - a lease expires TTL after its last keepalive; its instances go with it', async () => {
    const clock = new FakeClock();
    const store = new RegistryStore({ clock });
    const { leaseId, ttlMs } = await store.grant(1000);
    assert.equal(ttlMs, 1000);
    await store.put(leaseId, inst('a', 'i1'));
    await store.put(leaseId, inst('b', 'i1'));
    const ended: string[] = [];
    store.onLeaseEnd(leaseId, (r) => ended.push(r));
    const w = await store.watch(undefined);
    await drain(w);
    clock.advance(900);
    assert.deepEqual(store.keepAlive(leaseId), { ttlMs: 1000, remainingMs: 1000 });
    clock.advance(900); // 1800 since grant, 900 since the keepalive
    assert.equal(store.instanceCount, 2);
    assert.equal(store.leaseInfo(leaseId)?.remainingMs, 100);
    clock.advance(100);
    assert.equal(store.instanceCount, 0);
    assert.equal(store.leaseCount, 0);
    assert.deepEqual(ended, ['expired']);
    assert.deepEqual((await drain(w)).map((m) => [m.type, (m as { instance: Instance }).instance.service, m.revision]), [
      ['removed', 'a', 3],
      ['removed', 'b', 4],
    ]);
    assert.equal(store.keepAlive(leaseId), undefined);
    await assert.rejects(store.put(leaseId, inst('a', 'i2')), (e: SkeinError) => e.status === Status.NOT_FOUND);
    w.close();
    await store.close();
  });

  it('store - many leases expire from one timer, each at its own time', async () => {
    const clock = new FakeClock();
    const store = new RegistryStore({ clock });
    const leases: number[] = [];
    for (let i = 0; i < 100; i++) {
      const { leaseId } = await store.grant(1000 + i * 10);
      await store.put(leaseId, inst('a', `i${i}`));
      leases.push(leaseId);
    }
    assert.ok(clock.pending <= 1, `one expiry timer, not ${clock.pending}`);
    clock.advance(1000 + 49 * 10);
    assert.equal(store.instanceCount, 50);
    // Keep the rest alive: they outlive their first due time.
    for (const id of leases.slice(50)) store.keepAlive(id);
    clock.advance(1000);
    assert.equal(store.instanceCount, 50);
    clock.advance(2000);
    assert.equal(store.instanceCount, 0);
    await store.close();
  });

  it('store - revoke removes the lease and its instances at once; revoking again is not an error', async () => {
    const store = new RegistryStore({ clock: new FakeClock() });
    const { leaseId } = await store.grant(5000);
    await store.put(leaseId, inst('a', 'i1'));
    await store.put(leaseId, inst('a', 'i2'));
    const ended: string[] = [];
    store.onLeaseEnd(leaseId, (r) => ended.push(r));
    assert.deepEqual(await store.revoke(leaseId), { found: true, removed: 2, revision: 4 });
    assert.deepEqual(ended, ['revoked']);
    assert.deepEqual(await store.revoke(leaseId), { found: false, removed: 0, revision: 4 });
    assert.equal(store.instanceCount, 0);
    await store.close();
  });

  it('store - an instance put under a new lease moves: the old lease ending does not remove it', async () => {
    const clock = new FakeClock();
    const store = new RegistryStore({ clock });
    const old = await store.grant(1000);
    await store.put(old.leaseId, inst('a', 'i1'));
    clock.advance(500);
    const fresh = await store.grant(1000);
    assert.equal((await store.put(fresh.leaseId, inst('a', 'i1'))).revision, 2);
    clock.advance(600); // the old lease expires
    assert.equal(store.leaseInfo(old.leaseId), undefined);
    const { instances } = await store.list('a');
    assert.deepEqual(
      instances.map((i) => [i.id, i.leaseId]),
      [['i1', fresh.leaseId]],
    );
    // remove with the old lease id does nothing: it protects the newer registration.
    assert.equal((await store.remove('a', 'i1', old.leaseId)).removed, false);
    assert.equal((await store.remove('a', 'i1', fresh.leaseId)).removed, true);
    await store.close();
  });

  it('store - list reports the lease and its time left', async () => {
    const clock = new FakeClock();
    const store = new RegistryStore({ clock });
    const { leaseId } = await store.grant(3000);
    await store.put(leaseId, inst('a', 'i1', { metadata: { zone: 'z1' } }));
    clock.advance(1000);
    const r = await store.list();
    assert.equal(r.revision, 1);
    assert.equal(r.epoch, store.epoch);
    assert.deepEqual(r.instances, [{ service: 'a', id: 'i1', address: '127.0.0.1:1001', metadata: { zone: 'z1' }, leaseId, ttlMs: 3000, leaseRemainingMs: 2000, revision: 1 }]);
    await store.close();
  });

  it('store - TTLs are clamped to [minTtlMs, maxTtlMs]; a non-positive TTL is INVALID_ARGUMENT', async () => {
    const store = new RegistryStore({ clock: new FakeClock(), minTtlMs: 500, maxTtlMs: 60000 });
    assert.equal((await store.grant(1)).ttlMs, 500);
    assert.equal((await store.grant(1e9)).ttlMs, 60000);
    await assert.rejects(store.grant(0), (e: SkeinError) => e.status === Status.INVALID_ARGUMENT);
    await assert.rejects(store.grant(Number.NaN), (e: SkeinError) => e.status === Status.INVALID_ARGUMENT);
    await store.close();
  });

  it('store - a watcher that falls behind its buffer limit gets compacted and its queue is dropped', async () => {
    const store = new RegistryStore({ clock: new FakeClock(), watcherBufferLimit: 10 });
    const { leaseId } = await store.grant(5000);
    const slow = await store.watch('a');
    const fast = await store.watch('a');
    await drain(fast);
    for (let i = 0; i < 50; i++) {
      await store.put(leaseId, inst('a', `i${i}`));
      await drain(fast);
    }
    assert.ok(slow.buffered <= 1, `the slow watcher holds ${slow.buffered} messages`);
    const m = await nextMsg(slow);
    assert.equal(m?.type, 'compacted');
    assert.match(m?.type === 'compacted' ? m.reason : '', /behind/);
    assert.equal((await slow.next()).done, true);
    assert.equal(store.watchers, 1, 'the slow watcher is unsubscribed');
    fast.close();
    await store.close();
  });

  it('store - 1,000 watchers of a service all get a change, from one publish', async () => {
    const store = new RegistryStore({ clock: new FakeClock() });
    const { leaseId } = await store.grant(5000);
    const watchers = await Promise.all(Array.from({ length: 1000 }, () => store.watch('fan')));
    for (const w of watchers) assert.equal((await nextMsg(w))?.type, 'snapshot');
    const pending = watchers.map((w) => nextMsg(w));
    await store.put(leaseId, inst('fan', 'x'));
    const got = await Promise.all(pending);
    assert.ok(got.every((m) => m?.type === 'added' && m.revision === 1));
    for (const w of watchers) w.close();
    assert.equal(store.watchers, 0);
    await store.close();
  });

  it('store - close ends watchers and tells keepalive listeners; later mutations fail with UNAVAILABLE', async () => {
    const store = new RegistryStore({ clock: new FakeClock() });
    const { leaseId } = await store.grant(5000);
    const reasons: string[] = [];
    store.onLeaseEnd(leaseId, (r) => reasons.push(r));
    const w = await store.watch('a');
    await drain(w);
    const pending = w.next();
    await store.close();
    assert.equal((await pending).done, true);
    assert.deepEqual(reasons, ['shutdown']);
    await assert.rejects(store.grant(1000), (e: SkeinError) => e.status === Status.UNAVAILABLE);
  });
});
