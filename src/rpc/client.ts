/**
 * The RPC client: `connect(Def, { target })` gives an object with one typed method per
 * method of the service, over one ClientConnection (reconnecting with backoff).
 * `connect(Def, { discovery })` gives the same object over a Channel (src/channel): one
 * connection per instance of the service, found through a discovery URL, a picker choosing
 * one per call. The two paths share the call machinery below; the single-connection path
 * is untouched by the channel (its unary calls take no extra step), and the channel path
 * goes through `CallRouter.route()` instead of `ClientConnection.session`.
 *
 * Every call has a deadline: `timeout` per call, else the client's default (30 s for unary
 * and client-streaming calls; none for calls that stream replies, which are often
 * long-lived — set one when they are not). A deadline, an abort signal, a dropped
 * connection or a refused stream each end the call with a typed SkeinError; nothing waits
 * without a bound.
 */
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { bytesCodec, CodecId, getCodec, type Codec } from '../codec/index.js';
import { ClientConnection, type ClientConnectionOptions, type GetSessionOptions } from '../session/client-connection.js';
import type { ConnectivityStateValue, StateChange } from '../session/connectivity.js';
import type { OpenStreamHead, Session } from '../session/session.js';
import { startTimer, stopTimer, type TimerHandle } from '../session/timer.js';
import { addDeadline, cancelDeadline, MAX_DEADLINE_MS, type DeadlineEntry, type DeadlineList } from '../util/deadline-queue.js';
import type { Stream, StreamHandler } from '../session/stream.js';
import { checkMetadata, type EndInfo, type Metadata } from '../wire/payloads.js';
import { MethodKind, type MethodDef, type MethodMap, type ServiceDef } from './define.js';
import { InboundQueue } from './inbound.js';
import { DrainGate, pumpSource } from './outbound.js';
import { clientPolicies, type ClientPolicyChains, type ClientPolicyOptions } from './policies.js';
import { compose, type CallOptions, type ClientInterceptor, type ClientMethods, type Invoke, type OutgoingCall, type RequestSource, type ResponseStream } from './types.js';

export interface ClientOptions extends ClientConnectionOptions {
  /** Where the server is: 'host:port', 'tls://host:port', 'unix:/path', 'memory:name'. */
  target: string;
  /** Default deadline for unary and client-streaming calls, in ms. @default 30000 */
  timeout?: number;
  /** Default deadline for server-streaming and bidi calls, in ms. @default Infinity (none) */
  streamTimeout?: number;
  /** Wait for a connection instead of failing fast in TRANSIENT_FAILURE. @default false */
  waitForReady?: boolean;
  /** Message codec for methods without protobuf types: 'msgpack' | 'json'. @default 'msgpack' */
  codec?: 'msgpack' | 'json';
  /** Client interceptors; the first is the outermost. @default [] */
  interceptors?: ClientInterceptor[];
  /**
   * The default resilience chain, placed outside `interceptors` (docs/resilience.md):
   * options for it, or `false` for none. @default retries (idempotent methods, and calls
   * no handler saw) within a retry budget, and a circuit breaker per service
   */
  resilience?: ClientPolicyOptions | false;
  /** Connect right away instead of on the first call. @default true */
  eager?: boolean;
}

/** What every client has beside its methods, whether it has a `target` or a `discovery`. */
export interface ClientBase {
  /** Current connectivity state (aggregated over the instances for a discovery client). */
  readonly state: ConnectivityStateValue;
  /** Every state change until SHUTDOWN. */
  status(): AsyncIterableIterator<StateChange>;
  /** Resolve once READY (waiting through failures); bounded by `signal`/`timeout`. */
  ready(options?: { signal?: AbortSignal; timeout?: number }): Promise<void>;
  /** Close the connection; in-flight calls get `graceMs` (default 0) to finish. */
  close(graceMs?: number): Promise<void>;
}

/** Control surface of a client made with `target`, beside its methods. */
export interface ClientControl extends ClientBase {
  /** The underlying connection (states, events, `status()`). */
  readonly connection: ClientConnection;
}

