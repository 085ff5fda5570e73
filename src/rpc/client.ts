/**
 * The RPC client: `connect(Def, { target })` gives an object with one typed method per
 * method of the service, over one ClientConnection (reconnecting with backoff).
 *
 * Every call has a deadline: `timeout` per call, else the client's default (30 s for unary
 * and client-streaming calls; none for calls that stream replies, which are often
 * long-lived — set one when they are not). A deadline, an abort signal, a dropped
 * connection or a refused stream each end the call with a typed SkeinError; nothing waits
 * without a bound.
 */
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { CodecId, getCodec, type Codec } from '../codec/index.js';
import { ClientConnection, type ClientConnectionOptions } from '../session/client-connection.js';
import type { ConnectivityStateValue, StateChange } from '../session/connectivity.js';
import type { OpenStreamHead, Session } from '../session/session.js';
import { startTimer, stopTimer, type TimerHandle } from '../session/timer.js';
import { addDeadline, cancelDeadline, MAX_DEADLINE_MS, type DeadlineEntry, type DeadlineList } from '../util/deadline-queue.js';
import type { Stream, StreamHandler } from '../session/stream.js';
import { checkMetadata, type EndInfo, type Metadata } from '../wire/payloads.js';
import { MethodKind, type MethodDef, type MethodMap, type ServiceDef } from './define.js';
import { InboundQueue } from './inbound.js';
import { DrainGate, pumpSource } from './outbound.js';
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
  /** Connect right away instead of on the first call. @default true */
  eager?: boolean;
}

/** Control surface of a client, beside its methods. */
export interface ClientControl {
  /** The underlying connection (states, events, `status()`). */
  readonly connection: ClientConnection;
  /** Current connectivity state. */
  readonly state: ConnectivityStateValue;
  /** Every state change until SHUTDOWN. */
  status(): AsyncIterableIterator<StateChange>;
  /** Resolve once READY (waiting through failures); bounded by `signal`/`timeout`. */
  ready(options?: { signal?: AbortSignal; timeout?: number }): Promise<void>;
  /** Close the connection; in-flight calls get `graceMs` (default 0) to finish. */
  close(graceMs?: number): Promise<void>;
}

export type Client<M extends MethodMap> = ClientMethods<M> & ClientControl;

const RESERVED = new Set(['connection', 'state', 'status', 'ready', 'close', 'then']);

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

/** Connect to a service. See ClientOptions for the defaults. */
export function connect<M extends MethodMap>(def: ServiceDef<M>, options: ClientOptions): Client<M> {
  if (typeof options?.target !== 'string' || options.target === '') throw createError(ErrorCode.INVALID_OPTIONS, 'connect(): options.target is required (e.g. "127.0.0.1:7700")');
  const conn = new ClientConnection(options.target, options);
  const base = getCodec(options.codec ?? 'msgpack');
  if (base === undefined) throw createError(ErrorCode.INVALID_OPTIONS, `unknown codec ${options.codec}`);
  const defaults = {
    timeout: options.timeout ?? 30000,
    streamTimeout: options.streamTimeout ?? Infinity,
    waitForReady: options.waitForReady ?? false,
  };
  const interceptors = options.interceptors ?? [];
  const client: Record<string, unknown> = {};
  for (const [name, mdef] of Object.entries(def.methods as MethodMap)) {
    if (RESERVED.has(name)) throw createError(ErrorCode.INVALID_OPTIONS, `method name ${name} is reserved on clients (${[...RESERVED].join(', ')})`);
    const rt: MethodRuntime = {
      service: def.name,
      method: name,
      def: mdef,
      path: def.paths[name as keyof M & string],
      codecId: mdef.protobuf !== undefined ? CodecId.PROTOBUF : base.id,
      reqCodec: mdef.protobuf?.request ?? base,
      resCodec: mdef.protobuf?.response ?? base,
    };
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

function waitSession(conn: ClientConnection, d: Defaults, o: CallOptions, deadline: number): Promise<Session> {
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
    conn: ClientConnection,
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
    const s = conn.session;
    if (s !== undefined && s.isReady) this.start(s, deadline);
    else
      waitSession(conn, d, o, deadline).then(
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
    this.finish();
    this.queue.end();
    this.resolveTrailers(info.metadata);
  }

  onAbort(err: SkeinError): void {
    this.fail(err);
  }

  onDrain(): void {
    this.gate.open();
  }

  private finish(): boolean {
    if (this.done) return false;
    this.done = true;
    stopTimer(this.timer);
    this.o.signal?.removeEventListener('abort', this.onSignal);
    this.gate.open();
    return true;
  }

  private fail(err: SkeinError, keepBuffered = false): void {
    if (!this.finish()) return;
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
