import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { test } from 'node:test';
import { SkeinError, type Handle } from '../../src/index.js';
import { ResilienceChannel, shed, type ResilienceEvent, type ShedOptions } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { caught, fakeCall, gate } from './_helpers.js';

/**
 * A shed interceptor over a handler whose latency the test sets with a fake clock: a
 * burst starts n calls at once, moves time by `latency`, then ends them all, so every
 * call of the burst sees exactly that latency.
 */
function harness(options: ShedOptions) {
  const clock = new FakeClock();
  const s = shed({ ...options, clock });
  let latency = 1;
  let failWith: SkeinError | undefined;
  let current = gate<string>();
  const handle = s(() => current.promise);
  return {
    s,
    setLatency: (ms: number) => (latency = ms),
    failWith: (e: SkeinError | undefined) => (failWith = e),
    async burst(n: number): Promise<void> {
      current = gate<string>();
      const calls = Array.from({ length: n }, () => Promise.resolve().then(() => handle(fakeCall())));
      await Promise.resolve();
      clock.advance(latency);
      if (failWith !== undefined) current.reject(failWith);
      else current.resolve('ok');
      await Promise.allSettled(calls);
    },
  };
}

test('shed - the limit grows by one per fast call while it is in use', async () => {
  const h = harness({ initialLimit: 4, maxLimit: 10, targetLatencyMs: 50 });
  await h.burst(4);
  // Calls that started with fewer than limit/2 in flight do not show the limit is in use:
  // the first call (alone) does not count; the other three each add one.
  assert.equal(h.s.stats().limit, 7);
  assert.equal(h.s.stats().increases, 3);
  await h.burst(8);
  assert.equal(h.s.stats().limit, 10, 'capped at maxLimit');
});

test('shed - an idle server does not drift upward', async () => {
  const h = harness({ initialLimit: 10, maxLimit: 100, targetLatencyMs: 50 });
  for (let i = 0; i < 20; i++) await h.burst(1);
  assert.equal(h.s.stats().limit, 10);
  assert.equal(h.s.stats().increases, 0);
});

test('shed - slow calls and RESOURCE_EXHAUSTED shrink the limit by backoffRatio, not below minLimit', async () => {
  const h = harness({ initialLimit: 10, minLimit: 2, targetLatencyMs: 50, backoffRatio: 0.5 });
  h.setLatency(100);
  await h.burst(1);
  assert.equal(h.s.stats().limit, 5);
  h.setLatency(1);
  h.failWith(new SkeinError('RESOURCE_EXHAUSTED', 'downstream full'));
  await h.burst(1);
  assert.equal(h.s.stats().limit, 2);
  await h.burst(1);
  assert.equal(h.s.stats().limit, 2, 'floor');
  assert.equal(h.s.stats().decreases, 3);
  h.failWith(new SkeinError('NOT_FOUND', 'an ordinary error'));
  await h.burst(2);
  assert.equal(h.s.stats().limit, 2, 'other errors leave the limit alone');
});

test('shed - the adaptive target is tolerance x the no-load baseline', async () => {
  const h = harness({ initialLimit: 4, tolerance: 2, minTargetLatencyMs: 0 });
  h.setLatency(10);
  await h.burst(1);
  assert.equal(h.s.stats().baselineMs, 10);
  assert.equal(h.s.limiter.targetMs, 20);
  h.setLatency(19);
  await h.burst(4);
  assert.equal(h.s.stats().decreases, 0);
  h.setLatency(30);
  await h.burst(1);
  assert.equal(h.s.stats().decreases, 1);
});

test('shed - the limit moves up under fast load and down under slow load', async () => {
  const h = harness({ initialLimit: 5, maxLimit: 50, targetLatencyMs: 20 });
  for (let i = 0; i < 5; i++) await h.burst(h.s.stats().limit);
  const high = h.s.stats().limit;
  assert.ok(high > 5, `went up: ${high}`);
  h.setLatency(40);
  for (let i = 0; i < 5; i++) await h.burst(h.s.stats().limit);
  assert.ok(h.s.stats().limit < high, `came down: ${h.s.stats().limit} < ${high}`);
});

