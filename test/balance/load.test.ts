/** Load-aware picker (src/balance/picker-load.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SkeinError } from '../../src/errors.js';
import { load, LoadPicker } from '../../src/balance/picker-load.js';
import { countPicks, MockSubchannel, pickSequence, seededRandom } from '../helpers/mock-subchannel.js';

function build(subs: MockSubchannel[], config: Record<string, unknown> = {}): LoadPicker {
  return load.build(subs, { config: { random: seededRandom(8), ...config } }, undefined) as LoadPicker;
}

test('load - prefers the low-cpu subchannel (inverse weights)', () => {
  const subs = [new MockSubchannel('idle', { load: { cpu: 0.1, mem: 0.2 } }), new MockSubchannel('busy1', { load: { cpu: 0.9, mem: 0.2 } }), new MockSubchannel('busy2', { load: { cpu: 0.9, mem: 0.2 } })];
  const counts = countPicks(build(subs), 3000);
  // weights 1/0.31 : 1/1.11 : 1/1.11 → the idle one gets ~ 64 %
  const idle = counts.get('idle')! / 3000;
  assert.ok(idle > 0.55 && idle < 0.75, `idle share ${idle}`);
  assert.ok(counts.get('busy1')! > 0 && counts.get('busy2')! > 0, 'the busy ones still get some (no herding)');
});

test('load - prefers the low-cpu subchannel (score mode, 0.4 cpu / 0.3 mem / 0.2 latency / 0.1 requests)', () => {
  const subs = [new MockSubchannel('idle', { load: { cpu: 0.1, mem: 0.2, latencyMs: 5 } }), new MockSubchannel('busy', { load: { cpu: 0.9, mem: 0.2, latencyMs: 5 } })];
  const counts = countPicks(build(subs, { mode: 'score' }), 2000);
  // scores 0.30 and 0.62 (equal latencies count 0.2 each): weights about 2 : 1
  assert.ok(counts.get('idle')! > counts.get('busy')! * 1.6, JSON.stringify([...counts]));
});

test('load - the coefficients are configurable', () => {
  // Memory-bound subchannel b; with beta 0 memory no longer counts.
  const subs = [new MockSubchannel('a', { load: { cpu: 0.5, mem: 0.1 } }), new MockSubchannel('b', { load: { cpu: 0.5, mem: 0.9 } })];
  const dflt = countPicks(build(subs), 2000);
  assert.ok(dflt.get('a')! > dflt.get('b')! * 1.5);
  const noMem = countPicks(build(subs, { beta: 0 }), 2000);
  assert.ok(Math.abs(noMem.get('a')! - noMem.get('b')!) < 200, JSON.stringify([...noMem]));
  const scoreNoCpu = countPicks(build(subs, { mode: 'score', scoreWeights: { mem: 0 } }), 2000);
  assert.ok(Math.abs(scoreNoCpu.get('a')! - scoreNoCpu.get('b')!) < 200, JSON.stringify([...scoreNoCpu]));
});

test('load - many calls in flight lower a subchannel\'s weight', () => {
  const subs = [new MockSubchannel('a', { load: { cpu: 0.2, inflight: 0 } }), new MockSubchannel('b', { load: { cpu: 0.2, inflight: 40 } })];
  const counts = countPicks(build(subs), 2000);
  assert.ok(counts.get('a')! > counts.get('b')! * 3, JSON.stringify([...counts]));
});

test('load - without any load report it behaves as least-inflight', () => {
  const subs = [new MockSubchannel('a', { inflight: 3 }), new MockSubchannel('b', { inflight: 0 }), new MockSubchannel('c', { inflight: 1 })];
  assert.deepEqual(pickSequence(build(subs), 4), ['b', 'b', 'b', 'b']);
});

test('load - stale reports count as missing; a subchannel without a report gets the mean weight', () => {
  const now = 1_000_000;
  const subs = [new MockSubchannel('a', { load: { cpu: 0.9, at: now - 60_000 } }), new MockSubchannel('b', { load: { cpu: 0.9, at: now } }), new MockSubchannel('c')];
  const counts = countPicks(build(subs, { now: () => now }), 3000);
  // a (stale) and c (none) get b's weight: an even spread.
  for (const n of counts.values()) assert.ok(n > 850 && n < 1150, JSON.stringify([...counts]));
  // All stale: least-inflight.
  subs[1]!.setLoad({ cpu: 0.9, at: now - 60_000 });
  subs[0]!.inflight = 1;
  subs[1]!.inflight = 1;
  assert.deepEqual(pickSequence(build(subs, { now: () => now }), 3), ['c', 'c', 'c']);
});

test('load - bad config is SKEIN_ERR_INVALID_OPTIONS', () => {
  const subs = [new MockSubchannel('a')];
  assert.throws(() => build(subs, { mode: 'fastest' }), /mode/);
  assert.throws(() => build(subs, { alpha: -1 }), /alpha/);
  assert.throws(() => build(subs, { scoreWeights: { cpu: 'x' } }), /scoreWeights\.cpu/);
  assert.throws(() => load.validate!({ config: { gamma: Infinity } }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && /gamma/.test(e.message));
});
