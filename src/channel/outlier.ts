/**
 * Outlier ejection: per-instance breakers inside a channel (docs/resilience.md).
 *
 * The channel reports how every call it routed ended (`record(id, error)`, from the
 * route's done callback); the detector keeps, per instance, its failures in a row and its
 * calls / successes in the current interval, and ejects an instance from picking:
 *
 *   - at once, after `consecutiveFailures` failures in a row (default 5);
 *   - at the end of an interval (default 10 s), when at least `minimumHosts` (3) instances
 *     made `minimumCalls` (20) calls each in it and the instance's success rate is below
 *     mean − `stdevFactor` (1.9) × stddev of those rates (Envoy's success-rate detection);
 *   - at once, on its first failure after it came back (it is on probation until a success).
 *
 *   ejected for baseEjectionMs × times ejected (≤ maxEjectionMs)
 *   ┌──────────┐  failure streak / low success rate   ┌─────────┐   time up   ┌───────────┐
 *   │ in use   │ ───────────────────────────────────▶ │ ejected  │ ──────────▶ │ probation │
 *   └──────────┘ ◀──────────── a success ──────────── └─────────┘ ◀── failure ─└───────────┘
 *
 * Never more than `maxEjectionPercent` (50 %) of the instances are ejected, and at least one
 * always stays (an ejection that would pass the limit is skipped and published as such);
 * the channel also ignores ejections when they would leave it nothing READY to pick.
 * `times ejected` goes down by one per interval an instance spends in use without an
 * ejection, so an instance that recovered for good is not punished for ever.
 *
 * Failures are statuses in `failureCodes` (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL);
 * RESOURCE_EXHAUSTED is a server asking for less traffic, not a broken one, and any other
 * status is the server answering. Cancellations count as nothing.
 *
 * Every decision is published on `skein:resilience:outlier` (only with subscribers).
 */
import diagnostics from 'node:diagnostics_channel';
import { createError, ErrorCode, isSkeinError } from '../errors.js';
import { OutlierDefaults } from '../resilience/defaults.js';
import { systemClock, type Clock } from '../util/clock.js';

/** The diagnostics channel of outlier decisions. */
export const OUTLIER_CHANNEL = 'skein:resilience:outlier';

/** Published on `skein:resilience:outlier`. */
export interface OutlierEvent {
  service: string;
  /** The instance id and address. */
  id: string;
  address: string;
  /** 'eject', 'return' (the ejection time is up), 'skipped' (the max ejection percent kept it in). */
  action: 'eject' | 'return' | 'skipped';
  /** 'consecutive-failures', 'success-rate', 'probe-failed', 'time-up'. */
  reason: string;
  /** How long it is ejected (0 unless 'eject'), ms. */
  ejectionMs: number;
  /** Times it has been ejected (decays by one per healthy interval). */
  ejections: number;
}

export interface OutlierOptions {
  /** Consecutive failures that eject an instance. @default 5 */
  consecutiveFailures?: number;
  /** Success-rate check interval (and window), ms. @default 10000 */
  intervalMs?: number;
  /** Eject below mean − stdevFactor × stddev of the success rates. @default 1.9 */
  stdevFactor?: number;
  /** Instances with `minimumCalls` needed for the success-rate check. @default 3 */
  minimumHosts?: number;
  /** Calls an instance needs in the interval for the success-rate check. @default 20 */
  minimumCalls?: number;
  /** Ejection time = this × times ejected, ms. @default 30000 */
  baseEjectionMs?: number;
  /** Longest ejection, ms. @default 300000 */
  maxEjectionMs?: number;
  /** Most instances ejected at once, percent; at least one always stays. @default 50 */
  maxEjectionPercent?: number;
  /** Statuses that count as failures. @default ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL'] */
  failureCodes?: readonly string[];
  /** Clock (tests). @default systemClock */
  clock?: Clock;
}

export interface OutlierStats {
  /** Ejections made (all reasons). */
  ejections: number;
  /** Ejections skipped because of `maxEjectionPercent`. */
  skipped: number;
  /** Instances that came back after their ejection time. */
  returned: number;
  /** Ids of the instances ejected now. */
  ejected: string[];
}

