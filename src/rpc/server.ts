/**
 * The RPC server: `createServer(options).add(implement(Def, handlers)).listen({ host, port })`.
 *
 * Every accepted connection becomes a Session; every CALL on it becomes a ServerCall that
 * looks up the method, decodes and validates the request, runs the handler (through the
 * interceptors) and sends the reply and the status. `close(graceMs)` drains: listeners
 * stop, every session sends GOAWAY, in-flight calls finish (or are reset after the grace
 * period), new calls are refused with UNAVAILABLE.
 *
 * Health and discovery (docs/channels.md): every server serves `skein.health` (unless
 * `health: false`), reporting SERVING for each service once listening. With `discovery`,
 * `listen()` registers every service (but skein.health) with the address clients can
 * reach, under a lease the registrar keeps alive. `close()` then runs in this order:
 *
 *   1. health: NOT_SERVING for every service (watching channels stop picking this server);
 *   2. deregister from discovery (bounded), while still accepting calls;
 *   3. health watch streams end (after they have sent NOT_SERVING);
 *   4. listeners close, sessions drain (GOAWAY, in-flight calls get `graceMs`).
 */
import { EventEmitter } from 'node:events';
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { createError, ErrorCode, expectedError, isSkeinError, Status, statusName, type SkeinError } from '../errors.js';
import { bytesCodec, CodecId, getCodec, type Codec } from '../codec/index.js';
import { formatAddress, getTransport } from '../transport/index.js';
import { registrarFor } from '../discovery/registry.js';
import type { Instance, Registrar, Registration } from '../discovery/types.js';
import { HEALTH_SERVICE, HealthService, HealthStatus } from '../observe/health.js';
import { CallLoad, LoadSampler, type LoadSample } from '../observe/load.js';
import type { Connection, Listener, ListenOptions, PeerInfo, TlsOptions } from '../transport/transport.js';
import { Session } from '../session/session.js';
import type { SessionOptions } from '../session/options.js';
import type { Stream, StreamHandler } from '../session/stream.js';
import { startTimer, stopTimer, type TimerHandle } from '../session/timer.js';
import { checkMetadata, type CallHead, type Metadata } from '../wire/payloads.js';
import { MethodKind, type MethodDef, type MethodMap, type ServiceDef } from './define.js';
import { InboundQueue } from './inbound.js';
import { DrainGate, pumpSource } from './outbound.js';
import { NOT_GATED, splitGates, type AdmissionGate } from './admission.js';
import { serverPolicies, type ServerPolicyOptions } from './policies.js';
import { validate } from './validate.js';
import { compose, type CallContext, type CallOptions, type Handle, type Handlers, type ImplementedService, type ServerInterceptor } from './types.js';

export interface ServerOptions extends SessionOptions {
  /** Interceptors around every handler; the first is the outermost. @default [] */
  interceptors?: ServerInterceptor[];
  /**
   * The default resilience chain, placed outside `interceptors` (docs/resilience.md):
   * options for it, or `false` for none. @default adaptive load shedding only
   * (`serverResilience()`: shed on; rate limits, bulkheads and fallbacks off)
   */
  resilience?: ServerPolicyOptions | false;
  /** TLS for every listener (cert and key required). */
  tls?: TlsOptions;
  /** Default grace period for `close()`, in ms. @default 10000 */
  drainGraceMs?: number;
  /**
   * Called with unexpected errors: a handler threw something that is not a SkeinError
   * (the client only sees INTERNAL). @default writes one line to stderr
   */
  onError?: (err: unknown, where: { service: string; method: string }) => void;
  /** Serve `skein.health` (SERVING / NOT_SERVING per service, watchable). @default true */
  health?: boolean;
  /**
   * Register every service served (but skein.health) at this discovery URL on `listen()`,
   * e.g. 'skein://127.0.0.1:7600'; deregister on `close()`. @default none
   */
  discovery?: string | URL;
  /** Lease time-to-live of the registrations, in seconds. @default 10 */
  ttl?: number;
  /**
   * The address to register ('host:port'), when clients must dial something else than the
   * bound address (NAT, containers). @default the bound host:port; for 0.0.0.0 or :: the
   * first non-internal IPv4 address of this host, else 127.0.0.1
   */
  advertise?: string;
  /** Metadata registered with every instance: version, zone, weight, tags... @default {} */
  metadata?: Record<string, string>;
  /**
   * How long `listen()` waits for the registrations, in ms. A registry that does not answer
   * (down, or starting at the same time as this server) does not keep the server from
   * serving: after this long `listen()` resolves with `registered: false` while the
   * registrar keeps trying, and 'registered' follows when it succeeds. A registration the
   * registrar refuses outright (bad URL, bad instance) fails `listen()` at once. @default 5000
   */
  registerWaitMs?: number;
}

