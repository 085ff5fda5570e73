/**
 * A queue you push into and iterate out of: the request source for client-streaming and
 * bidi calls when the messages are produced over time.
 *
 *   const requests = pushable<{ n: number }>();
 *   const reply = client.sum(requests);
 *   await requests.push({ n: 1 });   // resolves once the message is taken (backpressure)
 *   requests.end();
 *
 * `push()` resolves when the consumer has taken the item, so a producer that awaits it
 * never holds more than `highWaterMark` items. Rejects if the consumer stopped.
 */
import { createError, ErrorCode } from '../errors.js';

export interface Pushable<T> extends AsyncIterableIterator<T> {
  /** Queue one item; resolves once it is taken (or immediately while under the high-water mark). */
  push(item: T): Promise<void>;
  /** No more items: the consumer finishes after the queued ones. */
  end(): void;
  /** Fail the consumer with `err`. */
  fail(err: unknown): void;
}

export function pushable<T>(options: { highWaterMark?: number } = {}): Pushable<T> {
  const hwm = options.highWaterMark ?? 16;
  const items: Array<{ v: T; taken: () => void }> = [];
  let ended = false;
  let stopped = false;
  let error: unknown;
  let wake: (() => void) | undefined;
  const it: Pushable<T> = {
    push(v: T): Promise<void> {
      if (ended || stopped) return Promise.reject(createError(ErrorCode.CLOSED, stopped ? 'the consumer stopped reading' : 'push() after end()'));
      return new Promise<void>((resolve) => {
        items.push({ v, taken: resolve });
        if (items.length <= hwm) resolve();
        wake?.();
      });
    },
    end() {
      ended = true;
      wake?.();
    },
    fail(err: unknown) {
      error = err;
      ended = true;
      wake?.();
    },
    async next(): Promise<IteratorResult<T>> {
      for (;;) {
        if (error !== undefined) throw error;
        const item = items.shift();
        if (item !== undefined) {
          item.taken();
          return { done: false, value: item.v };
        }
        if (ended || stopped) return { done: true, value: undefined };
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    },
    async return(): Promise<IteratorResult<T>> {
      stopped = true;
      for (const i of items.splice(0)) i.taken();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}
