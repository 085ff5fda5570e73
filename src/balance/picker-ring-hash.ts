/**
 * Ring hash: consistent hashing with virtual nodes and bounded load, for session affinity
 * (the same key goes to the same instance while it is there).
 *
 *   key ──hash──▶ ●──────────────▶ first virtual node clockwise ──▶ its subchannel
 *                 ring of 2³² points; each subchannel owns `virtualNodes × weight` points,
 *                 at hash("<id>#<k>")
 *
 * Stability: a subchannel's points depend on its id only, so when an instance joins or
 * leaves, only the keys whose nearest point changes move — about 1/N of them. A rebuild
 * reuses the points of the subchannels `previous` already had (no rehashing).
 *
 * Bounded load (Mirrokni et al., "Consistent Hashing with Bounded Loads", as in Envoy and
 * HAProxy): a subchannel is full when its `inflight` is at or above
 * ⌈c × (Σ inflight + 1) / N⌉; a key whose owner is full goes to the next subchannel
 * clockwise that is not, so a hot key spills over instead of overloading its owner.
 * `c` = `loadFactor` (1.25); `loadFactor: 0` turns the bound off.
 *
 * The key: `info.hashKey` (the call option), else the call metadata field named by
 * `hashMetadata`, else a random one (the call then has no affinity).
 *
 * Config: `virtualNodes` (100 per weight unit), `loadFactor` (1.25), `hashMetadata`
 * (none), `maxRingSize` (100000 points: weights are scaled down past it), `random`.
 * Per pick: one hash of the key, a binary search, no allocation.
 */
import { createError, ErrorCode } from '../errors.js';
import type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickInfo, PickResult, RandomSource } from './picker.js';
import { configNumber, configRandom, registerPicker } from './picker.js';

/** 32-bit hash of a string: FNV-1a over UTF-16 units, then murmur3's finalizer for avalanche. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface RingHashConfig {
  virtualNodes: number;
  loadFactor: number;
  hashMetadata: string | undefined;
  maxRingSize: number;
  random: RandomSource;
}

function resolveConfig(options: PickerOptions): RingHashConfig {
  const hm = options?.config?.hashMetadata;
  if (hm !== undefined && (typeof hm !== 'string' || hm === '')) throw createError(ErrorCode.INVALID_OPTIONS, `balancerConfig.hashMetadata: expected a metadata key, got ${JSON.stringify(hm)}`);
  const loadFactor = configNumber(options, 'loadFactor', 1.25, 0);
  if (loadFactor !== 0 && loadFactor < 1) throw createError(ErrorCode.INVALID_OPTIONS, `balancerConfig.loadFactor: expected 0 (no bound) or a number >= 1, got ${loadFactor}`);
  return Object.freeze({
    virtualNodes: configNumber(options, 'virtualNodes', 100, 1),
    loadFactor,
    hashMetadata: hm,
    maxRingSize: configNumber(options, 'maxRingSize', 100_000, 1),
    random: configRandom(options),
  });
}

export class RingHashPicker implements Picker {
  /** Sorted ring points. */
  readonly points: Uint32Array;
  /** For each point, the index of its subchannel. */
  readonly owners: Uint32Array;
  /** The points of each subchannel id (reused by rebuilds). */
  readonly pointsById: ReadonlyMap<string, Uint32Array>;
  private readonly results: PickResult[];

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    private readonly config: RingHashConfig,
    previous?: Picker,
  ) {
    this.results = subchannels.map((subchannel) => Object.freeze({ type: 'pick', subchannel }) as PickResult);
    const prior = previous instanceof RingHashPicker ? previous.pointsById : undefined;
    let weightSum = 0;
    for (const s of subchannels) weightSum += s.weight > 0 && Number.isFinite(s.weight) ? s.weight : 1;
    const scale = Math.min(1, config.maxRingSize / Math.max(1, weightSum * config.virtualNodes));
    const byId = new Map<string, Uint32Array>();
    let total = 0;
    for (const s of subchannels) {
      const w = s.weight > 0 && Number.isFinite(s.weight) ? s.weight : 1;
      const count = Math.max(1, Math.round(w * config.virtualNodes * scale));
      const old = prior?.get(s.id);
      let pts: Uint32Array;
      if (old !== undefined && old.length === count) pts = old;
      else {
        pts = new Uint32Array(count);
        for (let k = 0; k < count; k++) pts[k] = hash32(`${s.id}#${k}`);
      }
      byId.set(s.id, pts);
      total += count;
    }
    this.pointsById = byId;
    // Sort (point, owner) pairs by point; equal points (rare) ordered by id for determinism.
    const order: Array<[number, number]> = new Array(total);
    let at = 0;
    subchannels.forEach((s, i) => {
      for (const p of byId.get(s.id)!) order[at++] = [p, i];
    });
    order.sort((x, y) => x[0] - y[0] || (subchannels[x[1]]!.id < subchannels[y[1]]!.id ? -1 : 1));
    this.points = new Uint32Array(total);
    this.owners = new Uint32Array(total);
    for (let k = 0; k < total; k++) {
      this.points[k] = order[k]![0];
      this.owners[k] = order[k]![1];
    }
  }

  pick(info: PickInfo): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    const idx = this.ownerIndex(this.keyHash(info));
    return this.results[idx]!;
  }

  /** The hash of the call's key (see the module comment). */
  keyHash(info: PickInfo | undefined): number {
    let key = info?.hashKey;
    if (key === undefined && this.config.hashMetadata !== undefined) {
      const v = info?.metadata?.[this.config.hashMetadata];
      if (v !== undefined) key = typeof v === 'string' ? v : v.toString('latin1');
    }
    if (key === undefined) return Math.floor(this.config.random() * 0x1_0000_0000) >>> 0;
    return hash32(key);
  }

  /** The subchannel index a key hash goes to, with the load bound applied. */
  ownerIndex(h: number): number {
    const m = this.points.length;
    const lo = this.slot(h);
    const first = this.owners[lo]!;
    const c = this.config.loadFactor;
    const subs = this.subchannels;
    const n = subs.length;
    if (c === 0 || n === 1) return first;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += subs[i]!.inflight;
    const capacity = Math.ceil((c * (sum + 1)) / n);
    if (subs[first]!.inflight < capacity) return first;
    // Walk clockwise to the next subchannel under the bound (visiting each at most once in
    // effect: at most n distinct owners can be full, and at least one is under the bound).
    for (let k = 1; k < m; k++) {
      let j = lo + k;
      if (j >= m) j -= m;
      const o = this.owners[j]!;
      if (subs[o]!.inflight < capacity) return o;
    }
    return first;
  }

  /** The subchannel a key goes to, ignoring load (for tests and tools). */
  ownerOf(key: string): PickerSubchannel | undefined {
    if (this.subchannels.length === 0) return undefined;
    return this.subchannels[this.owners[this.slot(hash32(key))]!];
  }

  /** The first ring point at or after `h` (wrapping to 0): binary search. */
  private slot(h: number): number {
    const points = this.points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }
}

export const ringHash: PickerBuilder = Object.freeze({
  name: 'ring-hash',
  build(ready: readonly PickerSubchannel[], options: PickerOptions, previous: Picker | undefined): Picker {
    return new RingHashPicker(ready, resolveConfig(options), previous);
  },
  validate(options: PickerOptions): void {
    resolveConfig(options);
  },
});

/** Register 'ring-hash' (called once by the package index). */
export function setup(): void {
  registerPicker(ringHash);
}