interface HostState {
  address: string;
  failuresInARow: number;
  calls: number;
  successes: number;
  ejected: boolean;
  probation: boolean;
  ejections: number;
  timer: unknown;
}

interface Resolved {
  consecutiveFailures: number;
  intervalMs: number;
  stdevFactor: number;
  minimumHosts: number;
  minimumCalls: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
  failureCodes: ReadonlySet<string>;
  clock: Clock;
}

function num(name: string, v: unknown, min: number, max = Infinity): number {
  if (!(typeof v === 'number' && v >= min && v <= max)) throw createError(ErrorCode.INVALID_OPTIONS, `outlierDetection.${name} must be a number in [${min}, ${max}], got ${String(v)}`);
  return v;
}

/** Apply the defaults (OutlierDefaults) and check every field; the result is frozen. */
export function resolveOutlierOptions(o: OutlierOptions = {}): Readonly<Resolved> {
  return Object.freeze({
    consecutiveFailures: num('consecutiveFailures', o.consecutiveFailures ?? OutlierDefaults.consecutiveFailures, 1),
    intervalMs: num('intervalMs', o.intervalMs ?? OutlierDefaults.intervalMs, 1),
    stdevFactor: num('stdevFactor', o.stdevFactor ?? OutlierDefaults.stdevFactor, 0),
    minimumHosts: num('minimumHosts', o.minimumHosts ?? OutlierDefaults.minimumHosts, 1),
    minimumCalls: num('minimumCalls', o.minimumCalls ?? OutlierDefaults.minimumCalls, 1),
    baseEjectionMs: num('baseEjectionMs', o.baseEjectionMs ?? OutlierDefaults.baseEjectionMs, 0),
    maxEjectionMs: num('maxEjectionMs', o.maxEjectionMs ?? OutlierDefaults.maxEjectionMs, 0),
    maxEjectionPercent: num('maxEjectionPercent', o.maxEjectionPercent ?? OutlierDefaults.maxEjectionPercent, 0, 100),
    failureCodes: new Set(o.failureCodes ?? OutlierDefaults.failureCodes),
    clock: o.clock ?? systemClock,
  });
}

const outlierChannel = diagnostics.channel(OUTLIER_CHANNEL);

function unref(handle: unknown): void {
  (handle as { unref?: () => void } | undefined)?.unref?.();
}

/** One channel's outlier detection. `onChange` fires (synchronously) when the ejected set changes. */
export class OutlierDetector {
  readonly options: Readonly<Resolved>;
  readonly #hosts = new Map<string, HostState>();
  readonly #stats = { ejections: 0, skipped: 0, returned: 0 };
  #sweep: unknown;
  #closed = false;

  /**
   * @param service for events.
   * @param total how many instances the channel has now (for `maxEjectionPercent`).
   * @param onChange called when an instance is ejected or comes back (never from the constructor).
   */
  constructor(
    readonly service: string,
    options: OutlierOptions,
    private readonly total: () => number,
    private readonly onChange: () => void,
  ) {
    this.options = resolveOutlierOptions(options);
  }

  /** Is instance `id` ejected now? */
  isEjected(id: string): boolean {
    return this.#hosts.get(id)?.ejected === true;
  }

  /** How a call routed to instance `id` at `address` ended (undefined: success). */
  record(id: string, address: string, error: unknown): void {
    if (this.#closed) return;
    let verdict: boolean; // true: failure
    if (error === undefined) verdict = false;
    else if (isSkeinError(error)) {
      if (error.code === ErrorCode.CANCELLED) return;
      verdict = this.options.failureCodes.has(error.statusName);
    } else verdict = true;
    let h = this.#hosts.get(id);
    if (h === undefined) {
      h = { address, failuresInARow: 0, calls: 0, successes: 0, ejected: false, probation: false, ejections: 0, timer: undefined };
      this.#hosts.set(id, h);
    }
    this.#armSweep();
    if (h.ejected) return; // a call picked before the ejection
    h.calls++;
    if (!verdict) {
      h.successes++;
      h.failuresInARow = 0;
      h.probation = false;
      return;
    }
    h.failuresInARow++;
    if (h.probation) this.#eject(id, h, 'probe-failed');
    else if (h.failuresInARow >= this.options.consecutiveFailures) this.#eject(id, h, 'consecutive-failures');
  }

