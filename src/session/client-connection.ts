/**
 * ClientConnection: the client's long-lived connection to one address, kept up across
 * failures. It dials, runs the handshake, and when the session is lost it reconnects with
 * exponential backoff and jitter. Its state is one of `ConnectivityState`, observable as
 * 'state' events and as an async iterator (`status()`).
 *
 * Calls obtain a session with `getSession()`:
 *   READY                → the session, at once (the RPC layer checks `session` synchronously first);
 *   IDLE / CONNECTING    → wait for the handshake (bounded by the call's deadline and signal);
 *   TRANSIENT_FAILURE    → fail fast with UNAVAILABLE (SKEIN_ERR_NOT_READY) unless `waitForReady`;
 *   SHUTDOWN             → SKEIN_ERR_CLOSED.
 * A peer that drains (GOAWAY) keeps serving its in-flight calls on the old session while
 * new calls go to a fresh connection.
 */
import { EventEmitter } from 'node:events';
import { createError, ErrorCode, isSkeinError, type SkeinError } from '../errors.js';
import { dial } from '../transport/index.js';
import type { TlsOptions } from '../transport/transport.js';
import { Backoff, type BackoffOptions } from '../util/backoff.js';
import { changeState, ConnectivityState, stateChanges, type ConnectivityStateValue, type StateChange } from './connectivity.js';
import { Session } from './session.js';
import type { SessionOptions } from './options.js';
import { armTimer, type CancelTimer } from './timer.js';

export interface ClientConnectionOptions {
  /** Session (protocol) options: windows, heartbeat, compression, credential... */
  session?: SessionOptions;
  /** TLS options; required for a tls:// target, turns a host:port target into TLS. */
  tls?: TlsOptions;
  /** Abandon a dial after this many ms. @default 10000 */
  connectTimeoutMs?: number;
  /** Reconnect backoff. @default { initialMs: 250, maxMs: 30000, multiplier: 1.6, jitter: 0.2 } */
  backoff?: BackoffOptions;
}

export interface GetSessionOptions {
  /** Wait through TRANSIENT_FAILURE instead of failing fast. @default false */
  waitForReady?: boolean;
  signal?: AbortSignal;
  /** Absolute deadline (ms since epoch) for the wait. */
  deadline?: number;
}

interface Waiter {
  resolve: (s: Session) => void;
  reject: (e: SkeinError) => void;
  waitForReady: boolean;
}

export class ClientConnection extends EventEmitter<{ state: [StateChange] }> {
  state: ConnectivityStateValue = ConnectivityState.IDLE;
  /** The READY session, if any. */
  session: Session | undefined;
  /** Why the last connection attempt or session failed. */
  lastError: SkeinError | undefined;
  private readonly backoff: Backoff;
  private readonly waiters = new Set<Waiter>();
  private retryTimer: NodeJS.Timeout | undefined;
  private dialAbort: AbortController | undefined;
  private readonly draining = new Set<Session>();

  constructor(
    readonly target: string,
    private readonly options: ClientConnectionOptions = {},
  ) {
    super();
    this.backoff = new Backoff(options.backoff);
  }

  /** Start connecting if IDLE. Never throws. */
  connect(): void {
    if (this.state === ConnectivityState.IDLE) void this.attempt();
  }

