/**
 * Pickers: round-robin over mock subchannels, the registry of pickers by name, and a
 * custom picker plugged into a real channel (queue / fail / onDone).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pickerFor, registerPicker, roundRobin, SkeinError, type CallOutcome, type Instance, type PickerSubchannel, type PickResult } from '../../src/index.js';
import { RoundRobinPicker } from '../../src/balance/picker-round-robin.js';
import { weightOf } from '../../src/balance/picker.js';
import { fakeNamespace } from './_fake-discovery.js';
import { channelClient, closeAll, startEcho, waitReady, type Named } from './_helpers.js';
import { waitFor } from '../helpers/wait.js';

function sub(id: string, metadata: Record<string, string> = {}): PickerSubchannel {
  const instance: Instance = { service: 'svc', id, address: id, metadata };
  return { id, address: id, instance, weight: weightOf(instance), inflight: 0 };
}

const info = { service: 'svc', method: 'm', metadata: undefined, hashKey: undefined };

function picks(p: { pick(i: typeof info): PickResult }, n: number): string[] {
  return Array.from({ length: n }, () => {
    const r = p.pick(info);
    assert.equal(r.type, 'pick');
    return (r as { subchannel: PickerSubchannel }).subchannel.id;
  });
}

describe('picker round-robin', () => {
  test('picker round-robin - cycles through every READY subchannel in turn', () => {
    const subs = [sub('a'), sub('b'), sub('c')];
    const p = new RoundRobinPicker(subs, 0);
    assert.deepEqual(picks(p, 7), ['a', 'b', 'c', 'a', 'b', 'c', 'a']);
  });

  test('picker round-robin - n picks over n subchannels hit each once, wherever it starts', () => {
    const subs = [sub('a'), sub('b'), sub('c'), sub('d')];
    for (let k = 0; k < 20; k++) {
      const p = roundRobin.build(subs, {}, undefined);
      assert.deepEqual(picks(p, 4).sort(), ['a', 'b', 'c', 'd']);
    }
  });

  test('picker round-robin - a rebuild continues the rotation where the previous picker was', () => {
    const a = sub('a');
    const b = sub('b');
    const c = sub('c');
    const first = new RoundRobinPicker([a, b, c], 0);
    assert.deepEqual(picks(first, 1), ['a']);
    const second = roundRobin.build([a, b, c, sub('d')], {}, first);
    assert.deepEqual(picks(second, 4), ['b', 'c', 'd', 'a']);
  });

  test('picker round-robin - with nothing to pick it queues', () => {
    assert.deepEqual(new RoundRobinPicker([], 3).pick(), { type: 'queue' });
  });

  test('picker registry - round-robin is registered; an unknown name is INVALID_OPTIONS', () => {
    assert.equal(pickerFor('round-robin'), roundRobin);
    assert.throws(() => pickerFor('nope'), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && /unknown balancer "nope"/.test(e.message));
    assert.throws(() => registerPicker({ name: '', build: () => ({ pick: () => ({ type: 'queue' }) }) }), /registerPicker/);
  });

  test('picker registry - weight comes from the instance metadata (1 when absent or bad)', () => {
    assert.equal(sub('a', { weight: '3' }).weight, 3);
    assert.equal(sub('a', { weight: '-1' }).weight, 1);
    assert.equal(sub('a', { weight: 'x' }).weight, 1);
    assert.equal(sub('a').weight, 1);
  });
});

describe('picker in a channel', () => {
  const servers: Named[] = [];
  after(() => closeAll(...servers.map((s) => s.server)));

  test('picker in a channel - a custom picker gets the READY subchannels, per-call info and outcomes', async () => {
    const { ns, url } = fakeNamespace();
    const a = await startEcho('a');
    const b = await startEcho('b');
    servers.push(a, b);
    ns.add({ service: 'echo', address: a.address });
    ns.add({ service: 'echo', address: b.address });
    const outcomes: Array<{ method: string; ok: boolean }> = [];
    let builtWith: string[] = [];
    let mode: 'last' | 'fail' = 'last';
    registerPicker({
      name: 'test-last',
      build(ready) {
        builtWith = ready.map((s) => s.address).sort();
        return {
          pick(i) {
            if (mode === 'fail') return { type: 'fail', error: new SkeinError('RESOURCE_EXHAUSTED', 'dropped by the picker') };
            return { type: 'pick', subchannel: ready[ready.length - 1]!, onDone: (o: CallOutcome) => outcomes.push({ method: i.method, ok: o.error === undefined }) };
          },
        };
      },
    });
    const client = channelClient(url, { balancer: 'test-last' });
    try {
      await waitReady(client, [a.address, b.address]);
      assert.deepEqual(builtWith, [a.address, b.address].sort());
      const r1 = await client.say({ text: 'x' });
      const r2 = await client.say({ text: 'y' });
      assert.equal(r1.by, r2.by, 'the picker chose the same subchannel both times');
      const replies: number[] = [];
      for await (const { i } of client.count({ n: 3 })) replies.push(i);
      assert.deepEqual(replies, [1, 2, 3]);
      await waitFor(() => outcomes.length === 3, { what: 'three outcomes' });
      assert.deepEqual(outcomes, [
        { method: 'say', ok: true },
        { method: 'say', ok: true },
        { method: 'count', ok: true },
      ]);
      assert.ok(client.channel.subchannels.every((s) => s.inflight === 0), 'in-flight counts back to 0');
      mode = 'fail';
      await assert.rejects(client.say({ text: 'z' }), (e: SkeinError) => e.statusName === 'RESOURCE_EXHAUSTED' && /dropped by the picker/.test(e.message));
    } finally {
      await client.close();
    }
  });
});
