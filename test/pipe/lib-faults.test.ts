/**
 * The reliable pipe through a fault proxy (test/helpers/fault-proxy.ts) between sender and
 * receiver: connections cut over and over, bytes delivered a few at a time, a flipped bit,
 * a path that goes silent. Every transfer must end with exactly the bytes sent (length and
 * SHA-256 equal on both sides), resumed as often as needed.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { pipeListen, pipeSend, type PipeReceiver, type PipeSender } from '../../src/index.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { once, readAll, waitFor, withTimeout } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'skein-pipe-faults-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const open: { receivers: PipeReceiver[]; senders: PipeSender[]; proxies: FaultProxy[]; timers: NodeJS.Timeout[] } = { receivers: [], senders: [], proxies: [], timers: [] };
afterEach(async () => {
  for (const t of open.timers.splice(0)) clearInterval(t);
  for (const s of open.senders.splice(0)) s.destroy();
  await Promise.all(open.proxies.splice(0).map((p) => p.close()));
  await Promise.all(open.receivers.splice(0).map((r) => r.close().catch(() => {})));
});

/** A receiver behind a fault proxy. */
async function setup(options: Parameters<typeof pipeListen>[0] = {}): Promise<{ r: PipeReceiver; proxy: FaultProxy }> {
  const r = await pipeListen(options);
  open.receivers.push(r);
  const proxy = await startFaultProxy({ target: r.address });
  open.proxies.push(proxy);
  return { r, proxy };
}

function send(target: string, options: Parameters<typeof pipeSend>[1] = {}): PipeSender {
  const s = pipeSend(target, options);
  open.senders.push(s);
  return s;
}

async function writeAll(s: PipeSender, data: Buffer, piece = MiB): Promise<void> {
  for (let at = 0; at < data.length; at += piece) {
    if (!s.write(data.subarray(at, at + piece))) await once(s, 'drain', 30_000);
  }
  s.end();
}

/** Run a stream transfer of `payload` and check both ends agree with it. */
async function transfer(r: PipeReceiver, s: PipeSender, payload: Buffer, ms: number): Promise<void> {
  const received = readAll(r.readable!, ms);
  const writing = writeAll(s, payload);
  const [sent, got, bytes] = await withTimeout(Promise.all([s.done, r.done, received, writing]), ms, 'the transfer');
  assert.equal(bytes.length, payload.length, 'no byte lost or duplicated');
  assert.ok(bytes.equals(payload), 'the bytes arrived in order');
  assert.deepEqual(sent, { bytes: payload.length, sha256: sha256(payload) });
  assert.deepEqual(got, sent);
}

describe('pipe faults', () => {
  it('faults - a proxy that cuts every connection every 100 ms: 64 MiB arrive with equal SHA-256', async () => {
    const { r, proxy } = await setup();
    const payload = randomBytes(64 * MiB);
    const s = send(proxy.address, { retryTimeoutMs: 20_000 });
    let cuts = 0;
    open.timers.push(
      setInterval(() => {
        proxy.cutAll();
        cuts++;
      }, 100),
    );
    // However fast the transfer, some cuts land in the middle of it.
    const marks = [8 * MiB, 24 * MiB, 40 * MiB];
    r.on('progress', (p) => {
      while (marks.length > 0 && p.bytes >= marks[0]!) {
        marks.shift();
        proxy.cutAll({ reset: true });
      }
    });
    await transfer(r, s, payload, 30_000);
    assert.ok(r.attachments >= 4, `attachments: ${r.attachments}, cuts: ${cuts}`);
    // An ACCEPT that a cut lost counts at the receiver only.
    assert.ok(s.attachments >= 2 && s.attachments <= r.attachments, `sender ${s.attachments}, receiver ${r.attachments}`);
  });

  it('faults - bytes delivered in slices of 1 to 5 bytes arrive equal', async () => {
    const { r, proxy } = await setup();
    proxy.slice(1, 5);
    const payload = randomBytes(192 * 1024);
    const s = send(proxy.address, { chunkSize: 16 * 1024 });
    await transfer(r, s, payload, 30_000);
    assert.equal(r.attachments, 1);
  });

  it('faults - a flipped bit fails the chunk CRC32C: NACKed, resent, and the bytes arrive equal', async () => {
    const input = join(dir, 'flip.in');
    const payload = randomBytes(4 * MiB);
    writeFileSync(input, payload);
    const { r, proxy } = await setup();
    // About 1.1 MiB into what the sender writes: in the middle of the 5th 256 KiB chunk.
    proxy.corruptNext('up', MiB + 100 * 1024);
    const s = send(proxy.address, { in: input });
    const received = readAll(r.readable!, 15_000);
    const [sent, got, bytes] = await withTimeout(Promise.all([s.done, r.done, received]), 15_000, 'the transfer');
    assert.ok(bytes.equals(payload));
    assert.equal(sent.sha256, sha256(payload));
    assert.deepEqual(got, sent);
    assert.ok(r.nacks >= 1, 'the corrupted chunk was NACKed');
    assert.equal(r.attachments, 1, 'the NACK repaired it without a new connection');
  });

  it('faults - a path that goes silent: keepalive detects it on both sides, the sender reattaches when bytes flow again', { timeout: 60_000 }, async () => {
    const { r, proxy } = await setup();
    const payload = randomBytes(16 * MiB);
    const s = send(proxy.address, { retryTimeoutMs: 30_000 });
    const received = readAll(r.readable!, 30_000);
    const writing = writeAll(s, payload);
    await waitFor(() => r.bytes >= 2 * MiB, { what: '2 MiB through the proxy', timeoutMs: 10_000 });
    proxy.stall(true);
    // Heartbeat 1 s, 3 missed: both ends give the connection up within a few seconds.
    const senderGaveUp = once<[Error]>(s, 'detach', 15_000);
    const receiverGaveUp = once<[{ reason: Error }]>(r, 'detach', 15_000);
    const [[sErr], [rInfo]] = await Promise.all([senderGaveUp, receiverGaveUp]);
    assert.match(`${sErr.message}`, /keepalive|ping|closed|lost/i);
    assert.ok(rInfo.reason instanceof Error);
    assert.equal(r.bytes < payload.length, true);
    // The stall outlasts the detection: the sender's next connection hangs in its handshake
    // inside the stalled proxy, and must complete (or be retried) once the path clears.
    await waitFor(() => proxy.connections >= 2, { what: 'a reconnect attempt into the stalled path', timeoutMs: 10_000 });
    proxy.stall(false);
    const [sent, got, bytes] = await withTimeout(Promise.all([s.done, r.done, received, writing]), 30_000, 'the resumed transfer');
    assert.ok(bytes.equals(payload));
    assert.equal(sent.sha256, sha256(payload));
    assert.deepEqual(got, sent);
    assert.ok(s.attachments >= 2);
  });
});
