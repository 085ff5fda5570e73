/**
 * Subchannel: one instance of a service as a channel sees it — a ClientConnection to the
 * instance's address (which reconnects with backoff by itself), the instance's health as
 * its `skein.health` watch reports it, and call counters.
 *
 * Its state is the connection's, refined by health (docs/channels.md §2.4):
 *
 *   connection READY, health not known yet ......... CONNECTING (a first answer is one round trip away)
 *   connection READY, SERVING (or no health service)  READY       ← pickable
 *   connection READY, NOT_SERVING / SERVICE_UNKNOWN .. TRANSIENT_FAILURE (connected, but skipped)
 *   otherwise ....................................... the connection's state
 *
 * A subchannel never stays IDLE: when its server drains the connection (GOAWAY) it dials
 * again at once (the instance may be restarting; if it is gone, the channel removes the
 * subchannel when the resolver says so). Health is watched over the same connection, one
 * `skein.health.watch` stream per connection; a server without the health service
 * (UNIMPLEMENTED) counts as SERVING.
 *
 * Load reports (the `load` picker): with `loadReportMs` the watch asks for them
 * (`{ service, loadReportMs }`), and every reply that carries a `load` becomes
 * `subchannel.load` (`at` = when it arrived; a 'load' event follows). The report is dropped
 * when the connection leaves READY; the picker ignores one older than its `maxAgeMs`
 * (3 intervals by default). A server that does not send reports (older, or no health
 * service) leaves `load` undefined. With health checking off but `loadReportMs` set, the
 * watch (of '') still runs, for the reports only: its statuses are ignored.
 */
import { EventEmitter } from 'node:events';
import { isSkeinError, Status, type SkeinError } from '../errors.js';
import type { Instance } from '../discovery/types.js';
import { weightOf, type LoadReport, type PickerSubchannel } from '../balance/picker.js';
import { Health, HealthStatus, type HealthRequest, type HealthStatusValue } from '../observe/health.js';
import { clientOver } from '../rpc/client.js';
import type { ClientMethods } from '../rpc/types.js';
import { ClientConnection, type ClientConnectionOptions } from '../session/client-connection.js';
import { changeState, ConnectivityState, type ConnectivityStateValue, type StateChange } from '../session/connectivity.js';

export interface SubchannelOptions extends ClientConnectionOptions {
  /** The service whose health to watch; undefined turns health checking off. @default none */
  healthService?: string;
  /**
   * Ask the instance's health watch for a load report every this many ms (the server raises
   * it to at least 100) and keep the latest as `load`. @default none (no load reports)
   */
  loadReportMs?: number;
}

/** Calls that went through one subchannel. */
export interface SubchannelCounters {
  started: number;
  succeeded: number;
  failed: number;
  /** Date.now() of the last call picked, 0 before any. */
  lastCallAt: number;
}

/** How long to wait before re-opening a health watch that failed on a live connection. */
const HEALTH_RETRY_MS = 1000;

export class Subchannel extends EventEmitter<{ state: [StateChange]; health: [HealthStatusValue | undefined]; load: [LoadReport] }> implements PickerSubchannel {
  readonly id: string;
  readonly address: string;
  readonly connection: ClientConnection;
  instance: Instance;
  weight: number;
  inflight = 0;
  readonly calls: SubchannelCounters = { started: 0, succeeded: 0, failed: 0, lastCallAt: 0 };
  /** The effective state (see the module comment). */
  state: ConnectivityStateValue = ConnectivityState.IDLE;
  /**
   * What the instance's health service says for the channel's service: undefined before
   * the first answer (or with health checking off).
   */
  health: HealthStatusValue | undefined;
  /**
   * The instance's last load report (with `loadReportMs`), `at` = when it arrived
   * (`Date.now()`); undefined before the first and while not connected.
   */
  load: LoadReport | undefined;
  /** How often load reports are asked for, ms; undefined: not asked for. */
  readonly loadReportMs: number | undefined;
  private readonly healthService: string | undefined;
  private healthClient: ClientMethods<typeof Health.methods> | undefined;
  private healthWatch: AbortController | undefined;
  private healthRetry: NodeJS.Timeout | undefined;
  /**
   * No health answer to wait for on this connection: the server has no health service
   * (UNIMPLEMENTED), or the watch failed (it is retried). Counts as SERVING until told otherwise.
   */
  private healthUnavailable = false;
  private closed = false;
  private readonly onConnState = (c: StateChange): void => this.connectionChanged(c);

  constructor(instance: Instance, options: SubchannelOptions = {}) {
    super();
    this.instance = instance;
    this.id = instance.id;
    this.address = instance.address;
    this.weight = weightOf(instance);
    this.healthService = options.healthService;
    this.loadReportMs = options.loadReportMs;
    const { healthService: _h, loadReportMs: _l, ...connOptions } = options;
    this.connection = new ClientConnection(instance.address, connOptions);
    this.connection.on('state', this.onConnState);
  }

