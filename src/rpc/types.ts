/**
 * Types shared by the RPC server and client: call options, the handler context,
 * handler and client method signatures derived from a ServiceDef, and interceptors.
 */
import type { Metadata } from '../wire/payloads.js';
import type { PeerInfo } from '../transport/transport.js';
import type { MethodDef, MethodKindValue, MethodMap, ServiceDef } from './define.js';

export type { Metadata };

/** Per-call options on the client. */
export interface CallOptions {
  /** Give up after this many ms (DEADLINE_EXCEEDED). Defaults to the client's `timeout`. */
  timeout?: number;
  /** Absolute deadline, ms since the epoch (Date.now() scale). Wins over `timeout` when earlier. */
  deadline?: number;
  /** Cancel the call (CANCELLED, or the signal's reason when it is a SkeinError). */
  signal?: AbortSignal;
  /** Metadata sent with the call. Keys: 1-255 chars of [a-z0-9-_.]. */
  metadata?: Metadata;
  /** Wait for a connection instead of failing fast when there is none. Defaults to the client's option. */
  waitForReady?: boolean;
  /** Key for hash-based pickers (ring-hash): calls with the same key go to the same instance. */
  hashKey?: string;
  /**
   * @internal Retry integration (src/resilience/retry.ts): the instances this logical call
   * already tried. A channel avoids them when it has another instance and adds the one it
   * picks; a single-target client ignores it.
   */
  [ROUTE_HINT]?: RouteHint;
}

/** @internal Key of the per-call route hint in CallOptions (set by the retry interceptor). */
export const ROUTE_HINT: unique symbol = Symbol('skein.routeHint');

/**
 * @internal Shared by every attempt of one call: the subchannel ids already tried. Made for
 * every call a retry policy sees (on by default), so it allocates nothing until a second
 * id is added: most calls have one attempt.
 */
export class RouteHint {
  #first: string | undefined;
  #more: Set<string> | undefined;

