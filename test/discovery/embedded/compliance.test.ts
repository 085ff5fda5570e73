/**
 * The registry compliance suite (test/compliance/registry.ts) against the embedded
 * `skein://` registry: a fresh registry with a data directory per test, so `restart()`
 * brings the same state back on the same port.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { embeddedDiscovery, openRegistry, type Registry } from '../../../src/index.js';
import type { EmbeddedRegistrar } from '../../../src/discovery/embedded/plugin.js';
import { registryCompliance } from '../../compliance/registry.js';

registryCompliance('embedded registry', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'skein-compliance-'));
  let registry: Registry = await openRegistry({ dataDir });
  const { port } = await registry.listen({ host: '127.0.0.1', port: 0 });
  return {
    plugin: embeddedDiscovery,
    url: new URL(`skein://127.0.0.1:${port}`),
    simulateCrash: async (r) => (r as EmbeddedRegistrar).abandon(),
    expireLeases: async () => {
      const { instances } = await registry.store.list();
      const leases = new Set(instances.map((i) => i.leaseId));
      for (const id of leases) await registry.store.revoke(id);
    },
    restart: async () => {
      await registry.close(0);
      registry = await openRegistry({ dataDir });
      await registry.listen({ host: '127.0.0.1', port: port! });
    },
    teardown: async () => {
      await registry.close(0);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
});
