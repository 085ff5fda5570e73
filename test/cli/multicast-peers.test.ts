/**
 * Zero-config: two `skein serve` processes on one host, no registry, each registered by
 * multicast and each calling the other through discovery (issue #3: "two servers find each
 * other by multicast on one host").
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ROOT, runCli, startServe, type Served } from './run.js';
import { freeUdpPort } from '../helpers/udp.js';


describe('multicast peers', () => {
  const served: Served[] = [];
  after(async () => {
    await Promise.all(served.map((s) => s.stop('SIGKILL').catch(() => {})));
  });

  it('multicast - two servers on one host find each other and call each other', async () => {
    const url = `multicast://239.255.77.77:${await freeUdpPort()}`;
    const tag = randomBytes(3).toString('hex');
    const alpha = `alpha${tag}`;
    const beta = `beta${tag}`;
    const fixture = join(ROOT, 'test/cli/fixtures/peer.js');
    const serve = async (self: string, other: string) => {
      const prev = { ...process.env };
      process.env.PEER_SELF = self;
      process.env.PEER_OTHER = other;
      process.env.SKEIN_DISCOVERY = url;
      try {
        const s = await startServe([fixture, '--port', '0', '--ttl', '3']);
        served.push(s);
        return s;
      } finally {
        for (const k of ['PEER_SELF', 'PEER_OTHER', 'SKEIN_DISCOVERY']) {
          if (prev[k] === undefined) delete process.env[k];
          else process.env[k] = prev[k];
        }
      }
    };
    const a = await serve(alpha, beta);
    const b = await serve(beta, alpha);
    // Each server asks its peer, which it only knows through multicast discovery.
    for (const [self, other, s] of [[alpha, beta, b], [beta, alpha, a]] as const) {
      const r = await runCli(['call', `${self}.askPeer`, '{}', '--discovery', url, '--timeout', '15000'], { timeoutMs: 20000 });
      assert.equal(r.code, 0, `call ${self}.askPeer failed: ${r.stderr}`);
      const reply = JSON.parse(r.stdout.trim()) as { from: string; peer: { name: string; pid: number } };
      assert.equal(reply.from, self);
      assert.equal(reply.peer.name, other);
      assert.equal(reply.peer.pid, s.child.pid, 'the peer that answered is the other server process');
    }
  });
});
