/**
 * armTimer: deadlines of any length (Node's setTimeout fires delays above 2^31-1 ms after 1 ms).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { armTimer, MAX_TIMER_MS } from '../../../src/session/timer.js';
import { withTimeout } from '../../helpers/wait.js';

/** Resolves after every timer of `ms` or less armed before it has run (timers of equal delay run in arming order). */
const afterTimers = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('session timers', () => {
  it('timer - a short delay fires once', async () => {
    let fired = 0;
    await withTimeout(new Promise<void>((r) => armTimer(1, () => (fired++, r()))), 5000, 'the timer');
    assert.equal(fired, 1);
  });

  it('timer - a delay beyond 2^31-1 ms does not fire early, and can be cancelled', async () => {
    let fired = false;
    const cancel = armTimer(MAX_TIMER_MS + 1000, () => (fired = true));
    const cancelU32 = armTimer(0xffffffff, () => (fired = true));
    await afterTimers(5);
    assert.equal(fired, false);
    cancel();
    cancelU32();
  });

  it('timer - Infinity and NaN never fire; negative fires at once', async () => {
    let fired = false;
    armTimer(Infinity, () => (fired = true))();
    armTimer(NaN, () => (fired = true));
    const early = new Promise<void>((r) => armTimer(-50, r));
    await withTimeout(early, 5000, 'a negative delay to fire');
    await afterTimers(1);
    assert.equal(fired, false);
  });

  it('timer - cancelling before it fires prevents it', async () => {
    let fired = false;
    const cancel = armTimer(1, () => (fired = true));
    cancel();
    cancel();
    await afterTimers(2);
    assert.equal(fired, false);
  });
});
