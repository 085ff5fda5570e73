/**
 * Transport compliance suite: the behaviour every `Transport` must have, written once and
 * run against each implementation (tcp, tls, unix, memory; see
 * test/unit/transport/compliance.test.ts).
 *
 *   transportCompliance('tcp', async () => ({ transport: tcpTransport, listenOptions: { port: 0 } }));
 *
 * `setup` is called once per test and must return listen options that are free (a fresh
 * unix path or memory name each time); `teardown` runs after the test, after every socket
 * and listener the test made has been destroyed/closed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventEmitter, getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import type { Duplex } from 'node:stream';
import { createError, ErrorCode, isSkeinError } from '../../src/errors.js';
import type { Connection, DialOptions, Listener, ListenOptions, Transport } from '../../src/transport/transport.js';
import { once, readAll, readBytes, withTimeout } from '../helpers/wait.js';

export interface TransportTestSetup {
  transport: Transport;
  listenOptions: ListenOptions;
  dialOptions?: DialOptions;
  teardown?: () => Promise<void>;
}

const TEST_TIMEOUT_MS = 30_000;

function ignore(): void {}

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isSkeinError(err), `expected a SkeinError, got ${String(err)}`);
    assert.equal(err.code, code, `unexpected code for error: ${err.message}`);
    return true;
  };
}

/** Per-test harness: tracks every socket and listener so that cleanup is complete. */
class Harness {
  readonly transport: Transport;
  readonly listenOptions: ListenOptions;
  readonly dialOptions: DialOptions;
  readonly #setup: TransportTestSetup;
  readonly #sockets: Duplex[] = [];
  readonly #listeners: Listener[] = [];
  readonly #accepted: Connection[] = [];
  #taken = 0;
  readonly #events = new EventEmitter();

  constructor(setup: TransportTestSetup) {
    this.#setup = setup;
    this.transport = setup.transport;
    this.listenOptions = setup.listenOptions;
    this.dialOptions = setup.dialOptions ?? {};
  }

  /** Listen with the setup's options; every accepted connection is queued for `accepted()`. */
  async listen(onConnection?: (conn: Connection) => void): Promise<Listener> {
    const listener = await this.transport.listen(this.listenOptions, (conn) => {
      conn.socket.on('error', ignore);
      this.#sockets.push(conn.socket);
      this.#accepted.push(conn);
      onConnection?.(conn);
      this.#events.emit('accepted');
    });
    this.#listeners.push(listener);
    return listener;
  }

  /** Dial with the setup's dial options plus `extra`. */
  async dial(address: string, extra: DialOptions = {}): Promise<Connection> {
    const conn = await this.transport.dial(address, { ...this.dialOptions, ...extra });
    this.track(conn);
    return conn;
  }

  track(conn: Connection): void {
    conn.socket.on('error', ignore);
    this.#sockets.push(conn.socket);
  }

  /** The next accepted connection not yet returned. */
  async accepted(timeoutMs = 5000): Promise<Connection> {
    const index = this.#taken++;
    while (this.#accepted[index] === undefined) await once(this.#events, 'accepted', timeoutMs);
    return this.#accepted[index]!;
  }

  async cleanup(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await Promise.all(this.#listeners.map((l) => l.close()));
    await this.#setup.teardown?.();
  }
}

/** Echo everything back, ending when the peer ends. */
function echo(conn: Connection): void {
  conn.socket.pipe(conn.socket);
}

/** Write `data` in random-sized chunks (1..maxChunk), honouring backpressure, then end. */
async function writeChunked(socket: Duplex, data: Buffer, maxChunk: number): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const n = 1 + Math.floor(Math.random() * maxChunk);
    const chunk = data.subarray(offset, offset + n);
    offset += chunk.length;
    if (!socket.write(chunk)) await once(socket, 'drain', 10_000);
  }
  socket.end();
}

