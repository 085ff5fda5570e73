/** Consistent hashing with bounded load (src/balance/picker-ring-hash.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SkeinError } from '../../src/errors.js';
import { ringHash, RingHashPicker } from '../../src/balance/picker-ring-hash.js';
import { countPicks, MockSubchannel, mockSubchannels, pickCall, pickInfo, seededRandom } from '../helpers/mock-subchannel.js';

const keys = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);

function build(subs: MockSubchannel[], config: Record<string, unknown> = {}, previous?: RingHashPicker): RingHashPicker {
  return ringHash.build(subs, { config: { random: seededRandom(1), ...config } }, previous) as RingHashPicker;
}

test('ring-hash - the same key goes to the same subchannel', () => {
  const p = build(mockSubchannels(['a', 'b', 'c', 'd']));
  for (const key of ['user-1', 'user-2', 'cart-77']) {
    const counts = countPicks(p, 200, { info: pickInfo({ hashKey: key }) });
    assert.equal(counts.size, 1, `${key} went to ${[...counts.keys()].join(', ')}`);
    assert.equal([...counts.keys()][0], p.ownerOf(key)!.id);
  }
});

test('ring-hash - the key comes from the metadata field named by hashMetadata when the call has no hashKey', () => {
  const p = build(mockSubchannels(['a', 'b', 'c', 'd']), { hashMetadata: 'x-user' });
  const viaMeta = countPicks(p, 100, { info: pickInfo({ metadata: { 'x-user': 'ada' } }) });
  assert.deepEqual([...viaMeta.keys()], [p.ownerOf('ada')!.id]);
  const viaBuffer = countPicks(p, 10, { info: pickInfo({ metadata: { 'x-user': Buffer.from('ada') } }) });
  assert.deepEqual([...viaBuffer.keys()], [p.ownerOf('ada')!.id]);
  // hashKey wins over the metadata.
  const both = pickCall(p, pickInfo({ hashKey: 'bob', metadata: { 'x-user': 'ada' } }));
  both.finish();
  assert.equal(both.subchannel.id, p.ownerOf('bob')!.id);
});

test('ring-hash - without a key, calls spread at random', () => {
  const p = build(mockSubchannels(['a', 'b', 'c', 'd']));
  for (const n of countPicks(p, 4000).values()) assert.ok(n > 600 && n < 1400, `share ${n} of 4000`);
});

test('ring-hash - keys spread about evenly over the ring (100 virtual nodes each)', () => {
  const p = build(mockSubchannels(['a', 'b', 'c', 'd']));
  const counts = new Map<string, number>();
  for (const k of keys) counts.set(p.ownerOf(k)!.id, (counts.get(p.ownerOf(k)!.id) ?? 0) + 1);
  for (const n of counts.values()) assert.ok(n > 1500 && n < 3500, `${n} of 10000 keys`);
});

test('ring-hash - adding a 5th subchannel to 4 moves about 1/5 of the keys, all to the new one', () => {
  const four = mockSubchannels(['10.0.0.1:7000', '10.0.0.2:7000', '10.0.0.3:7000', '10.0.0.4:7000']);
  const fifth = new MockSubchannel('10.0.0.5:7000');
  const before = build(four);
  const after = build([...four, fifth], {}, before);
  let moved = 0;
  for (const k of keys) {
    const was = before.ownerOf(k)!;
    const now = after.ownerOf(k)!;
    if (was !== now) {
      moved++;
      assert.equal(now, fifth, `${k} moved between two old subchannels`);
    }
  }
  assert.ok(moved > 1000 && moved < 3000, `${moved} of 10000 keys moved`);
  // The ring of the old subchannels is reused, not recomputed.
  assert.equal(after.pointsById.get(four[0]!.id), before.pointsById.get(four[0]!.id));
});

test('ring-hash - removing a subchannel moves only its own keys', () => {
  const subs = mockSubchannels(['a', 'b', 'c', 'd', 'e']);
  const before = build(subs);
  const after = build(subs.filter((s) => s.id !== 'c'), {}, before);
  for (const k of keys) {
    const was = before.ownerOf(k)!;
    if (was.id !== 'c') assert.equal(after.ownerOf(k), was, `${k} moved though its owner stayed`);
  }
});

test('ring-hash - a heavier subchannel owns more of the ring', () => {
  const p = build(mockSubchannels(['a', 'b', 'c'], [1, 1, 2]));
  let heavy = 0;
  for (const k of keys) if (p.ownerOf(k)!.id === 'c') heavy++;
  assert.ok(heavy > 4000 && heavy < 6000, `${heavy} of 10000 keys on the weight-2 subchannel`);
});

test('ring-hash - bounded load: a key whose owner is over c × the average spills to the next subchannel', () => {
  const subs = mockSubchannels(['a', 'b', 'c', 'd']);
  const p = build(subs);
  const owner = p.ownerOf('hot') as MockSubchannel;
  owner.inflight = 10; // average (10 + 1) / 4; bound ⌈1.25 × 11 / 4⌉ = 4
  const spilled = pickCall(p, pickInfo({ hashKey: 'hot' }));
  assert.notEqual(spilled.subchannel, owner);
  // Always to the same next one, while the owner stays full.
  const again = pickCall(p, pickInfo({ hashKey: 'hot' }));
  assert.equal(again.subchannel, spilled.subchannel);
  spilled.finish();
  again.finish();
  // Back to the owner once it is under the bound (all at 2: bound ⌈1.25 × 9 / 4⌉ = 3).
  for (const s of subs) s.inflight = 2;
  assert.equal(pickCall(p, pickInfo({ hashKey: 'hot' })).subchannel, owner);
  // loadFactor 0: no bound.
  owner.inflight = 100;
  const unbounded = build(subs, { loadFactor: 0 });
  assert.equal(pickCall(unbounded, pickInfo({ hashKey: 'hot' })).subchannel, owner);
});

test('ring-hash - a hot key under many concurrent calls is spread, each subchannel within the bound', () => {
  const subs = mockSubchannels(['a', 'b', 'c', 'd']);
  const p = build(subs);
  for (let k = 0; k < 40; k++) pickCall(p, pickInfo({ hashKey: 'hot' }));
  for (const s of subs) assert.ok(s.inflight <= Math.ceil((1.25 * 40) / 4), `${s.id}: ${s.inflight} in flight`);
});

test('ring-hash - bad config is SKEIN_ERR_INVALID_OPTIONS', () => {
  const subs = mockSubchannels(['a']);
  assert.throws(() => build(subs, { loadFactor: 0.5 }), /loadFactor/);
  assert.throws(() => build(subs, { virtualNodes: 0 }), /virtualNodes/);
  assert.throws(() => build(subs, { hashMetadata: 3 }), /hashMetadata/);
  assert.throws(() => ringHash.validate!({ config: { loadFactor: 'high' } }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && /loadFactor/.test(e.message));
});
