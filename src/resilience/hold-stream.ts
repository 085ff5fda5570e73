/**
 * Holding a resource for exactly as long as a CLIENT call's response stream runs (a client
 * bulkhead slot, a breaker's half-open probe), and learning how it ended — the client-side
 * counterpart of hold.ts (which holds server handlers).
 */
import { createError, ErrorCode, type SkeinError } from '../errors.js';
import type { Metadata, ResponseStream } from '../rpc/types.js';

/** How a held stream ended: read to its end (OK), failed, or given up by the caller. */
export type StreamOutcome = { readonly kind: 'ok' } | { readonly kind: 'error'; readonly error: unknown } | { readonly kind: 'cancelled' };

const OK: StreamOutcome = Object.freeze({ kind: 'ok' });
const CANCELLED: StreamOutcome = Object.freeze({ kind: 'cancelled' });

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function';
}

/**
 * @internal A ResponseStream over `source` — a stream, or a promise of one (the call still
 * waits for a slot, or an async interceptor returned it) — that calls `onEnd` exactly once
 * when the call is over, whichever comes first:
 *
 *   source rejects                         { kind: 'error', error }   (nothing was started)
 *   the inner stream's trailers resolve    { kind: 'ok' }             (it ended OK, read or not)
 *   the inner stream's trailers reject     { kind: 'error', error }   (failed, cancelled, deadline)
 *   next() gives done / throws             'ok' / 'error'             (streams without trailers)
 *   return() / throw() on the iterator     'cancelled'                (break out of `for await`)
 *   cancel()                               'cancelled'
 *
 * `cancel()` (or `return()`) before the inner stream exists calls `abortPending(err)` (so a
 * queue wait can end) and cancels the inner stream as soon as it arrives. Reads before then
 * wait for it; when `source` rejects, the first read rejects with its error.
 */
export function holdResponseStream(source: ResponseStream<unknown> | PromiseLike<ResponseStream<unknown>>, onEnd: (outcome: StreamOutcome) => void, abortPending?: (err: SkeinError) => void): ResponseStream<unknown> {
  let inner: ResponseStream<unknown> | undefined;
  let iter: AsyncIterator<unknown> | undefined;
  let cancelReason: string | undefined;
  let over = false;
  const end = (outcome: StreamOutcome): void => {
    if (over) return;
    over = true;
    onEnd(outcome);
  };

  const adopt = (s: ResponseStream<unknown>): ResponseStream<unknown> => {
    inner = s;
    const t: unknown = s?.trailers;
    if (isThenable(t))
      t.then(
        () => end(OK),
        (error: unknown) => end({ kind: 'error', error }),
      );
    if (cancelReason !== undefined) {
      s.cancel(cancelReason);
      end(CANCELLED);
    }
    return s;
  };

  let ready: Promise<ResponseStream<unknown>>;
  let trailers: Promise<Metadata>;
  if (isThenable(source)) {
    ready = Promise.resolve(source).then(adopt, (error: unknown) => {
      end({ kind: 'error', error });
      throw error;
    });
    ready.catch(() => {}); // surfaced by the first read
    trailers = ready.then((s) => s.trailers);
    trailers.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
  } else {
    adopt(source);
    ready = Promise.resolve(source);
    trailers = source.trailers;
  }

  const onResult = (r: IteratorResult<unknown>): IteratorResult<unknown> => {
    if (r.done === true) end(OK);
    return r;
  };
  const onError = (error: unknown): never => {
    end({ kind: 'error', error });
    throw error;
  };
  const cancel = (reason = 'cancelled by the caller'): void => {
    if (inner !== undefined) {
      inner.cancel(reason);
      end(CANCELLED);
      return;
    }
    if (cancelReason !== undefined) return;
    cancelReason = reason;
    abortPending?.(createError(ErrorCode.CANCELLED, reason));
  };
  /** The caller stops reading (break / return() / throw()): the call is given up. */
  const stop = async (value: unknown, how: 'return' | 'throw'): Promise<IteratorResult<unknown>> => {
    const it = iter;
    if (it === undefined) {
      cancel('the caller stopped reading replies');
      return { done: true, value };
    }
    try {
      const f = how === 'return' ? it.return : it.throw;
      if (f !== undefined) return await f.call(it, value);
      inner?.cancel('the caller stopped reading replies');
      if (how === 'throw') throw value;
      return { done: true, value };
    } finally {
      end(CANCELLED);
    }
  };

  const iterator: AsyncIterator<unknown> = {
    next(): Promise<IteratorResult<unknown>> {
      if (iter !== undefined) return iter.next().then(onResult, onError);
      return ready
        .then((s) => {
          iter ??= s[Symbol.asyncIterator]();
          return iter.next();
        })
        .then(onResult, onError);
    },
    return: (value?: unknown) => stop(value, 'return'),
    throw: (err?: unknown) => stop(err, 'throw'),
  };
  return {
    [Symbol.asyncIterator]: () => iterator,
    cancel,
    trailers,
  };
}

/** @internal A ResponseStream that sends nothing and fails its first read (and its trailers) with `err`. */
export function failedStream(err: unknown): ResponseStream<unknown> {
  const p = Promise.reject(err);
  p.catch(() => {});
  return holdResponseStream(p as Promise<ResponseStream<unknown>>, () => {});
}