/**
 * The type of a discovery client's `channel`. The channel layer sits above this one, so it
 * names its class here by augmenting this interface (src/channel/channel.ts) instead of
 * this module importing it; without that layer it is the bare CallRouter.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface ChannelTypes {}
type ChannelType = ChannelTypes extends { channel: infer C } ? C : CallRouter;

/** Control surface of a client made with `discovery`, beside its methods. */
export interface ChannelClientControl extends ClientBase {
  /** The channel: instances, subchannels, picker, states and events (docs/channels.md). */
  readonly channel: ChannelType;
}

export type Client<M extends MethodMap> = ClientMethods<M> & ClientControl;
/** A client made with `connect(Def, { discovery })`: the same methods, over a channel. */
export type ChannelClient<M extends MethodMap> = ClientMethods<M> & ChannelClientControl;
/** Either kind of client: what code that works with both can rely on. */
export type AnyClient<M extends MethodMap> = ClientMethods<M> & ClientBase;

/**
 * Options of a client that finds its server through discovery (`connect(Def, { discovery })`).
 * Everything but `target` as in ClientOptions; the connection options (tls, session,
 * backoff, connectTimeoutMs) apply to every instance's connection.
 */
export interface DiscoveryClientOptions extends Omit<ClientOptions, 'target'> {
  /**
   * Where to find the instances of the service: 'skein://host:port', 'etcd://h:p,h:p',
   * 'static://h:p,h:p', 'dns://name', 'multicast://group:port' (docs/discovery.md).
   */
  discovery: string | URL;
  /** Never set together with `discovery`. */
  target?: undefined;
  /** Picker (balancing policy) by name: see docs/balancing.md. @default 'p2c-ewma' */
  balancer?: string;
  /** Settings for the picker. @default {} */
  balancerConfig?: Record<string, unknown>;
  /** Watch each instance's `skein.health` and skip NOT_SERVING instances. @default true */
  healthCheck?: boolean;
  /** In-flight calls on an instance that left the registry get this long to finish, in ms. @default 10000 */
  removeGraceMs?: number;
}

/**
 * @internal What the RPC client needs from a channel: where each call goes. A `Route` is a
 * READY session on the picked instance and a callback for the end of the call (in-flight
 * counts, the picker's `onDone`).
 */
export interface Route {
  readonly session: Session;
  readonly done: ((err: SkeinError | undefined) => void) | undefined;
}

/** @internal Implemented by src/channel/channel.ts. */
export interface CallRouter {
  readonly state: ConnectivityStateValue;
  status(): AsyncIterableIterator<StateChange>;
  /** A route for this call now, or undefined (then `waitRoute`). Synchronous; never throws. */
  route(method: string, options: CallOptions): Route | undefined;
  /** Wait for a route: fails fast, waits or fails as the channel's state and `wait` say. */
  waitRoute(method: string, options: CallOptions, wait: GetSessionOptions): Promise<Route>;
  ready(options?: { signal?: AbortSignal; timeout?: number }): Promise<void>;
  close(graceMs?: number): Promise<void>;
}

type ChannelFactory = (service: string, options: DiscoveryClientOptions) => CallRouter;
let channelFactory: ChannelFactory | undefined;

/** @internal The channel layer registers how to build a channel (src/channel/channel.ts `setup()`). */
export function setChannelFactory(factory: ChannelFactory): void {
  channelFactory = factory;
}

const RESERVED = new Set(['connection', 'state', 'status', 'ready', 'close', 'then']);
const RESERVED_CHANNEL = new Set(['channel', 'state', 'status', 'ready', 'close', 'then']);

const NONE = Symbol('none');

function remoteError(info: EndInfo): SkeinError {
  return createError(ErrorCode.REMOTE, info.message || `call failed with status ${info.status}`, { status: info.status, details: info.details, metadata: info.metadata });
}

