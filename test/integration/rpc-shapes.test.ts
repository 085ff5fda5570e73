/**
 * The four call shapes end to end over every transport, and what the RPC layer promises
 * around them: metadata and trailers, status codes and details, schemas, codecs, frame
 * size limits, authentication and compression.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { z } from 'zod';
import { ErrorCode, implement, loadProtoType, protobufCodec, pushable, service, SkeinError, Status, unary, serverStream, type Client, type Metadata } from '../../src/index.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { withTimeout } from '../helpers/wait.js';
import { assertStatus, Cleanup, collect, Echo, echoImpl, echoPair, listenOn, rejection, TRANSPORTS } from './_harness.js';

for (const kind of TRANSPORTS) {
  describe(`rpc shapes over ${kind}`, () => {
    const cleanup = new Cleanup();
    let client: Awaited<ReturnType<typeof echoPair>>['client'];
    before(async () => {
      ({ client } = await echoPair(cleanup, kind));
    });
    after(() => cleanup.run());

    it(`unary (${kind}) - echoes the request`, async () => {
      assert.deepEqual(await client.say({ text: 'héllo' }), { text: 'héllo' });
    });

    it(`server stream (${kind}) - delivers 1000 messages in order`, async () => {
      const got = await collect(client.count({ n: 1000 }));
      assert.equal(got.length, 1000);
      got.forEach((m, k) => assert.equal(m.i, k + 1));
    });

    it(`client stream (${kind}) - sums every request`, async () => {
      const requests = Array.from({ length: 200 }, (_, k) => ({ n: k + 1 }));
      assert.deepEqual(await client.sum(requests), { sum: 20100, count: 200 });
      async function* gen() {
        for (let n = 1; n <= 10; n++) yield { n };
      }
      assert.deepEqual(await client.sum(gen()), { sum: 55, count: 10 });
    });

    it(`bidi (${kind}) - echoes each message before the next is sent`, async () => {
      const input = pushable<{ text: string }>();
      const replies = client.chat(input)[Symbol.asyncIterator]();
      for (let k = 0; k < 20; k++) {
        await input.push({ text: `m${k}` });
        const r = await withTimeout(replies.next(), 5000, `reply ${k}`);
        assert.deepEqual(r, { done: false, value: { text: `m${k}` } });
      }
      input.end();
      assert.equal((await withTimeout(replies.next(), 5000, 'the end of the replies')).done, true);
    });
  });
}

describe('rpc metadata and status', () => {
  const cleanup = new Cleanup();
  const Meta = service('meta', {
    whoami: unary<Record<string, never>, { user: string | undefined; bin: string | undefined }>(),
    fail: unary<Record<string, never>, never>(),
    list: serverStream<Record<string, never>, { n: number }>(),
    notFound: unary<Record<string, never>, never>(),
    crash: unary<Record<string, never>, never>(),
  });
  let client!: Client<(typeof Meta)['methods']>;
  const reported: unknown[] = [];
  before(async () => {
    const server = cleanup.server({ onError: (err) => reported.push(err) }).add(
      implement(Meta, {
        whoami: (_req, ctx) => ({ user: ctx.metadata['x-user'] as string | undefined, bin: Buffer.isBuffer(ctx.metadata['x-bin']) ? (ctx.metadata['x-bin'] as Buffer).toString('hex') : undefined }),
        fail: (_req, ctx) => {
          ctx.trailers['x-trace'] = 'abc';
          throw new SkeinError('FAILED_PRECONDITION', 'not now');
        },
        async *list(_req, ctx) {
          ctx.trailers['x-total'] = '3';
          ctx.trailers['x-raw'] = Buffer.from([1, 2, 3]);
          for (let n = 1; n <= 3; n++) yield { n };
        },
        notFound: () => {
          throw new SkeinError('NOT_FOUND', 'x', { details: { id: 42, tried: ['a', 'b'] } });
        },
        crash: () => {
          throw new Error('secret database password leaked in this message');
        },
      }),
    );
    const l = await listenOn(server, 'tcp');
    client = cleanup.client(Meta, { target: l.target });
  });
  after(() => cleanup.run());

  it('metadata - reaches the handler (string and binary values)', async () => {
    const r = await client.whoami({}, { metadata: { 'x-user': 'ada', 'x-bin': Buffer.from([0xca, 0xfe]) } });
    assert.deepEqual(r, { user: 'ada', bin: 'cafe' });
  });

  it('trailers - reach the client of a server stream', async () => {
    const stream = client.list({});
    assert.deepEqual(await collect(stream), [{ n: 1 }, { n: 2 }, { n: 3 }]);
    const trailers: Metadata = await withTimeout(stream.trailers, 5000, 'trailers');
    assert.equal(trailers['x-total'], '3');
    assert.deepEqual(trailers['x-raw'], Buffer.from([1, 2, 3]));
  });

  it('trailers - a failed unary call carries them as error metadata', async () => {
    const err = await rejection(client.fail({}));
    assertStatus(err, 'FAILED_PRECONDITION', ErrorCode.REMOTE);
    assert.equal(err.message, 'not now');
    assert.equal(err.metadata['x-trace'], 'abc');
  });

  it('status - a thrown SkeinError arrives with its status, message and details', async () => {
    const err = await rejection(client.notFound({}));
    assertStatus(err, 'NOT_FOUND', ErrorCode.REMOTE);
    assert.equal(err.message, 'x');
    assert.deepEqual(err.details, { id: 42, tried: ['a', 'b'] });
  });

  it('status - a thrown plain Error arrives as INTERNAL without leaking its text', async () => {
    const before = reported.length;
    const err = await rejection(client.crash({}));
    assertStatus(err, 'INTERNAL', ErrorCode.REMOTE);
    assert.equal(err.message, 'internal error');
    assert.ok(!JSON.stringify({ m: err.message, d: err.details, md: err.metadata }).includes('secret'));
    assert.ok(!/\bat .*\.js/.test(err.message));
    assert.equal(reported.length, before + 1, 'the server reports the real error locally');
  });

  it('status - an unknown service is UNIMPLEMENTED', async () => {
    const Other = service('nope', { ping: unary() });
    const c = cleanup.client(Other, { target: client.connection.target });
    assertStatus(await rejection(c.ping({})), 'UNIMPLEMENTED');
  });

  it('status - an unknown method is UNIMPLEMENTED', async () => {
    const Wider = service('meta', { whoami: unary(), missing: unary() });
    const c = cleanup.client(Wider, { target: client.connection.target });
    assertStatus(await rejection(c.missing({})), 'UNIMPLEMENTED');
    assert.ok((await c.whoami({})) !== undefined, 'known methods still work on the same connection');
  });
});

describe('rpc schemas (Standard Schema with zod)', () => {
  const cleanup = new Cleanup();
  const Greeter = service('greeter', {
    hello: unary({ input: z.object({ name: z.string().min(1), age: z.number().int().optional() }), output: z.object({ message: z.string() }) }),
    broken: unary({ output: z.object({ message: z.string() }) }),
    words: serverStream({ input: z.object({ n: z.number().int().positive() }), output: z.object({ w: z.string() }) }),
  });
  let calls = 0;
  let client: any;
  before(async () => {
    const server = cleanup.server().add(
      implement(Greeter, {
        hello: ({ name }) => {
          calls++;
          return { message: `hi ${name}` };
        },
        broken: () => ({ message: 42 }) as unknown as { message: string },
        async *words({ n }) {
          calls++;
          for (let k = 0; k < n; k++) yield { w: `w${k}` };
        },
      }),
    );
    const l = await listenOn(server, 'tcp');
    client = cleanup.client(Greeter, { target: l.target });
  });
  after(() => cleanup.run());

  it('schemas - a valid request reaches the handler', async () => {
    assert.deepEqual(await client.hello({ name: 'ada' }), { message: 'hi ada' });
    assert.equal(calls, 1);
  });

  it('schemas - a bad request is INVALID_ARGUMENT with issues and the handler is not called', async () => {
    const before = calls;
    const err = await rejection(client.hello({ name: '', age: 1.5 }));
    assertStatus(err, 'INVALID_ARGUMENT', ErrorCode.REMOTE);
    const issues = (err.details as { issues: Array<{ message: string; path?: unknown[] }> }).issues;
    assert.ok(Array.isArray(issues) && issues.length === 2, `issues: ${JSON.stringify(err.details)}`);
    assert.deepEqual(issues.map((i) => i.path).sort(), [['age'], ['name']]);
    const err2 = await rejection(client.words({ n: -1 })[Symbol.asyncIterator]().next());
    assertStatus(err2, 'INVALID_ARGUMENT');
    assert.equal(calls, before, 'the handler never ran');
  });

  it('schemas - a bad reply is INTERNAL', async () => {
    const err = await rejection(client.broken({}));
    assertStatus(err, 'INTERNAL', ErrorCode.REMOTE);
  });
});

describe('rpc codecs', () => {
  const cleanup = new Cleanup();
  const proto = `
    syntax = "proto3";
    package pkg;
    message Msg { string text = 1; int32 n = 2; repeated string tags = 3; bytes blob = 4; }
  `;
  const msgCodec = protobufCodec(loadProtoType(proto, 'pkg.Msg'));
  const Pb = service('pb', { echo: unary({ protobuf: { request: msgCodec, response: msgCodec } }), plain: unary() });
  let target = '';
  before(async () => {
    const server = cleanup.server().add(echoImpl());
    server.add(
      implement(Pb, {
        echo: (m: any) => ({ ...m, n: m.n + 1 }),
        plain: (v: unknown) => v,
      }),
    );
    target = (await listenOn(server, 'tcp')).target;
  });
  after(() => cleanup.run());

  it('codecs - a JSON client round-trips every call shape', async () => {
    const c = cleanup.client(Echo, { target, codec: 'json' });
    assert.deepEqual(await c.say({ text: 'ü ✓ "q"' }), { text: 'ü ✓ "q"' });
    assert.equal((await collect(c.count({ n: 50 }))).length, 50);
    assert.deepEqual(await c.sum([{ n: 2 }, { n: 3 }]), { sum: 5, count: 2 });
    assert.deepEqual(await collect(c.chat([{ text: 'a' }, { text: 'b' }])), [{ text: 'a' }, { text: 'b' }]);
  });

  it('codecs - a protobuf method round-trips its message type', async () => {
    for (const codec of ['msgpack', 'json'] as const) {
      const c = cleanup.client(Pb, { target, codec });
      const r = await c.echo({ text: 'pb', n: 41, tags: ['x', 'y'], blob: Buffer.from([9, 8, 7]) });
      assert.equal(r.text, 'pb');
      assert.equal(r.n, 42);
      assert.deepEqual(r.tags, ['x', 'y']);
      assert.deepEqual(Buffer.from(r.blob), Buffer.from([9, 8, 7]));
      assert.deepEqual(await c.plain({ other: 'codec' }), { other: 'codec' }, `non-protobuf methods use ${codec}`);
    }
  });
});

describe('rpc frame size limits', () => {
  const cleanup = new Cleanup();
  const small = 32 * 1024;
  let client: any;
  before(async () => {
    // The server accepts at most 32 KiB per message; so does the client.
    ({ client } = await echoPair(cleanup, 'tcp', { maxFrameSize: small }, { session: { maxFrameSize: small } }));
  });
  after(() => cleanup.run());

  it('frame size - a request larger than the server accepts is RESOURCE_EXHAUSTED and the connection keeps working', async () => {
    const session = await withTimeout(client.connection.getSession(), 5000, 'a session');
    const err = await rejection(client.say({ text: 'x'.repeat(small * 2) }));
    assertStatus(err, 'RESOURCE_EXHAUSTED', ErrorCode.MESSAGE_TOO_LARGE);
    const errStream = await rejection(client.sum([{ n: 1 }, { n: 'y'.repeat(small * 2) as unknown as number }]));
    assertStatus(errStream, 'RESOURCE_EXHAUSTED', ErrorCode.MESSAGE_TOO_LARGE);
    assert.deepEqual(await client.say({ text: 'still fine' }), { text: 'still fine' });
    assert.equal(client.connection.session, session, 'same connection');
  });

  it('frame size - a reply larger than the client accepts is RESOURCE_EXHAUSTED and the connection keeps working', async () => {
    const session = client.connection.session;
    const err = await rejection(collect(client.count({ n: 2, size: small * 2 })));
    assertStatus(err, 'RESOURCE_EXHAUSTED');
    assert.deepEqual(await client.say({ text: 'after' }), { text: 'after' });
    assert.equal(client.connection.session, session, 'same connection');
  });
});

describe('rpc authentication', () => {
  const cleanup = new Cleanup();
  let handled = 0;
  let target = '';
  const Who = service('who', { ami: unary<Record<string, never>, { identity: unknown }>() });
  before(async () => {
    const server = cleanup
      .server({
        authenticate: (credential) => {
          if (credential?.toString() === 'let-me-in') return { user: 'ada', roles: ['admin'] };
          return false;
        },
      })
      .add(
        implement(Who, {
          ami: (_req, ctx) => {
            handled++;
            return { identity: ctx.identity };
          },
        }),
      );
    target = (await listenOn(server, 'tcp')).target;
  });
  after(() => cleanup.run());

  it('authenticate - a refused credential fails the call with UNAUTHENTICATED and runs nothing', async () => {
    for (const credential of ['wrong', undefined]) {
      const c = cleanup.client(Who, { target, ...(credential === undefined ? {} : { session: { credential } }) });
      const err = await rejection(c.ami({}));
      assertStatus(err, 'UNAUTHENTICATED', ErrorCode.AUTH_REFUSED);
      // A later fail-fast call reports the same refusal, not a generic "not ready".
      assertStatus(await rejection(c.ami({})), 'UNAUTHENTICATED', ErrorCode.AUTH_REFUSED);
    }
    assert.equal(handled, 0);
  });

  it('authenticate - an accepted credential becomes ctx.identity', async () => {
    const c = cleanup.client(Who, { target, session: { credential: Buffer.from('let-me-in') } });
    assert.deepEqual(await c.ami({}), { identity: { user: 'ada', roles: ['admin'] } });
    assert.equal(handled, 1);
  });
});

describe('rpc compression', () => {
  const cleanup = new Cleanup();
  let upstream = '';
  before(async () => {
    const server = cleanup.server({ compression: ['lz4', 'snappy', 'gzip'] }).add(echoImpl());
    upstream = (await listenOn(server, 'tcp')).target;
  });
  after(() => cleanup.run());

  for (const algo of ['gzip', 'lz4', 'snappy']) {
    it(`compression - ${algo} is negotiated and shrinks a large message on the wire`, async () => {
      const proxy = await startFaultProxy({ target: upstream });
      cleanup.add(() => proxy.close());
      const c = cleanup.client(Echo, { target: proxy.address, session: { compression: [algo] } });
      const text = 'skein compresses repetitive payloads. '.repeat(20000); // ~760 KB
      const upBefore = proxy.bytesUp;
      const downBefore = proxy.bytesDown;
      assert.deepEqual(await c.say({ text }), { text });
      assert.equal(c.connection.session?.negotiated?.compression, algo);
      assert.ok(proxy.bytesUp - upBefore < text.length / 4, `${algo}: ${proxy.bytesUp - upBefore} bytes up for ${text.length}`);
      assert.ok(proxy.bytesDown - downBefore < text.length / 4, `${algo}: ${proxy.bytesDown - downBefore} bytes down for ${text.length}`);
      const streamed = await collect(c.count({ n: 20, size: 100_000 }));
      assert.equal(streamed.length, 20);
      assert.equal(streamed[19]!.pad!.length, 100_000);
    });
  }

  it('compression - nothing in common means uncompressed, and calls still work', async () => {
    const server = cleanup.server({ compression: ['gzip'] }).add(echoImpl());
    const l = await listenOn(server, 'tcp');
    const c = cleanup.client(Echo, { target: l.target, session: { compression: ['snappy'] } });
    const text = 'z'.repeat(100_000);
    assert.deepEqual(await c.say({ text }), { text });
    assert.equal(c.connection.session?.negotiated?.compression, null);
  });
});

void Status;
