/**
 * Helpers for the resilience unit tests (not a test file itself): fake IncomingCalls that
 * carry just what the interceptors read, and controllable handlers.
 */
import type { CallContext, IncomingCall, MethodKindValue } from '../../src/index.js';

export interface FakeCallInit {
  service?: string;
  method?: string;
  kind?: MethodKindValue;
  signal?: AbortSignal;
  identity?: unknown;
  address?: string;
  deadline?: number;
}

/** An IncomingCall whose ctx has the fields the resilience interceptors use. */
export function fakeCall(init: FakeCallInit = {}): IncomingCall {
  const signal = init.signal ?? new AbortController().signal;
  const ctx = {
    service: init.service ?? 'svc',
    method: init.method ?? 'm',
    deadline: init.deadline,
    signal,
    metadata: {},
    peer: { transport: 'tcp', address: init.address ?? '10.0.0.1:5000' },
    identity: init.identity,
    trailers: {},
    forward: () => ({}),
  } satisfies CallContext;
  return { service: ctx.service, method: ctx.method, kind: init.kind ?? 'unary', request: {}, ctx };
}

/** A promise with its resolve/reject exposed. */
export function gate<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Let queued promise callbacks run. */
export async function ticks(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Whatever `fn` throws or rejects with (fails when it does not). */
export async function caught(fn: () => unknown): Promise<any> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}
