/**
 * The pickers in a real channel: three echo servers on 127.0.0.1 found through the fake
 * discovery of the channel tests; checks that the channel feeds the pickers what they read
 * (latencies through onDone, inflight, the call's metadata and hashKey).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connect, createServer, implement, service, unary, type CallOptions, type Server } from '../../src/index.js';
import { fakeNamespace } from '../channel/_fake-discovery.js';
import { waitFor } from '../helpers/wait.js';

const Who = service('who', {
  ask: unary<{ n: number }, { by: string }>({ idempotent: true }),
});

async function startWho(name: string, delayMs: number): Promise<{ server: Server; address: string }> {
  const server = createServer({ drainGraceMs: 1000 }).add(
    implement(Who, {
      async ask() {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        return { by: name };
      },
    }),
  );
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, address: bound.address };
}

describe('pickers in a channel', () => {
  const servers: Server[] = [];
  after(() => Promise.all(servers.map((s) => s.close(0))));

  async function cluster(delays: Record<string, number>): Promise<string> {
    const { ns, url } = fakeNamespace();
    for (const [name, delay] of Object.entries(delays)) {
      const s = await startWho(name, delay);
      servers.push(s.server);
      ns.add({ service: 'who', address: s.address, id: name });
    }
    return url;
  }

  test('pickers in a channel - p2c-ewma sends a small share to the replica slowed by 20 ms', async (t) => {
    const url = await cluster({ a: 0, b: 0, slow: 20 });
    const client = connect(Who, { discovery: url, balancer: 'p2c-ewma' });
    try {
      await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three READY subchannels' });
      const counts = new Map<string, number>();
      const total = 600;
      let next = 0;
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          while (next < total) {
            next++;
            const { by } = await client.ask({ n: next }, { timeout: 5000 });
            counts.set(by, (counts.get(by) ?? 0) + 1);
          }
        }),
      );
      const share = (counts.get('slow') ?? 0) / total;
      t.diagnostic(`picks: ${JSON.stringify(Object.fromEntries(counts))}`);
      assert.ok(share < 0.15, `slow replica share ${share} (${JSON.stringify([...counts])}); round-robin would give it 1/3`);
      assert.ok(client.channel.subchannels.every((s) => s.inflight === 0));
    } finally {
      await client.close();
    }
  });

  test('pickers in a channel - ring-hash keeps a key on one replica (hashMetadata and hashKey)', async () => {
    const url = await cluster({ a: 0, b: 0, c: 0 });
    const client = connect(Who, { discovery: url, balancer: 'ring-hash', balancerConfig: { hashMetadata: 'x-user' } });
    try {
      await waitFor(() => client.channel.readySubchannels.length === 3, { what: 'three READY subchannels' });
      const owners = new Set<string>();
      for (let i = 0; i < 30; i++) owners.add((await client.ask({ n: i }, { metadata: { 'x-user': 'ada' } })).by);
      assert.equal(owners.size, 1, `x-user ada went to ${[...owners].join(', ')}`);
      // hashKey is read from the call options by the channel (not yet a CallOptions field).
      const byKey = new Set<string>();
      for (let i = 0; i < 30; i++) byKey.add((await client.ask({ n: i }, { hashKey: 'ada' } as CallOptions)).by);
      assert.deepEqual([...byKey], [...owners], 'hashKey ada and x-user ada hash alike');
      // Many keys reach every replica.
      const all = new Set<string>();
      for (let i = 0; i < 60; i++) all.add((await client.ask({ n: i }, { metadata: { 'x-user': `u${i}` } })).by);
      assert.equal(all.size, 3);
    } finally {
      await client.close();
    }
  });

  test('pickers in a channel - every built-in picker serves calls', async () => {
    const url = await cluster({ a: 0, b: 0 });
    for (const balancer of ['round-robin', 'weighted', 'least-inflight', 'random', 'p2c-ewma', 'ring-hash', 'load']) {
      const client = connect(Who, { discovery: url, balancer });
      try {
        await waitFor(() => client.channel.readySubchannels.length === 2, { what: `two READY subchannels (${balancer})` });
        const by = new Set<string>();
        for (let i = 0; i < 40; i++) by.add((await client.ask({ n: i })).by);
        assert.equal(by.size, 2, `${balancer} used ${[...by].join(', ')}`);
      } finally {
        await client.close();
      }
    }
  });
});
