/**
 * Hedging: end to end over real TCP (two servers behind `static://a,b`, round-robin), where
 * the hedge delay runs on a fake clock so that whether a hedge is sent is decided by the
 * test, not by timing; and unit tests of the delay (percentiles) and of how attempts settle,
 * with a fake invoker. Assertions count which server answered, never timings; every wait
 * is bounded.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, describe, it } from 'node:test';
import { connect, implement, SkeinError, service, unary, type OutgoingCall } from '../../src/index.js';
import { hedge, HEDGE_CHANNEL, LatencyWindow, retryBudget, type HedgeEvent } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { waitFor, withTimeout } from '../helpers/wait.js';
import { Cleanup, rejection } from '../integration/_harness.js';
import { caught, gate, ticks } from './_helpers.js';

const Store = service('hedge-store', {
  get: unary<{ id: string }, { id: string; by: string }>({ idempotent: true }),
  put: unary<{ id: string }, { id: string; by: string }>(),
});

/** What the servers of one test did; 'a' stalls (until `release` or its signal), 'b' answers at once unless `stallAll`. */
class Tally {
  calls = { a: 0, b: 0 };
  aborted = { a: 0, b: 0 };
  stallAll = false;
  release = gate();
}

function impl(t: Tally, name: 'a' | 'b') {
  const handle = async (id: string, signal: AbortSignal): Promise<{ id: string; by: string }> => {
    t.calls[name]++;
    if (name === 'a' || t.stallAll) {
      const aborted = new Promise<'aborted'>((resolve) => signal.addEventListener('abort', () => resolve('aborted'), { once: true }));
      if ((await Promise.race([t.release.promise, aborted])) === 'aborted') {
        t.aborted[name]++;
        throw new SkeinError('CANCELLED', 'stalled call cancelled');
      }
    }
    return { id, by: name };
  };
  return implement(Store, {
    get: ({ id }, ctx) => handle(id, ctx.signal),
    put: ({ id }, ctx) => handle(id, ctx.signal),
  });
}

const cleanup = new Cleanup();
after(() => cleanup.run());

async function twoServers(t: Tally, interceptor: ReturnType<typeof hedge>) {
  const addresses: string[] = [];
  for (const name of ['a', 'b'] as const) {
    const s = cleanup.server().add(impl(t, name));
    const b = await s.listen({ host: '127.0.0.1', port: 0 });
    addresses.push(`127.0.0.1:${b.port}`);
  }
  const client = connect(Store, { discovery: `static://${addresses.join(',')}`, balancer: 'round-robin', resilience: false, interceptors: [interceptor] });
  cleanup.add(() => client.close());
  cleanup.add(() => t.release.resolve());
  await withTimeout(client.ready({ timeout: 5000 }), 5000, 'the channel');
  await waitFor(() => client.channel.readySubchannels.length >= 2, { what: '2 ready instances' });
  return client;
}

describe('hedging over TCP', () => {
  it('hedge - a call stalled on one server completes from the other; the stalled handler sees its signal abort', async () => {
    const t = new Tally();
    const clock = new FakeClock();
    const h = hedge({ delayMs: 50, clock });
    const client = await twoServers(t, h);
    const events: HedgeEvent[] = [];
    const fn = (m: unknown): void => void events.push(m as HedgeEvent);
    diagnostics.subscribe(HEDGE_CHANNEL, fn);
    try {
      for (let i = 0; i < 6; i++) {
        const before = t.calls.a;
        let done = false;
        const p = client.get({ id: `g${i}` }, { timeout: 5000 });
        p.then(() => (done = true), () => (done = true));
        await waitFor(() => done || t.calls.a > before, { what: 'an answer or a stalled call' });
        if (!done) clock.advance(50); // the hedge delay passes: the hedge goes to 'b'
        const reply = await withTimeout(p, 5000, `call g${i}`);
        assert.equal(reply.by, 'b');
      }
    } finally {
      diagnostics.unsubscribe(HEDGE_CHANNEL, fn);
    }
    assert.ok(t.calls.a >= 1, 'some calls went to the stalled server first');
    await waitFor(() => t.aborted.a === t.calls.a, { what: 'every stalled handler to see its signal abort' });
    const s = h.stats();
    assert.equal(s.calls, 6);
    assert.equal(s.hedged, t.calls.a);
    assert.equal(s.hedgeWon, t.calls.a);
    assert.equal(t.calls.b, 6);
    assert.equal(events.length, t.calls.a);
    assert.ok(events.every((e) => e.winner === 2 && e.delayMs === 50 && e.service === 'hedge-store' && e.method === 'get'));
  });

  it('hedge - a method that is not idempotent is never hedged (executed once)', async () => {
    const t = new Tally();
    t.stallAll = true;
    const clock = new FakeClock();
    const h = hedge({ delayMs: 50, clock, methods: ['hedge-store.get', 'hedge-store.put'] });
    const client = await twoServers(t, h);
    const p = client.put({ id: 'p1' }, { timeout: 5000 });
    await waitFor(() => t.calls.a + t.calls.b === 1, { what: 'the put to reach a server' });
    clock.advance(1000);
    await ticks(10);
    t.release.resolve();
    await withTimeout(p, 5000, 'the put');
    assert.equal(t.calls.a + t.calls.b, 1);
    assert.equal(h.stats().calls, 0);
  });

  it('hedge - with the budget exhausted no hedge is sent', async () => {
    const t = new Tally();
    t.stallAll = true;
    const clock = new FakeClock();
    const h = hedge({ delayMs: 50, clock, budget: retryBudget({ ratio: 0, minPerSecond: 0 }) });
    const client = await twoServers(t, h);
    const p = client.get({ id: 'g' }, { timeout: 5000 });
    await waitFor(() => t.calls.a + t.calls.b === 1, { what: 'the call to reach a server' });
    clock.advance(50);
    await ticks(10);
    assert.equal(h.stats().budgetRefused, 1);
    t.release.resolve();
    await withTimeout(p, 5000, 'the call');
    assert.equal(t.calls.a + t.calls.b, 1);
    assert.equal(h.stats().hedged, 0);
  });
});