  /** Start connecting (idempotent). */
  connect(): void {
    if (!this.closed) this.connection.connect();
  }

  /** READY: the picker may send calls here. */
  get pickable(): boolean {
    return this.state === ConnectivityState.READY;
  }

  /** Why the connection last failed, if it did. */
  get lastError(): SkeinError | undefined {
    return this.connection.lastError;
  }

  /** The resolver updated the instance's metadata (same id, same address). */
  update(instance: Instance): void {
    this.instance = instance;
    this.weight = weightOf(instance);
  }

  /** Close the connection; in-flight calls get `graceMs` to finish. */
  async close(graceMs = 0): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopHealth();
    this.connection.off('state', this.onConnState);
    this.setState(ConnectivityState.SHUTDOWN);
    await this.connection.close(graceMs);
  }

  private connectionChanged(c: StateChange): void {
    if (this.closed) return;
    if (c.state !== ConnectivityState.READY) {
      this.stopHealth();
      this.health = undefined;
      this.load = undefined;
      this.healthUnavailable = false;
    }
    if (c.state === ConnectivityState.READY && (this.healthService !== undefined || this.loadReportMs !== undefined)) this.startHealth();
    // Drained by the server: dial again (after this event has reached every listener).
    if (c.state === ConnectivityState.IDLE) queueMicrotask(() => this.connect());
    this.refresh(c.error);
  }

  /** Recompute the effective state from the connection and health. */
  private refresh(error?: SkeinError): void {
    const conn = this.connection.state;
    let state: ConnectivityStateValue = conn;
    if (conn === ConnectivityState.READY && this.healthService !== undefined) {
      if (this.health === undefined) {
        if (!this.healthUnavailable) state = ConnectivityState.CONNECTING;
      } else if (this.health !== HealthStatus.SERVING) state = ConnectivityState.TRANSIENT_FAILURE;
    }
    this.setState(state, error);
  }

  private setState(state: ConnectivityStateValue, error?: SkeinError): void {
    changeState(this, state, error);
  }

  private setHealth(status: HealthStatusValue | undefined): void {
    if (this.health === status) return;
    this.health = status;
    this.emit('health', status);
    this.refresh();
  }

  private startHealth(): void {
    this.stopHealth();
    const ac = (this.healthWatch = new AbortController());
    this.healthClient ??= clientOver(Health, this.connection);
    void this.watchHealth(ac);
  }

  private stopHealth(): void {
    clearTimeout(this.healthRetry);
    this.healthRetry = undefined;
    this.healthWatch?.abort();
    this.healthWatch = undefined;
  }

  private async watchHealth(ac: AbortController): Promise<void> {
    const request: HealthRequest = { service: this.healthService ?? '' };
    if (this.loadReportMs !== undefined) request.loadReportMs = this.loadReportMs;
    try {
      for await (const reply of this.healthClient!.watch(request, { signal: ac.signal })) {
        if (ac.signal.aborted) return;
        if (this.healthService !== undefined) {
          const s = reply?.status;
          this.setHealth(s === HealthStatus.SERVING || s === HealthStatus.NOT_SERVING || s === HealthStatus.SERVICE_UNKNOWN ? s : HealthStatus.NOT_SERVING);
        }
        if (reply?.load !== undefined && this.loadReportMs !== undefined) {
          const report = loadReport(reply.load, Date.now());
          if (report !== undefined) {
            this.load = report;
            this.emit('load', report);
          }
        }
      }
      // Ended with OK: the server is going away (it ends watches after NOT_SERVING). Keep
      // the last status; the connection's own state change follows.
    } catch (err) {
      if (ac.signal.aborted || this.closed) return;
      if (this.connection.state !== ConnectivityState.READY) return;
      this.healthUnavailable = true;
      if (isSkeinError(err) && err.status === Status.UNIMPLEMENTED) {
        // No health service on this server: count it as SERVING.
        this.setHealth(undefined);
        this.refresh();
        return;
      }
      // The watch failed but the connection is fine: do not block the instance on its
      // health check (the last known status stands); try the watch again shortly.
      this.refresh();
      this.healthRetry = setTimeout(() => {
        if (this.healthWatch === ac && this.connection.state === ConnectivityState.READY) this.startHealth();
      }, HEALTH_RETRY_MS);
      this.healthRetry.unref?.();
    }
  }
}

/** A `load` from a health reply as a LoadReport received at `at`; undefined when malformed. */
function loadReport(raw: unknown, at: number): LoadReport | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const { cpu, mem, inflight, latencyMs } = raw as Record<string, unknown>;
  if (!isCount(cpu) || !isCount(mem) || !isCount(inflight) || !isCount(latencyMs)) return undefined;
  return { cpu, mem, inflight, latencyMs, at };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}
