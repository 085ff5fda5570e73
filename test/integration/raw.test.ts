/**
 * Raw methods (`raw: true`, codec id 4 'bytes'): Buffers travel as they are, on every call
 * shape, and a peer that names another codec for a raw method (or the bytes codec for a
 * normal one) is refused with INVALID_ARGUMENT without breaking the connection.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { bidi, clientStream, implement, service, unary, type RequestSource } from '../../src/index.js';
import { assertStatus, Cleanup, collect, listenOn, rejection } from './_harness.js';

const Blob = service('blob', {
  digest: clientStream<Buffer, Buffer>({ raw: true }),
  echo: bidi<Buffer, Buffer>({ raw: true }),
  size: unary<Buffer, Buffer>({ raw: true }),
});
// The same service name and methods, but not raw: its calls carry msgpack (codec id 1).
const NotRaw = service('blob', { size: unary<Buffer, Buffer>() });

const impl = implement(Blob, {
  async digest(chunks: AsyncIterable<Buffer>) {
    const h = createHash('sha256');
    for await (const c of chunks) {
      assert.ok(Buffer.isBuffer(c));
      h.update(c);
    }
    return h.digest();
  },
  async *echo(chunks: AsyncIterable<Buffer>) {
    for await (const c of chunks) yield c;
  },
  async size(b: Buffer) {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(b.length);
    return out;
  },
});

const cleanup = new Cleanup();
after(() => cleanup.run());

async function start() {
  const server = cleanup.server().add(impl);
  const { target } = await listenOn(server, 'tcp');
  return target;
}

describe('raw methods (codec id 4)', () => {
  it('raw - 8 MiB of chunks through a client stream arrive byte for byte', async () => {
    const target = await start();
    const client = cleanup.client(Blob, { target });
    const chunks = Array.from({ length: 32 }, (_, i) => randomBytes(256 * 1024 + i));
    const expected = createHash('sha256');
    for (const c of chunks) expected.update(c);
    const got = await client.digest(chunks as RequestSource<Buffer>);
    assert.ok(Buffer.isBuffer(got));
    assert.equal(got.toString('hex'), expected.digest('hex'));
  });

  it('raw - bidi echoes Buffers and Uint8Arrays, empty messages included', async () => {
    const target = await start();
    const client = cleanup.client(Blob, { target });
    const sent = [Buffer.from('a'), Buffer.alloc(0), new Uint8Array([1, 2, 3]) as Buffer, randomBytes(70_000)];
    const replies = await collect(client.echo(sent));
    assert.deepEqual(
      replies.map((r) => Buffer.from(r).toString('hex')),
      sent.map((s) => Buffer.from(s).toString('hex')),
    );
  });

  it('raw - a request that is not bytes fails the call with a codec error, before anything is sent', async () => {
    const target = await start();
    const client = cleanup.client(Blob, { target, resilience: false });
    const err = await rejection(client.size({ not: 'bytes' } as unknown as Buffer));
    assert.equal(err.code, 'SKEIN_ERR_CODEC');
    const ok = await client.size(Buffer.alloc(300));
    assert.equal(ok.readUInt32BE(0), 300);
  });

  it('raw - a peer calling a raw method with another codec gets INVALID_ARGUMENT; the connection lives', async () => {
    const target = await start();
    const wrong = cleanup.client(NotRaw, { target, resilience: false });
    const err = await rejection(wrong.size(Buffer.from('x')));
    assertStatus(err, 'INVALID_ARGUMENT');
    assert.match(err.message, /codec id 1/);
    const right = cleanup.client(Blob, { target });
    assert.equal((await right.size(Buffer.alloc(5))).readUInt32BE(0), 5);
  });

  it('raw - a method cannot be both raw and protobuf', () => {
    const fake = { encode: (v: unknown) => v as Buffer, decode: (b: Buffer) => b, name: 'x', id: 3 as const };
    assert.throws(() => unary({ raw: true, protobuf: { request: fake, response: fake } }), /raw or protobuf/);
  });
});
