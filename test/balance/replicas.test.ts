/**
 * Balancing across real replicas (issue 4, item 10): three echo servers on 127.0.0.1,
 *
 *   - behind `static://`, with the fault proxy in front of one of them delaying every chunk
 *     by 20 ms: p2c-ewma sends that replica a small share of the calls, round-robin a third;
 *   - registered in the embedded registry (`openRegistry()`, servers with
 *     `createServer({ discovery })`): ring-hash keys stick to their instance, and when a
 *     fourth server registers about 1/N of the keys move — all of them to the new one.
 *
 * Every wait is bounded; the assertions compare counts of calls, never durations.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connect, createServer, implement, openRegistry, type Registry, type Server, type ServerOptions } from '../../src/index.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { spread, Who } from './_who.js';

async function startWho(name: string, options: ServerOptions = {}): Promise<{ server: Server; address: string }> {
  const server = createServer({ drainGraceMs: 1000, ...options }).add(
    implement(Who, {
      ask: () => ({ by: name }),
    }),
  );
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, address: bound.address };
}



describe('balancing across real replicas', () => {
  const servers: Server[] = [];
  const proxies: FaultProxy[] = [];
  const registries: Registry[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close(0)));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(registries.map((r) => r.close(0)));
  });

  test('balancing across real replicas - a replica slowed by 20 ms behind the fault proxy: p2c-ewma gives it < 20 % of the calls, round-robin ~1/3', async (t) => {
    const a = await startWho('a');
    const b = await startWho('b');
    const slow = await startWho('slow');
    servers.push(a.server, b.server, slow.server);
    const proxy = await startFaultProxy({ target: slow.address });
    proxies.push(proxy);
    proxy.delay(20); // every chunk, both ways: ≥ 40 ms per call to 'slow'
    const url = `static://${a.address},${b.address},${proxy.address}`;

    const shares: Record<string, number> = {};
    for (const balancer of ['p2c-ewma', 'round-robin']) {
      const client = connect(Who, { discovery: url, balancer });
      try {
        await waitFor(() => client.channel.readySubchannels.length === 3, { what: `three READY subchannels (${balancer})` });
        const total = 600;
        const counts = await spread(client, total, 8);
        t.diagnostic(`${balancer}: ${JSON.stringify(Object.fromEntries(counts))}`);
        assert.equal([...counts.values()].reduce((x, y) => x + y, 0), total);
        shares[balancer] = (counts.get('slow') ?? 0) / total;
        assert.ok(client.channel.subchannels.every((s) => s.inflight === 0), 'no call left in flight');
      } finally {
        await client.close();
      }
    }
    assert.ok(proxy.connections >= 2, 'both channels reached the slow replica through the proxy');
    assert.ok(shares['p2c-ewma']! < 0.2, `p2c-ewma sent ${shares['p2c-ewma']} of the calls to the slow replica`);
    assert.ok(shares['round-robin']! > 0.3 && shares['round-robin']! < 0.37, `round-robin sent ${shares['round-robin']} of the calls to the slow replica (want ~1/3)`);
  });

  test('balancing across real replicas - ring-hash: a key sticks to its instance; a fourth instance takes about 1/4 of 200 keys, all moved keys to it', async (t) => {
    const registry = await openRegistry();
    registries.push(registry);
    const { address: regAddress } = await registry.listen({ host: '127.0.0.1', port: 0 });
    const url = `skein://${regAddress}`;
    for (const name of ['a', 'b', 'c']) servers.push((await startWho(name, { discovery: url, ttl: 5 })).server);

    const client = connect(Who, { discovery: url, balancer: 'ring-hash' });
    try {
      await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three READY subchannels' });

      // Same key, same server, 100 times.
      const owners = new Set<string>();
      for (let i = 0; i < 100; i++) owners.add((await client.ask({ n: i }, { hashKey: 'user-42', timeout: 5000 })).by);
      assert.equal(owners.size, 1, `hashKey user-42 went to ${[...owners].join(', ')}`);

      const keys = Array.from({ length: 200 }, (_, i) => `key-${i}`);
      const ownersOf = async (): Promise<string[]> => {
        const out: string[] = [];
        for (const k of keys) out.push((await client.ask({ n: 0 }, { hashKey: k, timeout: 5000 })).by);
        return out;
      };
      const before = await ownersOf();
      assert.equal(new Set(before).size, 3, 'the keys spread over the three instances');
      assert.deepEqual(await ownersOf(), before, 'a second pass finds every key on the same instance');

      servers.push((await startWho('d', { discovery: url, ttl: 5 })).server);
      await waitFor(() => client.channel.readySubchannels.length === 4, { what: 'the fourth instance READY in the channel' });
      const afterAdd = await ownersOf();
      const moved = keys.filter((_, i) => afterAdd[i] !== before[i]);
      const movedTo = new Set(moved.map((k) => afterAdd[keys.indexOf(k)]));
      t.diagnostic(`moved ${moved.length}/200 keys, to ${[...movedTo].join(', ')}`);
      assert.ok(moved.length >= 20 && moved.length <= 90, `${moved.length} of 200 keys moved (want 10-45 %, ~25 %)`);
      assert.deepEqual([...movedTo], ['d'], 'keys move only to the new instance');
    } finally {
      await client.close();
    }
  });
});
