import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { test } from 'node:test';
import { defaultCallerKey, peerHost, rateLimit, ResilienceChannel, type ResilienceEvent } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { caught, fakeCall } from './_helpers.js';

test('rate limit - a caller past its burst is refused with retry-after; the handler does not run', async () => {
  const clock = new FakeClock();
  const rl = rateLimit({ perCaller: { rate: 10, burst: 2 }, clock });
  let ran = 0;
  const handle = rl(() => ++ran);
  handle(fakeCall());
  handle(fakeCall());
  const err = await caught(() => handle(fakeCall()));
  assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
  assert.match(err.message, /rate limit exceeded/);
  assert.equal(err.metadata['retry-after-ms'], '100');
  assert.deepEqual(err.details, { reason: 'caller-limit', retryAfterMs: 100 });
  assert.equal(ran, 2);
  clock.advance(100);
  handle(fakeCall());
  assert.equal(ran, 3, 'admitted again once a token is back');
  assert.deepEqual(rl.stats(), { admitted: 3, refusedCaller: 1, refusedMethod: 0, callers: 1, evicted: 0 });
});

test('rate limit - callers are keyed by host, identity string or identity id', async () => {
  const rl = rateLimit({ perCaller: { rate: 1, burst: 1 }, clock: new FakeClock() });
  const handle = rl(() => 'ok');
  handle(fakeCall({ address: '10.0.0.1:1000' }));
  assert.equal((await caught(() => handle(fakeCall({ address: '10.0.0.1:2000' })))).statusName, 'RESOURCE_EXHAUSTED', 'same host, other port');
  handle(fakeCall({ address: '10.0.0.2:1000' }));
  handle(fakeCall({ address: '10.0.0.1:1000', identity: 'alice' }));
  handle(fakeCall({ address: '10.0.0.1:1000', identity: { id: 'bob' } }));
  assert.equal((await caught(() => handle(fakeCall({ identity: { id: 'bob', role: 'x' } })))).statusName, 'RESOURCE_EXHAUSTED');
  assert.equal(rl.stats().callers, 4);
  assert.equal(defaultCallerKey(fakeCall({ identity: { id: 7 } }).ctx), 'id:7');
  assert.equal(peerHost('[::1]:80'), '::1');
  assert.equal(peerHost('127.0.0.1:80'), '127.0.0.1');
  assert.equal(peerHost('unix:/tmp/s.sock'), 'unix:/tmp/s.sock');
  assert.equal(peerHost('memory:x'), 'memory:x');
});

test('rate limit - a custom callerKey decides who shares a bucket', async () => {
  const rl = rateLimit({ perCaller: { rate: 1, burst: 1 }, callerKey: () => 'everyone', clock: new FakeClock() });
  const handle = rl(() => 'ok');
  handle(fakeCall({ address: '1.1.1.1:1' }));
  assert.equal((await caught(() => handle(fakeCall({ address: '2.2.2.2:2' })))).statusName, 'RESOURCE_EXHAUSTED');
});

test('rate limit - per-method buckets: exact method first, then the service; others unlimited', async () => {
  const rl = rateLimit({ perMethod: { 'svc.slow': { rate: 1, burst: 1 }, other: { rate: 1, burst: 2 } }, clock: new FakeClock() });
  const handle = rl(() => 'ok');
  handle(fakeCall({ method: 'slow' }));
  const err = await caught(() => handle(fakeCall({ method: 'slow', address: '9.9.9.9:1' })));
  assert.equal(err.details.reason, 'method-limit');
  for (let i = 0; i < 10; i++) handle(fakeCall({ method: 'fast' }));
  handle(fakeCall({ service: 'other', method: 'a' }));
  handle(fakeCall({ service: 'other', method: 'b' }));
  assert.equal((await caught(() => handle(fakeCall({ service: 'other', method: 'c' })))).statusName, 'RESOURCE_EXHAUSTED', 'one bucket for the whole service');
  assert.equal(rl.stats().refusedMethod, 2);
});

test('rate limit - a method refusal gives the caller its token back', async () => {
  const rl = rateLimit({ perCaller: { rate: 1, burst: 1 }, perMethod: { 'svc.m': { rate: 1, burst: 1 } }, clock: new FakeClock() });
  const handle = rl(() => 'ok');
  handle(fakeCall({ address: '1.1.1.1:1' }));
  assert.equal((await caught(() => handle(fakeCall({ address: '2.2.2.2:1' })))).details.reason, 'method-limit');
  assert.equal(handle(fakeCall({ address: '2.2.2.2:1', method: 'n' })), 'ok', 'caller 2 still has its token');
});

test('rate limit - caller buckets are bounded with least-recently-seen eviction', async () => {
  const rl = rateLimit({ perCaller: { rate: 1, burst: 1 }, maxCallers: 2, clock: new FakeClock() });
  const handle = rl(() => 'ok');
  handle(fakeCall({ identity: 'a' }));
  handle(fakeCall({ identity: 'b' }));
  await caught(() => handle(fakeCall({ identity: 'a' }))); // touch a: b is now the oldest
  handle(fakeCall({ identity: 'c' })); // evicts b
  assert.equal(rl.stats().callers, 2);
  assert.equal(rl.stats().evicted, 1);
  assert.equal((await caught(() => handle(fakeCall({ identity: 'a' })))).statusName, 'RESOURCE_EXHAUSTED', 'a was kept');
  assert.equal(handle(fakeCall({ identity: 'b' })), 'ok', 'b was forgotten: a fresh bucket');
});

test('rate limit - refusals are published on skein:resilience:rate-limit only when subscribed', async () => {
  const rl = rateLimit({ perCaller: { rate: 1, burst: 1 }, clock: new FakeClock() });
  const handle = rl(() => 'ok');
  handle(fakeCall());
  await caught(() => handle(fakeCall()));
  const events: ResilienceEvent[] = [];
  const onEvent = (m: unknown) => events.push(m as ResilienceEvent);
  assert.equal(diagnostics.channel(ResilienceChannel.RATE_LIMIT).hasSubscribers, false);
  diagnostics.subscribe(ResilienceChannel.RATE_LIMIT, onEvent);
  try {
    await caught(() => handle(fakeCall({ service: 's', method: 'm' })));
    assert.deepEqual(events, [{ service: 's', method: 'm', reason: 'caller-limit', retryAfterMs: 1000 }]);
  } finally {
    diagnostics.unsubscribe(ResilienceChannel.RATE_LIMIT, onEvent);
  }
});

test('rate limit - bad options are INVALID_OPTIONS', () => {
  for (const o of [{ perCaller: { rate: 0, burst: 1 } }, { perMethod: { x: { rate: 1, burst: 0 } } }, { maxCallers: 0 }]) {
    assert.throws(() => rateLimit(o), (e: any) => e.code === 'SKEIN_ERR_INVALID_OPTIONS', JSON.stringify(o));
  }
});