function abortReason(signal: AbortSignal): SkeinError {
  const r: unknown = signal.reason;
  return isSkeinError(r) ? r : createError(ErrorCode.CANCELLED, 'call cancelled', { cause: r });
}

interface MethodRuntime {
  service: string;
  method: string;
  def: MethodDef;
  path: Buffer;
  codecId: number;
  reqCodec: Codec;
  resCodec: Codec;
}

/**
 * Connect to a service: at one address (`target`), or to every instance that a discovery
 * source lists (`discovery`). See ClientOptions and DiscoveryClientOptions for the defaults.
 */
export function connect<M extends MethodMap>(def: ServiceDef<M>, options: ClientOptions): Client<M>;
export function connect<M extends MethodMap>(def: ServiceDef<M>, options: DiscoveryClientOptions): ChannelClient<M>;
export function connect<M extends MethodMap>(def: ServiceDef<M>, options: ClientOptions | DiscoveryClientOptions): Client<M> | ChannelClient<M>;
export function connect<M extends MethodMap>(def: ServiceDef<M>, options: ClientOptions | DiscoveryClientOptions): Client<M> | ChannelClient<M> {
  if ((options as DiscoveryClientOptions | undefined)?.discovery !== undefined) return connectChannel(def, options as DiscoveryClientOptions);
  return connectTarget(def, options as ClientOptions);
}

function connectTarget<M extends MethodMap>(def: ServiceDef<M>, options: ClientOptions): Client<M> {
  if (typeof options?.target !== 'string' || options.target === '') throw createError(ErrorCode.INVALID_OPTIONS, 'connect(): options.target is required (e.g. "127.0.0.1:7700")');
  const conn = new ClientConnection(options.target, options);
  const base = getCodec(options.codec ?? 'msgpack');
  if (base === undefined) throw createError(ErrorCode.INVALID_OPTIONS, `unknown codec ${options.codec}`);
  const defaults = callDefaults(options);
  const chains = clientPolicies(def.name, options.resilience);
  const client: Record<string, unknown> = {};
  for (const [name, mdef] of Object.entries(def.methods as MethodMap)) {
    const interceptors = methodInterceptors(chains, options.interceptors, name, mdef);
    if (RESERVED.has(name)) throw createError(ErrorCode.INVALID_OPTIONS, `method name ${name} is reserved on clients (${[...RESERVED].join(', ')})`);
    const rt = methodRuntime(def, name, mdef, base);
    const direct: Invoke = (call) => invoke(conn, rt, defaults, call.request, call.options);
    if (interceptors.length === 0) {
      client[name] = (request: unknown, opts?: CallOptions) => invoke(conn, rt, defaults, request, opts ?? {});
    } else {
      const chain = compose(interceptors, direct);
      const streaming = mdef.kind === MethodKind.SERVER_STREAM || mdef.kind === MethodKind.BIDI;
      client[name] = (request: unknown, opts?: CallOptions) => {
        const out = chain({ service: rt.service, method: name, kind: mdef.kind, idempotent: mdef.idempotent, request, options: opts ?? {} } satisfies OutgoingCall);
        // An async interceptor on a streaming method hands back a promise of the stream.
        return streaming && out instanceof Promise ? deferredStream(out as Promise<ResponseStream<unknown>>) : out;
      };
    }
  }
  Object.defineProperties(client, {
    connection: { value: conn },
    state: { get: () => conn.state },
    status: { value: () => conn.status() },
    ready: {
      value: async (o: { signal?: AbortSignal; timeout?: number } = {}) => {
        const opts: { waitForReady: boolean; signal?: AbortSignal; deadline?: number } = { waitForReady: true };
        if (o.signal) opts.signal = o.signal;
        if (o.timeout !== undefined) opts.deadline = Date.now() + o.timeout;
        await conn.getSession(opts);
      },
    },
    close: { value: (graceMs = 0) => conn.close(graceMs) },
  });
  if (options.eager !== false) conn.connect();
  return client as Client<M>;
}

