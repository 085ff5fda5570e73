/**
 * Weighted round-robin, smooth (nginx's algorithm): over a cycle of W = Σ weights picks,
 * each subchannel is picked `weight` times, and the picks of a heavy subchannel are spread
 * through the cycle instead of coming in a burst (weights 5, 1, 1 give a a b a c a a).
 *
 * Per pick, for every subchannel: `current += weight`; the one with the largest `current`
 * (the first in list order on a tie) is picked and its `current -= W`. O(n) per pick, no
 * allocation. Weights come from `subchannel.weight` (the instance's `weight` metadata), read
 * when the picker is built: the channel rebuilds the picker when an instance's metadata
 * changes. A rebuild keeps the `current` of the subchannels still present (by id), so a
 * change in the ready set does not restart the cycle.
 */
import type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickResult } from './picker.js';
import { registerPicker } from './picker.js';

export class WeightedPicker implements Picker {
  private readonly results: PickResult[];
  private readonly weights: Float64Array;
  /** nginx's `current_weight`, per subchannel. */
  readonly current: Float64Array;
  private readonly total: number;

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    previous?: Picker,
  ) {
    const n = subchannels.length;
    this.results = subchannels.map((subchannel) => Object.freeze({ type: 'pick', subchannel }) as PickResult);
    this.weights = new Float64Array(n);
    this.current = new Float64Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const w = subchannels[i]!.weight;
      this.weights[i] = Number.isFinite(w) && w > 0 ? w : 1;
      total += this.weights[i]!;
    }
    this.total = total;
    if (previous instanceof WeightedPicker) {
      const before = new Map<string, number>();
      previous.subchannels.forEach((s, i) => before.set(s.id, previous.current[i]!));
      for (let i = 0; i < n; i++) this.current[i] = before.get(subchannels[i]!.id) ?? 0;
    }
  }

  pick(): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    const cur = this.current;
    let best = 0;
    for (let i = 0; i < n; i++) {
      cur[i] += this.weights[i]!;
      if (cur[i]! > cur[best]!) best = i;
    }
    cur[best] -= this.total;
    return this.results[best]!;
  }
}

export const weighted: PickerBuilder = Object.freeze({
  name: 'weighted',
  build(ready: readonly PickerSubchannel[], _options: PickerOptions, previous: Picker | undefined): Picker {
    return new WeightedPicker(ready, previous);
  },
});

/** Register 'weighted' (called once by the package index). */
export function setup(): void {
  registerPicker(weighted);
}
