/**
 * Helpers for the outage tests (not a test file itself): a steady load of K workers making
 * calls in a loop, and a journal that puts what the clients, the servers and the breakers
 * did in one order (everything runs in this process, so the order of the entries is the
 * order in which the event loop saw them).
 */
import diagnostics from 'node:diagnostics_channel';
import { setTimeout as delay } from 'node:timers/promises';
import { isSkeinError, type SkeinError } from '../../src/index.js';
import { withTimeout } from '../helpers/wait.js';

/** One finished call of a `Load`. */
export interface CallResult {
  id: string;
  worker: number;
  /** Journal position when the call started / ended. */
  startedAt: number;
  endedAt: number;
  ok: boolean;
  err: SkeinError | undefined;
}

/** A monotonic position counter shared by everything a test records. */
export class Journal {
  #n = 0;
  /** The next position. */
  tick(): number {
    return ++this.#n;
  }
  /** The last position handed out. */
  get now(): number {
    return this.#n;
  }
}

export interface LoadOptions {
  /** Workers, each making one call at a time. */
  workers: number;
  /** Pause between two calls of a worker (pacing the load, not synchronisation). @default 5 */
  paceMs?: number;
  /** Upper bound of calls per worker (keeps a runaway test finite). @default 100000 */
  maxPerWorker?: number;
}

/**
 * K workers in a loop: `call(id)`, record the outcome, pause `paceMs`, again — until stop().
 * The pause also keeps a worker whose calls fail fast (synchronously rejected promises) from
 * starving the event loop.
 */
export class Load {
  readonly results: CallResult[] = [];
  /** Calls started (finished or not). */
  started = 0;
  #stopped = false;
  readonly #running: Array<Promise<void>> = [];
  readonly #listeners = new Set<() => void>();

  constructor(
    private readonly journal: Journal,
    private readonly call: (id: string, worker: number) => Promise<unknown>,
    private readonly options: LoadOptions,
  ) {}

  start(): this {
    for (let w = 0; w < this.options.workers; w++) this.#running.push(this.#worker(w));
    return this;
  }

  async #worker(w: number): Promise<void> {
    const max = this.options.maxPerWorker ?? 100_000;
    for (let i = 0; !this.#stopped && i < max; i++) {
      const id = `w${w}-${i}`;
      const startedAt = this.journal.tick();
      this.started++;
      let ok = false;
      let err: SkeinError | undefined;
      try {
        await this.call(id, w);
        ok = true;
      } catch (e) {
        if (!isSkeinError(e)) throw e;
        err = e;
      }
      this.results.push({ id, worker: w, startedAt, endedAt: this.journal.tick(), ok, err });
      for (const l of [...this.#listeners]) l();
      await delay(this.options.paceMs ?? 5);
    }
  }

  /** Results of calls started after journal position `pos`. */
  since(pos: number): CallResult[] {
    return this.results.filter((r) => r.startedAt > pos);
  }

  /** Resolve once `pred()` holds (checked after every finished call), bounded. */
  until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
    if (pred()) return Promise.resolve();
    let listener: (() => void) | undefined;
    const p = new Promise<void>((resolve) => {
      listener = () => {
        if (pred()) resolve();
      };
      this.#listeners.add(listener);
    });
    return withTimeout(p, ms, what).finally(() => this.#listeners.delete(listener!));
  }

  /** Stop the workers and wait (bounded) for their last calls. */
  async stop(ms = 5000): Promise<void> {
    this.#stopped = true;
    await withTimeout(Promise.all(this.#running), ms, 'the load workers to stop');
  }
}

/** Subscribe to a diagnostics channel until the returned function is called. */
export function subscribe<T>(name: string, fn: (event: T) => void): () => void {
  const handler = (m: unknown): void => fn(m as T);
  diagnostics.subscribe(name, handler);
  return () => diagnostics.unsubscribe(name, handler);
}

/** "code: message" of the first few errors, for assertion messages. */
export function describeErrors(results: readonly CallResult[], n = 3): string {
  return results
    .filter((r) => !r.ok)
    .slice(0, n)
    .map((r) => `${r.id} ${r.err?.code}: ${r.err?.message}`)
    .join('; ');
}