/** Events of a server (beyond its calls). */
export interface ServerEvents {
  /** An instance was registered in discovery (at `listen()`, and again after a lost lease). */
  registered: [Instance];
  /** A registration was lost (lease expired or revoked, or a registration failed); the registrar retries. */
  lost: [SkeinError, Instance];
}

/** Pair a service definition with its handlers. Every method must have a handler. */
export function implement<M extends MethodMap>(def: ServiceDef<M>, handlers: Handlers<M>): ImplementedService<M> {
  for (const name of Object.keys(def.methods)) {
    if (typeof (handlers as Record<string, unknown>)[name] !== 'function') throw createError(ErrorCode.INVALID_OPTIONS, `implement(${def.name}): no handler for method ${name}`);
  }
  return Object.freeze({ def, handlers });
}

interface MethodEntry {
  service: string;
  method: string;
  def: MethodDef;
  /** The handler through the interceptors. */
  handle: Handle;
  /** The bare handler, when there are no interceptors (skips building an IncomingCall). */
  direct: ((request: unknown, ctx: CallContext) => ReturnType<Handle>) | undefined;
  /** Admission gates run around the call (the leading gated interceptors: src/rpc/admission.ts). */
  gates: readonly AdmissionGate[];
}

export interface BoundAddress {
  /** 'host:port', 'unix:/path' or 'memory:name'. */
  address: string;
  host?: string;
  port?: number;
  /** With `discovery`: the address registered for clients to dial. */
  advertised?: string;
  /** With `discovery`: false when `listen()` returned before every service was registered (see `registerWaitMs`). */
  registered?: boolean;
}

const NONE = Symbol('none');

export class Server extends EventEmitter<ServerEvents> {
  private readonly services = new Map<string, Map<string, MethodEntry>>();
  private readonly netListeners: Listener[] = [];
  private readonly sessions = new Set<Session>();
  private closing: Promise<void> | undefined;
  readonly options: Readonly<ServerOptions>;
  private readonly onError: (err: unknown, where: { service: string; method: string }) => void;
  /** The health statuses this server reports (`skein.health`); undefined with `health: false`. */
  readonly health: HealthService | undefined;
  private registrar: Registrar | undefined;
  /** Aborts registrations still in progress when the server closes. */
  private readonly registerAbort = new AbortController();
  private readonly registered: Registration[] = [];
  /** Addresses registered, one per listener (with `discovery`). */
  private readonly advertised: string[] = [];
  private listening = false;
  /** The default policies, then the user's interceptors, less the leading gates: what wraps every handler. */
  private readonly interceptors: readonly ServerInterceptor[];
  /** The leading gated interceptors of that chain, run as admission gates (src/rpc/admission.ts). */
  private readonly gates: readonly AdmissionGate[];
  /** Load reporting (src/observe/load.ts): calls running now and the unary latency average. */
  private readonly callLoad = new CallLoad();
  /** Created on the first `load()` (no timer: sampled by the health service's load watches). */
  private sampler: LoadSampler | undefined;

  constructor(options: ServerOptions = {}) {
    super();
    this.options = Object.freeze({ ...options });
    const { gates, rest } = splitGates([...serverPolicies(options.resilience), ...(options.interceptors ?? [])]);
    // Load reporting is the first gate: it counts every call the policies admit or refuse
    // (a refused one only for an instant, unmeasured), with the server's one clock reading.
    this.gates = [loadGate(this.callLoad), ...gates];
    this.interceptors = rest;
    this.onError = options.onError ?? ((err, w) => process.stderr.write(`skein: handler ${w.service}.${w.method} failed: ${(err as Error)?.stack ?? String(err)}\n`));
    if (options.ttl !== undefined && !(Number.isFinite(options.ttl) && options.ttl > 0)) throw createError(ErrorCode.INVALID_OPTIONS, `createServer(): ttl must be a positive number of seconds, got ${options.ttl}`);
    if (options.health !== false) {
      this.health = new HealthService({ load: { sample: () => this.load() } });
      this.add(this.health.impl);
      this.health.set('', HealthStatus.NOT_SERVING);
    }
  }

