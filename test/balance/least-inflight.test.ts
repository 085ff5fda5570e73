/** Least outstanding calls (src/balance/picker-least-inflight.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leastInflight, LeastInflightPicker } from '../../src/balance/picker-least-inflight.js';
import { MockSubchannel, pickCall, pickSequence, seededRandom } from '../helpers/mock-subchannel.js';

test('least-inflight - picks the subchannel with the fewest calls in flight', () => {
  const subs = [new MockSubchannel('a', { inflight: 3 }), new MockSubchannel('b', { inflight: 1 }), new MockSubchannel('c', { inflight: 2 })];
  const p = leastInflight.build(subs, { config: { random: seededRandom(1) } }, undefined);
  assert.deepEqual(pickSequence(p, 5), ['b', 'b', 'b', 'b', 'b']);
});

test('least-inflight - calls held open fill the subchannels evenly', () => {
  const subs = [new MockSubchannel('a', { inflight: 2 }), new MockSubchannel('b'), new MockSubchannel('c')];
  const p = leastInflight.build(subs, { config: { random: seededRandom(2) } }, undefined);
  for (let k = 0; k < 10; k++) pickCall(p);
  assert.deepEqual(subs.map((s) => s.inflight), [4, 4, 4]);
});

test('least-inflight - ties are broken round-robin', () => {
  const p = new LeastInflightPicker([new MockSubchannel('a'), new MockSubchannel('b'), new MockSubchannel('c')], 1);
  assert.deepEqual(pickSequence(p, 6), ['b', 'c', 'a', 'b', 'c', 'a']);
});

test('least-inflight - a rebuild continues the tie-break rotation', () => {
  const [a, b, c] = [new MockSubchannel('a'), new MockSubchannel('b'), new MockSubchannel('c')];
  const first = new LeastInflightPicker([a, b, c], 0);
  pickSequence(first, 1);
  const second = leastInflight.build([a, b, c], {}, first);
  assert.deepEqual(pickSequence(second, 3), ['b', 'c', 'a']);
});
