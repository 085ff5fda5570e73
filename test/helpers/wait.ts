/**
 * Bounded waiting for tests. Every helper here gives up after a timeout with a message
 * that says what it was waiting for, so a broken test fails in seconds with a reason
 * instead of hanging until the runner's global timeout.
 *
 * Prefer waiting for an event (`once`) or a promise (`withTimeout`); `waitFor` polls a
 * condition for state that has no event. None of them is a sleep: they return as soon as
 * the thing happens.
 */
import type { EventEmitter } from 'node:events';

/** @default how long any wait lasts before failing, milliseconds. */
export const DEFAULT_WAIT_MS = 5000;

export interface WaitForOptions {
  /** Give up after this long. @default 5000 */
  timeoutMs?: number;
  /** What is being waited for, for the failure message. @default 'condition' */
  what?: string;
  /** Polling interval. @default 5 */
  intervalMs?: number;
}

/**
 * Resolve once `cond()` returns (or resolves to) true, checking at once and then every
 * `intervalMs`. Rejects with "timed out after Nms waiting for <what>", or with whatever
 * `cond` throws.
 */
export function waitFor(cond: () => boolean | Promise<boolean>, options: WaitForOptions = {}): Promise<void> {
  const { timeoutMs = DEFAULT_WAIT_MS, what = 'condition', intervalMs = 5 } = options;
  const started = Date.now();
  return new Promise<void>((resolve, reject) => {
    const check = async (): Promise<void> => {
      try {
        if (await cond()) {
          resolve();
          return;
        }
      } catch (err) {
        reject(err);
        return;
      }
      if (Date.now() - started >= timeoutMs) {
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}`));
        return;
      }
      setTimeout(() => void check(), intervalMs);
    };
    void check();
  });
}

/**
 * The arguments of the next `event` from `emitter`, within `timeoutMs`. Like
 * `events.once`, an 'error' event rejects (unless `event` is 'error'). All listeners and
 * the timer are removed when it settles.
 */
export function once<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string | symbol, timeoutMs: number = DEFAULT_WAIT_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      if (event !== 'error') emitter.off('error', onError);
    };
    const onEvent = (...args: unknown[]): void => {
      done();
      resolve(args as T);
    };
    const onError = (err: unknown): void => {
      done();
      reject(err instanceof Error ? err : new Error(String(err)));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs}ms waiting for ${JSON.stringify(String(event))} event`));
    }, timeoutMs);
    emitter.on(event, onEvent);
    if (event !== 'error') emitter.on('error', onError);
  });
}

/**
 * `promise`, or a rejection "timed out after Nms waiting for <what>" if it takes longer.
 * The timer is cleared either way.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number = DEFAULT_WAIT_MS, what: string = 'promise'): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Collect everything a readable stream emits until it ends (or closes), within `timeoutMs`.
 * Resolves with the bytes; rejects on 'error' or timeout.
 */
export function readAll(stream: NodeJS.ReadableStream & EventEmitter, timeoutMs: number = DEFAULT_WAIT_MS): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const done = (): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
    };
    const onData = (chunk: Buffer | string): void => {
      chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    };
    const onEnd = (): void => {
      done();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs}ms waiting for the stream to end (${chunks.reduce((n, c) => n + c.length, 0)} bytes read)`));
    }, timeoutMs);
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
  });
}

/**
 * Read exactly `n` bytes from a stream (more may arrive later and stay unread), within
 * `timeoutMs`. Rejects if the stream ends, closes or errors first. Leaves the stream
 * paused again afterwards.
 */
export function readBytes(stream: NodeJS.ReadableStream & EventEmitter, n: number, timeoutMs: number = DEFAULT_WAIT_MS): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const done = (): void => {
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
    };
    const onReadable = (): void => {
      while (have < n) {
        const chunk = stream.read() as Buffer | string | null;
        if (chunk === null) return;
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        const need = n - have;
        if (buf.length > need) {
          chunks.push(buf.subarray(0, need));
          stream.unshift(buf.subarray(need));
          have = n;
        } else {
          chunks.push(buf);
          have += buf.length;
        }
      }
      done();
      resolve(Buffer.concat(chunks));
    };
    const onEnd = (): void => {
      done();
      reject(new Error(`stream ended after ${have} of ${n} bytes`));
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs}ms waiting for ${n} bytes (${have} read)`));
    }, timeoutMs);
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
    onReadable();
  });
}

/**
 * Resolve once `stream` has closed (at once if it already has), within `timeoutMs`.
 * Errors on the stream do not reject: they are part of closing. Use this instead of
 * `once(stream, 'close')` when the close may come with an 'error'.
 */
export function closed(stream: EventEmitter & { closed?: boolean }, timeoutMs: number = DEFAULT_WAIT_MS): Promise<void> {
  if (stream.closed === true) return Promise.resolve();
  return withTimeout(
    new Promise<void>((resolve) => stream.once('close', () => resolve())),
    timeoutMs,
    "the stream's 'close' event",
  );
}