/** One method's interceptors: the default policies (outermost), then the user's. */
function methodInterceptors(chains: ClientPolicyChains | undefined, own: ClientInterceptor[] | undefined, name: string, mdef: MethodDef): ClientInterceptor[] {
  const policies = chains === undefined ? [] : chains(name, mdef);
  return own === undefined || own.length === 0 ? policies : [...policies, ...own];
}

/** How one method's calls are sent: its path and codecs (protobuf or raw by definition, else the client's). */
function methodRuntime(def: ServiceDef, name: string, mdef: MethodDef, base: Codec): MethodRuntime {
  return {
    service: def.name,
    method: name,
    def: mdef,
    path: def.paths[name]!,
    codecId: mdef.protobuf !== undefined ? CodecId.PROTOBUF : mdef.raw ? CodecId.BYTES : base.id,
    reqCodec: mdef.protobuf?.request ?? (mdef.raw ? (bytesCodec as Codec) : base),
    resCodec: mdef.protobuf?.response ?? (mdef.raw ? (bytesCodec as Codec) : base),
  };
}

/** `connect(Def, { discovery })`: the same client object, its calls routed by a channel. */
function connectChannel<M extends MethodMap>(def: ServiceDef<M>, options: DiscoveryClientOptions): ChannelClient<M> {
  if (options.target !== undefined) throw createError(ErrorCode.INVALID_OPTIONS, 'connect(): give options.target or options.discovery, not both');
  if (!(options.discovery instanceof URL) && (typeof options.discovery !== 'string' || options.discovery === '')) throw createError(ErrorCode.INVALID_OPTIONS, 'connect(): options.discovery must be a URL (e.g. "skein://127.0.0.1:7600")');
  if (channelFactory === undefined) throw createError(ErrorCode.INVALID_OPTIONS, 'connect(): discovery is not set up; import skein from its package entry point');
  const base = getCodec(options.codec ?? 'msgpack');
  if (base === undefined) throw createError(ErrorCode.INVALID_OPTIONS, `unknown codec ${options.codec}`);
  for (const name of Object.keys(def.methods)) {
    if (RESERVED_CHANNEL.has(name)) throw createError(ErrorCode.INVALID_OPTIONS, `method name ${name} is reserved on clients (${[...RESERVED_CHANNEL].join(', ')})`);
  }
  const channel = channelFactory(def.name, options);
  const defaults = callDefaults(options);
  const chains = clientPolicies(def.name, options.resilience);
  const client: Record<string, unknown> = {};
  for (const [name, mdef] of Object.entries(def.methods as MethodMap)) {
    const rt = methodRuntime(def, name, mdef, base);
    const interceptors = methodInterceptors(chains, options.interceptors, name, mdef);
    if (interceptors.length === 0) {
      client[name] = (request: unknown, opts?: CallOptions) => invokeRouted(channel, rt, defaults, request, opts ?? {});
    } else {
      const chain = compose(interceptors, (call: OutgoingCall) => invokeRouted(channel, rt, defaults, call.request, call.options));
      client[name] = (request: unknown, opts?: CallOptions) => chain({ service: rt.service, method: name, kind: mdef.kind, idempotent: mdef.idempotent, request, options: opts ?? {} } satisfies OutgoingCall);
    }
  }
  Object.defineProperties(client, {
    channel: { value: channel },
    state: { get: () => channel.state },
    status: { value: () => channel.status() },
    ready: { value: (o: { signal?: AbortSignal; timeout?: number } = {}) => channel.ready(o) },
    close: { value: (graceMs = 0) => channel.close(graceMs) },
  });
  return client as ChannelClient<M>;
}

/**
 * @internal Typed methods over an existing connection, without taking it over (closing
 * the connection stays with its owner). The channel uses it for each instance's health watch.
 */
