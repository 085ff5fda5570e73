/**
 * Channels and self-registering servers with the real embedded registry (skein://), all
 * in this process over TCP on 127.0.0.1: finding instances, a server draining away, and
 * the registry going down and coming back while calls go on.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRegistry, type Registry } from '../../src/index.js';
import { channelClient, spread, startEcho, waitReady, type Named } from './_helpers.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

async function registryOn(port = 0, dataDir?: string): Promise<{ registry: Registry; url: string; port: number }> {
  const registry = await openRegistry(dataDir === undefined ? {} : { dataDir });
  const bound = await registry.listen({ host: '127.0.0.1', port });
  return { registry, url: `skein://${bound.address}`, port: bound.port! };
}

describe('channel with the embedded registry', () => {
  test('channel with the embedded registry - servers register on listen, a channel spreads calls, a drained server leaves', async () => {
    const { registry, url } = await registryOn();
    const servers: Named[] = [];
    const client = channelClient(url);
    try {
      for (const name of ['a', 'b', 'c']) servers.push(await startEcho(name, { discovery: url, ttl: 5 }));
      await waitReady(client, servers.map((s) => s.address));
      assert.deepEqual(Object.fromEntries(await spread(client, 9)), { a: 3, b: 3, c: 3 });
      await servers[0]!.server.close(1000);
      await waitFor(() => client.channel.instances.length === 2, { what: 'a deregistered and removed' });
      await waitReady(client, [servers[1]!.address, servers[2]!.address]);
      assert.deepEqual(Object.fromEntries(await spread(client, 4)), { b: 2, c: 2 });
    } finally {
      await client.close();
      await Promise.all(servers.map((s) => s.server.close(0)));
      await registry.close(0);
    }
  });

  test('channel with the embedded registry - calls go on while the registry is down; it restarts from its data and the channel resyncs', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'skein-channel-registry-'));
    let { registry, url, port } = await registryOn(0, dataDir);
    const a = await startEcho('a', { discovery: url, ttl: 5 });
    const b = await startEcho('b', { discovery: url, ttl: 5 });
    const client = channelClient(url);
    let errors = 0;
    client.channel.on('resolverError', () => errors++);
    try {
      await waitReady(client, [a.address, b.address]);
      await registry.close(0);
      await waitFor(() => errors > 0, { what: 'the channel to notice the registry is gone' });
      assert.deepEqual(Object.fromEntries(await spread(client, 10)), { a: 5, b: 5 }, 'calls go on to the known instances');
      assert.equal(client.state, 'READY');

      // The registry restarts from its data on the same address; a third server registers
      // there; the channel's watch resumes and sees it.
      ({ registry, url, port } = await registryOn(port, dataDir));
      const c = await startEcho('c', { discovery: url, ttl: 5 });
      try {
        await waitFor(() => client.channel.lastResolverError === undefined && client.channel.instances.length === 3, { timeoutMs: 10000, what: 'the channel to resume and see c' });
        await waitReady(client, [a.address, b.address, c.address]);
        assert.deepEqual(Object.fromEntries(await spread(client, 6)), { a: 2, b: 2, c: 2 });
      } finally {
        await c.server.close(0);
      }
    } finally {
      await withTimeout(client.close(), 5000, 'client.close()');
      await Promise.all([a.server.close(0), b.server.close(0)]);
      await registry.close(0);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
