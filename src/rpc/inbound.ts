/**
 * Inbound message stream: the AsyncIterable a handler (client/bidi streams) or a caller
 * (server/bidi streams) reads. Messages are decoded on arrival and credit is returned to
 * the peer only when the reader takes a message, so memory stays bounded by the stream
 * window and a slow reader stalls its sender (docs/protocol.md §6).
 */
import type { SkeinError } from '../errors.js';
import type { Stream } from '../session/stream.js';

interface Item<T> {
  value: T;
  size: number;
}

export class InboundQueue<T> implements AsyncIterableIterator<T> {
  private items: Item<T>[] = [];
  private head = 0;
  private ended = false;
  private error: SkeinError | undefined;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private stream: Stream | undefined;

  /**
   * @param onReturn called when the reader stops early (break / return()) before the end:
   *   the owner cancels the call.
   */
  constructor(private readonly onReturn: () => void) {}

  /** Attach the stream whose credit is released as messages are taken. */
  attach(stream: Stream): void {
    this.stream = stream;
  }

  /** A decoded message arrived (`size` wire bytes of credit). */
  push(value: T, size: number): void {
    if (this.ended || this.error !== undefined) return;
    const w = this.waiter;
    if (w !== undefined) {
      this.waiter = undefined;
      this.stream?.consume(size);
      w.resolve({ done: false, value });
      return;
    }
    this.items.push({ value, size });
  }

  /** The sender finished normally: readers get the buffered messages, then done. */
  end(): void {
    if (this.ended || this.error !== undefined) return;
    this.ended = true;
    const w = this.waiter;
    if (w !== undefined && this.head >= this.items.length) {
      this.waiter = undefined;
      w.resolve({ done: true, value: undefined });
    }
  }

  /**
   * The call failed: reads throw `err`. With `keepBuffered` (the peer ended the call with an
   * error status) messages that already arrived are delivered first, as gRPC does; otherwise
   * (local cancel, connection lost) they are dropped.
   */
  fail(err: SkeinError, keepBuffered = false): void {
    if (this.ended || this.error !== undefined) return;
    this.error = err;
    if (!keepBuffered) {
      this.items = [];
      this.head = 0;
    }
    const w = this.waiter;
    if (w !== undefined && this.head >= this.items.length) {
      this.waiter = undefined;
      w.reject(err);
    }
  }

  get finished(): boolean {
    return this.ended || this.error !== undefined;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const it = this.items[this.head++]!;
      if (this.head > 64 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      this.stream?.consume(it.size);
      return Promise.resolve({ done: false, value: it.value });
    }
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    if (this.waiter !== undefined) return Promise.reject(new Error('concurrent next() calls on a message stream'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    if (!this.finished) {
      this.ended = true;
      this.items = [];
      this.onReturn();
    }
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