export function clientOver<M extends MethodMap>(def: ServiceDef<M>, conn: ClientConnection, options: { codec?: 'msgpack' | 'json'; timeout?: number; streamTimeout?: number; waitForReady?: boolean } = {}): ClientMethods<M> {
  const base = getCodec(options.codec ?? 'msgpack')!;
  const defaults: Defaults = { timeout: options.timeout ?? 30000, streamTimeout: options.streamTimeout ?? Infinity, waitForReady: options.waitForReady ?? false };
  const client: Record<string, unknown> = {};
  for (const [name, mdef] of Object.entries(def.methods as MethodMap)) {
    const rt = methodRuntime(def, name, mdef, base);
    client[name] = (request: unknown, opts?: CallOptions) => invoke(conn, rt, defaults, request, opts ?? {});
  }
  return client as ClientMethods<M>;
}

/** A ResponseStream over a promise of one (what an async client interceptor returns for a streaming call). */
function deferredStream(p: Promise<ResponseStream<unknown>>): ResponseStream<unknown> {
  let stream: ResponseStream<unknown> | undefined;
  let cancelled: string | undefined;
  p.then(
    (s) => {
      stream = s;
      if (cancelled !== undefined) s.cancel(cancelled);
    },
    () => {},
  );
  const trailers = p.then((s) => s.trailers);
  trailers.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
  return {
    async *[Symbol.asyncIterator]() {
      yield* await p;
    },
    cancel(reason = 'cancelled by the caller') {
      cancelled = reason;
      stream?.cancel(reason);
    },
    trailers,
  };
}

/** The per-call defaults of a client (documented on ClientOptions). */
function callDefaults(options: Pick<ClientOptions, 'timeout' | 'streamTimeout' | 'waitForReady'>): Defaults {
  return { timeout: options.timeout ?? 30000, streamTimeout: options.streamTimeout ?? Infinity, waitForReady: options.waitForReady ?? false };
}

interface Defaults {
  timeout: number;
  streamTimeout: number;
  waitForReady: boolean;
}

function deadlineOf(rt: MethodRuntime, d: Defaults, o: CallOptions): number {
  const streaming = rt.def.kind === MethodKind.SERVER_STREAM || rt.def.kind === MethodKind.BIDI;
  const t = o.timeout ?? (streaming ? d.streamTimeout : d.timeout);
  let deadline = Number.isFinite(t) ? Date.now() + t : Infinity;
  if (o.deadline !== undefined && o.deadline < deadline) deadline = o.deadline;
  return deadline;
}

function invoke(conn: ClientConnection, rt: MethodRuntime, d: Defaults, request: unknown, o: CallOptions): Promise<unknown> | ResponseStream<unknown> {
  const deadline = deadlineOf(rt, d, o);
  switch (rt.def.kind) {
    case MethodKind.UNARY:
    case MethodKind.CLIENT_STREAM: {
      const s = conn.session;
      if (s !== undefined && s.isReady) return callSingle(s, rt, request, o, deadline);
      return waitSession(conn, d, o, deadline).then((s) => callSingle(s, rt, request, o, deadline));
    }
    default:
      return new StreamingCall(conn, d, rt, request, o, deadline);
  }
}

/**
 * Where a call gets its session: a ClientConnection (target clients), or a per-call
 * RoutedSource over a channel. `release` is called once when a streaming call ends.
 */
interface SessionSource {
  readonly session: Session | undefined;
  getSession(opts: GetSessionOptions): Promise<Session>;
  release?(err: SkeinError | undefined): void;
}

/** A call through a channel: pick a route, or wait for one as the channel says. */
function invokeRouted(router: CallRouter, rt: MethodRuntime, d: Defaults, request: unknown, o: CallOptions): Promise<unknown> | ResponseStream<unknown> {
  const deadline = deadlineOf(rt, d, o);
  switch (rt.def.kind) {
    case MethodKind.UNARY:
    case MethodKind.CLIENT_STREAM: {
      const r = router.route(rt.method, o);
      if (r !== undefined) return routedSingle(r, rt, request, o, deadline);
      return router.waitRoute(rt.method, o, waitOptions(d, o, deadline)).then((route) => routedSingle(route, rt, request, o, deadline));
    }
    default:
      return new StreamingCall(new RoutedSource(router, rt.method, o), d, rt, request, o, deadline);
  }
}

