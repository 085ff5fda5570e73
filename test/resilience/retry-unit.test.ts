/**
 * Unit tests of the client-side retry budget and the retry interceptor, with a fake clock
 * and a scripted `next` (no network): the 20 % + 10/s budget, which failures are retried
 * for which methods, pushback scheduling, the deadline, the abort signal, and the events.
 * No timing assertions: delays are read off the fake clock's schedule.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { test } from 'node:test';
import { createError, ErrorCode, type OutgoingCall } from '../../src/index.js';
import { retry, retryBudget, RETRY_CHANNEL, type RetryEvent } from '../../src/resilience/index.js';
import { ROUTE_HINT } from '../../src/rpc/types.js';
import { FakeClock } from '../helpers/clock.js';
import { caught, ticks } from './_helpers.js';

function call(init: Partial<OutgoingCall> = {}): OutgoingCall {
  return { service: 'svc', method: 'm', kind: 'unary', idempotent: true, request: { x: 1 }, options: {}, ...init };
}

const unavailable = () => createError(ErrorCode.REMOTE, 'handler said no', { status: 'UNAVAILABLE' });
const refusedStream = () => createError(ErrorCode.GOAWAY, 'refused: draining');
const pushback = (ms: number) => createError(ErrorCode.REMOTE, 'rate limit exceeded', { status: 'RESOURCE_EXHAUSTED', metadata: { 'retry-after-ms': String(ms) } });

/** A next() that fails with the given errors in turn, then answers 'ok'; records each attempt's options. */
function scripted(...errors: Error[]) {
  const seen: OutgoingCall[] = [];
  const next = (c: OutgoingCall): Promise<unknown> => {
    seen.push(c);
    const e = errors.shift();
    return e === undefined ? Promise.resolve('ok') : Promise.reject(e);
  };
  return { next, seen };
}

function listen(): { events: RetryEvent[]; stop: () => void } {
  const events: RetryEvent[] = [];
  const fn = (m: unknown): void => void events.push(m as RetryEvent);
  diagnostics.subscribe(RETRY_CHANNEL, fn);
  return { events, stop: () => diagnostics.unsubscribe(RETRY_CHANNEL, fn) };
}

test('retry budget - 20 % of calls plus 10 per second (fake clock)', () => {
  const clock = new FakeClock();
  const b = retryBudget({ clock });
  for (let i = 0; i < 100; i++) b.deposit();
  let allowed = 0;
  while (b.tryWithdraw()) allowed++;
  assert.equal(allowed, 20 + 10, '100 calls earn 20 retries, plus the 10/s allowance');
  assert.equal(b.tryWithdraw(), false);
  clock.advance(1000);
  allowed = 0;
  while (b.tryWithdraw()) allowed++;
  assert.equal(allowed, 10, 'one second later: 10 more');
  clock.advance(100);
  assert.equal(b.tryWithdraw(), true, '100 ms: one more');
  assert.equal(b.tryWithdraw(), false);
  const s = b.stats();
  assert.equal(s.deposits, 100);
  assert.equal(s.withdrawn, 41);
  assert.equal(s.refused, 4);
});

test('retry budget - ratio only (minPerSecond 0), deposits capped by maxTokens; bad options refused', () => {
  const b = retryBudget({ ratio: 0.5, minPerSecond: 0, maxTokens: 2, clock: new FakeClock() });
  assert.equal(b.tryWithdraw(), false, 'nothing before any call');
  for (let i = 0; i < 10; i++) b.deposit();
  assert.equal(b.tryWithdraw(), true);
  assert.equal(b.tryWithdraw(), true);
  assert.equal(b.tryWithdraw(), false, 'capped at 2 tokens');
  assert.throws(() => retryBudget({ ratio: -1 }), /ratio/);
  assert.throws(() => retryBudget({ minPerSecond: Number.NaN }), /minPerSecond/);
  assert.throws(() => retry({ maxAttempts: 0 }), /maxAttempts/);
});

test('retry - an idempotent call on UNAVAILABLE is retried and succeeds; the deadline travels with each attempt', async () => {
  const clock = new FakeClock();
  const r = retry({ clock, random: () => 0 });
  const { next, seen } = scripted(unavailable());
  const deadline = Date.now() + 60_000;
  assert.equal(await r(next)(call({ options: { deadline, metadata: { a: 'b' } } })), 'ok');
  assert.equal(seen.length, 2);
  for (const c of seen) {
    assert.equal(c.options.deadline, deadline);
    assert.deepEqual(c.options.metadata, { a: 'b' });
  }
  assert.equal(seen[0]!.options[ROUTE_HINT], seen[1]!.options[ROUTE_HINT], 'one route hint shared by the attempts');
  assert.deepEqual(r.stats(), { calls: 1, attempts: 2, retries: 1, recovered: 1, budgetRefused: 0, exhausted: 0, deadlineStopped: 0 });
});

test('retry - a timeout becomes one deadline for all attempts', async () => {
  const r = retry({ random: () => 0 });
  const { next, seen } = scripted(unavailable());
  const before = Date.now();
  await r(next)(call({ options: { timeout: 5000 } }));
  const d = seen[0]!.options.deadline!;
  assert.ok(d >= before + 5000 && d <= Date.now() + 5000);
  assert.equal(seen[1]!.options.deadline, d);
  assert.equal(seen[1]!.options.timeout, undefined);
});

