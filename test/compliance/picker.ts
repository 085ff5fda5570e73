/**
 * Picker compliance suite: the behaviour every picker must have, written once and run
 * against each built-in picker (test/balance/compliance.test.ts).
 *
 *   pickerCompliance('p2c-ewma', p2cEwma, { config: () => ({ clock: new ManualClock() }) });
 *
 * Every build gets a seeded `random` in its config (plus what `options.config` adds), so a
 * failure replays the same way. Subchannels are `MockSubchannel`s; calls are driven with
 * `pickCall` (inflight + 1 until finished, then the pick's onDone), as a channel does.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { SkeinError } from '../../src/errors.js';
import { pickerFor, type Picker, type PickerBuilder, type PickerOptions, type PickInfo } from '../../src/balance/picker.js';
import { roundRobin } from '../../src/balance/picker-round-robin.js';
import { setupBalance } from '../../src/balance/index.js';
import { countPicks, MockSubchannel, mockSubchannels, pickCall, pickInfo, readySet, seededRandom, type MockCall } from '../helpers/mock-subchannel.js';

export interface PickerComplianceOptions {
  /** Extra config for every build (a fresh object per build; `random` is added). */
  config?: () => Record<string, unknown>;
  /** Called on every mock subchannel the suite builds a picker over (e.g. to give it a load report). */
  decorate?: (s: MockSubchannel) => void;
}

function isMember(picker: Picker, info: PickInfo, ready: readonly MockSubchannel[]): MockCall {
  const call = pickCall(picker, info);
  assert.ok(ready.includes(call.subchannel), `picked ${call.subchannel.id}, not in the ready set [${ready.map((s) => s.id).join(', ')}]`);
  return call;
}

