import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { test } from 'node:test';
import { SkeinError, type Handle } from '../../src/index.js';
import { bulkhead, ResilienceChannel, type ResilienceEvent } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { caught, fakeCall, gate, ticks } from './_helpers.js';

test('bulkhead - runs maxConcurrent, queues maxQueue, refuses the rest with retry-after', async () => {
  const bh = bulkhead({ maxConcurrent: 2, maxQueue: 1, clock: new FakeClock() });
  const gates = [gate(), gate(), gate()];
  let started = 0;
  const handle = bh(() => gates[started++]!.promise);
  const p1 = handle(fakeCall()) as Promise<unknown>;
  const p2 = handle(fakeCall()) as Promise<unknown>;
  const p3 = handle(fakeCall()) as Promise<unknown>;
  assert.equal(started, 2);
  const err = await caught(() => handle(fakeCall()));
  assert.ok(err instanceof SkeinError);
  assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
  assert.match(err.message, /bulkhead full/);
  assert.equal(err.metadata['retry-after-ms'], '100');
  assert.deepEqual(err.details, { reason: 'bulkhead-full', retryAfterMs: 100 });
  assert.deepEqual(bh.stats(), { admitted: 2, queued: 1, refusedFull: 1, refusedTimeout: 0, cancelledInQueue: 0, running: 2, waiting: 1 });
  gates[0]!.resolve();
  await p1;
  await ticks();
  assert.equal(started, 3, 'the waiter got the freed slot');
  gates[1]!.resolve();
  gates[2]!.resolve();
  await Promise.all([p2, p3]);
  assert.equal(bh.stats().running, 0);
});

test('bulkhead - waiters run in arrival order and are not overtaken', async () => {
  const bh = bulkhead({ maxConcurrent: 1, maxQueue: 3, clock: new FakeClock() });
  const order: number[] = [];
  const first = gate();
  const handle = bh((call) => {
    order.push((call.request as { n: number }).n);
    return (call.request as { n: number }).n === 0 ? first.promise : undefined;
  });
  const call = (n: number) => ({ ...fakeCall(), request: { n } });
  const ps = [0, 1, 2, 3].map((n) => Promise.resolve(handle(call(n))));
  first.resolve();
  await Promise.all(ps);
  assert.deepEqual(order, [0, 1, 2, 3]);
  assert.equal(bh.stats().running, 0);
});

test('bulkhead - a waiter is refused after queueTimeoutMs', async () => {
  const clock = new FakeClock();
  const bh = bulkhead({ maxConcurrent: 1, maxQueue: 1, queueTimeoutMs: 50, clock });
  const g = gate();
  const handle = bh(() => g.promise);
  const p1 = handle(fakeCall()) as Promise<unknown>;
  const p2 = Promise.resolve(handle(fakeCall()));
  p2.catch(() => {});
  clock.advance(49);
  await ticks();
  assert.equal(bh.stats().waiting, 1);
  clock.advance(1);
  const err = await caught(() => p2);
  assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
  assert.equal(err.details.reason, 'queue-timeout');
  assert.equal(bh.stats().refusedTimeout, 1);
  assert.equal(bh.stats().waiting, 0);
  g.resolve();
  await p1;
  assert.equal(bh.stats().running, 0);
});

test('bulkhead - a waiter cancelled (or past its deadline) leaves the queue with the signal reason', async () => {
  const clock = new FakeClock();
  const bh = bulkhead({ maxConcurrent: 1, maxQueue: 2, clock });
  const g = gate();
  let ran = 0;
  const handle = bh(() => {
    ran++;
    return g.promise;
  });
  const p1 = handle(fakeCall()) as Promise<unknown>;
  const ac = new AbortController();
  const p2 = Promise.resolve(handle(fakeCall({ signal: ac.signal })));
  p2.catch(() => {});
  const reason = new SkeinError('DEADLINE_EXCEEDED', 'deadline exceeded');
  ac.abort(reason);
  assert.equal(await caught(() => p2), reason);
  assert.equal(bh.stats().cancelledInQueue, 1);
  assert.equal(bh.stats().waiting, 0);
  assert.equal(clock.pending, 0, 'the queue timer is cleared');
  // An already-aborted call does not queue at all.
  const ac2 = new AbortController();
  ac2.abort(reason);
  assert.equal(await caught(() => handle(fakeCall({ signal: ac2.signal }))), reason);
  g.resolve();
  await p1;
  assert.equal(ran, 1);
  assert.equal(bh.stats().running, 0);
});

test('bulkhead - key service shares one limit across methods, key method does not', async () => {
  const g = gate();
  for (const key of ['service', 'method'] as const) {
    const bh = bulkhead({ maxConcurrent: 1, key, clock: new FakeClock() });
    const handle = bh(() => g.promise);
    void handle(fakeCall({ method: 'a' }));
    const second = await caught(() => handle(fakeCall({ method: 'a' })));
    assert.equal(second.statusName, 'RESOURCE_EXHAUSTED');
    if (key === 'service') assert.equal((await caught(() => handle(fakeCall({ method: 'b' })))).statusName, 'RESOURCE_EXHAUSTED');
    else void handle(fakeCall({ method: 'b' }));
    assert.equal(bh.stats().running, key === 'service' ? 1 : 2);
  }
  g.resolve();
});