  /** The live registrations (with `discovery`, after `listen()`). */
  get registrations(): readonly Registration[] {
    return this.registered;
  }

  /** Serve an implemented service. Adding the same service name twice is an error. */
  add(impl: ImplementedService<any>): this {
    const { def, handlers } = impl;
    if (this.services.has(def.name)) throw createError(ErrorCode.INVALID_OPTIONS, `service ${def.name} is already added`);
    const methods = new Map<string, MethodEntry>();
    const interceptors = this.interceptors;
    for (const [name, mdef] of Object.entries(def.methods as MethodMap)) {
      const fn = (handlers as Record<string, (...a: unknown[]) => unknown>)[name]!;
      // Request validation runs innermost, after the interceptors (an auth interceptor answers
      // an unauthenticated caller before its request is judged).
      const input = mdef.kind === MethodKind.UNARY || mdef.kind === MethodKind.SERVER_STREAM ? mdef.input : undefined;
      const base: Handle =
        input === undefined
          ? (call) => fn.call(handlers, call.request, call.ctx) as ReturnType<Handle>
          : async (call) => fn.call(handlers, await validate(input, call.request, 'request'), call.ctx) as ReturnType<Handle>;
      const direct = interceptors.length === 0 && input === undefined ? (request: unknown, ctx: CallContext) => fn.call(handlers, request, ctx) as ReturnType<Handle> : undefined;
      methods.set(name, { service: def.name, method: name, def: mdef, handle: interceptors.length === 0 ? base : compose(interceptors, base), direct, gates: this.gates });
    }
    this.services.set(def.name, methods);
    if (def.name !== HEALTH_SERVICE && this.health !== undefined) this.health.set(def.name, this.listening && !this.closing ? HealthStatus.SERVING : HealthStatus.NOT_SERVING);
    // Added after listen(): register it too (in the background; a failure is a 'lost' event).
    if (def.name !== HEALTH_SERVICE && this.registrar !== undefined && !this.closing) {
      for (const address of this.advertised) {
        this.register(def.name, address).catch((err: unknown) => this.emit('lost', asSkein(err), { service: def.name, id: address, address, metadata: { ...this.options.metadata } }));
      }
    }
    return this;
  }

  /** Names of the services served. */
  get serviceNames(): string[] {
    return [...this.services.keys()];
  }

  /** Start listening: TCP (host/port), TLS (when `tls` is set), unix (`path`) or memory (`name`). */
  async listen(options: ListenOptions = {}): Promise<BoundAddress> {
    if (this.closing) throw createError(ErrorCode.CLOSED, 'server is closed');
    const tls = options.tls ?? this.options.tls;
    const transport = getTransport(options.path !== undefined ? 'unix' : options.name !== undefined ? 'memory' : tls !== undefined ? 'tls' : 'tcp')!;
    const listener = await transport.listen(tls !== undefined ? { ...options, tls } : options, (conn) => this.accept(conn));
    this.netListeners.push(listener);
    const bound: BoundAddress = { address: listener.address };
    if (listener.port !== undefined) {
      bound.port = listener.port;
      bound.host = options.host ?? '127.0.0.1';
    }
    if (!this.listening) {
      this.listening = true;
      if (this.health !== undefined) {
        for (const name of this.services.keys()) if (name !== HEALTH_SERVICE) this.health.set(name, HealthStatus.SERVING);
        this.health.set('', HealthStatus.SERVING);
      }
    }
    if (this.options.discovery !== undefined) {
      const address = advertiseAddress(bound, tls !== undefined, this.options.advertise);
      let all: Promise<unknown>;
      let waiting: Promise<'waiting'>;
      let timer: NodeJS.Timeout | undefined;
      try {
        this.registrar ??= registrarFor(this.options.discovery);
        all = Promise.all([...this.services.keys()].filter((n) => n !== HEALTH_SERVICE).map((name) => this.register(name, address)));
        waiting = new Promise<'waiting'>((resolve) => (timer = setTimeout(resolve, this.options.registerWaitMs ?? 5000, 'waiting')));
        bound.registered = (await Promise.race([all, waiting])) !== 'waiting';
      } catch (err) {
        // Refused: not listening either (the caller sees why).
        this.netListeners.splice(this.netListeners.indexOf(listener), 1);
        await listener.close().catch(() => {});
        throw err;
      } finally {
        clearTimeout(timer);
      }
      // Still registering: a later refusal is reported as 'lost' (not visible).
      if (!bound.registered) {
        all.catch((err: unknown) => {
          if (!this.closing) this.emit('lost', asSkein(err), { service: '*', id: address, address, metadata: { ...this.options.metadata } });
        });
      }
      this.advertised.push(address);
      bound.advertised = address;
    }
    return bound;
  }

