/**
 * Balancing: public names of the balance layer (docs/channels.md §Pickers). Every name is
 * listed explicitly. Importing this module registers nothing; `setupBalance()` registers
 * the built-in pickers (round-robin).
 */
import { setup as setupRoundRobin } from './picker-round-robin.js';

export { registerPicker, pickerFor, pickerNames, weightOf } from './picker.js';
export type { Picker, PickerBuilder, PickerOptions, PickerSubchannel, PickInfo, PickResult, CallOutcome } from './picker.js';
export { roundRobin, RoundRobinPicker } from './picker-round-robin.js';

/** Register the built-in pickers. Idempotent. */
export function setupBalance(): void {
  setupRoundRobin();
}
