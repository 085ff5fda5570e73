/**
 * Load-aware: each call goes to a subchannel drawn at random with a probability
 * proportional to a weight computed from the load its server reports
 * (`subchannel.load`: cpu, mem, inflight, latencyMs, at), read live on every pick.
 *
 * Two ways to turn a report into a weight (`mode`):
 *
 * - `'inverse'` (default): weight = 1 / (α·cpu + β·mem + γ·inflight + ε), with
 *   α = `alpha` (1), β = `beta` (1), γ = `gamma` (0.1), ε = 0.01 (an idle server does not get
 *   an infinite weight). cpu and mem are fractions (0..1), inflight a count of calls.
 * - `'score'` (the seeds' scoring): score = 0.4·cpu + 0.3·mem + 0.2·latency + 0.1·requests,
 *   latency and requests (inflight) each divided by their maximum over the ready set so
 *   every term is in 0..1; weight = 1 / (score + ε). The four coefficients come from
 *   `scoreWeights: { cpu, mem, latency, requests }`.
 *
 * `inflight` is the larger of the server's reported count (every client's calls, as of the
 * report) and this client's own `subchannel.inflight` (fresher).
 *
 * Why a weighted draw and not "the least loaded": reports are seconds old, and every
 * client sending everything to the instance that looked idle at the last report would
 * overload it until the next one (herding).
 *
 * Where reports come from: the builder says `usesLoad`, so the channel asks every
 * instance's `skein.health.watch` for a report every `loadReportMs` (1000; ≥ 100) and stores
 * each as `subchannel.load`, `at` being when it arrived (src/observe/load.ts for what the
 * server measures).
 *
 * Without reports: a report older than `maxAgeMs` (3 × `loadReportMs`, i.e. three missed
 * reports; against `Date.now()`, or `config.now()`) counts as missing. A subchannel without
 * one (its server sends none: an older server, `health: false`) gets the mean weight of
 * those with one; when none has one the picker behaves exactly as `least-inflight`.
 */
import { createError, ErrorCode } from '../errors.js';
import type { LoadReport, Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickResult, RandomSource } from './picker.js';
import { configNumber, configRandom, registerPicker } from './picker.js';
import { LeastInflightPicker, rotationStart } from './picker-least-inflight.js';
import { DEFAULT_LOAD_REPORT_MS, MIN_LOAD_REPORT_MS } from '../observe/load.js';

/** Keeps an idle server's weight finite. */
const EPSILON = 0.01;

export interface LoadConfig {
  mode: 'inverse' | 'score';
  alpha: number;
  beta: number;
  gamma: number;
  scoreWeights: { cpu: number; mem: number; latency: number; requests: number };
  loadReportMs: number;
  maxAgeMs: number;
  random: RandomSource;
  now: () => number;
}