function routedSingle(r: Route, rt: MethodRuntime, request: unknown, o: CallOptions, deadline: number): Promise<unknown> {
  const p = callSingle(r.session, rt, request, o, deadline);
  const done = r.done;
  if (done !== undefined) p.then(() => done(undefined), (err: SkeinError) => done(err));
  return p;
}

/** The session of one streaming call through a channel; remembers the route to release it. */
class RoutedSource implements SessionSource {
  private r: Route | undefined;

  constructor(
    private readonly router: CallRouter,
    private readonly method: string,
    private readonly o: CallOptions,
  ) {}

  get session(): Session | undefined {
    const r = this.router.route(this.method, this.o);
    if (r === undefined) return undefined;
    this.r = r;
    return r.session;
  }

  async getSession(opts: GetSessionOptions): Promise<Session> {
    const r = await this.router.waitRoute(this.method, this.o, opts);
    this.r = r;
    return r.session;
  }

  release(err: SkeinError | undefined): void {
    const r = this.r;
    this.r = undefined;
    r?.done?.(err);
  }
}

function waitOptions(d: Defaults, o: CallOptions, deadline: number): GetSessionOptions {
  const opts: GetSessionOptions = { waitForReady: o.waitForReady ?? d.waitForReady };
  if (o.signal) opts.signal = o.signal;
  if (Number.isFinite(deadline)) opts.deadline = deadline;
  return opts;
}

function waitSession(conn: SessionSource, d: Defaults, o: CallOptions, deadline: number): Promise<Session> {
  const opts: { waitForReady: boolean; signal?: AbortSignal; deadline?: number } = { waitForReady: o.waitForReady ?? d.waitForReady };
  if (o.signal) opts.signal = o.signal;
  if (Number.isFinite(deadline)) opts.deadline = deadline;
  return conn.getSession(opts);
}

function openCall(session: Session, rt: MethodRuntime, o: CallOptions, deadline: number): Stream {
  if (o.metadata !== undefined) checkMetadata(o.metadata);
  if (o.signal?.aborted) throw abortReason(o.signal);
  let timeoutMs = 0;
  if (Number.isFinite(deadline)) {
    timeoutMs = deadline - Date.now();
    if (timeoutMs <= 0) throw createError(ErrorCode.DEADLINE, `deadline exceeded before ${rt.service}.${rt.method} was sent`);
  }
  const head: OpenStreamHead = { codec: rt.codecId, timeoutMs, path: rt.path };
  if (timeoutMs > 0) head.deadline = deadline;
  if (o.metadata !== undefined) head.metadata = o.metadata;
  return session.openStream(head);
}

/** Unary and client-streaming calls: one reply. */
function callSingle(session: Session, rt: MethodRuntime, request: unknown, o: CallOptions, deadline: number): Promise<unknown> {
  let stream: Stream;
  let payload: Buffer | undefined;
  try {
    if (rt.def.kind === MethodKind.UNARY) payload = rt.reqCodec.encode(request);
    stream = openCall(session, rt, o, deadline);
  } catch (err) {
    return Promise.reject(err);
  }
  return new SingleReplyCall(stream, rt, o.signal, deadline, payload, request).promise;
}

function expireSingle(call: SingleReplyCall): void {
  call.cancel(createError(ErrorCode.DEADLINE, `deadline exceeded calling ${call.rt.service}.${call.rt.method}`));
}

/**
 * One unary or client-streaming call in flight: the stream's handler, its deadline timer and
 * its promise in one object (the hot path allocates no closure per callback).
 */
