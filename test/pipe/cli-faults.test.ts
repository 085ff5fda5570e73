/**
 * `skein pipe` processes through the fault proxy (test/helpers/fault-proxy.ts): a path that
 * is cut again and again, and a path that silently stops forwarding (detected by the
 * heartbeat). The transfer must end equal (size and SHA-256), and never short.
 */
import { afterEach, after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { killAll, listen, MiB, randomFile, send, sha256File, sizeOf, tempDir, watchNeverShort } from './_proc.js';

const SIZE = 64 * MiB;

describe('skein pipe (processes): faults on the path', () => {
  const tmp = tempDir();
  let input: string;
  let sha: string;
  let proxy: FaultProxy | undefined;
  before(async () => {
    input = join(tmp.dir, 'in-64m.bin');
    sha = await randomFile(input, SIZE);
  });
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
    await killAll();
  });
  after(() => tmp.cleanup());

  test('64 MiB through a proxy that cuts the connection every 2 s: equal at the end', async (t) => {
    const out = join(tmp.dir, 'out-cuts.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet']);
    proxy = await startFaultProxy({ target: address });
    const p = proxy;
    const watch = watchNeverShort(out, SIZE);
    // Every 2 s, and also every 12 MiB forwarded, so that a fast machine still sees cuts
    // in the middle of the transfer rather than none at all.
    let cuts = 0;
    let cutBytes = 0;
    const cut = (): void => {
      if (p.live === 0) return;
      cuts++;
      cutBytes = p.bytesUp;
      p.cutAll();
    };
    const every = setInterval(cut, 2000);
    let pending = false;
    const onForward = (): void => {
      if (pending || p.bytesUp - cutBytes < 12 * MiB) return;
      // Not from inside the proxy's own forwarding loop: on the next turn.
      pending = true;
      setImmediate(() => {
        pending = false;
        cut();
      });
    };
    p.on('forward', onForward);
    try {
      const tx = send(p.address, ['--in', input, '--quiet']);
      await tx.succeeds(120_000);
      await rx.succeeds(30_000);
    } finally {
      clearInterval(every);
      p.off('forward', onForward);
    }
    const seen = watch.stop();
    assert.deepEqual(seen.violations, [], 'the output existed short');
    t.diagnostic(`${cuts} cuts, ${p.connections} connections through the proxy, ${p.bytesUp} bytes forwarded up for ${SIZE}`);
    assert.ok(cuts >= 3, `only ${cuts} cut(s) happened during the transfer`);
    assert.ok(p.connections >= cuts + 1, `${p.connections} connection(s) for ${cuts} cut(s): the sender did not reattach after each`);
    assert.equal(sizeOf(out), SIZE);
    assert.equal(await sha256File(out), sha);
    assert.equal(existsSync(`${out}.skein-part`), false);
    assert.equal(existsSync(`${out}.skein-state`), false);
  });

  test('the proxy silently stops forwarding for 10 s: the heartbeat notices, the sender reattaches, equal at the end', async (t) => {
    const out = join(tmp.dir, 'out-stall.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet']);
    proxy = await startFaultProxy({ target: address });
    const p = proxy;
    const watch = watchNeverShort(out, SIZE);
    const tx = send(p.address, ['--in', input, '--quiet']);
    // Stall once a part of the file has gone through (not at the very start, not after the end).
    await waitFor(() => p.bytesUp >= 8 * MiB || !tx.running, { timeoutMs: 60_000, what: '8 MiB through the proxy' });
    p.stall(true);
    assert.ok(tx.running, `the transfer ended before the stall:\n${tx.describe()}`);
    const stalledAt = Date.now();
    const connectionsAtStall = p.connections;
    let reattachedAfterMs: number | undefined;
    const onConnection = (): void => {
      reattachedAfterMs ??= Date.now() - stalledAt;
    };
    p.on('connection', onConnection);
    try {
      // The silent path lasts 10 s; the heartbeat (1 s, 3 missed) must give up on it and dial
      // again within that time. Waiting for that dial is the event; the 10 s is the fault.
      await waitFor(() => p.connections > connectionsAtStall, { timeoutMs: 10_000, what: 'a new connection while the path is silent (heartbeat)' });
      await waitFor(() => Date.now() - stalledAt >= 10_000, { timeoutMs: 11_000, intervalMs: 50, what: 'the end of the 10 s stall' });
      assert.ok(tx.running, `the sender gave up during a 10 s stall:\n${tx.describe()}`);
      assert.ok(rx.running, `the receiver gave up during a 10 s stall:\n${rx.describe()}`);
    } finally {
      p.off('connection', onConnection);
      p.stall(false);
    }
    await tx.succeeds(120_000);
    await rx.succeeds(30_000);
    const seen = watch.stop();
    assert.deepEqual(seen.violations, [], 'the output existed short');
    t.diagnostic(`first new connection ${reattachedAfterMs} ms into the stall; ${p.connections} connections in all`);
    assert.ok(reattachedAfterMs !== undefined && reattachedAfterMs < 10_000, `reattached after ${reattachedAfterMs} ms`);
    assert.equal(sizeOf(out), SIZE);
    assert.equal(await sha256File(out), sha);
  });
});