function resolveConfig(options: PickerOptions): LoadConfig {
  const c = options?.config ?? {};
  const mode = c.mode ?? 'inverse';
  if (mode !== 'inverse' && mode !== 'score') throw createError(ErrorCode.INVALID_OPTIONS, `balancerConfig.mode: expected 'inverse' or 'score', got ${JSON.stringify(mode)}`);
  const sw = (c.scoreWeights ?? {}) as Record<string, unknown>;
  const scoreWeights = { cpu: 0.4, mem: 0.3, latency: 0.2, requests: 0.1 };
  for (const k of Object.keys(scoreWeights) as Array<keyof typeof scoreWeights>) {
    if (sw[k] === undefined) continue;
    const v = sw[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw createError(ErrorCode.INVALID_OPTIONS, `balancerConfig.scoreWeights.${k}: expected a number >= 0, got ${JSON.stringify(v)}`);
    scoreWeights[k] = v;
  }
  const loadReportMs = loadReportMsOf(options);
  return Object.freeze({
    mode,
    alpha: configNumber(options, 'alpha', 1),
    beta: configNumber(options, 'beta', 1),
    gamma: configNumber(options, 'gamma', 0.1),
    scoreWeights: Object.freeze(scoreWeights),
    loadReportMs,
    maxAgeMs: configNumber(options, 'maxAgeMs', STALE_REPORTS * loadReportMs),
    random: configRandom(options),
    now: typeof c.now === 'function' ? (c.now as () => number) : Date.now,
  });
}

export class LoadPicker implements Picker {
  private readonly results: PickResult[];
  private readonly weights: Float64Array;
  /** Used when no subchannel has a fresh report. */
  readonly fallback: LeastInflightPicker;

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    private readonly config: LoadConfig,
    fallbackStart: number,
  ) {
    this.results = subchannels.map((subchannel) => Object.freeze({ type: 'pick', subchannel }) as PickResult);
    this.weights = new Float64Array(subchannels.length);
    this.fallback = new LeastInflightPicker(subchannels, fallbackStart);
  }

  pick(): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    const i = this.computeWeights();
    if (i < 0) return this.results[this.fallback.pickIndex()]!;
    return this.results[i]!;
  }

  /**
   * Fill `weights` from the reports and draw one index; -1 when no report is fresh.
   * (Kept in one method so a pick is two O(n) passes and allocates nothing.)
   */
  private computeWeights(): number {
    const subs = this.subchannels;
    const n = subs.length;
    const w = this.weights;
    const cfg = this.config;
    const oldest = cfg.maxAgeMs > 0 ? cfg.now() - cfg.maxAgeMs : -Infinity;
    let maxLatency = 0;
    let maxInflight = 0;
    let fresh = 0;
    for (let i = 0; i < n; i++) {
      const r = subs[i]!.load;
      if (!usable(r, oldest)) continue;
      fresh++;
      if (r.latencyMs > maxLatency) maxLatency = r.latencyMs;
      const inf = Math.max(r.inflight, subs[i]!.inflight);
      if (inf > maxInflight) maxInflight = inf;
    }
    if (fresh === 0) return -1;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const s = subs[i]!;
      const r = s.load;
      if (!usable(r, oldest)) {
        w[i] = -1;
        continue;
      }
      const inf = Math.max(r.inflight, s.inflight);
      let denom: number;
      if (cfg.mode === 'inverse') denom = cfg.alpha * r.cpu + cfg.beta * r.mem + cfg.gamma * inf;
      else {
        const sw = cfg.scoreWeights;
        denom = sw.cpu * r.cpu + sw.mem * r.mem + sw.latency * (maxLatency > 0 ? r.latencyMs / maxLatency : 0) + sw.requests * (maxInflight > 0 ? inf / maxInflight : 0);
      }
      w[i] = 1 / (Math.max(0, denom) + EPSILON);
      sum += w[i]!;
    }
    // Subchannels without a fresh report: the mean weight of the others.
    if (fresh < n) {
      const mean = sum / fresh;
      for (let i = 0; i < n; i++) {
        if (w[i]! < 0) {
          w[i] = mean;
          sum += mean;
        }
      }
    }
    let x = cfg.random() * sum;
    for (let i = 0; i < n; i++) {
      x -= w[i]!;
      if (x < 0) return i;
    }
    return n - 1;
  }
}

function usable(r: LoadReport | undefined, oldest: number): r is LoadReport {
  return r !== undefined && r.at >= oldest && Number.isFinite(r.cpu) && Number.isFinite(r.mem) && Number.isFinite(r.inflight) && Number.isFinite(r.latencyMs);
}

/** A report is stale (by default) after this many report intervals without a newer one. */
export const STALE_REPORTS = 3;

/**
 * `balancerConfig.loadReportMs`: how often the channel asks each server for a load report,
 * ms (≥ 100). @default 1000. SKEIN_ERR_INVALID_OPTIONS for a bad value.
 */
export function loadReportMsOf(options: PickerOptions | undefined): number {
  return configNumber(options, 'loadReportMs', DEFAULT_LOAD_REPORT_MS, MIN_LOAD_REPORT_MS);
}

export const load: PickerBuilder = Object.freeze({
  name: 'load',
  usesLoad: true,
  build(ready: readonly PickerSubchannel[], options: PickerOptions, previous: Picker | undefined): Picker {
    const config = resolveConfig(options);
    const prev = previous instanceof LoadPicker ? previous.fallback : previous;
    return new LoadPicker(ready, config, rotationStart(ready, prev, config.random));
  },
  validate(options: PickerOptions): void {
    resolveConfig(options);
  },
});

/** Register 'load' (called once by the package index). */
export function setup(): void {
  registerPicker(load);
}
