/** Smooth weighted round-robin (src/balance/picker-weighted.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { weighted, WeightedPicker } from '../../src/balance/picker-weighted.js';
import { countPicks, mockSubchannels, pickSequence } from '../helpers/mock-subchannel.js';

test('weighted - weights 5, 1, 1 give nginx\'s smooth sequence a a b a c a a, cycle after cycle', () => {
  const p = weighted.build(mockSubchannels(['a', 'b', 'c'], [5, 1, 1]), {}, undefined);
  const cycle = ['a', 'a', 'b', 'a', 'c', 'a', 'a'];
  assert.deepEqual(pickSequence(p, 21), [...cycle, ...cycle, ...cycle]);
});

test('weighted - each subchannel gets its weight\'s share', () => {
  const p = weighted.build(mockSubchannels(['a', 'b', 'c', 'd'], [1, 2, 3, 4]), {}, undefined);
  const counts = countPicks(p, 1000);
  assert.deepEqual(Object.fromEntries(counts), { a: 100, b: 200, c: 300, d: 400 });
});

test('weighted - equal weights are plain round-robin', () => {
  const p = weighted.build(mockSubchannels(['a', 'b', 'c']), {}, undefined);
  assert.deepEqual(pickSequence(p, 6), ['a', 'b', 'c', 'a', 'b', 'c']);
});

test('weighted - a rebuild keeps the current weights of the subchannels still there', () => {
  const [a, b, c, d] = mockSubchannels(['a', 'b', 'c', 'd'], [5, 1, 1, 1]);
  const first = weighted.build([a!, b!, c!], {}, undefined) as WeightedPicker;
  pickSequence(first, 3); // a a b: current a = 1, b = -4, c = 3
  const second = weighted.build([a!, b!, c!, d!], {}, first) as WeightedPicker;
  assert.deepEqual([...second.current], [1, -4, 3, 0]);
  // Continues the cycle (a c, as in a a b | a c a a) rather than restarting it.
  assert.deepEqual(pickSequence(second, 2), ['a', 'c']);
});

test('weighted - a weight change takes effect on rebuild', () => {
  const subs = mockSubchannels(['a', 'b'], [1, 1]);
  subs[1]!.weight = 3;
  const p = weighted.build(subs, {}, undefined);
  assert.deepEqual(Object.fromEntries(countPicks(p, 400)), { a: 100, b: 300 });
});