  private async register(service: string, address: string): Promise<void> {
    const instance: { service: string; address: string; metadata?: Record<string, string> } = { service, address };
    if (this.options.metadata !== undefined) instance.metadata = { ...this.options.metadata };
    let reg: Registration;
    try {
      reg = await this.registrar!.register(instance, { ttlMs: Math.round((this.options.ttl ?? 10) * 1000), signal: this.registerAbort.signal });
    } catch (err) {
      if (this.closing) return;
      const e = asSkein(err);
      const where = typeof this.options.discovery === 'string' ? this.options.discovery : this.options.discovery!.href;
      throw createError(e.code, `cannot register ${service} at ${address} in ${where.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@')}: ${e.message}`, { status: e.status, cause: e, details: e.details });
    }
    if (this.closing) {
      await reg.deregister().catch(() => {});
      return;
    }
    this.registered.push(reg);
    // The first 'registered' is ours to report; after that, one follows each loss.
    let lost = false;
    reg.on('lost', (err) => {
      lost = true;
      this.emit('lost', err, reg.instance);
    });
    reg.on('registered', (inst) => {
      if (!lost) return;
      lost = false;
      this.emit('registered', inst);
    });
    this.emit('registered', reg.instance);
  }

  /** Addresses currently listened on. */
  get addresses(): string[] {
    return this.netListeners.map((l) => l.address);
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /** Calls running on this server now (every client; skein.health watches excluded). Cheap. */
  get inflight(): number {
    return this.callLoad.inflight;
  }

  /**
   * This server's load as it reports it to channels (`skein.health.watch` with
   * `loadReportMs`; src/observe/load.ts): cpu and mem (0..1) of the process, calls in flight,
   * EWMA of unary call durations (ms). CPU is measured since the previous sample (this call
   * and the periodic reports share one sampler).
   */
  load(): LoadSample {
    return (this.sampler ??= new LoadSampler(this.callLoad)).sample();
  }

  /**
   * Drain and stop: listeners close, sessions send GOAWAY, in-flight calls get `graceMs`
   * to finish (then they are reset with UNAVAILABLE). Idempotent; resolves when all is closed.
   */
  close(graceMs = this.options.drainGraceMs ?? 10000): Promise<void> {
    this.closing ??= (async () => {
      // See the module comment for the order: NOT_SERVING, deregister, end watches, drain.
      this.health?.setAll(HealthStatus.NOT_SERVING);
      const healthDone = this.health?.shutdown(Math.min(1000, Math.max(100, graceMs)));
      this.registerAbort.abort(createError(ErrorCode.CLOSED, 'server closed'));
      if (this.registrar !== undefined) {
        const signal = AbortSignal.timeout(Math.min(5000, Math.max(1000, graceMs)));
        await Promise.all(this.registered.splice(0).map((r) => r.deregister({ signal }).catch(() => {})));
        await this.registrar.close().catch(() => {});
      }
      await healthDone;
      await Promise.all(this.netListeners.map((l) => l.close().catch(() => {})));
      await Promise.all([...this.sessions].map((s) => s.drain(graceMs)));
    })();
    return this.closing;
  }

  private accept(conn: Connection): void {
    if (this.closing) {
      conn.socket.destroy();
      return;
    }
    const session = Session.accept(conn, this.options);
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    session.onStream = (stream, head) => this.dispatch(session, stream, head);
  }

  private dispatch(session: Session, stream: Stream, head: CallHead): void {
    const entry = this.services.get(head.service)?.get(head.method);
    if (entry === undefined) {
      const e = createError(ErrorCode.UNIMPLEMENTED, this.services.has(head.service) ? `unknown method ${head.service}.${head.method}` : `unknown service ${head.service}`);
      stream.end(e.status, e.message);
      return;
    }
    const codecs = codecsFor(entry.def, head.codec);
    if (codecs === undefined) {
      stream.end(Status.INVALID_ARGUMENT, `${head.service}.${head.method} does not accept codec id ${head.codec}`);
      return;
    }
    new ServerCall(this.onError, session, stream, head, entry, codecs.req, codecs.res);
  }
}

/**
 * Load reporting (src/observe/load.ts) as an admission gate: every call but skein.health's
 * (the watches are not load) is counted while it runs, and a unary call that was not
 * cancelled adds its duration to the latency average.
 */
function loadGate(load: CallLoad): AdmissionGate {
  return {
    admit(service) {
      if (service === HEALTH_SERVICE) return NOT_GATED;
      load.start();
      return 0;
    },
    release(_ticket, kind, elapsedMs, _err, cancelled) {
      load.finish(kind === MethodKind.UNARY && !cancelled ? elapsedMs : undefined);
    },
  };
}

const RAW_CODECS = Object.freeze({ req: bytesCodec as Codec, res: bytesCodec as Codec });

function codecsFor(def: MethodDef, codecId: number): { req: Codec; res: Codec } | undefined {
  if (def.protobuf !== undefined) return codecId === CodecId.PROTOBUF ? { req: def.protobuf.request, res: def.protobuf.response } : undefined;
  if (def.raw) return codecId === CodecId.BYTES ? RAW_CODECS : undefined;
  if (codecId === CodecId.PROTOBUF || codecId === CodecId.BYTES) return undefined;
  const c = getCodec(codecId);
  return c === undefined ? undefined : { req: c, res: c };
}

/**
 * The client reset the stream: CANCELLED, unless its reset says the client's deadline
 * passed (its timer can fire before ours, as its clock started first), which the handler
 * must see as DEADLINE_EXCEEDED either way.
 */
function clientReset(err: SkeinError): SkeinError {
  if (err.status === Status.DEADLINE_EXCEEDED) return createError(ErrorCode.DEADLINE, `deadline exceeded (the client gave up)${err.message ? `: ${err.message}` : ''}`);
  return createError(ErrorCode.CANCELLED, `call cancelled by the client${err.message ? `: ${err.message}` : ''}`);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function';
}

function expireCall(call: ServerCall): void {
  call.expire();
}

/**
 * Server deadline timers are armed one event-loop turn late, in one sweep: a call that
 * finishes within the turn it arrived in (most unary calls) never costs a timer. The
 * deadline itself is unchanged (the timer is armed for the time that remains).
 */
let toArm: ServerCall[] = [];
function deferDeadline(call: ServerCall): void {
  if (toArm.length === 0) setImmediate(armDeferred);
  toArm.push(call);
}
function armDeferred(): void {
  const list = toArm;
  toArm = [];
  for (let i = 0; i < list.length; i++) list[i]!.armDeadline();
}

/** Turn anything thrown by a handler into the status sent to the client. */
function toStatusError(err: unknown, report: () => void): SkeinError {
  if (isSkeinError(err)) return err;
  report();
  return createError(ErrorCode.INTERNAL, 'internal error');
}

/** One call on the server side. */
class ServerCall implements CallContext, StreamHandler {
  readonly service: string;
  readonly method: string;
  readonly deadline: number | undefined;
  readonly metadata: Metadata;
  private request: unknown = NONE;
  private inbound: InboundQueue<unknown> | undefined;
  private done = false;
  private controller: AbortController | undefined;
  private abortReason: SkeinError | undefined;
  private timer: TimerHandle;
  private trailersMd: Metadata | undefined;
  private gate: DrainGate | undefined;
  /** Admission gates: admitted and not released yet; when; the first gate's ticket, the others'. */
  private gated = false;
  private admittedAt = 0;
  private ticket = NOT_GATED;
  private tickets: number[] | undefined;

