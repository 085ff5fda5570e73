/**
 * P2C over peak-EWMA latency (Finagle's `P2CPeakEwma`, Linkerd's balancer): per call, take
 * two distinct READY subchannels at random and send the call to the one with the lower
 * cost, where
 *
 *     cost = ewma × (inflight + 1)
 *
 * `ewma` is a peak-sensitive moving average of the latencies observed through the picks'
 * `onDone`: a latency above the average replaces it at once (a slowing instance is avoided
 * at once), one below it is blended in with weight 1 − e^(−Δt/τ), Δt being the time since
 * the last update, τ the decay time (`decayMs`, 10 s by default). The average also decays
 * toward 0 while an instance gets no calls (it is read as an observation of 0), so an
 * instance that was slow is tried again after a while rather than starved for ever.
 *
 *              pick: two at random            onDone(latencyMs)
 *   ready ─────────────▶ a, b ──▶ lower cost ──────────────▶ ewma of the one picked
 *
 * Why two choices and not the best one: every client picking "the best" herds onto it;
 * two random choices avoid the worst instances nearly as well with no herding.
 *
 * Initial cost. A subchannel with no observation yet gets the mean ewma of the observed
 * subchannels at build time (neutral: neither flooded nor starved); when none has been
 * observed, 0 (optimistic), but with calls outstanding and still no answer it costs a large
 * penalty (Finagle's), so a new, silent instance is not flooded.
 *
 * Failures: a failed call never lowers the average (its latency is taken as at least the
 * current average), so an instance failing fast does not attract traffic (ejection of
 * failing instances is the outlier detector's job).
 *
 * The averages live in one state object per subchannel id, shared by a picker and the
 * pickers rebuilt from it (`previous`), so history survives changes of the ready set, and
 * `onDone` of a call picked by an older picker still counts. Per-pick allocation: none (the
 * result and its `onDone` are made once per subchannel).
 *
 * Config: `decayMs` (10000), `random` (Math.random), `clock` ({ now(): ms }, monotonic).
 */
import { systemClock, type Clock } from '../util/clock.js';
import type { CallOutcome, Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickResult, RandomSource } from './picker.js';
import { configNumber, configRandom, registerPicker } from './picker.js';

/** What the picker needs of a clock: monotonic ms. */
export type NowClock = Pick<Clock, 'now'>;

/** Cost of an instance that has calls outstanding and has never answered (Finagle: `Penalty`). */
export const PENALTY = 2 ** 36;

/** Peak-EWMA latency of one subchannel. */
export class PeakEwma {
  /** The average, ms; meaningful once `observed`. */
  cost: number;
  /** Whether a latency was observed (else `cost` is the initial guess). */
  observed = false;
  private stamp: number;

  constructor(
    initialMs: number,
    private readonly decayMs: number,
    private readonly clock: NowClock,
  ) {
    this.cost = initialMs;
    this.stamp = clock.now();
  }

  /** Fold in one latency (ms). */
  observe(rttMs: number): void {
    this.observed = true;
    this.decayTo(rttMs);
  }

  /** The average now (decayed toward 0 for the time since the last update). */
  current(): number {
    if (this.observed) this.decayTo(0);
    return this.cost;
  }

  private decayTo(rttMs: number): void {
    const now = this.clock.now();
    const dt = Math.max(0, now - this.stamp);
    this.stamp = now;
    if (rttMs > this.cost) this.cost = rttMs;
    else {
      const w = Math.exp(-dt / this.decayMs);
      this.cost = this.cost * w + rttMs * (1 - w);
    }
  }
}

export class P2cEwmaPicker implements Picker {
  /** Per subchannel id: its latency state (shared with rebuilt pickers). */
  readonly states: ReadonlyMap<string, PeakEwma>;
  private readonly ewmas: PeakEwma[];
  private readonly results: PickResult[];

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    private readonly random: RandomSource,
    decayMs: number,
    clock: NowClock,
    previous?: Picker,
  ) {
    const prior = previous instanceof P2cEwmaPicker ? previous.states : undefined;
    let sum = 0;
    let count = 0;
    for (const s of subchannels) {
      const st = prior?.get(s.id);
      if (st?.observed) {
        sum += st.current();
        count++;
      }
    }
    const initial = count === 0 ? 0 : sum / count;
    const states = new Map<string, PeakEwma>();
    this.ewmas = subchannels.map((s) => {
      const st = prior?.get(s.id) ?? new PeakEwma(initial, decayMs, clock);
      states.set(s.id, st);
      return st;
    });
    this.states = states;
    this.results = subchannels.map((subchannel, i) => {
      const st = this.ewmas[i]!;
      const onDone = (o: CallOutcome): void => st.observe(o.error === undefined ? o.latencyMs : Math.max(o.latencyMs, st.cost));
      return Object.freeze({ type: 'pick', subchannel, onDone }) as PickResult;
    });
  }

  pick(): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    if (n === 1) return this.results[0]!;
    const a = Math.min(n - 1, Math.floor(this.random() * n));
    let b = Math.min(n - 2, Math.floor(this.random() * (n - 1)));
    if (b >= a) b++;
    const ca = this.cost(a);
    const cb = this.cost(b);
    if (cb < ca) return this.results[b]!;
    if (ca < cb) return this.results[a]!;
    return this.subchannels[b]!.inflight < this.subchannels[a]!.inflight ? this.results[b]! : this.results[a]!;
  }

  /** The cost of subchannel `i` now: ewma × (inflight + 1), or the penalty (see the module comment). */
  cost(i: number): number {
    const st = this.ewmas[i]!;
    const inflight = this.subchannels[i]!.inflight;
    const ewma = st.current();
    if (ewma === 0 && !st.observed && inflight > 0) return PENALTY + inflight;
    return ewma * (inflight + 1);
  }
}

function configClock(options: PickerOptions): NowClock {
  const c = options?.config?.clock as NowClock | undefined;
  return c !== undefined && typeof c.now === 'function' ? c : systemClock;
}

export const p2cEwma: PickerBuilder = Object.freeze({
  name: 'p2c-ewma',
  build(ready: readonly PickerSubchannel[], options: PickerOptions, previous: Picker | undefined): Picker {
    return new P2cEwmaPicker(ready, configRandom(options), configNumber(options, 'decayMs', 10_000, 1), configClock(options), previous);
  },
  validate(options: PickerOptions): void {
    configNumber(options, 'decayMs', 10_000, 1);
  },
});

/** Register 'p2c-ewma' (called once by the package index). */
export function setup(): void {
  registerPicker(p2cEwma);
}