test('retry - a non-idempotent call is not retried on UNAVAILABLE, but is on a refusal that never reached a handler', async () => {
  const r = retry({ random: () => 0 });
  const a = scripted(unavailable());
  const err = await caught(() => r(a.next)(call({ idempotent: false })));
  assert.equal(err.statusName, 'UNAVAILABLE');
  assert.equal(a.seen.length, 1);
  for (const e of [refusedStream(), createError(ErrorCode.NOT_READY, 'x'), createError(ErrorCode.CONNECT_FAILED, 'x'), createError(ErrorCode.STREAM_LIMIT, 'x'), createError(ErrorCode.LIMITED, 'x')]) {
    const b = scripted(e);
    assert.equal(await r(b.next)(call({ idempotent: false })), 'ok', e.code);
    assert.equal(b.seen.length, 2, e.code);
  }
  const c = scripted(createError(ErrorCode.CONNECTION_LOST, 'x'));
  await caught(() => r(c.next)(call({ idempotent: false })));
  assert.equal(c.seen.length, 1, 'a lost connection may have run the handler');
  const d = scripted(createError(ErrorCode.REMOTE, 'bad', { status: 'INVALID_ARGUMENT' }));
  await caught(() => r(d.next)(call()));
  assert.equal(d.seen.length, 1, 'a status not in retryableCodes');
});

test('retry - at most maxAttempts; streaming calls and non-array client streams pass through', async () => {
  const r = retry({ maxAttempts: 2, random: () => 0 });
  const a = scripted(unavailable(), unavailable(), unavailable());
  await caught(() => r(a.next)(call()));
  assert.equal(a.seen.length, 2);
  assert.equal(r.stats().exhausted, 1);
  const b = scripted(unavailable());
  await caught(() => r(b.next)(call({ kind: 'serverStream' })));
  assert.equal(b.seen.length, 1);
  const c = scripted(unavailable());
  await caught(() => r(c.next)(call({ kind: 'clientStream', request: (function* () {})() })));
  assert.equal(c.seen.length, 1, 'an iterator cannot be replayed');
  const d = scripted(unavailable());
  assert.equal(await r(d.next)(call({ kind: 'clientStream', request: [1, 2] })), 'ok', 'an array can');
  assert.equal(d.seen.length, 2);
});

test('retry - pushback: the retry is scheduled at least retry-after-ms later (fake clock)', async () => {
  const clock = new FakeClock();
  const ev = listen();
  try {
    const r = retry({ clock, random: () => 0.99 });
    const { next, seen } = scripted(pushback(700));
    const p = r(next)(call({ idempotent: false }));
    await ticks();
    assert.equal(seen.length, 1);
    assert.equal(clock.pending, 1, 'one backoff timer');
    assert.ok(clock.nextDue()! - clock.now() >= 700, `scheduled ${clock.nextDue()! - clock.now()} ms`);
    clock.advance(699);
    await ticks();
    assert.equal(seen.length, 1, 'not before the retry-after');
    clock.advance(1);
    assert.equal(await p, 'ok');
    assert.equal(seen.length, 2);
    assert.deepEqual(ev.events, [{ service: 'svc', method: 'm', attempt: 1, code: ErrorCode.REMOTE, delayMs: 700, reason: 'pushback' }]);
  } finally {
    ev.stop();
  }
});

test('retry - backoff is full jitter under a growing cap', async () => {
  const clock = new FakeClock();
  const ev = listen();
  try {
    const r = retry({ clock, maxAttempts: 4, random: () => 1, backoff: { initialMs: 10, maxMs: 30, multiplier: 2 } });
    const { next } = scripted(unavailable(), unavailable(), unavailable());
    const p = r(next)(call());
    for (let i = 0; i < 3; i++) {
      await ticks();
      clock.advance(1000);
    }
    assert.equal(await p, 'ok');
    assert.deepEqual(ev.events.map((e) => e.delayMs), [10, 20, 30]);
  } finally {
    ev.stop();
  }
});

test('retry - no retry past the deadline; a pushback longer than the time left ends the call', async () => {
  const r = retry({ random: () => 0 });
  const a = scripted(pushback(10_000));
  const err = await caught(() => r(a.next)(call({ options: { timeout: 1000 } })));
  assert.equal(err.statusName, 'RESOURCE_EXHAUSTED');
  assert.equal(a.seen.length, 1);
  assert.equal(r.stats().deadlineStopped, 1);
});

test('retry - the caller abort signal ends a backoff wait', async () => {
  const clock = new FakeClock();
  const r = retry({ clock, random: () => 1 });
  const ac = new AbortController();
  const { next, seen } = scripted(unavailable());
  const p = r(next)(call({ options: { signal: ac.signal } }));
  await ticks();
  assert.equal(clock.pending, 1);
  ac.abort();
  const err = await caught(() => p);
  assert.equal(err.statusName, 'CANCELLED');
  assert.equal(seen.length, 1);
});

test('retry - the budget refuses retries beyond 20 % + 10/s, and says so', async () => {
  const ev = listen();
  try {
    const r = retry({ budget: retryBudget({ clock: new FakeClock() }), backoff: { initialMs: 0, maxMs: 0 } });
    let attempts = 0;
    const next = (): Promise<unknown> => (attempts++, Promise.reject(unavailable()));
    const calls = 100;
    for (let i = 0; i < calls; i++) await caught(() => r(next)(call()));
    const s = r.stats();
    assert.equal(attempts, calls + s.retries);
    assert.ok(s.retries <= calls * 0.2 + 10, `${s.retries} retries for ${calls} calls`);
    assert.ok(s.budgetRefused > 0);
    assert.equal(ev.events.filter((e) => e.reason === 'budget-exhausted').length, s.budgetRefused);
    assert.equal(ev.events.filter((e) => e.reason === 'status').length, s.retries);
  } finally {
    ev.stop();
  }
});
