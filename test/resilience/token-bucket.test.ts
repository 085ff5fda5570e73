import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TokenBucket } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';

test('token bucket - starts full and refuses once burst is spent', () => {
  const b = new TokenBucket({ rate: 10, burst: 3 }, new FakeClock());
  assert.equal(b.tryTake(), true);
  assert.equal(b.tryTake(), true);
  assert.equal(b.tryTake(), true);
  assert.equal(b.tryTake(), false);
  assert.equal(b.tryTake(), false);
});

test('token bucket - retryAfterMs says when the next token arrives', () => {
  const clock = new FakeClock();
  const b = new TokenBucket({ rate: 10, burst: 1 }, clock);
  assert.equal(b.retryAfterMs(), 0);
  assert.equal(b.tryTake(), true);
  assert.equal(b.retryAfterMs(), 100);
  clock.advance(40);
  assert.equal(b.retryAfterMs(), 60);
  assert.equal(b.tryTake(), false);
  clock.advance(60);
  assert.equal(b.retryAfterMs(), 0);
  assert.equal(b.tryTake(), true);
  assert.equal(b.retryAfterMs(2), Infinity, 'more than burst never fits');
});

test('token bucket - refills at rate and never beyond burst', () => {
  const clock = new FakeClock();
  const b = new TokenBucket({ rate: 2, burst: 4 }, clock);
  for (let i = 0; i < 4; i++) assert.equal(b.tryTake(), true);
  clock.advance(1000);
  assert.ok(Math.abs(b.tokens - 2) < 1e-9);
  clock.advance(60_000);
  assert.equal(b.tokens, 4);
  assert.equal(b.tryTake(4), true);
  assert.equal(b.tryTake(1), false);
});

test('token bucket - a refund gives a token back, capped at burst', () => {
  const b = new TokenBucket({ rate: 1, burst: 2 }, new FakeClock());
  assert.equal(b.tryTake(2), true);
  b.refund(1);
  assert.equal(b.tryTake(), true);
  b.refund(10);
  assert.equal(b.tokens, 2);
});

test('token bucket - fractional refills add up to whole tokens', () => {
  const clock = new FakeClock();
  const b = new TokenBucket({ rate: 3, burst: 1 }, clock);
  assert.equal(b.tryTake(), true);
  for (let i = 0; i < 3; i++) clock.advance(1000 / 9);
  assert.equal(b.tryTake(), true);
});

test('token bucket - bad rate or burst is INVALID_ARGUMENT', () => {
  for (const spec of [{ rate: 0, burst: 1 }, { rate: -1, burst: 1 }, { rate: NaN, burst: 1 }, { rate: 1, burst: 0.5 }, { rate: 1, burst: Infinity }]) {
    assert.throws(() => new TokenBucket(spec), (e: any) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && e.statusName === 'INVALID_ARGUMENT');
  }
});
