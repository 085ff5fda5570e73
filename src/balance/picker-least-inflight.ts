/**
 * Least-inflight (the seeds' "least connections"): each call goes to the READY subchannel
 * with the fewest calls picked and not finished (`subchannel.inflight`, kept by the
 * channel). Ties are broken round-robin: the scan starts one position further on each
 * pick, and the first subchannel with the minimum wins — so with equal loads (e.g. calls
 * that finish at once) it behaves as round-robin, and several clients started together do
 * not all pile on the first instance (the first picker starts at a random position).
 *
 * O(n) per pick, no allocation. `inflight` counts this client's calls only; for load as the
 * servers see it, see the `load` picker.
 */
import type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickResult, RandomSource } from './picker.js';
import { configRandom, registerPicker } from './picker.js';

export class LeastInflightPicker implements Picker {
  private readonly results: PickResult[];
  private next: number;

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    start: number,
  ) {
    this.results = subchannels.map((subchannel) => Object.freeze({ type: 'pick', subchannel }) as PickResult);
    const n = subchannels.length;
    this.next = n === 0 ? 0 : ((Math.floor(start) % n) + n) % n;
  }

  pick(): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    return this.results[this.pickIndex()]!;
  }

  /** Where the next tie-break scan starts (for rebuilds). */
  get rotation(): number {
    return this.next;
  }

  /** The index of the next pick (also used by the `load` picker's fallback). */
  pickIndex(): number {
    const subs = this.subchannels;
    const n = subs.length;
    const start = this.next;
    let best = start;
    let min = subs[start]!.inflight;
    for (let k = 1; k < n && min > 0; k++) {
      const i = start + k < n ? start + k : start + k - n;
      const v = subs[i]!.inflight;
      if (v < min) {
        min = v;
        best = i;
      }
    }
    this.next = start + 1 === n ? 0 : start + 1;
    return best;
  }
}

/** Where a rebuilt picker starts its tie-break rotation: after the previous one's, else at random. */
export function rotationStart(ready: readonly PickerSubchannel[], previous: Picker | undefined, random: RandomSource): number {
  if (previous instanceof LeastInflightPicker) {
    const at = ready.indexOf(previous.subchannels[previous.rotation]!);
    if (at >= 0) return at;
  }
  return Math.floor(random() * Math.max(1, ready.length));
}

export const leastInflight: PickerBuilder = Object.freeze({
  name: 'least-inflight',
  build(ready: readonly PickerSubchannel[], options: PickerOptions, previous: Picker | undefined): Picker {
    return new LeastInflightPicker(ready, rotationStart(ready, previous, configRandom(options)));
  },
});

/** Register 'least-inflight' (called once by the package index). */
export function setup(): void {
  registerPicker(leastInflight);
}
