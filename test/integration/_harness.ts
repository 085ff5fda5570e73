/**
 * Shared pieces of the integration suites (not a test file itself): the echo service used
 * everywhere, starting a server on any transport, and bounded assertions on calls.
 *
 * Every wait here is bounded (DEFAULT_WAIT_MS from test/helpers/wait.ts unless a test
 * says otherwise) so a regression fails in seconds with a reason rather than hanging.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bidi, clientStream, connect, createServer, implement, isSkeinError, serverStream, service, Status, unary, type Client, type ClientOptions, type MethodMap, type Server, type ServerOptions, type ServiceDef, type SkeinError, type StatusName } from '../../src/index.js';
import { clientTls, serverTls } from '../helpers/tls.js';
import { DEFAULT_WAIT_MS, withTimeout } from '../helpers/wait.js';

export type TransportKind = 'tcp' | 'tls' | 'unix' | 'memory';
export const TRANSPORTS: readonly TransportKind[] = ['tcp', 'tls', 'unix', 'memory'];

export const Echo = service('echo', {
  say: unary<{ text: string }, { text: string }>({ idempotent: true }),
  count: serverStream<{ n: number; size?: number }, { i: number; pad?: string }>(),
  sum: clientStream<{ n: number }, { sum: number; count: number }>(),
  chat: bidi<{ text: string }, { text: string }>(),
  sleep: unary<{ ms: number }, { slept: number }>(),
});

/** Resolve after `ms` or reject with the signal's reason as soon as it aborts (a handler's sleep). */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The echo handlers; `hooks` lets a test observe calls. */
export function echoImpl(hooks: { onSleep?: (signal: AbortSignal) => void } = {}) {
  return implement(Echo, {
    say: (req) => req,
    async *count({ n, size }) {
      const pad = size !== undefined ? 'x'.repeat(size) : undefined;
      for (let i = 1; i <= n; i++) yield pad === undefined ? { i } : { i, pad };
    },
    async sum(requests) {
      let sum = 0;
      let count = 0;
      for await (const { n } of requests) {
        sum += n;
        count++;
      }
      return { sum, count };
    },
    async *chat(requests) {
      for await (const m of requests) yield m;
    },
    async sleep({ ms }, ctx) {
      hooks.onSleep?.(ctx.signal);
      await abortableSleep(ms, ctx.signal);
      return { slept: ms };
    },
  });
}

let uniq = 0;
/** A name unique within this process (memory listeners, unix socket paths). */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${++uniq}`;
}

export interface Listening {
  /** What a client dials. */
  target: string;
  /** Client options the transport needs (TLS trust). */
  clientExtra: Partial<ClientOptions>;
  port?: number;
}

/** Listen on `kind` (port 0 / a fresh unix path / a fresh memory name). */
export async function listenOn(server: Server, kind: TransportKind): Promise<Listening> {
  switch (kind) {
    case 'tcp': {
      const b = await server.listen({ host: '127.0.0.1', port: 0 });
      return { target: `127.0.0.1:${b.port}`, clientExtra: {}, port: b.port! };
    }
    case 'tls': {
      const b = await server.listen({ host: '127.0.0.1', port: 0, tls: serverTls() });
      return { target: `tls://127.0.0.1:${b.port}`, clientExtra: { tls: clientTls() }, port: b.port! };
    }
    case 'unix': {
      const b = await server.listen({ path: join(tmpdir(), `${uniqueName('skein-it')}.sock`) });
      return { target: b.address, clientExtra: {} };
    }
    case 'memory': {
      const b = await server.listen({ name: uniqueName('skein-it') });
      return { target: b.address, clientExtra: {} };
    }
  }
}

/** Tracks servers and clients made by a test so `after()` can close them all. */
export class Cleanup {
  private readonly fns: Array<() => Promise<unknown> | unknown> = [];
  add(fn: () => Promise<unknown> | unknown): void {
    this.fns.push(fn);
  }
  server(options: ServerOptions = {}): Server {
    const s = createServer({ onError: () => {}, ...options });
    this.add(() => s.close(0));
    return s;
  }
  client<M extends MethodMap>(def: ServiceDef<M>, options: ClientOptions): Client<M> {
    const c = connect(def, options);
    this.add(() => c.close());
    return c;
  }
  async run(): Promise<void> {
    const fns = this.fns.splice(0).reverse();
    for (const fn of fns) {
      try {
        await withTimeout(Promise.resolve(fn()), DEFAULT_WAIT_MS, 'cleanup');
      } catch {
        // best effort: one failed close must not keep the others open
      }
    }
  }
}

/** A server with the echo service on `kind`, plus a client to it. */
export async function echoPair(cleanup: Cleanup, kind: TransportKind, serverOptions: ServerOptions = {}, clientOptions: Partial<ClientOptions> = {}) {
  const server = cleanup.server(serverOptions).add(echoImpl());
  const l = await listenOn(server, kind);
  const client = cleanup.client(Echo, { target: l.target, ...l.clientExtra, ...clientOptions });
  return { server, client, listening: l };
}

/** The SkeinError `p` rejects with (within `ms`); fails the test if it resolves. */
export async function rejection(p: Promise<unknown>, ms = DEFAULT_WAIT_MS, what = 'the call to fail'): Promise<SkeinError> {
  let value: unknown;
  try {
    value = await withTimeout(p, ms, what);
  } catch (err) {
    if (err instanceof Error && err.message.startsWith(`timed out after ${ms}ms waiting for`)) throw err;
    assert.ok(isSkeinError(err), `expected a SkeinError, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected a rejection, got ${JSON.stringify(value)}`);
}

/** Assert an error's status (by name) and, when given, its code. */
export function assertStatus(err: SkeinError, status: StatusName, codes?: string | readonly string[]): void {
  assert.equal(err.statusName, status, `expected ${status}, got ${err.statusName} (${err.code}: ${err.message})`);
  assert.equal(err.status, Status[status]);
  if (codes !== undefined) {
    const list = typeof codes === 'string' ? [codes] : codes;
    assert.ok(list.includes(err.code), `expected code ${list.join(' or ')}, got ${err.code} (${err.message})`);
  }
}

/** Read an async iterable to the end (bounded). */
export async function collect<T>(source: AsyncIterable<T>, ms = DEFAULT_WAIT_MS, what = 'the stream to end'): Promise<T[]> {
  const out: T[] = [];
  await withTimeout(
    (async () => {
      for await (const v of source) out.push(v);
    })(),
    ms,
    what,
  );
  return out;
}

/** A promise resolved from outside, with a bounded wait. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void; wait: (what: string, ms?: number) => Promise<T> } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject, wait: (what, ms = DEFAULT_WAIT_MS) => withTimeout(promise, ms, what) };
}

/** Resolve once `signal` aborts (bounded), with its reason. */
export function aborted(signal: AbortSignal, what = 'the handler signal to abort', ms = DEFAULT_WAIT_MS): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return withTimeout(new Promise((r) => signal.addEventListener('abort', () => r(signal.reason), { once: true })), ms, what);
}

/** Give pending I/O callbacks several chances to run (used to check that something stays stable, never to wait for it). */
export async function settleTurns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}