/** A bulkhead of one slot: after `use`, the slot must be free exactly once (never doubled). */
async function assertReleasedOnce(bh: ReturnType<typeof bulkhead>): Promise<void> {
  await ticks();
  assert.equal(bh.stats().running, 0, 'the slot was released');
  const hold = gate();
  const handle = bh(() => hold.promise);
  void handle(fakeCall());
  const err = await caught(() => handle(fakeCall()));
  assert.equal(err.statusName, 'RESOURCE_EXHAUSTED', 'released twice: a second call got in');
  hold.resolve();
  await ticks();
}

test('bulkhead - unary slot released once on sync value, sync throw, resolve and reject', async () => {
  const cases: Handle[] = [
    () => 'sync',
    () => {
      throw new SkeinError('INTERNAL', 'sync throw');
    },
    async () => 'async',
    async () => {
      throw new SkeinError('INTERNAL', 'async throw');
    },
  ];
  for (const next of cases) {
    const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
    try {
      await bh(next)(fakeCall());
    } catch {
      // some cases fail on purpose
    }
    await assertReleasedOnce(bh);
  }
});

async function* numbers(n: number, failAt = -1): AsyncGenerator<number> {
  for (let i = 0; i < n; i++) {
    if (i === failAt) throw new SkeinError('INTERNAL', 'stream failed');
    yield i;
  }
}

test('bulkhead - stream slot held until the replies end, released once on done, error and return()', async () => {
  const variants: Array<{ name: string; failAt: number; stopAfter: number }> = [
    { name: 'done', failAt: -1, stopAfter: Infinity },
    { name: 'error', failAt: 2, stopAfter: Infinity },
    { name: 'return', failAt: -1, stopAfter: 1 },
  ];
  for (const v of variants) {
    const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
    const next: Handle = () => numbers(5, v.failAt);
    const it = (await bh(next)(fakeCall({ kind: 'serverStream' }))) as AsyncIterable<number>;
    assert.equal(bh.stats().running, 1, `${v.name}: held while the iterable is alive`);
    let seen = 0;
    try {
      for await (const _ of it) {
        if (++seen > v.stopAfter) break;
        assert.equal(bh.stats().running, 1);
      }
    } catch {
      // the 'error' variant
    }
    await assertReleasedOnce(bh);
  }
});

test('bulkhead - a stream that is never iterated is released when its call aborts', async () => {
  const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
  const ac = new AbortController();
  const next: Handle = () => numbers(3);
  const it = (await bh(next)(fakeCall({ kind: 'bidi', signal: ac.signal }))) as AsyncIterable<number>;
  assert.equal(bh.stats().running, 1);
  ac.abort(new SkeinError('CANCELLED', 'client cancelled'));
  await assertReleasedOnce(bh);
  // A late iteration (or return()) after the release does not release again.
  const iter = it[Symbol.asyncIterator]();
  await iter.return?.();
  await assertReleasedOnce(bh);
});

test('bulkhead - a stream handler that throws before returning releases its slot', async () => {
  const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
  const next: Handle = async () => {
    throw new SkeinError('UNAVAILABLE', 'no');
  };
  assert.equal((await caught(() => bh(next)(fakeCall({ kind: 'serverStream' })))).statusName, 'UNAVAILABLE');
  await assertReleasedOnce(bh);
});

test('bulkhead - refusals are published on skein:resilience:bulkhead', async () => {
  const events: ResilienceEvent[] = [];
  const onEvent = (m: unknown) => events.push(m as ResilienceEvent);
  diagnostics.subscribe(ResilienceChannel.BULKHEAD, onEvent);
  try {
    const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
    const g = gate();
    const handle = bh(() => g.promise);
    void handle(fakeCall({ service: 's', method: 'x' }));
    await caught(() => handle(fakeCall({ service: 's', method: 'x' })));
    g.resolve();
    assert.deepEqual(events, [{ service: 's', method: 'x', reason: 'bulkhead-full', retryAfterMs: 100 }]);
  } finally {
    diagnostics.unsubscribe(ResilienceChannel.BULKHEAD, onEvent);
  }
});

test('bulkhead - bad options are INVALID_OPTIONS', () => {
  for (const o of [{ maxConcurrent: 0 }, { maxConcurrent: 1.5 }, { maxQueue: -1 }, { queueTimeoutMs: 0 }, { key: 'x' as any }]) {
    assert.throws(() => bulkhead(o), (e: any) => e.code === 'SKEIN_ERR_INVALID_OPTIONS', JSON.stringify(o));
  }
});