  /** Forget an instance (it left the channel). */
  forget(id: string): void {
    const h = this.#hosts.get(id);
    if (h === undefined) return;
    if (h.timer !== undefined) this.options.clock.clearTimeout(h.timer);
    this.#hosts.delete(id);
  }

  stats(): OutlierStats {
    const ejected: string[] = [];
    for (const [id, h] of this.#hosts) if (h.ejected) ejected.push(id);
    return { ...this.#stats, ejected };
  }

  /** Stop every timer; nothing is ejected any more. */
  close(): void {
    this.#closed = true;
    if (this.#sweep !== undefined) this.options.clock.clearTimeout(this.#sweep);
    for (const h of this.#hosts.values()) if (h.timer !== undefined) this.options.clock.clearTimeout(h.timer);
    this.#hosts.clear();
  }

  #armSweep(): void {
    if (this.#sweep !== undefined || this.#closed) return;
    this.#sweep = this.options.clock.setTimeout(() => {
      this.#sweep = undefined;
      this.#checkSuccessRates();
      this.#armSweep();
    }, this.options.intervalMs);
    unref(this.#sweep);
  }

  /** End of an interval: Envoy-style success-rate ejection, then a new interval. */
  #checkSuccessRates(): void {
    const o = this.options;
    const rated: Array<[string, HostState, number]> = [];
    for (const [id, h] of this.#hosts) if (!h.ejected && h.calls >= o.minimumCalls) rated.push([id, h, h.successes / h.calls]);
    if (rated.length >= o.minimumHosts) {
      const mean = rated.reduce((s, r) => s + r[2], 0) / rated.length;
      const stddev = Math.sqrt(rated.reduce((s, r) => s + (r[2] - mean) ** 2, 0) / rated.length);
      const threshold = mean - o.stdevFactor * stddev;
      for (const [id, h, rate] of rated) if (rate < threshold) this.#eject(id, h, 'success-rate');
    }
    for (const h of this.#hosts.values()) {
      if (!h.ejected && !h.probation && h.failuresInARow === 0 && h.ejections > 0) h.ejections--;
      h.calls = 0;
      h.successes = 0;
    }
  }

  #eject(id: string, h: HostState, reason: string): void {
    const o = this.options;
    const total = this.total();
    let ejectedNow = 0;
    for (const x of this.#hosts.values()) if (x.ejected) ejectedNow++;
    const allowed = Math.min(Math.floor((total * o.maxEjectionPercent) / 100), total - 1);
    if (ejectedNow + 1 > allowed) {
      this.#stats.skipped++;
      h.failuresInARow = 0;
      this.#publish(id, h, 'skipped', reason, 0);
      return;
    }
    h.ejections++;
    const ms = Math.min(o.maxEjectionMs, o.baseEjectionMs * h.ejections);
    h.ejected = true;
    h.probation = false;
    h.failuresInARow = 0;
    this.#stats.ejections++;
    h.timer = o.clock.setTimeout(() => {
      h.timer = undefined;
      if (this.#closed || this.#hosts.get(id) !== h) return;
      h.ejected = false;
      h.probation = true;
      h.calls = 0;
      h.successes = 0;
      this.#stats.returned++;
      this.#publish(id, h, 'return', 'time-up', 0);
      this.onChange();
    }, ms);
    unref(h.timer);
    this.#publish(id, h, 'eject', reason, ms);
    this.onChange();
  }

  #publish(id: string, h: HostState, action: OutlierEvent['action'], reason: string, ejectionMs: number): void {
    if (!outlierChannel.hasSubscribers) return;
    const event: OutlierEvent = { service: this.service, id, address: h.address, action, reason, ejectionMs, ejections: h.ejections };
    outlierChannel.publish(event);
  }
}
