/**
 * Channels over the fake discovery plugin and real servers on 127.0.0.1: following the
 * resolver, the aggregated state, fail-fast and waitForReady with no instances, a
 * registry outage, and skipping NOT_SERVING instances.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectivityState, connect, type SkeinError, type StateChange } from '../../src/index.js';
import { fakeNamespace } from './_fake-discovery.js';
import { channelClient, closeAll, Echo, spread, startEcho, waitReady, type Named } from './_helpers.js';
import { freePort } from '../cli/run.js';
import { once, waitFor, withTimeout } from '../helpers/wait.js';

describe('channel', () => {
  const servers: Named[] = [];
  const start = async (name: string): Promise<Named> => {
    const s = await startEcho(name);
    servers.push(s);
    return s;
  };
  after(() => closeAll(...servers.map((s) => s.server)));

  test('channel - follows added and removed instances, one subchannel each', async () => {
    const { ns, url } = fakeNamespace();
    const a = await start('a');
    const b = await start('b');
    ns.add({ service: 'echo', address: a.address });
    ns.add({ service: 'other', address: b.address }); // another service: not ours
    const client = channelClient(url);
    try {
      await waitReady(client, [a.address]);
      assert.deepEqual(Object.fromEntries(await spread(client, 4)), { a: 4 });

      const added = once(client.channel, 'add');
      ns.add({ service: 'echo', address: b.address, metadata: { zone: 'z1' } });
      const [sub] = (await added) as [{ address: string; instance: { metadata: Record<string, string> } }];
      assert.equal(sub.address, b.address);
      assert.deepEqual(sub.instance.metadata, { zone: 'z1' });
      await waitReady(client, [a.address, b.address]);
      assert.deepEqual(Object.fromEntries(await spread(client, 6)), { a: 3, b: 3 });

      const updated = once(client.channel, 'update');
      ns.update({ service: 'echo', id: b.address, address: b.address, metadata: { zone: 'z2' } });
      await updated;
      assert.deepEqual(client.channel.subchannels.find((s) => s.address === b.address)!.instance.metadata, { zone: 'z2' });
      assert.equal(client.channel.subchannels.length, 2, 'an update keeps the subchannel');

      const removed = once(client.channel, 'remove');
      ns.remove('echo', a.address);
      await removed;
      assert.deepEqual(client.channel.instances.map((i) => i.address), [b.address]);
      await waitReady(client, [b.address]);
      assert.deepEqual(Object.fromEntries(await spread(client, 4)), { b: 4 });
    } finally {
      await client.close();
    }
    assert.equal(ns.resolversClosed, 1, 'close() closes the resolver');
  });

  test('channel - aggregated state: IDLE, CONNECTING, TRANSIENT_FAILURE, READY, SHUTDOWN', async () => {
    const { ns, url } = fakeNamespace();
    const dead = await freePort();
    ns.add({ service: 'echo', address: `127.0.0.1:${dead}` });
    const client = channelClient(url, { eager: false, backoff: { initialMs: 50, maxMs: 100 } });
    const seen: string[] = [];
    const it = client.status();
    const collecting = (async () => {
      for await (const c of it) seen.push(c.state);
    })();
    assert.equal(client.state, ConnectivityState.IDLE);
    client.channel.start();
    await waitFor(() => client.state === ConnectivityState.TRANSIENT_FAILURE, { what: 'TRANSIENT_FAILURE (only a dead instance)' });
    await assert.rejects(client.say({ text: 'x' }), (e: SkeinError) => e.statusName === 'UNAVAILABLE' && e.code === 'SKEIN_ERR_NOT_READY' && e.message.includes(`127.0.0.1:${dead}`));
    const live = await start('live');
    ns.add({ service: 'echo', address: live.address });
    await withTimeout(client.ready({ timeout: 5000 }), 6000, 'ready()');
    assert.equal(client.state, ConnectivityState.READY);
    assert.equal((await client.say({ text: 'x' })).by, 'live', 'only the live instance is picked');
    await client.close();
    await withTimeout(collecting, 2000, 'status() to end after SHUTDOWN');
    const order = ['CONNECTING', 'TRANSIENT_FAILURE', 'READY', 'SHUTDOWN'];
    let at = 0;
    for (const s of seen) if (s === order[at]) at++;
    assert.equal(at, order.length, `states ${seen.join(' → ')} should pass through ${order.join(' → ')}`);
    assert.equal(seen[seen.length - 1], 'SHUTDOWN');
  });

  test('channel - no instances: fail fast with UNAVAILABLE; waitForReady waits for the first one', async () => {
    const { ns, url } = fakeNamespace();
    const client = channelClient(url);
    try {
      await waitFor(() => client.state === ConnectivityState.TRANSIENT_FAILURE, { what: 'TRANSIENT_FAILURE with an empty list' });
      await assert.rejects(client.say({ text: 'x' }), (e: SkeinError) => e.statusName === 'UNAVAILABLE' && /lists no instances/.test(e.message));
      const stream = client.count({ n: 1 });
      await assert.rejects(
        (async () => {
          for await (const _ of stream);
        })(),
        (e: SkeinError) => e.statusName === 'UNAVAILABLE',
      );
      // waitForReady with a deadline and nothing coming: DEADLINE_EXCEEDED.
      await assert.rejects(client.say({ text: 'x' }, { waitForReady: true, timeout: 50 }), (e: SkeinError) => e.statusName === 'DEADLINE_EXCEEDED' && /waiting for an instance of echo/.test(e.message));
      // waitForReady: the call waits; an instance appears; the call goes there.
      const waiting = client.say({ text: 'late' }, { waitForReady: true, timeout: 5000 });
      const ac = new AbortController();
      const cancelled = client.say({ text: 'never' }, { waitForReady: true, signal: ac.signal });
      ac.abort();
      await assert.rejects(cancelled, (e: SkeinError) => e.statusName === 'CANCELLED');
      const s = await start('first');
      ns.add({ service: 'echo', address: s.address });
      assert.deepEqual(await waiting, { text: 'late', by: 'first' });
    } finally {
      await client.close();
    }
    await assert.rejects(client.say({ text: 'x' }), (e: SkeinError) => e.code === 'SKEIN_ERR_CLOSED');
  });

  test('channel - registry outage: calls keep going to the instances already known', async () => {
    const { ns, url } = fakeNamespace();
    const a = await start('a');
    const b = await start('b');
    ns.add({ service: 'echo', address: a.address });
    ns.add({ service: 'echo', address: b.address });
    const client = channelClient(url);
    try {
      await waitReady(client, [a.address, b.address]);
      const errors: SkeinError[] = [];
      client.channel.on('resolverError', (e) => errors.push(e));
      ns.outage();
      await waitFor(() => errors.length >= 1, { what: 'the resolver error reaching the channel' });
      assert.equal(client.state, ConnectivityState.READY);
      assert.deepEqual(Object.fromEntries(await spread(client, 10)), { a: 5, b: 5 });
      assert.match(client.channel.lastResolverError?.message ?? '', /unreachable/);

      // The resolver's watch gives up (throws): the channel watches again by itself, and
      // meanwhile nothing changes for the calls.
      const watches = ns.watchesStarted;
      ns.breakWatches();
      await waitFor(() => ns.watchesStarted > watches, { what: 'the channel to restart its watch' });
      assert.deepEqual(Object.fromEntries(await spread(client, 10)), { a: 5, b: 5 });

      // Back: the resync is applied (b left during the outage).
      ns.instances.get('echo')!.delete(b.address);
      ns.recover();
      await waitFor(() => client.channel.instances.length === 1, { what: 'the resync to remove b' });
      assert.equal(client.channel.lastResolverError, undefined);
      assert.deepEqual(Object.fromEntries(await spread(client, 3)), { a: 3 });
    } finally {
      await client.close();
    }
  });

  test('channel - the resolver failing before its first answer fails calls fast, waitForReady waits', async () => {
    const { ns, url } = fakeNamespace();
    ns.outage('registry down at start');
    const client = channelClient(url);
    try {
      await waitFor(() => client.state === ConnectivityState.TRANSIENT_FAILURE, { what: 'TRANSIENT_FAILURE' });
      await assert.rejects(client.say({ text: 'x' }), (e: SkeinError) => e.statusName === 'UNAVAILABLE' && /cannot resolve it at fake:\/\/.*registry down at start/.test(e.message));
      const waiting = client.say({ text: 'w' }, { waitForReady: true, timeout: 5000 });
      const s = await start('after-outage');
      ns.down = undefined;
      ns.add({ service: 'echo', address: s.address });
      ns.recover();
      assert.equal((await waiting).by, 'after-outage');
    } finally {
      await client.close();
    }
  });

  test('channel - an instance reporting NOT_SERVING is skipped until it serves again', async () => {
    const { ns, url } = fakeNamespace();
    const a = await start('a');
    const b = await start('b');
    ns.add({ service: 'echo', address: a.address });
    ns.add({ service: 'echo', address: b.address });
    const client = channelClient(url);
    try {
      await waitReady(client, [a.address, b.address]);
      a.server.health!.set('echo', 'NOT_SERVING');
      await waitReady(client, [b.address]);
      const subA = client.channel.subchannels.find((s) => s.address === a.address)!;
      assert.equal(subA.health, 'NOT_SERVING');
      assert.equal(subA.connection.state, ConnectivityState.READY, 'still connected, only not picked');
      assert.deepEqual(Object.fromEntries(await spread(client, 6)), { b: 6 });
      a.server.health!.set('echo', 'SERVING');
      await waitReady(client, [a.address, b.address]);
      assert.deepEqual(Object.fromEntries(await spread(client, 6)), { a: 3, b: 3 });
      // All NOT_SERVING: no instance to pick, fail fast.
      a.server.health!.set('echo', 'NOT_SERVING');
      b.server.health!.set('echo', 'NOT_SERVING');
      await waitFor(() => client.state === ConnectivityState.TRANSIENT_FAILURE, { what: 'TRANSIENT_FAILURE' });
      await assert.rejects(client.say({ text: 'x' }), (e: SkeinError) => e.statusName === 'UNAVAILABLE' && /NOT_SERVING/.test(e.message));
      a.server.health!.set('echo', 'SERVING');
      b.server.health!.set('echo', 'SERVING');
    } finally {
      await client.close();
    }
  });

  test('channel - an instance that does not serve the service (SERVICE_UNKNOWN) is skipped; no health service counts as SERVING', async () => {
    const { ns, url } = fakeNamespace();
    // A server whose health service does not know echo says SERVICE_UNKNOWN for it.
    const wrong = await start('wrong');
    const noHealth = await startEcho('nohealth', { health: false });
    servers.push(noHealth);
    ns.add({ service: 'echo', address: noHealth.address });
    const client = channelClient(url);
    try {
      await waitReady(client, [noHealth.address]);
      assert.equal((await client.say({ text: 'x' })).by, 'nohealth');
      wrong.server.health!.remove('echo');
      ns.add({ service: 'echo', address: wrong.address });
      await waitFor(() => client.channel.subchannels.find((s) => s.address === wrong.address)?.health === 'SERVICE_UNKNOWN', { what: 'SERVICE_UNKNOWN' });
      assert.deepEqual(client.channel.readySubchannels.map((s) => s.address), [noHealth.address]);
    } finally {
      await client.close();
    }
  });

  test('channel - healthCheck: false picks connected instances without watching health', async () => {
    const { ns, url } = fakeNamespace();
    const a = await start('a');
    a.server.health!.set('echo', 'NOT_SERVING');
    ns.add({ service: 'echo', address: a.address });
    const client = channelClient(url, { healthCheck: false });
    try {
      await waitReady(client, [a.address]);
      assert.equal((await client.say({ text: 'x' })).by, 'a');
      assert.equal(a.server.health!.watcherCount, 0);
    } finally {
      a.server.health!.set('echo', 'SERVING');
      await client.close();
    }
  });

  test('channel - streams and interceptors go through the channel; in-flight counts return to 0', async () => {
    const { ns, url } = fakeNamespace();
    const a = await start('a');
    ns.add({ service: 'echo', address: a.address });
    const seen: string[] = [];
    const client = channelClient(url, {
      interceptors: [
        (next) => (call) => {
          seen.push(`${call.service}.${call.method}`);
          return next(call);
        },
      ],
    });
    try {
      await waitReady(client, [a.address]);
      const got: number[] = [];
      for await (const { i, by } of client.count({ n: 3 })) {
        assert.equal(by, 'a');
        got.push(i);
      }
      assert.deepEqual(got, [1, 2, 3]);
      assert.equal((await client.say({ text: 'y' })).by, 'a');
      assert.deepEqual(seen, ['echo.count', 'echo.say']);
      const sub = client.channel.subchannels[0]!;
      assert.equal(sub.inflight, 0);
      assert.deepEqual({ started: sub.calls.started, succeeded: sub.calls.succeeded, failed: sub.calls.failed }, { started: 2, succeeded: 2, failed: 0 });
    } finally {
      await client.close();
    }
  });

  test('channel - options: target and discovery together, a bad URL or scheme, a reserved method name', () => {
    assert.throws(() => connect(Echo, { discovery: 'fake://x', target: '127.0.0.1:1' } as never), /not both/);
    assert.throws(() => connect(Echo, { discovery: 'nope://x' }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS' && /unknown scheme/.test(e.message));
    assert.throws(() => connect(Echo, { discovery: '' }), (e: SkeinError) => e.code === 'SKEIN_ERR_INVALID_OPTIONS');
    assert.throws(() => connect(Echo, { discovery: 'fake://x', balancer: 'nope' }), /unknown balancer/);
  });

  test('channel - the state events carry the change like a single connection', async () => {
    const { ns, url } = fakeNamespace();
    const a = await start('a');
    ns.add({ service: 'echo', address: a.address });
    const client = channelClient(url);
    const changes: StateChange[] = [];
    client.channel.on('state', (c) => changes.push(c));
    try {
      await client.ready({ timeout: 5000 });
      assert.ok(changes.some((c) => c.state === 'READY' && c.previous === 'CONNECTING'), JSON.stringify(changes));
    } finally {
      await client.close();
    }
  });
});