  constructor(
    private readonly onError: (err: unknown, where: { service: string; method: string }) => void,
    private readonly session: Session,
    private readonly stream: Stream,
    head: CallHead,
    private readonly entry: MethodEntry,
    private readonly reqCodec: Codec,
    private readonly resCodec: Codec,
  ) {
    this.service = entry.service;
    this.method = entry.method;
    this.metadata = head.metadata;
    this.deadline = head.timeoutMs > 0 ? Date.now() + head.timeoutMs : undefined;
    if (head.timeoutMs > 0) deferDeadline(this);
    stream.handler = this;
    const kind = entry.def.kind;
    if (kind === MethodKind.CLIENT_STREAM || kind === MethodKind.BIDI) {
      const q = (this.inbound = new InboundQueue<unknown>(() => {}));
      q.attach(stream);
      const input = entry.def.input;
      void this.run(input === undefined ? q : validatedStream(q, input));
    }
  }

  // ---------------------------------------------------------------- StreamHandler

  onMessage(msg: Buffer, size: number): void {
    const q = this.inbound;
    if (q === undefined) return this.onSingleRequest(msg, size);
    let v: unknown;
    try {
      v = this.reqCodec.decode(msg);
    } catch (err) {
      this.finish(createError(ErrorCode.VALIDATION, `request message could not be decoded: ${(err as Error).message}`));
      return;
    }
    q.push(v, size);
  }

