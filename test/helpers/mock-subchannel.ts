/**
 * Balancer test kit: `MockSubchannel` (a `PickerSubchannel` whose weight, inflight, load
 * and state a test sets by hand), a seeded random source, and helpers that drive a picker
 * deterministically — picks that hold their call open (inflight + 1) until the test
 * finishes them with a latency, as a channel would.
 *
 *   const rnd = seededRandom(42);
 *   const subs = mockSubchannels(['a', 'b', 'c']);
 *   const picker = p2cEwma.build(subs, { config: { random: rnd, clock } }, undefined);
 *   const call = pickCall(picker);            // inflight of the picked mock + 1
 *   call.finish(20);                          // inflight − 1, onDone({ latencyMs: 20 })
 *   countPicks(picker, 1000)                  // Map id → picks (each call finished at once)
 */
import assert from 'node:assert/strict';
import { weightOf, type LoadReport, type Picker, type PickerSubchannel, type PickInfo, type PickResult } from '../../src/balance/picker.js';
import type { Instance } from '../../src/discovery/types.js';
import type { SkeinError } from '../../src/errors.js';
import type { ConnectivityStateValue } from '../../src/session/connectivity.js';

export class MockSubchannel implements PickerSubchannel {
  readonly id: string;
  readonly address: string;
  instance: Instance;
  weight: number;
  inflight = 0;
  load: LoadReport | undefined;
  /** Where a test says this subchannel is (pickers never read it; tests build the ready set from it). */
  state: ConnectivityStateValue = 'READY';
  /** Picks of this subchannel through `pickCall` / `countPicks`. */
  picked = 0;

  constructor(id: string, options: { weight?: number; inflight?: number; load?: Partial<LoadReport>; metadata?: Record<string, string> } = {}) {
    this.id = id;
    this.address = `mock:${id}`;
    const metadata = { ...options.metadata };
    if (options.weight !== undefined) metadata.weight = String(options.weight);
    this.instance = { service: 'svc', id, address: this.address, metadata };
    this.weight = weightOf(this.instance);
    this.inflight = options.inflight ?? 0;
    if (options.load !== undefined) this.setLoad(options.load);
  }

  /** Set the load report (missing fields 0; `at` defaults to now). */
  setLoad(load: Partial<LoadReport> | undefined): this {
    this.load = load === undefined ? undefined : { cpu: 0, mem: 0, inflight: 0, latencyMs: 0, at: Date.now(), ...load };
    return this;
  }

  setState(state: ConnectivityStateValue): this {
    this.state = state;
    return this;
  }
}

/** Mocks with these ids (weights, when given, in the same order). */
export function mockSubchannels(ids: readonly string[], weights?: readonly number[]): MockSubchannel[] {
  return ids.map((id, i) => new MockSubchannel(id, weights?.[i] === undefined ? {} : { weight: weights[i]! }));
}

/** Those of `subs` whose state is READY: the set a channel would hand the builder. */
export function readySet(subs: readonly MockSubchannel[]): MockSubchannel[] {
  return subs.filter((s) => s.state === 'READY');
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). Same seed, same sequence. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A clock that stands still until `advance(ms)` (for `config.clock` of p2c-ewma). */
export class ManualClock {
  constructor(private t = 0) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

export function pickInfo(overrides: Partial<PickInfo> = {}): PickInfo {
  return { service: 'svc', method: 'm', metadata: undefined, hashKey: undefined, ...overrides };
}

/** One call in progress: picked, counted in its subchannel's inflight until `finish`. */
export interface MockCall {
  readonly subchannel: MockSubchannel;
  readonly result: Extract<PickResult, { type: 'pick' }>;
  /** End the call: inflight − 1 and the pick's onDone (once; later calls do nothing). */
  finish(latencyMs?: number, error?: SkeinError): void;
}

/** Pick once, expecting a pick of a MockSubchannel, and start the call (inflight + 1). */
export function pickCall(picker: Picker, info: PickInfo = pickInfo()): MockCall {
  const result = picker.pick(info);
  assert.equal(result.type, 'pick', `expected a pick, got ${result.type}`);
  const r = result as Extract<PickResult, { type: 'pick' }>;
  assert.ok(r.subchannel instanceof MockSubchannel, 'picked something that is not one of the mocks');
  const sub = r.subchannel;
  sub.inflight++;
  sub.picked++;
  let done = false;
  return {
    subchannel: sub,
    result: r,
    finish(latencyMs = 1, error?: SkeinError) {
      if (done) return;
      done = true;
      sub.inflight--;
      r.onDone?.({ error, latencyMs });
    },
  };
}

/** `n` picks, each call finished at once with `latencyMs(sub)` (1 ms by default): picks per id. */
export function countPicks(picker: Picker, n: number, options: { info?: PickInfo | (() => PickInfo); latencyMs?: (s: MockSubchannel) => number; beforeEach?: () => void } = {}): Map<string, number> {
  const counts = new Map<string, number>();
  for (let k = 0; k < n; k++) {
    options.beforeEach?.();
    const info = typeof options.info === 'function' ? options.info() : options.info;
    const call = pickCall(picker, info);
    counts.set(call.subchannel.id, (counts.get(call.subchannel.id) ?? 0) + 1);
    call.finish(options.latencyMs?.(call.subchannel) ?? 1);
  }
  return counts;
}

/** The ids of `n` picks (calls finished at once). */
export function pickSequence(picker: Picker, n: number, info?: PickInfo): string[] {
  const out: string[] = [];
  for (let k = 0; k < n; k++) {
    const call = pickCall(picker, info);
    out.push(call.subchannel.id);
    call.finish();
  }
  return out;
}
