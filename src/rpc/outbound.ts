/**
 * Outbound streaming: feed an (async) iterable into a stream, one message at a time, and
 * wait for credit whenever `send()` says the peer's window is full. The iterable is only
 * pulled as fast as the peer reads, so a slow reader bounds the sender's memory.
 */
import type { Stream } from '../session/stream.js';

/** Wakes a pump waiting for credit; also opened when the call dies so the pump can stop. */
export class DrainGate {
  private waiter: (() => void) | undefined;
  wait(): Promise<void> {
    return new Promise((r) => (this.waiter = r));
  }
  open(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

/**
 * How much a pump may send in one turn of the event loop before it yields (each message
 * counts its size plus MESSAGE_COST). A generator that never awaits I/O otherwise runs in
 * microtasks only, and would hold the event loop — every other connection of the process —
 * until a whole stream window (1 MiB of tiny messages: ~100k iterations) is used up.
 */
const TURN_BUDGET = 64 * 1024;
const MESSAGE_COST = 64;

const yieldTurn = () => new Promise<void>((r) => setImmediate(r));

/**
 * Send every item of `source` on `stream`, encoded with `encode`. Stops early (closing
 * the source's iterator) when `stopped()` turns true. The caller's stream handler must open
 * `gate` from its onDrain (and when the call dies). Errors from the source or the
 * encoder propagate to the caller.
 */
export async function pumpSource<T>(source: AsyncIterable<T> | Iterable<T>, stream: Stream, gate: DrainGate, encode: (v: T) => Buffer | Promise<Buffer>, stopped: () => boolean): Promise<void> {
  let budget = TURN_BUDGET;
  for await (const item of source) {
    if (stopped()) return;
    let encoded = encode(item);
    // Only an asynchronous encoder (one that validates with an async schema) costs an await.
    if (encoded instanceof Promise) {
      encoded = await encoded;
      if (stopped()) return;
    }
    const payload = encoded;
    if (!stream.send(payload)) {
      await gate.wait();
      if (stopped()) return;
      budget = TURN_BUDGET;
    } else if ((budget -= payload.length + MESSAGE_COST) <= 0) {
      await yieldTurn();
      if (stopped()) return;
      budget = TURN_BUDGET;
    }
  }
}
