/** Uniform random (src/balance/picker-random.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { random } from '../../src/balance/picker-random.js';
import { countPicks, mockSubchannels, pickSequence, seededRandom } from '../helpers/mock-subchannel.js';

test('random - spreads calls about evenly', () => {
  const p = random.build(mockSubchannels(['a', 'b', 'c', 'd']), { config: { random: seededRandom(11) } }, undefined);
  for (const n of countPicks(p, 4000).values()) assert.ok(n > 850 && n < 1150, `share ${n} of 4000`);
});

test('random - the same seed gives the same picks', () => {
  const subs = mockSubchannels(['a', 'b', 'c']);
  const seq = (): string[] => pickSequence(random.build(subs, { config: { random: seededRandom(5) } }, undefined), 20);
  assert.deepEqual(seq(), seq());
});
