/**
 * Restartable transfers (issue 5, docs/protocol.md §14.5): with `--in FILE` and `--out FILE`,
 * a sender or a receiver killed with SIGKILL and started again with the same arguments
 * resumes from the confirmed offset (`FILE.skein-part` + `FILE.skein-state`), and the
 * output never exists short. A fault proxy sits on the path so that the kill happens at a
 * known point: the proxy is stalled first (the transfer stops moving), then the process is
 * killed, so the test never races the end of the transfer.
 */
import { afterEach, after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../cli/run.js';
import { killAll, listen, MiB, randomFile, readState, send, sha256File, sizeOf, tempDir, TYPED_ERROR, watchNeverShort } from './_proc.js';

const SIZE = 64 * MiB;
/** Kill once at least this much is confirmed (in the state file), so a resume is visible. */
const CONFIRMED_BEFORE_KILL = 24 * MiB;
/**
 * After a resume, the bytes through the proxy may exceed what was left to send by the
 * unacknowledged window (8 MiB), a chunk, what the stalled proxy and socket buffers held
 * for the dead connection, and framing: generous, but far below a restart from zero.
 */
const RESUME_SLACK = 14 * MiB;

/**
 * After a restart: the output never existed short, the bytes forwarded after the restart
 * are about what was left past the confirmed offset (it resumed, not restarted), and the
 * output is whole, equal, with its part and state files gone.
 */
async function assertResumedWhole(
  t: { diagnostic(message: string): void },
  r: { watch: { stop(): { violations: unknown[] } }; resent: number; confirmed: number; out: string; part: string; state: string; sha: string },
): Promise<void> {
  const seen = r.watch.stop();
  assert.deepEqual(seen.violations, [], 'the output existed short');
  t.diagnostic(`confirmed at the kill: ${r.confirmed}; forwarded after the restart: ${r.resent} (left: ${SIZE - r.confirmed})`);
  assert.ok(r.resent < SIZE - r.confirmed + RESUME_SLACK, `${r.resent} bytes went through after the restart, but only ${SIZE - r.confirmed} were left: it did not resume from ${r.confirmed}`);
  assert.equal(sizeOf(r.out), SIZE);
  assert.equal(await sha256File(r.out), r.sha);
  assert.equal(existsSync(r.part), false, `${r.part} left behind`);
  assert.equal(existsSync(r.state), false, `${r.state} left behind`);
}

describe('skein pipe (processes): kill -9 and restart with the same arguments', () => {
  const tmp = tempDir();
  let input: string;
  let sha: string;
  let other: string;
  let proxy: FaultProxy | undefined;
  before(async () => {
    input = join(tmp.dir, 'in-64m.bin');
    sha = await randomFile(input, SIZE);
    other = join(tmp.dir, 'other-1m.bin');
    await randomFile(other, MiB);
  });
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
    await killAll();
  });
  after(() => tmp.cleanup());

  test('sender killed (SIGKILL) mid-transfer, started again: resumes from the confirmed offset, equal, never short', async (t) => {
    const out = join(tmp.dir, 'out-kill-sender.bin');
    const state = `${out}.skein-state`;
    const part = `${out}.skein-part`;
    const rxArgs = ['--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet'];
    const { proc: rx, address } = await listen(rxArgs);
    proxy = await startFaultProxy({ target: address });
    const p = proxy;
    const watch = watchNeverShort(out, SIZE);
    const txArgs = ['--in', input, '--quiet'];
    const tx = send(p.address, txArgs);
    await waitFor(() => (readState(state)?.offset ?? 0) >= CONFIRMED_BEFORE_KILL || !tx.running, { timeoutMs: 60_000, what: `${CONFIRMED_BEFORE_KILL} bytes confirmed in ${state}` });
    p.stall(true);
    assert.ok(tx.running, `the sender ended before the kill:\n${tx.describe()}`);
    tx.kill('SIGKILL');
    await tx.waitExit(10_000);

    const s = readState(state);
    assert.ok(s !== undefined, `${state} must exist after the sender died`);
    assert.equal(s.version, 1);
    assert.match(s.id, /^[0-9a-f]{32}$/);
    assert.equal(s.restartable, true, 'a file source is RESTARTABLE');
    assert.equal(s.size, SIZE);
    assert.ok(s.offset >= CONFIRMED_BEFORE_KILL && s.offset < SIZE, `state offset ${s.offset}`);
    assert.ok(sizeOf(part) >= s.offset, `${part} is ${sizeOf(part)} bytes, the state confirms ${s.offset}`);
    assert.equal(existsSync(out), false, 'the output must not exist before the transfer is complete');
    assert.ok(rx.running, `the receiver must wait for the sender to come back:\n${rx.describe()}`);
    p.stall(false);

    // A sender of another file is refused (the receiver holds a partial transfer of a
    // different restartable source) with a message naming the state file; the receiver goes on.
    const wrong = send(p.address, ['--in', other, '--quiet', '--retry-timeout', '10']);
    const we = await wrong.waitExit(30_000);
    assert.notEqual(we.code, 0, wrong.describe());
    assert.match(wrong.stderr, TYPED_ERROR, wrong.describe());
    assert.ok(wrong.stderr.includes('skein-state'), `the refusal should name the state file to delete:\n${wrong.describe()}`);
    assert.ok(rx.running, rx.describe());
    assert.equal(existsSync(out), false);

    const bytesBefore = p.bytesUp;
    const again = send(p.address, txArgs);
    await again.succeeds(90_000);
    await rx.succeeds(30_000);
    await assertResumedWhole(t, { watch, resent: p.bytesUp - bytesBefore, confirmed: s.offset, out, part, state, sha });
  });

  test('receiver killed (SIGKILL) mid-transfer, started again on the same port: the sender resumes, equal, never short', async (t) => {
    const out = join(tmp.dir, 'out-kill-receiver.bin');
    const state = `${out}.skein-state`;
    const part = `${out}.skein-part`;
    const port = await freePort();
    const rxArgs = ['--host', '127.0.0.1', '--port', String(port), '--out', out, '--quiet'];
    const { proc: rx, address } = await listen(rxArgs);
    assert.equal(address, `127.0.0.1:${port}`);
    proxy = await startFaultProxy({ target: address });
    const p = proxy;
    const watch = watchNeverShort(out, SIZE);
    const tx = send(p.address, ['--in', input, '--quiet']);
    await waitFor(() => (readState(state)?.offset ?? 0) >= CONFIRMED_BEFORE_KILL || !tx.running, { timeoutMs: 60_000, what: `${CONFIRMED_BEFORE_KILL} bytes confirmed in ${state}` });
    p.stall(true);
    assert.ok(tx.running, `the sender ended before the kill:\n${tx.describe()}`);
    rx.kill('SIGKILL');
    await rx.waitExit(10_000);

    const s = readState(state);
    assert.ok(s !== undefined, `${state} must survive the receiver's death`);
    assert.ok(s.offset >= CONFIRMED_BEFORE_KILL && s.offset < SIZE, `state offset ${s.offset}`);
    assert.ok(sizeOf(part) >= s.offset, `${part} is ${sizeOf(part)} bytes, the state confirms ${s.offset}`);
    assert.equal(existsSync(out), false, 'the output must not exist before the transfer is complete');

    const { proc: rx2, address: address2 } = await listen(rxArgs);
    assert.equal(address2, address);
    assert.ok(tx.running, `the sender must keep retrying while the receiver is away:\n${tx.describe()}`);
    const bytesBefore = p.bytesUp;
    p.stall(false);
    await tx.succeeds(90_000);
    await rx2.succeeds(30_000);
    await assertResumedWhole(t, { watch, resent: p.bytesUp - bytesBefore, confirmed: s.offset, out, part, state, sha });
  });
});
