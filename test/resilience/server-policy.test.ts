import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Handle } from '../../src/index.js';
import { bulkhead, serverResilience } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { caught, fakeCall, gate } from './_helpers.js';

test('server resilience - shed only by default; each piece can be turned on or off', () => {
  assert.equal(serverResilience().length, 1);
  assert.equal(serverResilience({ shed: false }).length, 0);
  assert.equal(serverResilience({ fallback: { 'a.b': () => 1 }, rateLimit: { perCaller: { rate: 1, burst: 1 } }, bulkhead: { maxConcurrent: 1 } }).length, 4);
});

test('server resilience - the fallback is outermost and answers a limiter refusal', async () => {
  const chain = serverResilience({ fallback: { svc: () => 'fallback' }, rateLimit: { perCaller: { rate: 1, burst: 1 }, clock: new FakeClock() }, shed: false });
  let handle: Handle = () => 'real';
  for (let i = chain.length - 1; i >= 0; i--) handle = chain[i]!(handle);
  assert.equal(await handle(fakeCall()), 'real');
  assert.equal(await handle(fakeCall()), 'fallback');
});

test('bulkhead - a synchronous iterable from a stream handler is held and released too', async () => {
  const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
  const it = bh(() => [1, 2, 3])(fakeCall({ kind: 'serverStream' })) as AsyncIterable<number>;
  const seen: number[] = [];
  for await (const v of it) seen.push(v);
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(bh.stats().running, 0);
  const g = gate();
  void bh(() => g.promise)(fakeCall());
  assert.equal((await caught(() => bh(() => 1)(fakeCall()))).statusName, 'RESOURCE_EXHAUSTED');
  g.resolve();
});
