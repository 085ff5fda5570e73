/**
 * Pickers: which instance of a service a call goes to (docs/channels.md §3).
 *
 * A channel keeps one subchannel per instance. Whenever the set of *pickable* subchannels
 * changes (one became READY, one failed, one reported NOT_SERVING, one was removed), the
 * channel asks the channel's `PickerBuilder` for a new `Picker` over the new list; the
 * picker is an immutable snapshot and `pick()` runs on the call path, synchronously, so
 * it must be cheap and must not allocate more than it needs.
 *
 *                 ready set changes
 *   Channel ───────────────────────────▶ PickerBuilder.build(ready, options, previous)
 *      │                                        │
 *      │ per call: pick({ service, method,      ▼
 *      │          metadata, hashKey })        Picker ──▶ { type: 'pick', subchannel, onDone? }
 *      │                                               │ { type: 'queue' }   wait for the next picker
 *      └───────────────────────────────────────────────│ { type: 'fail', error }   the call fails
 *
 * What pickers read: a weighted picker reads
 * `subchannel.weight` (from the instance's `weight` metadata); p2c / least-inflight read
 * `subchannel.inflight` and observe latencies through `onDone`; a ring-hash picker uses
 * `info.hashKey` and carries its ring over rebuilds through `previous`.
 *
 * Pickers register by name (STYLE item 2): each `picker-*.ts` file exports `setup()`,
 * which the package index calls; importing a file registers nothing.
 */
import { createError, ErrorCode, type SkeinError } from '../errors.js';
import type { Metadata } from '../wire/payloads.js';
import type { Instance } from '../discovery/types.js';

/** What a picker sees of a subchannel (an instance with a connection). */
export interface PickerSubchannel {
  /** Unique within the channel (the instance id). */
  readonly id: string;
  /** What the subchannel dials. */
  readonly address: string;
  /** The instance as the resolver reported it (metadata: version, zone, weight, tags, ...). */
  readonly instance: Instance;
  /** `instance.metadata.weight` as a positive number; 1 when absent or invalid. */
  readonly weight: number;
  /** Calls picked for this subchannel and not finished yet. */
  readonly inflight: number;
  /**
   * The instance's last load report, when its server sends them: the channel asks for
   * reports (on the instance's health watch) when its picker sets `usesLoad`. Optional:
   * older servers send none, and pickers must work without it.
   */
  readonly load?: LoadReport | undefined;
}

/** A server's report of its own load (read by the `load` picker). */
export interface LoadReport {
  /** CPU use, 0..1 (1 = every core busy). */
  readonly cpu: number;
  /** Memory use, 0..1 of what the process may use. */
  readonly mem: number;
  /** Calls in flight on the server, from every client. */
  readonly inflight: number;
  /** Recent call latency on the server, ms. */
  readonly latencyMs: number;
  /** When the report was taken: `Date.now()` ms. */
  readonly at: number;
}

/** Per-call information a picker may use. */
export interface PickInfo {
  readonly service: string;
  readonly method: string;
  /** The call's metadata, if any. */
  readonly metadata: Metadata | undefined;
  /** A key for hash-based pickers (session affinity), if the call gives one. */
  readonly hashKey: string | undefined;
}

/** How a picked call ended: given to `onDone` of the pick. */
export interface CallOutcome {
  /** Undefined when the call succeeded. */
  readonly error: SkeinError | undefined;
  /** From the pick to the end of the call, in ms. */
  readonly latencyMs: number;
}

/** The answer of a picker: a tagged union (STYLE item 2). */
export type PickResult =
  /** Send the call on this subchannel; `onDone` (if given) is called once when the call ends. */
  | { type: 'pick'; subchannel: PickerSubchannel; onDone?: (outcome: CallOutcome) => void }
  /** Wait: the call is retried with the next picker (bounded by its deadline). */
  | { type: 'queue' }
  /** Fail the call now with `error` (even with waitForReady). */
  | { type: 'fail'; error: SkeinError };

/** A snapshot over the READY subchannels; `pick()` is called synchronously per call. */
export interface Picker {
  pick(info: PickInfo): PickResult;
}

/** Options given to a builder (from the channel's options). */
export interface PickerOptions {
  /** Free-form settings for the picker, e.g. `{ replicas: 100 }` for a ring. */
  readonly config?: Readonly<Record<string, unknown>>;
}

/** Builds pickers; registered by name. */
export interface PickerBuilder {
  /** The name a channel asks for: `connect(Def, { discovery, balancer: 'round-robin' })`. */
  readonly name: string;
  /**
   * A picker over `ready` (never empty: with no READY subchannel the channel queues or
   * fails calls itself). `previous` is the picker being replaced, built by this builder for
   * the same channel, so that state (a ring, latency averages) can be carried over.
   * Called synchronously from a state change; never from inside `pick()`.
   */
  build(ready: readonly PickerSubchannel[], options: PickerOptions, previous: Picker | undefined): Picker;
  /**
   * Check `options.config` at once, throwing SKEIN_ERR_INVALID_OPTIONS for a bad setting.
   * Meant to be called when the channel is created (so `connect()` fails, not a later state
   * change); `build` throws the same errors for a config that was never validated.
   * Optional: builders without settings leave it out.
   */
  validate?(options: PickerOptions): void;
  /**
   * The pickers read `subchannel.load`: the channel then asks each instance's health watch
   * for load reports (every `balancerConfig.loadReportMs`, docs/balancing.md §load).
   * @default false (no load reports asked for)
   */
  readonly usesLoad?: boolean;
}

const builders = new Map<string, PickerBuilder>();

/** Register a picker builder under its name (replaces one of the same name). */
export function registerPicker(builder: PickerBuilder): void {
  if (typeof builder?.name !== 'string' || builder.name === '' || typeof builder.build !== 'function') throw createError(ErrorCode.INVALID_OPTIONS, 'registerPicker(): expected { name, build(ready, options, previous) }');
  builders.set(builder.name, builder);
}

/** The builder registered as `name`; SKEIN_ERR_INVALID_OPTIONS when there is none. */
export function pickerFor(name: string): PickerBuilder {
  const b = builders.get(name);
  if (b === undefined) throw createError(ErrorCode.INVALID_OPTIONS, `unknown balancer ${JSON.stringify(name)} (registered: ${[...builders.keys()].join(', ') || 'none'})`);
  return b;
}

/** Names of the registered pickers. */
export function pickerNames(): string[] {
  return [...builders.keys()];
}

/** A source of uniform numbers in [0, 1); pickers take one in their config (`random`) so tests are reproducible. */
export type RandomSource = () => number;

/** `config.random` when it is a function, else `Math.random`. */
export function configRandom(options: PickerOptions | undefined): RandomSource {
  const r = options?.config?.random;
  return typeof r === 'function' ? (r as RandomSource) : Math.random;
}

/**
 * `config[key]` as a finite number no smaller than `min`, else `fallback`; a present value
 * that is not such a number is SKEIN_ERR_INVALID_OPTIONS (a typo must not pass silently).
 */
export function configNumber(options: PickerOptions | undefined, key: string, fallback: number, min = 0): number {
  const v = options?.config?.[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw createError(ErrorCode.INVALID_OPTIONS, `balancerConfig.${key}: expected a number >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

/** `metadata.weight` as a positive finite number, else 1. */
export function weightOf(instance: Instance): number {
  const raw = instance.metadata?.weight;
  if (raw === undefined) return 1;
  const w = Number(raw);
  return Number.isFinite(w) && w > 0 ? w : 1;
}
