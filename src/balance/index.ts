/**
 * Balancing: public names of the balance layer (docs/channels.md §Pickers,
 * docs/balancing.md). Every name is listed explicitly. Importing this module registers
 * nothing; `setupBalance()` registers the built-in pickers.
 */
import { setup as setupRoundRobin } from './picker-round-robin.js';
import { setup as setupWeighted } from './picker-weighted.js';
import { setup as setupLeastInflight } from './picker-least-inflight.js';
import { setup as setupRandom } from './picker-random.js';
import { setup as setupP2cEwma } from './picker-p2c-ewma.js';
import { setup as setupRingHash } from './picker-ring-hash.js';
import { setup as setupLoad } from './picker-load.js';

export { registerPicker, pickerFor, pickerNames, weightOf, configNumber, configRandom } from './picker.js';
export type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickInfo, PickResult, CallOutcome, LoadReport, RandomSource } from './picker.js';
export { roundRobin, RoundRobinPicker } from './picker-round-robin.js';
export { weighted, WeightedPicker } from './picker-weighted.js';
export { leastInflight, LeastInflightPicker } from './picker-least-inflight.js';
export { random, RandomPicker } from './picker-random.js';
export { p2cEwma, P2cEwmaPicker, PeakEwma } from './picker-p2c-ewma.js';
export { ringHash, RingHashPicker, hash32 } from './picker-ring-hash.js';
export { load, LoadPicker } from './picker-load.js';

/** Register the built-in pickers. Idempotent. */
export function setupBalance(): void {
  setupRoundRobin();
  setupWeighted();
  setupLeastInflight();
  setupRandom();
  setupP2cEwma();
  setupRingHash();
  setupLoad();
}
