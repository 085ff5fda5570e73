/**
 * `skein pipe listen|send` as real processes on 127.0.0.1: the command-line contract of
 * issue 5 — the `ready pipe HOST:PORT` line, file and stdout modes, no progress output when
 * stderr is not a TTY, refusals (wrong or missing token, plaintext to a TLS listener) that
 * write nothing, and a killed stdin sender being a typed failure at the receiver.
 * Every wait is bounded and waits for an event (a line, an exit, a file size), never a sleep.
 */
import { afterEach, before, after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { TLS_FIXTURES_DIR } from '../helpers/tls.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../cli/run.js';
import { killAll, listen, MiB, PipeProc, randomFile, send, sha256, sha256File, sizeOf, tempDir, TYPED_ERROR } from './_proc.js';

const CERT = join(TLS_FIXTURES_DIR, 'server.pem');
const KEY = join(TLS_FIXTURES_DIR, 'server-key.pem');
const CA = join(TLS_FIXTURES_DIR, 'ca.pem');

/** No progress drawing: not a TTY, so no carriage return and no clear-to-end-of-line. */
function assertNoProgress(p: PipeProc): void {
  assert.ok(!p.stderr.includes('\r') && !p.stderr.includes('\x1b['), `progress drawn on a non-TTY stderr:\n${p.describe()}`);
}

/** Neither the output nor its part/state files exist. */
function assertNothingWritten(out: string): void {
  for (const f of [out, `${out}.skein-part`, `${out}.skein-state`]) assert.equal(existsSync(f), false, `${f} exists`);
}

describe('skein pipe (processes): command-line contract', () => {
  const tmp = tempDir();
  let input1: string;
  let sha1: string;
  before(async () => {
    input1 = join(tmp.dir, 'in-1m.bin');
    sha1 = await randomFile(input1, MiB + 123);
  });
  afterEach(killAll);
  after(() => tmp.cleanup());

  test('pipe --help lists listen and send; each lists its options', async () => {
    const top = new PipeProc(['--help']);
    await top.succeeds(15_000);
    assert.match(top.stdoutText, /listen/);
    assert.match(top.stdoutText, /send/);
    const l = new PipeProc(['listen', '--help']);
    await l.succeeds(15_000);
    for (const opt of ['--host', '--port', '--out', '--token', '--tls-cert', '--tls-key', '--quiet', '--resume-timeout']) assert.ok(l.stdoutText.includes(opt), `listen --help lacks ${opt}:\n${l.stdoutText}`);
    const s = new PipeProc(['send', '--help']);
    await s.succeeds(15_000);
    for (const opt of ['--in', '--token', '--tls-ca', '--quiet', '--retry-timeout']) assert.ok(s.stdoutText.includes(opt), `send --help lacks ${opt}:\n${s.stdoutText}`);
  });

  test('file mode: stdout is exactly the `ready pipe HOST:PORT` line; file → file is equal; no progress, no leftovers', async () => {
    const out = join(tmp.dir, 'out-file-mode.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out]);
    assert.match(address, /^127\.0\.0\.1:\d+$/);
    assert.ok(Number(address.split(':')[1]) > 0, address);
    const tx = send(address, ['--in', input1]);
    await tx.succeeds(30_000);
    await rx.succeeds(30_000);
    assert.equal(rx.stdoutText, `ready pipe ${address}\n`, 'stdout carries the ready line and nothing else');
    assert.equal(tx.stdoutBytes, 0, `the sender printed on stdout:\n${tx.describe()}`);
    assert.equal(sizeOf(out), MiB + 123);
    assert.equal(await sha256File(out), sha1);
    assert.equal(existsSync(`${out}.skein-part`), false);
    assert.equal(existsSync(`${out}.skein-state`), false);
    assertNoProgress(rx);
    assertNoProgress(tx);
  });

  test('--port P: the ready line names that port', async () => {
    const port = await freePort();
    const out = join(tmp.dir, 'out-port.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', String(port), '--out', out, '--quiet']);
    assert.equal(address, `127.0.0.1:${port}`);
    const tx = send(address, ['--in', input1, '--quiet']);
    await tx.succeeds(30_000);
    await rx.succeeds(30_000);
    assert.equal(await sha256File(out), sha1);
  });

  test('stdout mode: the bytes go to stdout, the ready line to stderr; stdin → stdout is equal', async () => {
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--quiet'], { readyOn: 'stderr' });
    const data = randomBytes(3 * MiB + 7);
    const tx = send(address, ['--quiet'], { stdin: 'pipe' });
    tx.child.stdin!.end(data);
    await tx.succeeds(30_000);
    await rx.succeeds(30_000);
    assert.equal(rx.stdoutBytes, data.length, rx.describe());
    assert.equal(sha256(rx.stdout), sha256(data));
    assert.match(rx.stderr, /^ready pipe 127\.0\.0\.1:\d+$/m);
    assert.equal(tx.stdoutBytes, 0);
  });

  test('an empty stdin is an empty transfer: an empty output file, both exit 0', async () => {
    const out = join(tmp.dir, 'out-empty.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet']);
    const tx = send(address, ['--quiet'], { stdin: 'pipe' });
    tx.child.stdin!.end();
    await tx.succeeds(30_000);
    await rx.succeeds(30_000);
    assert.equal(sizeOf(out), 0);
    assert.equal(existsSync(`${out}.skein-state`), false);
  });

  test('wrong or missing token: refused with a typed message, nothing written; the receiver goes on and takes the right one', async () => {
    const out = join(tmp.dir, 'out-token.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--token', 'right-secret', '--quiet']);
    const wrong = send(address, ['--in', input1, '--token', 'wrong-secret', '--quiet', '--retry-timeout', '5']);
    const e = await wrong.waitExit(30_000);
    assert.notEqual(e.code, 0, wrong.describe());
    assert.match(wrong.stderr, TYPED_ERROR, wrong.describe());
    assert.match(wrong.stderr, /UNAUTHENTICATED|AUTH|token/i, wrong.describe());
    assertNothingWritten(out);
    assert.ok(rx.running, `the receiver exited after a refused sender:\n${rx.describe()}`);

    const none = send(address, ['--in', input1, '--quiet', '--retry-timeout', '5']);
    const e2 = await none.waitExit(30_000);
    assert.notEqual(e2.code, 0, none.describe());
    assert.match(none.stderr, TYPED_ERROR, none.describe());
    assertNothingWritten(out);
    assert.ok(rx.running, rx.describe());

    const right = send(address, ['--in', input1, '--token', 'right-secret', '--quiet']);
    await right.succeeds(30_000);
    await rx.succeeds(30_000);
    assert.equal(await sha256File(out), sha1);
  });

  test('plaintext sender to a TLS listener: refused with a clear message, nothing written; a TLS sender then succeeds', async () => {
    const out = join(tmp.dir, 'out-tls.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--tls-cert', CERT, '--tls-key', KEY, '--quiet']);
    const plain = send(address, ['--in', input1, '--quiet', '--retry-timeout', '3']);
    const e = await plain.waitExit(30_000);
    assert.notEqual(e.code, 0, plain.describe());
    assert.match(plain.stderr, TYPED_ERROR, plain.describe());
    assert.match(plain.stderr, /TLS|handshake/i, `the message does not say what went wrong:\n${plain.describe()}`);
    assertNothingWritten(out);
    assert.ok(rx.running, rx.describe());

    const secure = send(address, ['--in', input1, '--tls-ca', CA, '--quiet']);
    await secure.succeeds(30_000);
    await rx.succeeds(30_000);
    assert.equal(await sha256File(out), sha1);
  });

  test('a killed stdin sender is a typed failure at the receiver (--resume-timeout), and the output never appears', async () => {
    const out = join(tmp.dir, 'out-stdin-killed.bin');
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet', '--resume-timeout', '2']);
    const tx = send(address, ['--quiet'], { stdin: 'pipe' });
    tx.child.stdin!.write(randomBytes(2 * MiB)); // stdin stays open: the transfer is unfinished
    await waitFor(() => sizeOf(`${out}.skein-part`) > 0 || !rx.running || !tx.running, { timeoutMs: 20_000, what: 'the first bytes at the receiver' });
    assert.ok(rx.running && tx.running, `${rx.describe()}\n${tx.describe()}`);
    tx.kill('SIGKILL');
    const e = await rx.waitExit(30_000);
    assert.notEqual(e.code, 0, rx.describe());
    assert.equal(e.signal, null, rx.describe());
    assert.match(rx.stderr, TYPED_ERROR, rx.describe());
    assert.equal(existsSync(out), false, 'a failed transfer must not leave the output file');
  });

  test('a stdin sender that is killed and started again: the receiver fails the transfer with a typed message (a stream cannot resume)', async () => {
    const { proc: rx, address } = await listen(['--host', '127.0.0.1', '--port', '0', '--quiet'], { readyOn: 'stderr' });
    const tx = send(address, ['--quiet'], { stdin: 'pipe' });
    tx.child.stdin!.write(randomBytes(MiB));
    await waitFor(() => rx.stdoutBytes > 0 || !rx.running || !tx.running, { timeoutMs: 20_000, what: 'the first bytes on the receiver stdout' });
    tx.kill('SIGKILL');
    await tx.exited;
    const again = send(address, ['--quiet', '--retry-timeout', '10'], { stdin: 'pipe' });
    again.child.stdin!.end(randomBytes(1000));
    // The default resume timeout is 60 s: the failure must come from the new sender, well before.
    const e = await rx.waitExit(30_000);
    assert.notEqual(e.code, 0, rx.describe());
    assert.match(rx.stderr, TYPED_ERROR, rx.describe());
    const e2 = await again.waitExit(30_000);
    assert.notEqual(e2.code, 0, `the new stdin sender must not succeed:\n${again.describe()}`);
    assert.match(again.stderr, TYPED_ERROR, again.describe());
  });

  test('usage errors exit 2 with a message', async () => {
    const p = new PipeProc(['send']);
    const e = await p.waitExit(15_000);
    assert.equal(e.code, 2, p.describe());
    const q = new PipeProc(['send', '127.0.0.1:1', '--in', join(tmp.dir, 'does-not-exist')]);
    const e2 = await q.waitExit(15_000);
    assert.notEqual(e2.code, 0, q.describe());
    assert.ok(q.stderr.trim() !== '', q.describe());
  });
});
