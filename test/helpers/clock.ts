/**
 * A fake clock for code that takes a `Clock` (src/util/clock.ts): time stands still until
 * the test moves it with `advance(ms)`, and timers fire then, in due-time order (ties in
 * the order they were set), each seeing `now()` equal to its due time.
 *
 *   const clock = new FakeClock();
 *   const backoff = new Backoff({ clock });
 *   clock.advance(1000);          // fires every timer due within the next second
 *   await clock.advanceAsync(1000) // same, letting promise callbacks run between timers
 *
 * Timers set while advancing fire in the same call if they fall due within the window.
 */
import type { Clock } from '../../src/util/clock.js';

interface FakeTimer {
  id: number;
  due: number;
  seq: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  #now: number;
  #nextId = 1;
  #seq = 0;
  #timers = new Map<number, FakeTimer>();

  /** @param start the initial `now()`. @default 0 */
  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  /** Schedule `fn` at now + max(0, ms); returns a numeric handle. */
  setTimeout(fn: () => void, ms: number): number {
    const id = this.#nextId++;
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    this.#timers.set(id, { id, due: this.#now + delay, seq: this.#seq++, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle === 'number') this.#timers.delete(handle);
  }

  /** Number of timers not yet fired or cleared. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Due time of the next timer, or undefined when none is pending. */
  nextDue(): number | undefined {
    return this.#next()?.due;
  }

  /**
   * Move time forward by `ms`, firing every timer that falls due on the way (synchronously).
   * An exception from a timer propagates after time has been set to that timer's due time.
   */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`advance(ms) needs ms >= 0, got ${ms}`);
    const target = this.#now + ms;
    for (let t = this.#dueBy(target); t !== undefined; t = this.#dueBy(target)) this.#fire(t);
    this.#now = target;
  }

  /**
   * Like `advance`, but after each timer waits a macrotask turn so that promise callbacks
   * (and the timers they set) run before the next timer fires. Use this for async code
   * such as `await sleep(backoff)` loops.
   */
  async advanceAsync(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`advanceAsync(ms) needs ms >= 0, got ${ms}`);
    const target = this.#now + ms;
    await flushTurn();
    for (let t = this.#dueBy(target); t !== undefined; t = this.#dueBy(target)) {
      this.#fire(t);
      await flushTurn();
    }
    this.#now = target;
  }

  /** Fire timers until none is pending (at most `limit`, to catch runaway rescheduling). */
  runAll(limit = 10_000): void {
    for (let i = 0; i < limit; i++) {
      const t = this.#next();
      if (t === undefined) return;
      this.#fire(t);
    }
    throw new Error(`FakeClock.runAll: still ${this.#timers.size} timer(s) pending after ${limit} fired`);
  }

  #next(): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const t of this.#timers.values()) if (best === undefined || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = t;
    return best;
  }

  #dueBy(target: number): FakeTimer | undefined {
    const t = this.#next();
    return t !== undefined && t.due <= target ? t : undefined;
  }

  #fire(t: FakeTimer): void {
    this.#timers.delete(t.id);
    if (t.due > this.#now) this.#now = t.due;
    t.fn();
  }
}

/** One macrotask turn: every queued microtask (promise callback) runs before it resolves. */
function flushTurn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}
