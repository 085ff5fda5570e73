import assert from 'node:assert/strict';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, isSkeinError } from '../../../src/errors.js';
import { dial } from '../../../src/transport/index.js';
import { tcpTransport } from '../../../src/transport/tcp.js';
import { tlsTransport } from '../../../src/transport/tls.js';
import type { Connection, Listener } from '../../../src/transport/transport.js';
import { clientTls, serverTls } from '../../helpers/tls.js';
import { closed, once, readBytes, waitFor } from '../../helpers/wait.js';

function ignore(): void {}

function hasCode(code: string, messageIncludes?: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSkeinError(err), `expected a SkeinError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (messageIncludes !== undefined) assert.ok(err.message.includes(messageIncludes), `"${err.message}" should include "${messageIncludes}"`);
    return true;
  };
}

/** A TLS echo listener that records what it accepted. */
async function echoListener(mtls = false): Promise<{ listener: Listener; accepted: Connection[] }> {
  const accepted: Connection[] = [];
  const listener = await tlsTransport.listen({ tls: serverTls({ mtls }) }, (conn) => {
    conn.socket.on('error', ignore);
    accepted.push(conn);
    conn.socket.pipe(conn.socket);
  });
  return { listener, accepted };
}

/** Dial and prove the connection carries bytes both ways. */
async function roundTrip(conn: Connection): Promise<void> {
  conn.socket.on('error', ignore);
  const reply = readBytes(conn.socket, 4);
  conn.socket.write('ping');
  assert.equal((await reply).toString(), 'ping');
}

/** A TCP server that accepts and then says nothing (a TLS handshake never completes). */
async function silentServer(): Promise<{ server: Server; port: number; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    s.on('error', ignore);
    sockets.push(s);
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return { server, port: (server.address() as { port: number }).port, sockets };
}

describe('tls transport', () => {
  it('tls - plaintext sent to a TLS listener is dropped and the listener keeps serving', async () => {
    const { listener, accepted } = await echoListener();
    try {
      for (const payload of ['GET / HTTP/1.1\r\nHost: x\r\n\r\n', Buffer.alloc(600, 0x16), '']) {
        const raw = netConnect({ host: '127.0.0.1', port: listener.port! });
        raw.on('error', ignore);
        await once(raw, 'connect');
        if (payload.length > 0) raw.write(payload);
        else raw.end();
        raw.resume();
        await closed(raw);
      }
      const conn = await tlsTransport.dial(listener.address, { tls: clientTls() });
      await roundTrip(conn);
      conn.socket.destroy();
      assert.equal(accepted.length, 1, 'only the TLS client is handed to onConnection');
    } finally {
      await listener.close();
    }
  });

  it('tls - a server certificate from an untrusted CA fails with SKEIN_ERR_CONNECT_FAILED', async () => {
    const { listener, accepted } = await echoListener();
    try {
      await assert.rejects(tlsTransport.dial(listener.address, { tls: clientTls({ wrongCa: true }) }), (err: unknown) => {
        hasCode(ErrorCode.CONNECT_FAILED, listener.address)(err);
        assert.ok((err as Error).cause !== undefined, 'the TLS error is kept as the cause');
        return true;
      });
      assert.equal(accepted.length, 0);
    } finally {
      await listener.close();
    }
  });

  it('tls - a server name that does not match the certificate fails with SKEIN_ERR_CONNECT_FAILED', async () => {
    const { listener } = await echoListener();
    try {
      await assert.rejects(tlsTransport.dial(listener.address, { tls: { ...clientTls(), servername: 'not-localhost.example' } }), hasCode(ErrorCode.CONNECT_FAILED));
    } finally {
      await listener.close();
    }
  });

  it('tls - the certificate is checked against the target host name', async () => {
    const { listener } = await echoListener();
    try {
      const conn = await tlsTransport.dial(`localhost:${listener.port}`, { tls: clientTls() });
      await roundTrip(conn);
      assert.equal(conn.peer.tlsPeerName, 'localhost', 'the dialer sees the verified server CN');
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  it('tls - rejectUnauthorized false connects without verification and names no peer', async () => {
    const { listener } = await echoListener();
    try {
      const conn = await tlsTransport.dial(listener.address, { tls: { rejectUnauthorized: false } });
      await roundTrip(conn);
      assert.equal(conn.peer.tlsPeerName, undefined);
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  it('mTLS - the client certificate CN is given as peer.tlsPeerName', async () => {
    const { listener, accepted } = await echoListener(true);
    try {
      const conn = await tlsTransport.dial(listener.address, { tls: clientTls({ clientCert: true }) });
      await roundTrip(conn);
      assert.equal(accepted.length, 1);
      assert.equal(accepted[0]!.peer.tlsPeerName, 'skein-test-client');
      assert.equal(accepted[0]!.peer.transport, 'tls');
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  it('mTLS - without TLS client auth there is no tlsPeerName on the listener side', async () => {
    const { listener, accepted } = await echoListener(false);
    try {
      const conn = await tlsTransport.dial(listener.address, { tls: clientTls({ clientCert: true }) });
      await roundTrip(conn);
      assert.equal(accepted[0]!.peer.tlsPeerName, undefined);
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  for (const [what, tls] of [
    ['no client certificate', clientTls()],
    ['a client certificate from an unknown CA', clientTls({ untrustedClientCert: true })],
  ] as const) {
    it(`mTLS - a client with ${what} is never handed over`, async () => {
      const { listener, accepted } = await echoListener(true);
      try {
        // Under TLS 1.3 the client's handshake completes before the server checks its
        // certificate, so the refusal shows either as a failed dial or a dying socket.
        try {
          const conn = await tlsTransport.dial(listener.address, { tls });
          conn.socket.on('error', ignore);
          conn.socket.resume();
          await closed(conn.socket);
        } catch (err) {
          hasCode(ErrorCode.CONNECT_FAILED)(err);
        }
        const good = await tlsTransport.dial(listener.address, { tls: clientTls({ clientCert: true }) });
        await roundTrip(good);
        good.socket.destroy();
        assert.equal(accepted.length, 1, 'only the authenticated client was handed over');
        assert.equal(accepted[0]!.peer.tlsPeerName, 'skein-test-client');
      } finally {
        await listener.close();
      }
    });
  }

  describe('against a server that never answers the handshake', () => {
    let silent: Awaited<ReturnType<typeof silentServer>>;
    before(async () => {
      silent = await silentServer();
    });
    after(async () => {
      for (const s of silent.sockets) s.destroy();
      await new Promise<void>((resolve) => silent.server.close(() => resolve()));
    });

    it('tls - connectTimeoutMs covers the handshake and fails with SKEIN_ERR_CONNECT_FAILED', async () => {
      await assert.rejects(tlsTransport.dial(`127.0.0.1:${silent.port}`, { tls: clientTls(), connectTimeoutMs: 200 }), hasCode(ErrorCode.CONNECT_FAILED, 'timed out'));
    });

    it('tls - aborting during the handshake rejects with SKEIN_ERR_CANCELLED and closes the socket', async () => {
      const ac = new AbortController();
      const before = silent.sockets.length;
      const dialing = tlsTransport.dial(`127.0.0.1:${silent.port}`, { tls: clientTls(), signal: ac.signal });
      await waitFor(() => silent.sockets.length > before, { what: 'the TCP connection to be accepted' });
      ac.abort();
      await assert.rejects(dialing, hasCode(ErrorCode.CANCELLED));
      const serverSide = silent.sockets[before]!;
      serverSide.resume();
      await closed(serverSide);
    });
  });

  it('tls - listening without cert and key fails with SKEIN_ERR_INVALID_OPTIONS', async () => {
    await assert.rejects(tlsTransport.listen({ tls: {} }, ignore), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(tlsTransport.listen({}, ignore), hasCode(ErrorCode.INVALID_OPTIONS));
  });

  it('tls - a tcp listener given tls options is a TLS listener', async () => {
    const accepted: Connection[] = [];
    const listener = await tcpTransport.listen({ tls: serverTls() }, (conn) => {
      conn.socket.on('error', ignore);
      accepted.push(conn);
      conn.socket.pipe(conn.socket);
    });
    try {
      const conn = await dial(`tls://${listener.address}`, { tls: clientTls() });
      await roundTrip(conn);
      assert.equal(conn.peer.transport, 'tls');
      assert.equal(accepted[0]!.peer.transport, 'tls');
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  it('tls - dial() of a host:port target goes over TLS when tls options are given', async () => {
    const { listener } = await echoListener();
    try {
      const conn = await dial(listener.address, { tls: clientTls() });
      assert.equal(conn.peer.transport, 'tls');
      await roundTrip(conn);
      conn.socket.destroy();
    } finally {
      await listener.close();
    }
  });
});