  /** A READY session, waiting as the state and options say (see the module comment). */
  getSession(opts: GetSessionOptions = {}): Promise<Session> {
    if (this.session !== undefined && this.session.isReady) return Promise.resolve(this.session);
    if (this.state === ConnectivityState.SHUTDOWN) return Promise.reject(createError(ErrorCode.CLOSED, `client for ${this.target} is closed`));
    if (this.state === ConnectivityState.TRANSIENT_FAILURE && !opts.waitForReady) return Promise.reject(this.notReady());
    if (opts.signal?.aborted) return Promise.reject(isSkeinError(opts.signal.reason) ? opts.signal.reason : createError(ErrorCode.CANCELLED, 'call cancelled before it started', { cause: opts.signal.reason }));
    this.connect();
    return new Promise<Session>((resolve, reject) => {
      let cancelTimer: CancelTimer | undefined;
      const done = () => {
        this.waiters.delete(w);
        cancelTimer?.();
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const w: Waiter = {
        waitForReady: opts.waitForReady === true,
        resolve: (s) => {
          done();
          resolve(s);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      const onAbort = () => w.reject(isSkeinError(opts.signal!.reason) ? opts.signal!.reason : createError(ErrorCode.CANCELLED, 'call cancelled while waiting for a connection', { cause: opts.signal!.reason }));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (opts.deadline !== undefined && Number.isFinite(opts.deadline)) {
        const ms = Math.max(0, opts.deadline - Date.now());
        cancelTimer = armTimer(ms, () => w.reject(createError(ErrorCode.DEADLINE, `deadline exceeded while waiting for a connection to ${this.target}${this.lastError ? ` (last error: ${this.lastError.message})` : ''}`)));
      }
      this.waiters.add(w);
    });
  }

  /** Every state change from now on, until SHUTDOWN (the last item). */
  status(): AsyncIterableIterator<StateChange> {
    return stateChanges(this);
  }

  /**
   * Shut down: no new calls; in-flight calls get `graceMs` to finish on a graceful drain,
   * then fail. Resolves once every session is closed.
   */
  async close(graceMs = 0): Promise<void> {
    if (this.state === ConnectivityState.SHUTDOWN) return;
    clearTimeout(this.retryTimer);
    this.dialAbort?.abort(createError(ErrorCode.CLOSED, 'client closed'));
    this.setState(ConnectivityState.SHUTDOWN);
    const err = createError(ErrorCode.CLOSED, `client for ${this.target} is closed`);
    for (const w of [...this.waiters]) w.reject(err);
    const sessions = [...this.draining];
    if (this.session) sessions.push(this.session);
    this.session = undefined;
    await Promise.all(
      sessions.map((s) => {
        if (graceMs > 0) return s.drain(graceMs);
        s.close();
        return s.closed;
      }),
    );
  }

  private notReady(): SkeinError {
    const last = this.lastError;
    // The server refused our credentials: that is its answer, not a transient failure, so
    // calls fail with it (UNAUTHENTICATED, SKEIN_ERR_AUTH_REFUSED) rather than as a
    // retryable UNAVAILABLE. The connection still retries with backoff, as the credential
    // (or the server's mind) may change.
    if (last?.code === ErrorCode.AUTH_REFUSED) return createError(ErrorCode.AUTH_REFUSED, `${this.target} refused the connection: ${last.message}`, { status: last.status, cause: last });
    return createError(ErrorCode.NOT_READY, `no connection to ${this.target}${this.lastError ? `: ${this.lastError.message}` : ''}`, { cause: this.lastError });
  }

  private async attempt(): Promise<void> {
    this.setState(ConnectivityState.CONNECTING);
    const ac = (this.dialAbort = new AbortController());
    let session: Session;
    try {
      const conn = await dial(this.target, { signal: ac.signal, connectTimeoutMs: this.options.connectTimeoutMs, ...(this.options.tls ? { tls: this.options.tls } : {}) });
      if (ac.signal.aborted) {
        conn.socket.destroy();
        return;
      }
      session = await Session.connect(conn, this.options.session, ac.signal);
    } catch (err) {
      if (this.state === ConnectivityState.SHUTDOWN) return;
      this.lastError = isSkeinError(err) ? err : createError(ErrorCode.CONNECT_FAILED, String(err), { cause: err });
      this.transientFailure();
      return;
    } finally {
      if (this.dialAbort === ac) this.dialAbort = undefined;
    }
    if (this.state === ConnectivityState.SHUTDOWN) {
      session.close();
      return;
    }
    this.backoff.reset();
    this.session = session;
    // A graceful GOAWAY: the old session finishes its calls, new ones go to a new connection.
    // (An error GOAWAY closes the session, and the 'close' below handles it.)
    session.on('goaway', (g) => {
      if (g.reason === 'NO_ERROR' || g.reason === 'IDLE_TIMEOUT') this.detach(session, undefined);
    });
    session.once('close', (reason) => this.detach(session, reason));
    this.setState(ConnectivityState.READY);
    for (const w of [...this.waiters]) w.resolve(session);
  }

  /** The session stopped taking new calls (GOAWAY) or closed. */
  private detach(session: Session, reason: SkeinError | undefined): void {
    if (session.state !== 'CLOSED') {
      this.draining.add(session);
      session.once('close', () => this.draining.delete(session));
    } else this.draining.delete(session);
    if (this.session !== session) return;
    this.session = undefined;
    if (this.state === ConnectivityState.SHUTDOWN) return;
    const graceful = reason === undefined || reason.code === ErrorCode.GOAWAY || reason.code === ErrorCode.IDLE_TIMEOUT;
    if (graceful) {
      this.setState(ConnectivityState.IDLE);
      // Someone may be waiting already (a call raced the GOAWAY): reconnect for them.
      if (this.waiters.size > 0) this.connect();
      return;
    }
    this.lastError = reason;
    this.transientFailure();
  }

  private transientFailure(): void {
    this.setState(ConnectivityState.TRANSIENT_FAILURE, this.lastError);
    const err = this.notReady();
    for (const w of [...this.waiters]) if (!w.waitForReady) w.reject(err);
    const delay = this.backoff.next();
    this.retryTimer = setTimeout(() => {
      if (this.state === ConnectivityState.TRANSIENT_FAILURE) void this.attempt();
    }, delay);
    this.retryTimer.unref?.();
  }

  private setState(state: ConnectivityStateValue, error?: SkeinError): void {
    changeState(this, state, error);
  }
}
