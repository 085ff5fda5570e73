/**
 * The pipe's security (docs/pipe.md "Security"): a token checked in the handshake, TLS.
 * A sender with a wrong (or no) token, or speaking plaintext to a TLS listener, is refused
 * with a clear, typed error, fast, and nothing is written at the receiver.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { ErrorCode, isSkeinError, pipeListen, pipeSend, Status, type PipeReceiver, type PipeSender, type SkeinError } from '../../src/index.js';
import { clientTls, serverTls } from '../helpers/tls.js';
import { once, readAll, withTimeout } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'skein-pipe-sec-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const open: { receivers: PipeReceiver[]; senders: PipeSender[] } = { receivers: [], senders: [] };
afterEach(async () => {
  for (const s of open.senders.splice(0)) s.destroy();
  await Promise.all(open.receivers.splice(0).map((r) => r.close().catch(() => {})));
});

async function listen(options: Parameters<typeof pipeListen>[0]): Promise<PipeReceiver> {
  const r = await pipeListen(options);
  open.receivers.push(r);
  return r;
}

function send(target: string, options: Parameters<typeof pipeSend>[1]): PipeSender {
  const s = pipeSend(target, options);
  open.senders.push(s);
  return s;
}

async function failure(p: Promise<unknown>, what: string): Promise<SkeinError> {
  try {
    await withTimeout(p, 10_000, what);
  } catch (err) {
    assert.ok(isSkeinError(err), `${what}: not a SkeinError: ${String(err)}`);
    return err;
  }
  return assert.fail(`${what} succeeded`);
}

describe('pipe security', () => {
  it('token - a wrong token is refused in the handshake (SKEIN_ERR_AUTH_REFUSED) and nothing is written', async () => {
    const out = join(dir, 'wrong-token.out');
    const r = await listen({ out, token: 'right' });
    const refused = once<[{ peer: string; reason: string }]>(r, 'refused');
    const s = send(r.address, { token: 'wrong', retryTimeoutMs: 30_000 });
    s.end('secret data');
    const err = await failure(s.done, 'the sender');
    assert.equal(err.code, ErrorCode.AUTH_REFUSED);
    assert.equal(err.status, Status.UNAUTHENTICATED);
    assert.match(err.message, /refused the token/);
    assert.equal((await refused)[0].reason, 'wrong token');
    assert.equal(s.attachments, 0);
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('wrong-token')), [], 'no output, part or state file');
    assert.equal(r.bytes, 0);
  });

  it('token - a sender without a token is refused the same way', async () => {
    const r = await listen({ token: Buffer.from([1, 2, 3]) });
    const refused = once<[{ reason: string }]>(r, 'refused');
    const s = send(r.address, {});
    s.end('x');
    assert.equal((await failure(s.done, 'the sender')).code, ErrorCode.AUTH_REFUSED);
    assert.equal((await refused)[0].reason, 'no token');
  });

  it('tls - token and TLS together carry the bytes', async () => {
    const r = await listen({ token: 'k3y', tls: serverTls() });
    const s = send(r.address, { token: 'k3y', tls: clientTls() });
    const payload = randomBytes(3 * 1024 * 1024);
    const received = readAll(r.readable!, 10_000);
    s.end(payload);
    const [sent, got, bytes] = await withTimeout(Promise.all([s.done, r.done, received]), 10_000, 'the TLS transfer');
    assert.ok(bytes.equals(payload));
    assert.equal(sent.sha256, createHash('sha256').update(payload).digest('hex'));
    assert.deepEqual(got, sent);
  });

  it('tls - plaintext sent to a TLS listener is refused with a message that says so, and nothing is written', async () => {
    const out = join(dir, 'plain.out');
    const r = await listen({ out, tls: serverTls() });
    const s = send(r.address, { retryTimeoutMs: 30_000 });
    s.end('in the clear');
    const err = await failure(s.done, 'the sender');
    assert.equal(err.code, ErrorCode.HANDSHAKE);
    assert.match(err.message, /expects TLS/);
    assert.equal(s.attachments, 0);
    assert.ok(!existsSync(out) && !existsSync(`${out}.skein-part`) && !existsSync(`${out}.skein-state`));
  });

  it('tls - a TLS sender to a plaintext listener, or one that does not trust the certificate, fails at once', async () => {
    const plain = await listen({});
    const s1 = send(plain.address, { tls: clientTls(), retryTimeoutMs: 30_000 });
    s1.end('x');
    const e1 = await failure(s1.done, 'TLS to plaintext');
    assert.equal(e1.code, ErrorCode.CONNECT_FAILED);
    assert.match(e1.message, /TLS/);
    const secure = await listen({ tls: serverTls() });
    const s2 = send(secure.address, { tls: clientTls({ wrongCa: true }), retryTimeoutMs: 30_000 });
    s2.end('x');
    const e2 = await failure(s2.done, 'an untrusted certificate');
    assert.equal(e2.code, ErrorCode.CONNECT_FAILED);
    assert.match(e2.message, /certificate/i);
  });
});
