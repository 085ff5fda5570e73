import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { startFakePeer, type FakePeer } from '../../helpers/fake-peer.js';
import { startFaultProxy, type FaultProxy, type FaultProxyConnectionInfo } from '../../helpers/fault-proxy.js';
import { closed, once, readBytes, waitFor } from '../../helpers/wait.js';

/** A plain TCP client of the proxy that records what it receives and its error. */
interface Client {
  socket: Socket;
  received(): Buffer;
  error: NodeJS.ErrnoException | undefined;
}

async function connectClient(address: string): Promise<Client> {
  const [host, port] = address.split(':') as [string, string];
  const socket = connect({ host, port: Number(port), noDelay: true });
  const chunks: Buffer[] = [];
  const client: Client = { socket, received: () => Buffer.concat(chunks), error: undefined };
  socket.on('error', (err) => (client.error = err));
  await once(socket, 'connect');
  socket.on('data', (b: Buffer) => chunks.push(b));
  return client;
}

describe('fault proxy', () => {
  let peer: FakePeer;
  let proxy: FaultProxy;
  const clients: Client[] = [];
  const client = async (): Promise<Client> => {
    const c = await connectClient(proxy.address);
    clients.push(c);
    return c;
  };

  beforeEach(async () => {
    peer = await startFakePeer();
    proxy = await startFaultProxy({ target: peer.address });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await proxy.close();
    await peer.close();
  });

  it('fault proxy - forwards bytes both ways and counts them', async () => {
    const events: FaultProxyConnectionInfo[] = [];
    proxy.on('connection', (info: FaultProxyConnectionInfo) => events.push(info));
    assert.match(proxy.address, /^127\.0\.0\.1:\d+$/);
    const c = await client();
    const conn = await peer.nextConnection();
    c.socket.write('hello');
    assert.equal((await conn.waitFor(5)).toString(), 'hello');
    conn.write('world!');
    await waitFor(() => c.received().length === 6, { what: 'the reply' });
    assert.equal(c.received().toString(), 'world!');
    assert.equal(proxy.connections, 1);
    assert.equal(proxy.bytesUp, 5);
    assert.equal(proxy.bytesDown, 6);
    assert.equal(proxy.live, 1);
    assert.deepEqual(events, [{ id: 0, refused: false }]);
  });

  it('fault proxy - half-close is forwarded in each direction', async () => {
    const c = await client();
    const conn = await peer.nextConnection();
    c.socket.end('last');
    await conn.ended;
    assert.equal(conn.received().toString(), 'last');
    // The fake peer (allowHalfOpen false) ends its side in turn; the client sees EOF.
    await once(c.socket, 'end');
    await closed(c.socket);
  });

  it('fault proxy - cutAll destroys every live connection pair', async () => {
    const a = await client();
    const b = await client();
    const connA = await peer.nextConnection();
    const connB = await peer.nextConnection();
    proxy.cutAll();
    await Promise.all([closed(a.socket), closed(b.socket), connA.closed, connB.closed]);
    await waitFor(() => proxy.live === 0, { what: 'no live pairs' });
    // New connections still go through.
    const c = await client();
    const connC = await peer.nextConnection();
    c.socket.write('again');
    assert.equal((await connC.waitFor(5)).toString(), 'again');
  });

  it('fault proxy - cutAll with reset gives the client ECONNRESET', async () => {
    const c = await client();
    await peer.nextConnection();
    proxy.cutAll({ reset: true });
    await closed(c.socket);
    assert.equal(c.error?.code, 'ECONNRESET');
  });

  it('fault proxy - stall holds bytes both ways without closing, then delivers them in order', async () => {
    const c = await client();
    const conn = await peer.nextConnection();
    proxy.stall(true);
    c.socket.write('abc');
    c.socket.write('def');
    conn.write('xyz');
    await waitFor(() => proxy.held.up === 6 && proxy.held.down === 3, { what: 'the proxy to hold 6 bytes up and 3 down' });
    // Held inside the proxy, so neither end can have them.
    assert.equal(conn.bytesReceived, 0);
    assert.equal(c.received().length, 0);
    assert.equal(c.socket.destroyed, false);
    assert.equal(conn.isClosed, false);
    proxy.stall(false);
    assert.equal((await conn.waitFor(6)).toString(), 'abcdef');
    await waitFor(() => c.received().length === 3, { what: 'the held reply' });
    assert.equal(c.received().toString(), 'xyz');
    assert.deepEqual(proxy.held, { up: 0, down: 0 });
  });

  it('fault proxy - delay keeps every byte in order', async () => {
    proxy.delay(15);
    const c = await client();
    const conn = await peer.nextConnection();
    const expected = Array.from({ length: 100 }, (_, i) => `<${i}>`).join('');
    for (let i = 0; i < 100; i++) c.socket.write(`<${i}>`);
    assert.equal((await conn.waitFor(expected.length)).toString(), expected);
    conn.write(expected);
    await waitFor(() => c.received().length === expected.length, { what: 'the delayed reply' });
    assert.equal(c.received().toString(), expected);
  });

  it('fault proxy - slice forwards pieces of min..max bytes, in order', async () => {
    proxy.slice(1, 4);
    const sizes: Record<string, number[]> = { up: [], down: [] };
    proxy.on('forward', (direction: string, n: number) => sizes[direction]!.push(n));
    const c = await client();
    const conn = await peer.nextConnection();
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    c.socket.write(data);
    assert.ok((await conn.waitFor(data.length)).equals(data));
    conn.write(data);
    await waitFor(() => c.received().length === data.length, { what: 'the sliced reply' });
    assert.ok(c.received().equals(data));
    for (const dir of ['up', 'down']) {
      assert.ok(sizes[dir]!.length >= data.length / 4, `${dir}: ${sizes[dir]!.length} pieces`);
      assert.ok(
        sizes[dir]!.every((n) => n >= 1 && n <= 4),
        `${dir}: a piece outside 1..4`,
      );
    }
  });

  it('fault proxy - corruptNext flips one bit at the offset, once', async () => {
    const c = await client();
    const conn = await peer.nextConnection();
    const data = Buffer.alloc(64, 0xaa);
    proxy.corruptNext('up', 10);
    c.socket.write(data);
    const first = await conn.waitFor(64);
    const diff = [...first].map((b, i) => [i, b ^ data[i]!] as const).filter(([, x]) => x !== 0);
    assert.deepEqual(diff, [[10, 0x01]]);
    c.socket.write(data);
    assert.ok((await conn.waitFor(128)).subarray(64).equals(data), 'the next chunk is untouched');
  });

  it('fault proxy - corruptNext offsets count across chunks and work downstream', async () => {
    const c = await client();
    const conn = await peer.nextConnection();
    const data = Buffer.alloc(64, 0x00);
    proxy.corruptNext('down', 100);
    conn.write(data);
    await waitFor(() => c.received().length === 64, { what: 'the first chunk' });
    assert.ok(c.received().equals(data), 'the first chunk is untouched');
    conn.write(data);
    await waitFor(() => c.received().length === 128, { what: 'the second chunk' });
    const got = c.received();
    for (let i = 0; i < 128; i++) assert.equal(got[i], i === 100 ? 0x01 : 0x00, `byte ${i}`);
  });

  it('fault proxy - refuse destroys new connections at once without dialing the target', async () => {
    const events: FaultProxyConnectionInfo[] = [];
    proxy.on('connection', (info: FaultProxyConnectionInfo) => events.push(info));
    proxy.refuse(true);
    const c = await client();
    c.socket.resume();
    await closed(c.socket);
    assert.equal(proxy.connections, 1);
    assert.deepEqual(events, [{ id: 0, refused: true }]);
    assert.equal(peer.connections.length, 0);
    proxy.refuse(false);
    const d = await client();
    const conn = await peer.nextConnection();
    d.socket.write('ok');
    assert.equal((await conn.waitFor(2)).toString(), 'ok');
    assert.equal(proxy.connections, 2);
  });

  it('fault proxy - close destroys live connections and stops listening', async () => {
    const c = await client();
    await peer.nextConnection();
    await proxy.close();
    await closed(c.socket);
    const late = connect({ host: '127.0.0.1', port: proxy.port });
    const [err] = await once<[NodeJS.ErrnoException]>(late, 'error');
    assert.equal(err.code, 'ECONNREFUSED');
  });

  it('fault proxy - the target refusing closes the client connection', async () => {
    await peer.close();
    const c = await client();
    c.socket.resume();
    await closed(c.socket);
    assert.equal(proxy.live, 0);
  });

  it('fault proxy - a burst larger than the proxy buffer survives a stall intact', async () => {
    const c = await client();
    const conn = await peer.nextConnection();
    proxy.stall(true);
    // 8 MiB, far more than a lane holds (1 MiB) before it stops reading its source.
    const data = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i, i);
    c.socket.write(data);
    await waitFor(() => proxy.held.up >= 1024 * 1024, { what: 'the proxy to hold 1 MiB', timeoutMs: 10_000 });
    assert.equal(conn.bytesReceived, 0);
    proxy.stall(false);
    assert.ok((await conn.waitFor(data.length, 20_000)).equals(data));
  });
});

describe('fault proxy + readBytes', () => {
  it('fault proxy - sliced bytes reassemble through a stream reader', async () => {
    const peer = await startFakePeer();
    const proxy = await startFaultProxy({ target: peer.address });
    try {
      proxy.slice(1, 3);
      const c = await connectClient(proxy.address);
      c.socket.removeAllListeners('data');
      const conn = await peer.nextConnection();
      conn.write('a fairly long reply, cut into tiny pieces');
      assert.equal((await readBytes(c.socket, 41)).toString(), 'a fairly long reply, cut into tiny pieces');
      c.socket.destroy();
    } finally {
      await proxy.close();
      await peer.close();
    }
  });
});