  onEnd(): void {
    if (this.inbound !== undefined) return this.inbound.end();
    if (this.done) return;
    if (this.request === NONE) this.finish(createError(ErrorCode.VALIDATION, 'the call ended without a request message'));
    else void this.run(this.request);
  }

  onAbort(err: SkeinError): void {
    this.abort(err.code === ErrorCode.STREAM_RESET ? clientReset(err) : err);
  }

  onDrain(): void {
    this.gate?.open();
  }

  /** Arm the deadline timer (deferred: most calls finish before it would be needed). */
  armDeadline(): void {
    if (this.done || this.deadline === undefined) return;
    this.timer = startTimer(this.deadline - Date.now(), expireCall, this);
  }

  // ---------------------------------------------------------------- CallContext

  get peer(): PeerInfo {
    return this.session.peer;
  }

  get identity(): unknown {
    return this.session.identity;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  get trailers(): Metadata {
    return (this.trailersMd ??= {});
  }

  forward(extra: CallOptions = {}): CallOptions {
    const out: CallOptions = { ...extra };
    if (this.deadline !== undefined) out.deadline = extra.deadline === undefined ? this.deadline : Math.min(extra.deadline, this.deadline);
    out.signal = extra.signal === undefined ? this.signal : AbortSignal.any([this.signal, extra.signal]);
    return out;
  }

  // ---------------------------------------------------------------- flow

  private onSingleRequest(msg: Buffer, size: number): void {
    if (this.done) return;
    if (this.request !== NONE) {
      this.finish(createError(ErrorCode.VALIDATION, `${this.service}.${this.method} takes one request message, got more`));
      return;
    }
    try {
      this.request = this.reqCodec.decode(msg);
    } catch (err) {
      this.finish(createError(ErrorCode.VALIDATION, `request could not be decoded: ${(err as Error).message}`));
      return;
    }
    this.stream.consume(size);
  }

  private async run(request: unknown): Promise<void> {
    const def = this.entry.def;
    if (!this.gated && !this.admit()) return;
    try {
      const direct = this.entry.direct;
      let result = direct !== undefined ? direct(request, this) : this.entry.handle({ service: this.service, method: this.method, kind: def.kind, request, ctx: this });
      if (def.kind === MethodKind.UNARY || def.kind === MethodKind.CLIENT_STREAM) {
        let reply = await result;
        if (this.done) return;
        if (def.output !== undefined) reply = await validate(def.output, reply, 'reply');
        this.stream.send(this.resCodec.encode(reply));
        this.finish(undefined);
      } else {
        // An async interceptor (or handler wrapper) hands back a promise of the iterable.
        if (isThenable(result)) result = await result;
        if (this.done) return;
        if (result === null || typeof result !== 'object' || (!(Symbol.asyncIterator in result) && !(Symbol.iterator in result))) {
          throw createError(ErrorCode.INTERNAL, `${this.service}.${this.method} must return an iterable (use an async generator)`, { status: Status.INTERNAL });
        }
        const gate = (this.gate = new DrainGate());
        const output = def.output;
        await pumpSource(result as AsyncIterable<unknown>, this.stream, gate, output === undefined ? (v) => this.resCodec.encode(v) : async (v) => this.resCodec.encode(await validate(output, v, 'reply')), () => this.done);
        this.finish(undefined);
      }
    } catch (err) {
      this.finish(toStatusError(err, () => this.onError(err, { service: this.service, method: this.method })));
    }
  }

  /**
   * Ask every admission gate, in order; false when one refused (the call is then finished
   * with its refusal, and the gates that had admitted it are released as not measured).
   */
  private admit(): boolean {
    const gates = this.entry.gates;
    const kind = this.entry.def.kind;
    this.gated = true;
    this.admittedAt = performance.now();
    for (let i = 0; i < gates.length; i++) {
      const t = gates[i]!.admit(this.service, this.method, kind);
      if (typeof t !== 'number') {
        this.releaseGates(undefined, true);
        this.finish(t);
        return false;
      }
      if (i === 0) this.ticket = t;
      else (this.tickets ??= [])[i - 1] = t;
    }
    return true;
  }

  /** Give the gates their tickets back (once): how the call ended, or that the client left. */
  private releaseGates(err: SkeinError | undefined, cancelled: boolean): void {
    if (!this.gated) return;
    this.gated = false;
    const gates = this.entry.gates;
    const kind = this.entry.def.kind;
    const elapsed = performance.now() - this.admittedAt;
    for (let i = 0; i < gates.length; i++) {
      const t = i === 0 ? this.ticket : (this.tickets?.[i - 1] ?? NOT_GATED);
      if (t !== NOT_GATED) gates[i]!.release(t, kind, elapsed, err, cancelled);
    }
  }

  /** Send the final status (OK when `err` is undefined) and release everything. */
  private finish(err: SkeinError | undefined): void {
    if (this.done) return;
    this.done = true;
    stopTimer(this.timer);
    if (this.gated) this.releaseGates(err, false);
    const trailers = err === undefined ? this.trailersMd : { ...err.metadata, ...this.trailersMd };
    try {
      checkMetadata(trailers);
      if (err === undefined) this.stream.end(0, '', undefined, trailers);
      else this.stream.end(err.status, err.message, err.details, trailers);
    } catch (bad) {
      // Invalid trailers from the handler: the call fails, the connection does not.
      this.onError(bad, { service: this.service, method: this.method });
      this.stream.end(Status.INTERNAL, `handler produced invalid trailers: ${(bad as Error).message}`);
    }
    this.inbound?.fail(expectedError(ErrorCode.CANCELLED, 'call finished'));
    this.gate?.open();
    if (err !== undefined) this.signalAbort(expectedError(ErrorCode.CANCELLED, `call ended with ${statusName(err.status)}`));
  }

  /** The stream died under the call (client cancel, connection lost): stop the handler. */
  private abort(err: SkeinError): void {
    if (this.done) return;
    this.done = true;
    stopTimer(this.timer);
    if (this.gated) this.releaseGates(err, true);
    this.inbound?.fail(err);
    this.gate?.open();
    this.signalAbort(err);
  }

  /** @internal The deadline passed. */
  expire(): void {
    if (this.done) return;
    const err = createError(ErrorCode.DEADLINE, `deadline exceeded in ${this.service}.${this.method}`);
    this.signalAbort(err);
    this.finish(err);
  }

  private signalAbort(reason: SkeinError): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
}

async function* validatedStream(source: AsyncIterable<unknown>, schema: NonNullable<MethodDef['input']>): AsyncGenerator<unknown> {
  for await (const v of source) yield await validate(schema, v, 'request');
}

function asSkein(err: unknown): SkeinError {
  return isSkeinError(err) ? err : createError(ErrorCode.CONNECT_FAILED, `registration failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

const WILDCARD = new Set(['0.0.0.0', '::', '[::]', '::0', '']);

/**
 * The address to register for a listener: `advertise` if given (with tls:// for a TLS
 * listener), the bound host:port, or for a wildcard bind a non-internal IPv4 address of
 * this host (127.0.0.1 when there is none). unix: and memory: listeners register as bound.
 */
export function advertiseAddress(bound: BoundAddress, tls: boolean, advertise: string | undefined): string {
  const scheme = tls ? 'tls://' : '';
  if (advertise !== undefined && advertise !== '') return advertise.includes('://') || advertise.startsWith('unix:') || advertise.startsWith('memory:') ? advertise : scheme + advertise;
  if (bound.port === undefined) return bound.address;
  let host = bound.host ?? '127.0.0.1';
  if (WILDCARD.has(host)) host = firstExternalIPv4() ?? '127.0.0.1';
  return scheme + formatAddress(host, bound.port);
}

function firstExternalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  }
  return undefined;
}

/** Create a server. See ServerOptions for the defaults. */
export function createServer(options: ServerOptions = {}): Server {
  return new Server(options);
}