/** Run the transport compliance suite against the transport made by `setup`. */
export function transportCompliance(name: string, setup: () => Promise<TransportTestSetup>): void {
  const test = (title: string, fn: (h: Harness) => Promise<void>): void => {
    it(title, { timeout: TEST_TIMEOUT_MS }, async () => {
      const h = new Harness(await setup());
      try {
        await fn(h);
      } finally {
        await h.cleanup();
      }
    });
  };

  describe(`transport compliance: ${name}`, () => {
    test('echo - 1 MiB written in random chunks comes back intact', async (h) => {
      const listener = await h.listen(echo);
      const client = await h.dial(listener.address);
      const data = randomBytes(1024 * 1024);
      const received = readAll(client.socket, 20_000);
      await writeChunked(client.socket, data, 64 * 1024);
      const got = await received;
      assert.equal(got.length, data.length, 'echoed length');
      assert.ok(got.equals(data), 'echoed bytes differ from what was sent');
    });

    test('connections - many concurrent connections stay independent', async (h) => {
      const listener = await h.listen(echo);
      const count = 32;
      const conns = await Promise.all(Array.from({ length: count }, () => h.dial(listener.address)));
      await Promise.all(
        conns.map(async (conn, i) => {
          const data = Buffer.concat([Buffer.from(`conn ${i}:`), randomBytes(32 * 1024)]);
          const received = readAll(conn.socket, 20_000);
          await writeChunked(conn.socket, data, 8 * 1024);
          assert.ok((await received).equals(data), `connection ${i} got someone else's bytes`);
        }),
      );
    });

    test('end - gives EOF on the other side after the data', async (h) => {
      const listener = await h.listen();
      const client = await h.dial(listener.address);
      const server = await h.accepted();
      const serverRead = readAll(server.socket);
      const serverEnded = once(server.socket, 'end');
      client.socket.end(Buffer.from('hello'));
      await serverEnded;
      assert.equal((await serverRead).toString(), 'hello');
      // And the other way round.
      const clientRead = readAll(client.socket);
      const clientEnded = once(client.socket, 'end');
      server.socket.end();
      await clientEnded;
      assert.equal((await clientRead).length, 0);
    });

    test('destroy - the dialer destroying is seen by the listener side as close', async (h) => {
      const listener = await h.listen();
      const client = await h.dial(listener.address);
      const server = await h.accepted();
      server.socket.resume();
      const closed = once(server.socket, 'close', 10_000);
      client.socket.destroy();
      await closed;
      assert.equal(server.socket.destroyed, true);
    });

    test('destroy - the listener side destroying is seen by the dialer as close', async (h) => {
      const listener = await h.listen();
      const client = await h.dial(listener.address);
      const server = await h.accepted();
      client.socket.resume();
      const closed = once(client.socket, 'close', 10_000);
      server.socket.destroy();
      await closed;
      assert.equal(client.socket.destroyed, true);
    });

    test('listener close - refuses new connections and leaves existing ones working', async (h) => {
      const listener = await h.listen(echo);
      const client = await h.dial(listener.address);
      await listener.close();
      await assert.rejects(h.dial(listener.address), isCode(ErrorCode.CONNECT_FAILED));
      const reply = readBytes(client.socket, 5);
      client.socket.write('still');
      assert.equal((await reply).toString(), 'still');
    });

    test('listener close - is idempotent and the options can be listened on again', async (h) => {
      const first = await h.listen();
      await first.close();
      await first.close();
      const second = await h.listen(echo);
      const client = await h.dial(second.address);
      const reply = readBytes(client.socket, 2);
      client.socket.write('ok');
      assert.equal((await reply).toString(), 'ok');
    });

    test('dial - a closed address fails with SKEIN_ERR_CONNECT_FAILED naming the address', async (h) => {
      const listener = await h.listen();
      const address = listener.address;
      await listener.close();
      await assert.rejects(h.dial(address), (err: unknown) => {
        isCode(ErrorCode.CONNECT_FAILED)(err);
        assert.ok((err as Error).message.includes(address), `message should name ${address}: ${(err as Error).message}`);
        return true;
      });
    });

    test('dial - an already aborted signal rejects with SKEIN_ERR_CANCELLED', async (h) => {
      const listener = await h.listen();
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(h.dial(listener.address, { signal: ac.signal }), isCode(ErrorCode.CANCELLED));
    });

    test('dial - aborting while connecting rejects with SKEIN_ERR_CANCELLED', async (h) => {
      const listener = await h.listen();
      const ac = new AbortController();
      const dialing = h.dial(listener.address, { signal: ac.signal });
      ac.abort();
      await assert.rejects(dialing, isCode(ErrorCode.CANCELLED));
    });

    test('dial - an abort reason that is a SkeinError is the rejection', async (h) => {
      const listener = await h.listen();
      const ac = new AbortController();
      const reason = createError(ErrorCode.DEADLINE, 'deadline passed');
      const dialing = h.dial(listener.address, { signal: ac.signal });
      ac.abort(reason);
      await assert.rejects(dialing, (err: unknown) => err === reason);
    });

    test('dial - leaves no listeners behind and ignores a later abort', async (h) => {
      const listener = await h.listen(echo);
      const ac = new AbortController();
      const conn = await h.transport.dial(listener.address, { ...h.dialOptions, signal: ac.signal });
      assert.equal(getEventListeners(ac.signal, 'abort').length, 0, 'abort listener left on the signal');
      // ('close' and 'end' are not checked: net and tls sockets listen to those themselves.)
      for (const event of ['error', 'connect', 'secureConnect', 'timeout']) {
        assert.equal(conn.socket.listenerCount(event), 0, `'${event}' listener left on the socket`);
      }
      h.track(conn);
      ac.abort();
      const reply = readBytes(conn.socket, 4);
      conn.socket.write('live');
      assert.equal((await reply).toString(), 'live');
    });

    test('cork - uncork delivers every corked write, in order', async (h) => {
      const listener = await h.listen();
      const client = await h.dial(listener.address);
      const server = await h.accepted();
      const parts = Array.from({ length: 200 }, (_, i) => `${i},`);
      const expected = parts.join('');
      const got = readBytes(server.socket, expected.length);
      client.socket.cork();
      client.socket.cork();
      for (const p of parts.slice(0, 100)) client.socket.write(p);
      client.socket.uncork();
      for (const p of parts.slice(100)) client.socket.write(p);
      client.socket.uncork();
      assert.equal((await got).toString(), expected);
    });

    test('backpressure - write returns false when the reader stops, drain follows its reading', async (h) => {
      const listener = await h.listen();
      const client = await h.dial(listener.address);
      const server = await h.accepted();
      // The server side does not read: nothing is attached to it yet.
      const chunk = Buffer.alloc(64 * 1024, 0x5a);
      let written = 0;
      for (;;) {
        const more = client.socket.write(chunk);
        written += chunk.length;
        if (!more) break;
        assert.ok(written < 512 * 1024 * 1024, 'write() never returned false');
      }
      const drained = once(client.socket, 'drain', 20_000);
      let received = 0;
      server.socket.on('data', (b: Buffer) => {
        received += b.length;
      });
      await drained;
      const ended = once(server.socket, 'end', 20_000);
      client.socket.end();
      await ended;
      assert.equal(received, written);
    });

    test('peer info - addresses are filled and agree between the two ends', async (h) => {
      const listener = await h.listen();
      assert.equal(typeof listener.address, 'string');
      assert.ok(listener.address.length > 0);
      if (listener.port !== undefined) {
        assert.ok(Number.isInteger(listener.port) && listener.port > 0, `port ${listener.port}`);
        assert.ok(listener.address.endsWith(`:${listener.port}`), `${listener.address} does not end with the port`);
      }
      const client = await h.dial(listener.address);
      const server = await h.accepted();
      for (const conn of [client, server]) {
        assert.equal(conn.peer.transport, h.transport.name);
        assert.ok(conn.peer.address.length > 0, 'peer.address is empty');
        assert.ok(conn.local.length > 0, 'local is empty');
      }
      assert.equal(client.peer.address, listener.address);
      assert.equal(server.local, listener.address);
      assert.equal(client.local, server.peer.address);
    });

    test('listen - onConnection is called after listen resolves, once per dial', async (h) => {
      let listening = false;
      let early = false;
      const listener = await h.listen(() => {
        if (!listening) early = true;
      });
      listening = true;
      await Promise.all([h.dial(listener.address), h.dial(listener.address), h.dial(listener.address)]);
      await withTimeout(Promise.all([h.accepted(), h.accepted(), h.accepted()]), 5000, 'three accepted connections');
      assert.equal(early, false);
    });
  });
}
