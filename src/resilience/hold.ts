/**
 * Holding a resource (a bulkhead slot, a concurrency-limit permit) for exactly as long as
 * a call runs, and releasing it exactly once on every path.
 *
 * Unary and client-streaming handlers end when their reply (or promise) settles. Server-
 * streaming and bidi handlers end when the iterable they return is finished, so the
 * iterable is wrapped:
 *
 *   next() -> { done: true }        release
 *   next() throws / rejects         release
 *   return() / throw()              release (then forwarded to the inner iterator)
 *   never iterated, call aborted    release (the server drops an iterable whose call ended
 *                                   before it was read: e.g. the client cancelled)
 *
 * `release` is wrapped in a once-guard, so overlapping paths (return() after an abort)
 * cannot release twice.
 */
import { MethodKind } from '../rpc/define.js';
import type { Handle, IncomingCall } from '../rpc/types.js';

/** `fn`, callable any number of times, running only the first time. */
export function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function';
}

/** True for the kinds whose handler returns an iterable of replies. */
export function isStreamingReply(call: IncomingCall): boolean {
  return call.kind === MethodKind.SERVER_STREAM || call.kind === MethodKind.BIDI;
}

/**
 * Run `next(call)` and call `release(error?)` once when the call's work is over (see the
 * module comment). `release` gets the error when the handler failed, undefined otherwise.
 * Returns what the handler returned (a promise when the handler was async).
 */
export function runHeld(next: Handle, call: IncomingCall, release: (err: unknown) => void): unknown {
  const rel = onceArg(release);
  let result: unknown;
  try {
    result = next(call);
  } catch (err) {
    rel(err);
    throw err;
  }
  if (!isStreamingReply(call)) {
    if (!isThenable(result)) {
      rel(undefined);
      return result;
    }
    return Promise.resolve(result).then(
      (v) => {
        rel(undefined);
        return v;
      },
      (err: unknown) => {
        rel(err);
        throw err;
      },
    );
  }
  if (!isThenable(result)) return holdIterable(result, call, rel);
  return Promise.resolve(result).then(
    (v) => holdIterable(v, call, rel),
    (err: unknown) => {
      rel(err);
      throw err;
    },
  );
}

function onceArg(fn: (err: unknown) => void): (err: unknown) => void {
  let done = false;
  return (err) => {
    if (done) return;
    done = true;
    fn(err);
  };
}

/** Wrap a handler's iterable so that `release` runs once when it is finished, on any path. */
export function holdIterable(source: unknown, call: IncomingCall, release: (err: unknown) => void): AsyncIterable<unknown> | unknown {
  if (source === null || typeof source !== 'object' || (!(Symbol.asyncIterator in source) && !(Symbol.iterator in source))) {
    // Not an iterable: the server fails the call (INTERNAL); nothing will ever iterate it.
    release(undefined);
    return source;
  }
  const signal = call.ctx.signal;
  let started = false;
  const onAbort = (): void => {
    if (!started) release(signal.reason);
  };
  const done = (err: unknown): void => {
    signal.removeEventListener('abort', onAbort);
    release(err);
  };
  if (signal.aborted) {
    done(signal.reason);
    return source;
  }
  signal.addEventListener('abort', onAbort, { once: true });
  return {
    [Symbol.asyncIterator](): AsyncIterator<unknown> {
      started = true;
      let inner: Iterator<unknown> | AsyncIterator<unknown>;
      try {
        inner = Symbol.asyncIterator in source ? (source as AsyncIterable<unknown>)[Symbol.asyncIterator]() : (source as Iterable<unknown>)[Symbol.iterator]();
      } catch (err) {
        done(err);
        throw err;
      }
      return {
        async next(): Promise<IteratorResult<unknown>> {
          try {
            const r = await inner.next();
            if (r.done === true) done(undefined);
            return r;
          } catch (err) {
            done(err);
            throw err;
          }
        },
        async return(value?: unknown): Promise<IteratorResult<unknown>> {
          try {
            return inner.return !== undefined ? await inner.return(value) : { done: true, value };
          } finally {
            done(undefined);
          }
        },
        async throw(err?: unknown): Promise<IteratorResult<unknown>> {
          try {
            if (inner.throw !== undefined) return await inner.throw(err);
            throw err;
          } finally {
            done(err);
          }
        },
      };
    },
  };
}