class SingleReplyCall implements StreamHandler, DeadlineEntry {
  dlNext: DeadlineEntry | null = null;
  dlPrev: DeadlineEntry | null = null;
  dlList: DeadlineList | null = null;
  dlDue = 0;
  readonly promise: Promise<unknown>;
  private resolve!: (v: unknown) => void;
  private reject!: (e: SkeinError) => void;
  private reply: unknown = NONE;
  private settled = false;
  private timer: TimerHandle;
  private gate: DrainGate | undefined;
  private onSignal: (() => void) | undefined;

  constructor(
    private readonly stream: Stream,
    readonly rt: MethodRuntime,
    private readonly signal: AbortSignal | undefined,
    deadline: number,
    payload: Buffer | undefined,
    request: unknown,
  ) {
    this.promise = new Promise<unknown>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    stream.handler = this;
    if (deadline < Infinity) {
      const ms = deadline - Date.now();
      if (ms <= MAX_DEADLINE_MS) addDeadline(this, ms);
      else this.timer = startTimer(ms, expireSingle, this);
    }
    if (signal !== undefined) {
      this.onSignal = () => this.cancel(abortReason(signal));
      signal.addEventListener('abort', this.onSignal, { once: true });
    }
    if (payload !== undefined) {
      try {
        stream.send(payload, true);
      } catch (err) {
        this.cancel(err as SkeinError);
      }
    } else {
      const gate = (this.gate = new DrainGate());
      pumpSource(request as RequestSource<unknown>, stream, gate, (v) => rt.reqCodec.encode(v), () => this.settled || stream.closed).then(
        () => stream.end(),
        (err: unknown) => this.cancel(isSkeinError(err) ? err : createError(ErrorCode.CANCELLED, `request stream failed: ${(err as Error)?.message ?? String(err)}`, { cause: err })),
      );
    }
  }

  onMessage(msg: Buffer, size: number): void {
    if (this.reply !== NONE) return this.cancel(createError(ErrorCode.PROTOCOL, `${this.rt.service}.${this.rt.method} replied with more than one message`));
    try {
      this.reply = this.rt.resCodec.decode(msg);
    } catch (err) {
      return this.cancel(isSkeinError(err) ? err : createError(ErrorCode.CODEC, String(err)));
    }
    this.stream.consume(size);
  }

  onEnd(info: EndInfo | null): void {
    if (info === null || info.status !== 0) return this.settle(info === null ? createError(ErrorCode.PROTOCOL, 'call ended without a status') : remoteError(info));
    if (this.reply === NONE) return this.settle(createError(ErrorCode.PROTOCOL, `${this.rt.service}.${this.rt.method} ended OK without a reply`));
    this.settle(undefined);
  }

  onAbort(err: SkeinError): void {
    this.settle(err);
  }

  onDrain(): void {
    this.gate?.open();
  }

  onDeadline(): void {
    expireSingle(this);
  }

  /** End the call from this side: RESET to the peer, fail with `err`. */
  cancel(err: SkeinError): void {
    if (this.settled) return;
    this.stream.reset(err.status, err.message);
    this.settle(err);
  }

  private settle(err: SkeinError | undefined): void {
    if (this.settled) return;
    this.settled = true;
    cancelDeadline(this);
    stopTimer(this.timer);
    if (this.onSignal !== undefined) this.signal!.removeEventListener('abort', this.onSignal);
    this.gate?.open();
    if (err !== undefined) this.reject(err);
    else this.resolve(this.reply);
  }
}

function expireStreaming(call: StreamingCall): void {
  call.cancelWith(createError(ErrorCode.DEADLINE, `deadline exceeded calling ${call.rt.service}.${call.rt.method}`));
}

/** Server-streaming and bidi calls: replies as an async iterable. */
class StreamingCall implements ResponseStream<unknown>, StreamHandler {
  private readonly queue: InboundQueue<unknown>;
  private stream: Stream | undefined;
  private settledErr: SkeinError | undefined;
  private done = false;
  private timer: TimerHandle;
  private readonly gate = new DrainGate();
  private resolveTrailers!: (md: Metadata) => void;
  private rejectTrailers!: (e: SkeinError) => void;
  readonly trailers: Promise<Metadata>;
  private readonly onSignal = () => this.cancelWith(abortReason(this.o.signal!));

