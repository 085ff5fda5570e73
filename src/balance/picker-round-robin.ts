/**
 * Round-robin: each call goes to the next READY subchannel in turn.
 *
 * The list is taken in the order the channel gives it (the order instances were added);
 * the first picker starts at a random position so that many clients started together do
 * not all hit the same instance first. A rebuilt picker continues after the subchannel
 * the previous one picked last, when it is still in the list, so a change in the ready set
 * does not reset the rotation.
 */
import type { Picker, PickerBuilder, PickerSubchannel, PickResult } from './picker.js';
import { registerPicker } from './picker.js';

export class RoundRobinPicker implements Picker {
  private next: number;
  private readonly results: PickResult[];

  constructor(
    readonly subchannels: readonly PickerSubchannel[],
    start: number,
  ) {
    // One frozen result per subchannel: pick() allocates nothing.
    this.results = subchannels.map((subchannel) => Object.freeze({ type: 'pick', subchannel }) as PickResult);
    this.next = subchannels.length === 0 ? 0 : ((start % subchannels.length) + subchannels.length) % subchannels.length;
  }

  pick(): PickResult {
    const n = this.results.length;
    if (n === 0) return { type: 'queue' };
    const r = this.results[this.next]!;
    this.next = this.next + 1 === n ? 0 : this.next + 1;
    return r;
  }

  /** The subchannel the next pick would return (for rebuilds and tests). */
  peek(): PickerSubchannel | undefined {
    return this.subchannels[this.next];
  }
}

export const roundRobin: PickerBuilder = Object.freeze({
  name: 'round-robin',
  build(ready: readonly PickerSubchannel[], _options: unknown, previous: Picker | undefined): Picker {
    let start = Math.floor(Math.random() * Math.max(1, ready.length));
    if (previous instanceof RoundRobinPicker) {
      const next = previous.peek();
      const at = next === undefined ? -1 : ready.indexOf(next);
      if (at >= 0) start = at;
    }
    return new RoundRobinPicker(ready, start);
  },
});

/** Register 'round-robin' (called once by the package index). */
export function setup(): void {
  registerPicker(roundRobin);
}