test('shed - calls beyond the limit are refused at once with retry-after, and published', async () => {
  const events: ResilienceEvent[] = [];
  const onEvent = (m: unknown) => events.push(m as ResilienceEvent);
  diagnostics.subscribe(ResilienceChannel.SHED, onEvent);
  try {
    const s = shed({ initialLimit: 2, clock: new FakeClock() });
    const g = gate<string>();
    let ran = 0;
    const handle = s(() => {
      ran++;
      return g.promise;
    });
    const admitted = [handle(fakeCall()), handle(fakeCall())];
    const err = await caught(() => handle(fakeCall({ service: 'a', method: 'b' })));
    assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
    assert.equal(err.metadata['retry-after-ms'], '100');
    assert.equal(err.details.reason, 'concurrency-limit');
    assert.equal(ran, 2);
    assert.deepEqual(events, [{ service: 'a', method: 'b', reason: 'concurrency-limit', retryAfterMs: 100 }]);
    g.resolve('ok');
    await Promise.all(admitted);
    const st = s.stats();
    assert.equal(st.refused, 1);
    assert.equal(st.admitted, 2);
    assert.equal(st.inflight, 0);
    assert.equal(st.peakInflight, 2);
  } finally {
    diagnostics.unsubscribe(ResilienceChannel.SHED, onEvent);
  }
});

test('shed - streams and exempt services pass through by default; streams: true holds a permit', async () => {
  const s = shed({ initialLimit: 1, clock: new FakeClock() });
  const g = gate();
  const handle = s(() => g.promise);
  void handle(fakeCall());
  assert.equal(await s(() => 'serving')(fakeCall({ service: 'skein.health' })), 'serving', 'exempt');
  const stream: Handle = async function* () {
    yield 1;
  } as Handle;
  assert.ok(s(stream)(fakeCall({ kind: 'serverStream' })), 'a stream is not refused');
  assert.equal(s.stats().refused, 0);
  g.resolve();

  const s2 = shed({ initialLimit: 1, streams: true, clock: new FakeClock() });
  const it = s2(stream)(fakeCall({ kind: 'serverStream' })) as AsyncIterable<number>;
  assert.equal(s2.stats().inflight, 1);
  assert.equal((await caught(() => s2(stream)(fakeCall({ kind: 'bidi' })))).statusName, 'RESOURCE_EXHAUSTED');
  for await (const _ of it) {
    // drain
  }
  assert.equal(s2.stats().inflight, 0);
});

test('shed - bad options are INVALID_OPTIONS', () => {
  for (const o of [{ minLimit: 0 }, { maxLimit: 0 }, { initialLimit: 5000 }, { backoffRatio: 1 }, { tolerance: 0.5 }, { targetLatencyMs: 0 }]) {
    assert.throws(() => shed(o), (e: any) => e.code === 'SKEIN_ERR_INVALID_OPTIONS', JSON.stringify(o));
  }
});

test('shed - one stall that slows every call in flight cuts the limit once, not once per call', async () => {
  const h = harness({ initialLimit: 64, targetLatencyMs: 50, backoffRatio: 0.9 });
  h.setLatency(200); // a 200 ms pause hits all 32 calls admitted together
  await h.burst(32);
  assert.equal(h.s.stats().decreases, 1);
  assert.equal(h.s.stats().limit, 32, 'one cut, as deep as the overshoot says (200 ms vs 50: the floor x0.5)');
  await h.burst(8); // admitted after that cut: a new generation may cut again
  assert.equal(h.s.stats().decreases, 2);
});

test('shed - as the first policy it runs as the server\'s admission gate; after another interceptor, as an interceptor', () => {
  const s = shed();
  assert.equal(typeof s.gate?.admit, 'function', 'shed() offers a gate');
  assert.equal(shed({ clock: new FakeClock() }).gate, undefined, 'not with a test clock: the interceptor measures with it');
  const g = s.gate!;
  const t = g.admit('svc', 'm', 'unary');
  assert.equal(typeof t, 'number');
  assert.equal(s.stats().inflight, 1);
  g.release(t as number, 'unary', 1, undefined, false);
  assert.equal(s.stats().inflight, 0);
  assert.equal(g.admit('skein.health', 'check', 'unary'), -1, 'exempt services are not gated');
  assert.equal(g.admit('svc', 'watch', 'serverStream'), -1, 'streams are not gated by default');
});