  constructor(
    private readonly src: SessionSource,
    d: Defaults,
    readonly rt: MethodRuntime,
    private readonly request: unknown,
    private readonly o: CallOptions,
    deadline: number,
  ) {
    this.queue = new InboundQueue<unknown>(() => this.cancelWith(createError(ErrorCode.CANCELLED, 'the caller stopped reading replies')));
    this.trailers = new Promise<Metadata>((res, rej) => {
      this.resolveTrailers = res;
      this.rejectTrailers = rej;
    });
    this.trailers.catch(() => {});
    if (deadline < Infinity) this.timer = startTimer(deadline - Date.now(), expireStreaming, this);
    o.signal?.addEventListener('abort', this.onSignal, { once: true });
    const s = src.session;
    if (s !== undefined && s.isReady) this.start(s, deadline);
    else
      waitSession(src, d, o, deadline).then(
        (sess) => this.start(sess, deadline),
        (err: SkeinError) => this.fail(err),
      );
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    return this.queue;
  }

  cancel(reason = 'cancelled by the caller'): void {
    this.cancelWith(createError(ErrorCode.CANCELLED, reason));
  }

  private start(session: Session, deadline: number): void {
    if (this.done) return;
    let stream: Stream;
    let payload: Buffer | undefined;
    try {
      if (this.rt.def.kind === MethodKind.SERVER_STREAM) payload = this.rt.reqCodec.encode(this.request);
      stream = this.stream = openCall(session, this.rt, this.o, deadline);
    } catch (err) {
      this.fail(isSkeinError(err) ? err : createError(ErrorCode.CODEC, String(err)));
      return;
    }
    this.queue.attach(stream);
    stream.handler = this;
    if (payload !== undefined) {
      try {
        stream.send(payload, true);
      } catch (err) {
        this.cancelWith(err as SkeinError);
      }
    } else {
      pumpSource(this.request as RequestSource<unknown>, stream, this.gate, (v) => this.rt.reqCodec.encode(v), () => this.done || stream.closed).then(
        () => stream.end(),
        (err: unknown) => this.cancelWith(isSkeinError(err) ? err : createError(ErrorCode.CANCELLED, `request stream failed: ${(err as Error)?.message ?? String(err)}`, { cause: err })),
      );
    }
  }

  onMessage(msg: Buffer, size: number): void {
    let v: unknown;
    try {
      v = this.rt.resCodec.decode(msg);
    } catch (err) {
      return this.cancelWith(isSkeinError(err) ? err : createError(ErrorCode.CODEC, String(err)));
    }
    this.queue.push(v, size);
  }

  onEnd(info: EndInfo | null): void {
    if (info === null || info.status !== 0) return this.fail(info === null ? createError(ErrorCode.PROTOCOL, 'call ended without a status') : remoteError(info), true);
    this.finish(undefined);
    this.queue.end();
    this.resolveTrailers(info.metadata);
  }

  onAbort(err: SkeinError): void {
    this.fail(err);
  }

  onDrain(): void {
    this.gate.open();
  }

  private finish(err: SkeinError | undefined): boolean {
    if (this.done) return false;
    this.done = true;
    stopTimer(this.timer);
    this.o.signal?.removeEventListener('abort', this.onSignal);
    this.gate.open();
    this.src.release?.(err);
    return true;
  }

  private fail(err: SkeinError, keepBuffered = false): void {
    if (!this.finish(err)) return;
    this.settledErr = err;
    this.queue.fail(err, keepBuffered);
    this.rejectTrailers(err);
  }

  /** @internal End the call from this side (deadline, signal, reader gone). */
  cancelWith(err: SkeinError): void {
    if (this.done) return;
    this.stream?.reset(err.status, err.message);
    this.fail(err);
  }

  /** The error the call ended with, if it failed. */
  get error(): SkeinError | undefined {
    return this.settledErr;
  }
}
