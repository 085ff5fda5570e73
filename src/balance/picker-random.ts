/**
 * Random: each call goes to a READY subchannel chosen uniformly at random. No state, so
 * nothing to carry over rebuilds. `balancerConfig.random` replaces `Math.random` (tests).
 */
import type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickResult, RandomSource } from './picker.js';
import { configRandom, registerPicker } from './picker.js';

export class RandomPicker implements Picker {
  private readonly results: PickResult[];

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    private readonly random: RandomSource,
  ) {
    this.results = subchannels.map((subchannel) => Object.freeze({ type: 'pick', subchannel }) as PickResult);
  }

  pick(): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    return this.results[Math.min(n - 1, Math.floor(this.random() * n))]!;
  }
}

export const random: PickerBuilder = Object.freeze({
  name: 'random',
  build(ready: readonly PickerSubchannel[], options: PickerOptions): Picker {
    return new RandomPicker(ready, configRandom(options));
  },
});

/** Register 'random' (called once by the package index). */
export function setup(): void {
  registerPicker(random);
}
