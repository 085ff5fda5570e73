/**
 * Watch plumbing shared by the built-in resolvers (static, dns, multicast): the event
 * queue behind one `watch()` iterator, and the diff between two instance sets.
 *
 * A feed never blocks its producer: resolvers push from timers and socket callbacks. Its
 * queue is bounded instead — when a consumer falls more than `maxQueue` events behind, the
 * backlog is replaced by one 'snapshot' of the current set (the interface allows a
 * snapshot at any time as a resync), so a stalled consumer costs one set, not an
 * unbounded history.
 */
import type { Instance, ResolverEvent } from './types.js';

export interface WatchFeedOptions {
  /** Ends the feed (the iterator finishes, queued events are dropped). */
  signal?: AbortSignal | undefined;
  /** The current full set, to replace an overflowing backlog. */
  snapshot: () => Instance[];
  /** Called on the first `next()`: the producer starts here, so a watch nobody iterates costs nothing. */
  onStart?: (feed: WatchFeed) => void;
  /** Called once when the feed ends, whatever the reason (abort, consumer stopped, `end()`). */
  onEnd?: (feed: WatchFeed) => void;
  /** Events held for a slow consumer before they collapse into a snapshot. @default 1024 */
  maxQueue?: number;
}

export const DEFAULT_MAX_QUEUE = 1024;

export class WatchFeed implements AsyncIterableIterator<ResolverEvent> {
  #queue: ResolverEvent[] = [];
  #wake: (() => void) | undefined;
  #started = false;
  #ended = false;
  readonly #options: WatchFeedOptions;
  readonly #maxQueue: number;
  readonly #onAbort = (): void => this.end();

  constructor(options: WatchFeedOptions) {
    this.#options = options;
    this.#maxQueue = Math.max(1, options.maxQueue ?? DEFAULT_MAX_QUEUE);
    if (options.signal?.aborted === true) this.#ended = true;
    else options.signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** True once the feed has ended. */
  get ended(): boolean {
    return this.#ended;
  }

  /** True once the consumer has asked for the first event. */
  get started(): boolean {
    return this.#started;
  }

  /** Queue one event (ignored after the end). */
  push(event: ResolverEvent): void {
    if (this.#ended) return;
    if (this.#queue.length >= this.#maxQueue) this.#queue = [{ type: 'snapshot', instances: this.#options.snapshot() }];
    else this.#queue.push(event);
    this.#wakeUp();
  }

  /** Finish the iterator (queued events are dropped). Idempotent. */
  end(): void {
    this.#ended = true;
    this.#queue = [];
    this.#cleanup();
    this.#wakeUp();
  }

  async next(): Promise<IteratorResult<ResolverEvent>> {
    if (!this.#started) {
      this.#started = true;
      if (!this.#ended) this.#options.onStart?.(this);
    }
    for (;;) {
      if (this.#ended) {
        this.#cleanup();
        return { done: true, value: undefined };
      }
      const event = this.#queue.shift();
      if (event !== undefined) return { done: false, value: event };
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  async return(): Promise<IteratorResult<ResolverEvent>> {
    this.end();
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #cleaned = false;
  #cleanup(): void {
    if (this.#cleaned) return;
    this.#cleaned = true;
    this.#options.signal?.removeEventListener('abort', this.#onAbort);
    this.#options.onEnd?.(this);
  }
}

/** Same address and metadata (service and id are the key, compared by the caller). */
export function sameInstance(a: Instance, b: Instance): boolean {
  if (a.address !== b.address) return false;
  const ka = Object.keys(a.metadata);
  const kb = Object.keys(b.metadata);
  if (ka.length !== kb.length) return false;
  for (const k of ka) if (a.metadata[k] !== b.metadata[k]) return false;
  return true;
}

/**
 * The events that turn `prev` into `next` (both keyed by instance id): 'added' and
 * 'updated' first, then 'removed', so a consumer applying them in order never passes
 * through an empty set while instances are being replaced.
 */
export function diffInstances(prev: ReadonlyMap<string, Instance>, next: ReadonlyMap<string, Instance>): ResolverEvent[] {
  const events: ResolverEvent[] = [];
  for (const [id, instance] of next) {
    const before = prev.get(id);
    if (before === undefined) events.push({ type: 'added', instance });
    else if (!sameInstance(before, instance)) events.push({ type: 'updated', instance });
  }
  for (const [id, instance] of prev) if (!next.has(id)) events.push({ type: 'removed', instance });
  return events;
}

/** Copy an instance (metadata included), so consumers cannot mutate a resolver's table. */
export function copyInstance(instance: Instance): Instance {
  return { service: instance.service, id: instance.id, address: instance.address, metadata: { ...instance.metadata } };
}

/** An integer query parameter in [min, max]; `fallback` when absent; `invalid(why)` throws otherwise. */
export function intParam(params: URLSearchParams, name: string, fallback: number, min: number, max: number, invalid: (why: string) => never): number {
  const text = params.get(name);
  if (text === null) return fallback;
  if (!/^\d+$/.test(text)) invalid(`?${name}= must be a whole number, got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) invalid(`?${name}=${n} out of range (${min}..${max})`);
  return n;
}

/** Refuse query parameters other than `allowed` (typos should not pass silently). */
export function checkParams(params: URLSearchParams, allowed: readonly string[], invalid: (why: string) => never): void {
  for (const key of new Set(params.keys())) {
    if (!allowed.includes(key)) invalid(`unknown option ?${key}= (known: ${allowed.map((k) => `?${k}=`).join(', ')})`);
  }
}

/** A boolean query parameter: absent → fallback; '', '1', 'true', 'yes', 'on' → true; '0', 'false', 'no', 'off' → false. */
export function boolParam(params: URLSearchParams, name: string, fallback: boolean, invalid: (why: string) => never): boolean {
  const text = params.get(name);
  if (text === null) return fallback;
  const t = text.toLowerCase();
  if (t === '' || t === '1' || t === 'true' || t === 'yes' || t === 'on') return true;
  if (t === '0' || t === 'false' || t === 'no' || t === 'off') return false;
  return invalid(`?${name}= must be true or false, got ${JSON.stringify(text)}`);
}