/** A fake invoker whose attempts the test settles by hand. */
function fakeNext() {
  const attempts: Array<{ call: OutgoingCall; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
  const next = (call: OutgoingCall): Promise<unknown> => new Promise((resolve, reject) => attempts.push({ call, resolve, reject }));
  return { attempts, next };
}

const call = (): OutgoingCall => ({ service: 's', method: 'm', kind: 'unary', idempotent: true, request: {}, options: {} });

describe('hedging (unit)', () => {
  it('hedge - a percentile delay is computed from the latencies observed (fake clock)', async () => {
    const clock = new FakeClock();
    const h = hedge({ delayMs: { percentile: 0.5, minMs: 15, maxMs: 500, window: 4 }, clock });
    const { attempts, next } = fakeNext();
    const invoke = h(next);
    assert.equal(h.delayFor('s.m'), 500, 'maxMs before any latency');
    // Slowest first, so that each latency stays under the delay learnt so far (no hedge).
    for (const ms of [40, 30, 20, 10]) {
      const p = invoke(call()) as Promise<unknown>;
      await ticks();
      clock.advance(ms);
      attempts.at(-1)!.resolve('ok');
      await p;
    }
    assert.equal(attempts.length, 4, 'no hedge sent');
    assert.equal(h.delayFor('s.m'), 20, 'p50 of 10, 20, 30, 40');
    const p = invoke(call()) as Promise<unknown>;
    await ticks();
    clock.advance(1000); // the hedge delay (20) passes: a second attempt
    await ticks();
    assert.equal(attempts.length, 6);
    attempts[4]!.resolve('late');
    assert.equal(await p, 'late');
    assert.equal(h.delayFor('s.m'), 20, 'the window holds 1000, 30, 20, 10 (40 was the oldest)');
    assert.equal(hedge({ delayMs: { percentile: 0.5, minMs: 15 }, clock }).delayFor('s.m'), 1000);
    assert.equal(h.delayFor('s.other'), 500);
    const w = new LatencyWindow(3);
    for (const ms of [1, 2, 3]) w.add(ms);
    assert.equal(w.percentile(0.95), 3);
    assert.equal(w.percentile(0.1), 1);
  });

  it('hedge - a first attempt that fails before the hedge just fails; both failing gives the last error; the loser is cancelled', async () => {
    const clock = new FakeClock();
    const h = hedge({ delayMs: 10, clock });
    const { attempts, next } = fakeNext();
    const invoke = h(next);
    const p1 = invoke(call()) as Promise<unknown>;
    await ticks();
    attempts[0]!.reject(new SkeinError('UNAVAILABLE', 'first'));
    assert.equal(((await caught(() => p1)) as SkeinError).message, 'first');
    clock.advance(100);
    await ticks();
    assert.equal(attempts.length, 1, 'no hedge after the call failed');

    const p2 = invoke(call()) as Promise<unknown>;
    await ticks();
    clock.advance(10);
    await ticks();
    assert.equal(attempts.length, 3);
    attempts[1]!.reject(new SkeinError('UNAVAILABLE', 'one'));
    await ticks();
    attempts[2]!.reject(new SkeinError('UNAVAILABLE', 'two'));
    assert.equal(((await caught(() => p2)) as SkeinError).message, 'two');

    const p3 = invoke(call()) as Promise<unknown>;
    await ticks();
    clock.advance(10);
    await ticks();
    attempts[3]!.resolve('first wins');
    assert.equal(await p3, 'first wins');
    assert.equal(attempts[4]!.call.options.signal?.aborted, true, 'the hedge is cancelled');
    assert.equal(attempts[3]!.call.options.signal?.aborted, false);
    assert.equal(h.stats().hedged, 2);
    assert.equal(h.stats().hedgeWon, 0);

    const ac = new AbortController();
    const p4 = invoke({ ...call(), options: { signal: ac.signal } }) as Promise<unknown>;
    await ticks();
    ac.abort();
    attempts[5]!.reject(new SkeinError('CANCELLED', 'cancelled'));
    await rejection(p4);
    clock.advance(100);
    await ticks();
    assert.equal(attempts.length, 6, 'no hedge once the caller cancelled');
  });
});