export function pickerCompliance(name: string, builder: PickerBuilder, options: PickerComplianceOptions = {}): void {
  const opts = (seed: number): PickerOptions => ({ config: { ...options.config?.(), random: seededRandom(seed) } });
  const build = (ready: readonly MockSubchannel[], seed = 1, previous?: Picker): Picker => {
    if (options.decorate) for (const s of ready) options.decorate(s);
    return builder.build(ready, opts(seed), previous);
  };

  describe(`picker compliance: ${name}`, () => {
    test(`${name} - is registered under its name (${builder.name}) by setupBalance()`, () => {
      setupBalance();
      assert.equal(pickerFor(builder.name), builder);
    });

    test(`${name} - validate (when it has one) accepts the defaults and the suite's config`, () => {
      builder.validate?.({});
      builder.validate?.({ config: {} });
      builder.validate?.(opts(1));
    });

    test(`${name} - queues when it has no subchannel`, () => {
      const p = build([]);
      assert.deepEqual(p.pick(pickInfo()), { type: 'queue' });
      assert.deepEqual(p.pick(pickInfo({ hashKey: 'k' })), { type: 'queue' });
    });

    test(`${name} - never picks outside the ready set it was built with`, () => {
      const all = mockSubchannels(['a', 'b', 'c', 'd', 'e'], [1, 3, 1, 2, 1]);
      all[1]!.setState('TRANSIENT_FAILURE');
      all[3]!.setState('CONNECTING');
      const ready = readySet(all);
      const p = build(ready);
      const open: MockCall[] = [];
      for (let k = 0; k < 300; k++) {
        const call = isMember(p, pickInfo(k % 3 === 0 ? { hashKey: `key-${k % 7}` } : {}), ready);
        if (k % 4 === 0) open.push(call);
        else call.finish(1 + (k % 5));
      }
      for (const c of open) c.finish(2);
    });

    test(`${name} - spreads calls over every subchannel eventually`, () => {
      const ready = mockSubchannels(['a', 'b', 'c', 'd']);
      const counts = countPicks(build(ready, 7), 2000);
      for (const s of ready) assert.ok((counts.get(s.id) ?? 0) > 0, `${s.id} never picked: ${JSON.stringify([...counts])}`);
    });

    test(`${name} - a rebuild with previous of the same kind keeps to the new set`, () => {
      const [a, b, c, d] = mockSubchannels(['a', 'b', 'c', 'd']);
      const first = build([a!, b!, c!], 3);
      const open: MockCall[] = [];
      for (let k = 0; k < 30; k++) open.push(isMember(first, pickInfo(), [a!, b!, c!]));
      for (const call of open.splice(0, 15)) call.finish(3);
      const second = build([b!, c!, d!], 4, first);
      const counts = new Map<string, number>();
      for (let k = 0; k < 1000; k++) {
        const call = isMember(second, pickInfo(), [b!, c!, d!]);
        counts.set(call.subchannel.id, (counts.get(call.subchannel.id) ?? 0) + 1);
        call.finish(2);
        // Calls picked by the old picker end while the new one is in use.
        if (k < open.length) open[k]!.finish(5, k % 2 === 0 ? new SkeinError('UNAVAILABLE', 'gone') : undefined);
      }
      assert.ok((counts.get('d') ?? 0) > 0, 'the new subchannel is picked');
      assert.ok([a, b, c, d].every((s) => s!.inflight === 0), 'every call ended');
    });

    test(`${name} - a rebuild with previous from another picker type works`, () => {
      const ready = mockSubchannels(['a', 'b', 'c']);
      const foreign: Picker[] = [roundRobin.build(ready, {}, undefined), { pick: () => ({ type: 'queue' }) }];
      for (const prev of foreign) {
        const p = build(ready, 5, prev);
        const counts = countPicks(p, 600);
        for (const s of ready) assert.ok((counts.get(s.id) ?? 0) > 0, `${s.id} never picked after a rebuild from another picker`);
      }
    });

    test(`${name} - onDone is safe to call once, with a success or an error`, () => {
      const ready = mockSubchannels(['a', 'b']);
      const p = build(ready, 9);
      for (let k = 0; k < 50; k++) {
        const r = p.pick(pickInfo());
        assert.equal(r.type, 'pick');
        if (r.type !== 'pick') return;
        assert.ok(r.onDone === undefined || typeof r.onDone === 'function');
        r.onDone?.({ error: k % 3 === 0 ? new SkeinError('INTERNAL', 'boom') : undefined, latencyMs: k % 10 });
      }
      countPicks(p, 100);
    });

    test(`${name} - property: for random sets and pick sequences every pick is a member`, () => {
      const subSpec = fc.record({
        weight: fc.integer({ min: 1, max: 10 }),
        inflight: fc.integer({ min: 0, max: 5 }),
        load: fc.option(fc.record({ cpu: fc.double({ min: 0, max: 1, noNaN: true }), mem: fc.double({ min: 0, max: 1, noNaN: true }), inflight: fc.nat(50), latencyMs: fc.double({ min: 0, max: 500, noNaN: true }) }), { nil: undefined }),
      });
      const op = fc.oneof(
        fc.record({ kind: fc.constant('pick' as const), hold: fc.boolean(), latencyMs: fc.nat(100), key: fc.option(fc.string({ maxLength: 6 }), { nil: undefined }), fail: fc.boolean() }),
        fc.record({ kind: fc.constant('finish' as const) }),
        fc.record({ kind: fc.constant('rebuild' as const), keep: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }) }),
      );
      fc.assert(
        fc.property(fc.array(subSpec, { minLength: 1, maxLength: 8 }), fc.array(op, { maxLength: 60 }), fc.integer(), (specs, ops, seed) => {
          const all = specs.map((s, i) => new MockSubchannel(`s${i}`, { weight: s.weight, inflight: s.inflight, ...(s.load ? { load: s.load } : {}) }));
          let ready: MockSubchannel[] = all;
          let picker = build(ready, seed);
          const open: MockCall[] = [];
          for (const o of ops) {
            if (o.kind === 'pick') {
              const info = pickInfo({ hashKey: o.key, metadata: o.key === undefined ? undefined : { 'x-user': o.key } });
              if (ready.length === 0) {
                assert.equal(picker.pick(info).type, 'queue');
                continue;
              }
              const call = isMember(picker, info, ready);
              if (o.hold) open.push(call);
              else call.finish(o.latencyMs, o.fail ? new SkeinError('UNAVAILABLE', 'x') : undefined);
            } else if (o.kind === 'finish') {
              open.shift()?.finish(3);
            } else {
              ready = all.filter((_, i) => o.keep[i]);
              picker = build(ready, seed + 1, picker);
            }
          }
          for (const c of open) c.finish(1);
        }),
        { seed: 4242, numRuns: 150 },
      );
    });
  });
}
