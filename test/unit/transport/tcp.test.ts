import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isSkeinError } from '../../../src/errors.js';
import { tcpTransport } from '../../../src/transport/tcp.js';
import type { Connection } from '../../../src/transport/transport.js';
import { readBytes } from '../../helpers/wait.js';

function ignore(): void {}

function hasCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => isSkeinError(err) && err.code === code;
}

/** A port nothing listens on (it was bound a moment ago, then released). */
async function freePort(): Promise<number> {
  const l = await tcpTransport.listen({ host: '127.0.0.1', port: 0 }, ignore);
  await l.close();
  return l.port!;
}

describe('tcp transport', () => {
  it('tcp - a refused dial says "connect ECONNREFUSED host:port"', async () => {
    const port = await freePort();
    await assert.rejects(tcpTransport.dial(`127.0.0.1:${port}`), (err: unknown) => {
      assert.ok(isSkeinError(err));
      assert.equal(err.code, ErrorCode.CONNECT_FAILED);
      assert.equal(err.statusName, 'UNAVAILABLE');
      assert.equal(err.message, `connect ECONNREFUSED 127.0.0.1:${port}`);
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
      return true;
    });
  });

  it('tcp - listening on a port in use fails with "listen EADDRINUSE"', async () => {
    const first = await tcpTransport.listen({ host: '127.0.0.1', port: 0 }, ignore);
    try {
      await assert.rejects(tcpTransport.listen({ host: '127.0.0.1', port: first.port! }, ignore), (err: unknown) => hasCode(ErrorCode.INVALID_OPTIONS)(err) && (err as Error).message === `listen EADDRINUSE ${first.address}`);
    } finally {
      await first.close();
    }
  });

  it('tcp - defaults to 127.0.0.1 and a free port', async () => {
    const listener = await tcpTransport.listen({}, ignore);
    try {
      assert.match(listener.address, /^127\.0\.0\.1:\d+$/);
      assert.ok(listener.port! > 0);
    } finally {
      await listener.close();
    }
  });

  it('tcp - IPv6 addresses are bracketed', async (t) => {
    let listener;
    try {
      listener = await tcpTransport.listen({ host: '::1', port: 0 }, (c) => {
        c.socket.on('error', ignore);
        c.socket.pipe(c.socket);
      });
    } catch {
      t.skip('no IPv6 loopback here');
      return;
    }
    try {
      assert.equal(listener.address, `[::1]:${listener.port}`);
      const conn: Connection = await tcpTransport.dial(listener.address);
      conn.socket.on('error', ignore);
      assert.equal(conn.peer.address, listener.address);
      assert.match(conn.local, /^\[::1\]:\d+$/);
      const reply = readBytes(conn.socket, 2);
      conn.socket.write('v6');
      assert.equal((await reply).toString(), 'v6');
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  it('tcp - bad targets and options fail with SKEIN_ERR_INVALID_OPTIONS', async () => {
    await assert.rejects(tcpTransport.dial('nope'), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(tcpTransport.dial('tls://127.0.0.1:1'), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(tcpTransport.dial('unix:/x.sock'), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(tcpTransport.dial('127.0.0.1:1', { connectTimeoutMs: 0 }), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(tcpTransport.listen({ port: 70000 }, ignore), hasCode(ErrorCode.INVALID_OPTIONS));
  });
});
