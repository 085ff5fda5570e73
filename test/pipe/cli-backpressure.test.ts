/**
 * A receiver that stops reading (SIGSTOP for 10 s) must stall the sender, not make it
 * buffer the file: the sender's resident memory (VmRSS from /proc) stays under a bound well
 * below the file's size, and the transfer completes after SIGCONT. Linux only (/proc).
 */
import { afterEach, after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../helpers/wait.js';
import { killAll, listen, MiB, randomFile, rssOf, send, sha256File, sizeOf, tempDir } from './_proc.js';

const SIZE = 256 * MiB;
/** Generous: a Node process plus the 8 MiB window and a few chunks; the file is 256 MiB. */
const RSS_BOUND = 150 * 1e6;
const STOP_MS = 10_000;

describe('skein pipe (processes): a stopped receiver', { skip: existsSync('/proc/self/status') ? false : 'needs /proc' }, () => {
  const tmp = tempDir();
  let input: string;
  let sha: string;
  before(async () => {
    input = join(tmp.dir, 'in-256m.bin');
    sha = await randomFile(input, SIZE);
  });
  afterEach(killAll);
  after(() => tmp.cleanup());

  test('receiver SIGSTOPped for 10 s: the sender memory stays bounded, the transfer completes after SIGCONT', async (t) => {
    const out = join(tmp.dir, 'out-stopped.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet']);
    const tx = send(address, ['--in', input, '--quiet']);
    let maxRss = 0;
    let samples = 0;
    const sample = (): void => {
      const r = rssOf(tx.pid);
      if (r === undefined) return;
      samples++;
      maxRss = Math.max(maxRss, r);
    };
    const sampler = setInterval(sample, 50);
    try {
      await waitFor(() => sizeOf(`${out}.skein-part`) >= 16 * MiB || !tx.running, { timeoutMs: 60_000, what: '16 MiB at the receiver' });
      assert.ok(tx.running, `the transfer ended before the receiver was stopped:\n${tx.describe()}`);
      rx.kill('SIGSTOP');
      const stoppedAt = Date.now();
      const partAtStop = sizeOf(`${out}.skein-part`);
      // The 10 s stop is the fault under test; the sampler runs meanwhile.
      await waitFor(() => Date.now() - stoppedAt >= STOP_MS, { timeoutMs: STOP_MS + 1000, intervalMs: 50, what: 'the end of the stop' });
      assert.ok(tx.running, `the sender gave up while the receiver was stopped:\n${tx.describe()}`);
      assert.ok(partAtStop < SIZE, 'the receiver had everything before it was stopped');
      const rssDuringStop = maxRss;
      rx.kill('SIGCONT');
      await tx.succeeds(100_000);
      await rx.succeeds(30_000);
      t.diagnostic(`sender VmRSS max ${(maxRss / 1e6).toFixed(1)} MB (${(rssDuringStop / 1e6).toFixed(1)} MB during the stop), ${samples} samples; ${partAtStop} bytes at the receiver when stopped`);
      assert.ok(samples >= 50, `only ${samples} RSS samples`);
      assert.ok(rssDuringStop < RSS_BOUND, `sender VmRSS reached ${(rssDuringStop / 1e6).toFixed(0)} MB while the receiver was stopped (bound ${RSS_BOUND / 1e6} MB, file ${SIZE / 1e6} MB)`);
    } finally {
      clearInterval(sampler);
    }
    assert.ok(maxRss < RSS_BOUND, `sender VmRSS reached ${(maxRss / 1e6).toFixed(0)} MB (bound ${RSS_BOUND / 1e6} MB, file ${SIZE / 1e6} MB)`);
    assert.equal(sizeOf(out), SIZE);
    assert.equal(await sha256File(out), sha);
  });
});
