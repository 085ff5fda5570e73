/** P2C over peak-EWMA latency (src/balance/picker-p2c-ewma.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SkeinError } from '../../src/errors.js';
import { p2cEwma, P2cEwmaPicker, PeakEwma, PENALTY } from '../../src/balance/picker-p2c-ewma.js';
import { roundRobin } from '../../src/balance/picker-round-robin.js';
import type { Picker } from '../../src/balance/picker.js';
import { ManualClock, MockSubchannel, mockSubchannels, pickCall, seededRandom, type MockCall } from '../helpers/mock-subchannel.js';

/**
 * A closed-loop load test in simulated time: `concurrency` calls always in flight, each
 * lasting its subchannel's latency; returns the picks per subchannel.
 */
function simulate(picker: Picker, clock: ManualClock, latencyOf: (id: string) => number, calls: number, concurrency: number): Map<string, number> {
  const counts = new Map<string, number>();
  const open: Array<{ end: number; call: MockCall }> = [];
  let started = 0;
  while (started < calls) {
    if (open.length < concurrency) {
      const call = pickCall(picker);
      counts.set(call.subchannel.id, (counts.get(call.subchannel.id) ?? 0) + 1);
      open.push({ end: clock.now() + latencyOf(call.subchannel.id), call });
      started++;
      continue;
    }
    open.sort((x, y) => x.end - y.end);
    const next = open.shift()!;
    clock.advance(next.end - clock.now());
    next.call.finish(latencyOf(next.call.subchannel.id));
  }
  return counts;
}

const latency = (id: string): number => (id === 'slow' ? 22 : 2);

test('p2c-ewma - a subchannel with a 20 ms latency history gets a small share', () => {
  const subs = mockSubchannels(['a', 'b', 'slow']);
  const clock = new ManualClock();
  const p = p2cEwma.build(subs, { config: { random: seededRandom(3), clock } }, undefined);
  const counts = simulate(p, clock, latency, 6000, 8);
  const share = (counts.get('slow') ?? 0) / 6000;
  assert.ok(share < 0.08, `slow share ${share}`);
  // The same load through round-robin gives it a third.
  const rr = simulate(roundRobin.build(subs, {}, undefined), clock, latency, 6000, 8);
  assert.equal(rr.get('slow'), 2000);
});

test('p2c-ewma - with equal latencies calls spread about evenly', () => {
  const subs = mockSubchannels(['a', 'b', 'c']);
  const clock = new ManualClock();
  const p = p2cEwma.build(subs, { config: { random: seededRandom(4), clock } }, undefined);
  const counts = simulate(p, clock, () => 5, 3000, 6);
  for (const n of counts.values()) assert.ok(n > 800 && n < 1200, `share ${n} of 3000`);
});

test('p2c-ewma - peak EWMA: a higher latency is taken at once, a lower one decays in over decayMs', () => {
  const clock = new ManualClock();
  const e = new PeakEwma(0, 10_000, clock);
  e.observe(20);
  assert.equal(e.cost, 20);
  clock.advance(10_000);
  e.observe(0);
  assert.ok(Math.abs(e.cost - 20 / Math.E) < 1e-9, `cost ${e.cost}`);
  e.observe(30);
  assert.equal(e.cost, 30);
  clock.advance(10_000);
  assert.ok(Math.abs(e.current() - 30 / Math.E) < 1e-9, 'idle time decays the average');
});

test('p2c-ewma - decayMs is configurable', () => {
  const clock = new ManualClock();
  const [a, b] = mockSubchannels(['a', 'b']);
  const p = p2cEwma.build([a!, b!], { config: { decayMs: 100, clock, random: seededRandom(1) } }, undefined) as P2cEwmaPicker;
  const st = p.states.get('a')!;
  st.observe(50);
  clock.advance(100);
  assert.ok(Math.abs(st.current() - 50 / Math.E) < 1e-9);
  assert.throws(() => p2cEwma.build([a!], { config: { decayMs: 0 } }, undefined), /decayMs/);
  assert.throws(() => p2cEwma.validate!({ config: { decayMs: '10s' } }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && /decayMs/.test(e.message));
});

test('p2c-ewma - the cost is ewma × (inflight + 1); a silent new subchannel with calls pending costs the penalty', () => {
  const clock = new ManualClock();
  const a = new MockSubchannel('a');
  const p = p2cEwma.build([a, new MockSubchannel('b')], { config: { clock, random: seededRandom(1) } }, undefined) as P2cEwmaPicker;
  assert.equal(p.cost(0), 0, 'optimistic before any call');
  a.inflight = 2;
  assert.equal(p.cost(0), PENALTY + 2);
  p.states.get('a')!.observe(10);
  assert.equal(p.cost(0), 30);
});

test('p2c-ewma - history survives a rebuild; a new subchannel starts at the mean of the others', () => {
  const clock = new ManualClock();
  const [a, b, c] = mockSubchannels(['a', 'b', 'c']);
  const first = p2cEwma.build([a!, b!], { config: { clock } }, undefined) as P2cEwmaPicker;
  first.states.get('a')!.observe(10);
  first.states.get('b')!.observe(30);
  const second = p2cEwma.build([a!, b!, c!], { config: { clock } }, first) as P2cEwmaPicker;
  assert.equal(second.states.get('a'), first.states.get('a'));
  assert.equal(second.states.get('c')!.cost, 20);
  assert.equal(second.states.get('c')!.observed, false);
});

test('p2c-ewma - onDone of a call picked by an older picker still counts', () => {
  const clock = new ManualClock();
  const subs = mockSubchannels(['a']);
  const first = p2cEwma.build(subs, { config: { clock } }, undefined) as P2cEwmaPicker;
  const call = pickCall(first);
  const second = p2cEwma.build(subs, { config: { clock } }, first) as P2cEwmaPicker;
  call.finish(40);
  assert.equal(second.states.get('a')!.cost, 40);
});

test('p2c-ewma - a failed call never lowers the average', () => {
  const clock = new ManualClock();
  const subs = mockSubchannels(['a']);
  const p = p2cEwma.build(subs, { config: { clock } }, undefined) as P2cEwmaPicker;
  p.states.get('a')!.observe(50);
  pickCall(p).finish(1, new SkeinError('UNAVAILABLE', 'refused'));
  assert.equal(p.states.get('a')!.cost, 50);
});