  /** Record an instance this call was sent to. */
  add(id: string): void {
    if (this.#first === undefined) this.#first = id;
    else if (id !== this.#first) (this.#more ??= new Set()).add(id);
  }

  has(id: string): boolean {
    return id === this.#first || this.#more?.has(id) === true;
  }

  /** Instances tried so far. */
  get size(): number {
    return this.#first === undefined ? 0 : 1 + (this.#more?.size ?? 0);
  }

  /** The ids tried, in the order first tried. */
  ids(): string[] {
    return this.#first === undefined ? [] : [this.#first, ...(this.#more ?? [])];
  }
}

/** What a handler knows about its call. */
export interface CallContext {
  readonly service: string;
  readonly method: string;
  /** Absolute deadline (ms since epoch), or undefined when the caller set none. */
  readonly deadline: number | undefined;
  /**
   * Aborts when the client cancels, the deadline passes or the connection drops. The
   * reason is a SkeinError (CANCELLED, DEADLINE_EXCEEDED or UNAVAILABLE).
   */
  readonly signal: AbortSignal;
  /** Metadata the client sent. */
  readonly metadata: Metadata;
  /** Who called. */
  readonly peer: PeerInfo;
  /** What the server's authenticate hook returned for this connection, if any. */
  readonly identity: unknown;
  /** Trailing metadata to send with the status; handlers may add to it. */
  readonly trailers: Metadata;
  /**
   * Options for calls this handler makes to other services: they carry the remaining
   * deadline and this call's cancellation. `extra` is merged in (an earlier deadline wins).
   */
  forward(extra?: CallOptions): CallOptions;
}

type Awaitable<T> = T | Promise<T>;

export type UnaryHandler<Req, Res> = (request: Req, ctx: CallContext) => Awaitable<Res>;
export type ServerStreamHandler<Req, Res> = (request: Req, ctx: CallContext) => AsyncIterable<Res> | Iterable<Res>;
export type ClientStreamHandler<Req, Res> = (requests: AsyncIterable<Req>, ctx: CallContext) => Awaitable<Res>;
export type BidiHandler<Req, Res> = (requests: AsyncIterable<Req>, ctx: CallContext) => AsyncIterable<Res> | Iterable<Res>;

export type HandlerFor<D> =
  D extends MethodDef<'unary', any, any, infer HReq, infer HRes> ? UnaryHandler<HReq, HRes>
  : D extends MethodDef<'serverStream', any, any, infer HReq, infer HRes> ? ServerStreamHandler<HReq, HRes>
  : D extends MethodDef<'clientStream', any, any, infer HReq, infer HRes> ? ClientStreamHandler<HReq, HRes>
  : D extends MethodDef<'bidi', any, any, infer HReq, infer HRes> ? BidiHandler<HReq, HRes>
  : never;

export type Handlers<M extends MethodMap> = { [K in keyof M]: HandlerFor<M[K]> };

/** A service definition paired with its handlers, ready for `server.add()`. */
export interface ImplementedService<M extends MethodMap = MethodMap> {
  readonly def: ServiceDef<M>;
  readonly handlers: Handlers<M>;
}

/** A stream of replies on the client: iterate it; `cancel()` ends it early. */
export interface ResponseStream<T> extends AsyncIterable<T> {
  /** Cancel the call (the server's handler sees its signal abort). */
  cancel(reason?: string): void;
  /** Trailing metadata, resolved when the call ends with OK. */
  readonly trailers: Promise<Metadata>;
}

/** Requests for a client-streaming or bidi call: any (async) iterable; pulled as credit allows. */
export type RequestSource<T> = AsyncIterable<T> | Iterable<T>;

export type ClientMethod<D> =
  D extends MethodDef<'unary', infer Req, infer Res> ? (request: Req, options?: CallOptions) => Promise<Res>
  : D extends MethodDef<'serverStream', infer Req, infer Res> ? (request: Req, options?: CallOptions) => ResponseStream<Res>
  : D extends MethodDef<'clientStream', infer Req, infer Res> ? (requests: RequestSource<Req>, options?: CallOptions) => Promise<Res>
  : D extends MethodDef<'bidi', infer Req, infer Res> ? (requests: RequestSource<Req>, options?: CallOptions) => ResponseStream<Res>
  : never;

export type ClientMethods<M extends MethodMap> = { readonly [K in keyof M]: ClientMethod<M[K]> };

// ------------------------------------------------------------------ interceptors

/** A call as client interceptors see it. */
export interface OutgoingCall {
  readonly service: string;
  readonly method: string;
  readonly kind: MethodKindValue;
  readonly idempotent: boolean;
  /** The request (unary, serverStream) or the request source (clientStream, bidi). */
  request: unknown;
  /** Options of this call; interceptors may change them (e.g. add metadata). */
  options: CallOptions;
}

/**
 * Sends a call. Returns a Promise of the reply (unary, clientStream) or a
 * ResponseStream (serverStream, bidi).
 */
export type Invoke = (call: OutgoingCall) => Promise<unknown> | ResponseStream<unknown>;
/** Client interceptor: wraps the next invoker (retries, metadata, logging, ...). */
export type ClientInterceptor = (next: Invoke) => Invoke;

/** A call as server interceptors see it. */
export interface IncomingCall {
  readonly service: string;
  readonly method: string;
  readonly kind: MethodKindValue;
  /** The decoded request (unary, serverStream) or the request stream (clientStream, bidi). */
  readonly request: unknown;
  readonly ctx: CallContext;
}

/**
 * Runs a handler. Returns the reply (unary, clientStream) or an iterable of replies
 * (serverStream, bidi) — either of them directly or as a promise (so interceptors may be
 * async functions). Throw (or reject with) a SkeinError to end the call with its status.
 * Use `await next(call)` rather than `next(call).then(...)`: a synchronous handler returns
 * its reply as it is.
 */
export type Handle = (call: IncomingCall) => unknown;
/** Server interceptor: wraps the next handler (auth checks, logging, limits, ...). */
export type ServerInterceptor = (next: Handle) => Handle;

/** Compose interceptors: the first in the list is the outermost. */
export function compose<F>(interceptors: ReadonlyArray<(next: F) => F>, last: F): F {
  let f = last;
  for (let i = interceptors.length - 1; i >= 0; i--) f = interceptors[i]!(f);
  return f;
}
