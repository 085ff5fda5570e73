/**
 * Client and server interceptors end to end over real TCP (127.0.0.1, port 0): their
 * order for the four call shapes, what they see (OutgoingCall / IncomingCall and the
 * handler's context), and what they can do: add metadata, read and transform replies,
 * observe errors, retry, short-circuit, wrap streams, refuse calls, set trailers, and
 * check the connection's identity from the server's `authenticate` hook.
 *
 * Every wait is bounded (the harness helpers); the server-side log is written in this
 * process, and every assertion on it is made after the call it describes has ended.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  bidi,
  clientStream,
  implement,
  isSkeinError,
  serverStream,
  service,
  SkeinError,
  unary,
  type CallContext,
  type Client,
  type ClientInterceptor,
  type ClientOptions,
  type IncomingCall,
  type Metadata,
  type MethodKindValue,
  type PeerInfo,
  type ResponseStream,
  type ServerInterceptor,
  type ServerOptions,
  type StatusName,
} from '../../src/index.js';
import { withTimeout } from '../helpers/wait.js';
import { assertStatus, Cleanup, collect, listenOn, rejection } from './_harness.js';

// ------------------------------------------------------------------ the service under test

const Svc = service('icpt', {
  say: unary<{ text: string }, { text: string }>({ idempotent: true }),
  /** Not idempotent: a retry interceptor must leave it alone. */
  write: unary<{ text: string }, { text: string }>(),
  /** n < 0 fails with OUT_OF_RANGE before the first message. */
  count: serverStream<{ n: number }, { i: number }>(),
  sum: clientStream<{ n: number }, { sum: number }>(),
  chat: bidi<{ text: string }, { text: string }>(),
  fail: unary<{ status: StatusName; message: string }, { never: true }>(),
});
type SvcClient = Client<(typeof Svc)['methods']>;
type MethodName = keyof (typeof Svc)['methods'];

/** What the handlers saw: invocation counts, contexts, and a shared event log. */
class Recorder {
  readonly calls: Record<MethodName, number> = { say: 0, write: 0, count: 0, sum: 0, chat: 0, fail: 0 };
  readonly contexts: Array<{ method: MethodName; metadata: Metadata; identity: unknown }> = [];
  /** Ordered events; interceptors of a test push here too. */
  readonly log: string[] = [];
  hit(method: MethodName, ctx: CallContext): void {
    this.calls[method]++;
    this.contexts.push({ method, metadata: { ...ctx.metadata }, identity: ctx.identity });
    this.log.push(`handler:${method}`);
  }
  total(): number {
    return Object.values(this.calls).reduce((a, b) => a + b, 0);
  }
}

function svcImpl(rec: Recorder) {
  return implement(Svc, {
    say: (req, ctx) => {
      rec.hit('say', ctx);
      return req;
    },
    write: (req, ctx) => {
      rec.hit('write', ctx);
      return req;
    },
    async *count({ n }, ctx) {
      rec.hit('count', ctx);
      if (n < 0) throw new SkeinError('OUT_OF_RANGE', 'n must be >= 0');
      for (let i = 1; i <= n; i++) yield { i };
    },
    async sum(requests, ctx) {
      rec.hit('sum', ctx);
      let sum = 0;
      for await (const { n } of requests) sum += n;
      return { sum };
    },
    async *chat(requests, ctx) {
      rec.hit('chat', ctx);
      for await (const m of requests) yield m;
    },
    fail: ({ status, message }, ctx) => {
      rec.hit('fail', ctx);
      throw new SkeinError(status, message);
    },
  });
}

/** A server with the service on TCP and a client to it, both closed by `cleanup`. */
async function start(cleanup: Cleanup, rec: Recorder, serverOptions: ServerOptions = {}, clientOptions: Partial<ClientOptions> = {}): Promise<{ client: SvcClient; target: string }> {
  const server = cleanup.server(serverOptions).add(svcImpl(rec));
  const { target } = await listenOn(server, 'tcp');
  return { client: cleanup.client(Svc, { target, ...clientOptions }), target };
}

function statusOf(err: unknown): string {
  return isSkeinError(err) ? err.statusName : `not a SkeinError: ${String(err)}`;
}

function isStreaming(kind: MethodKindValue): boolean {
  return kind === 'serverStream' || kind === 'bidi';
}

/** A ResponseStream whose messages go through `map` (cancel and trailers pass through). */
function mapStream<T, U>(source: ResponseStream<T>, map: (v: T) => U, onEnd?: (err: unknown) => void): ResponseStream<U> {
  return {
    cancel: (reason?: string) => source.cancel(reason),
    trailers: source.trailers,
    async *[Symbol.asyncIterator]() {
      try {
        for await (const v of source) yield map(v);
      } catch (err) {
        onEnd?.(err);
        throw err;
      }
      onEnd?.(undefined);
    },
  };
}

/** Client interceptor logging `NAME>kind` on the way out, then each reply / message / end / error. */
function clientTap(name: string, log: string[]): ClientInterceptor {
  return (next) => (call) => {
    log.push(`${name}>${call.kind}`);
    const result = next(call);
    if (isStreaming(call.kind)) {
      return mapStream(
        result as ResponseStream<unknown>,
        (m) => {
          log.push(`${name}<msg`);
          return m;
        },
        (err) => log.push(err === undefined ? `${name}<end` : `${name}<error:${statusOf(err)}`),
      );
    }
    return (result as Promise<unknown>).then(
      (reply) => {
        log.push(`${name}<reply`);
        return reply;
      },
      (err: unknown) => {
        log.push(`${name}<error:${statusOf(err)}`);
        throw err;
      },
    );
  };
}

/** Server interceptor logging `NAME>kind`, then each reply (or message, end, error) of the handler it wraps. */
function serverTap(name: string, log: string[]): ServerInterceptor {
  return (next) => (call) => {
    log.push(`${name}>${call.kind}`);
    if (isStreaming(call.kind)) {
      const inner = next(call) as AsyncIterable<unknown> | Iterable<unknown>;
      return (async function* () {
        try {
          for await (const m of inner) {
            log.push(`${name}<msg`);
            yield m;
          }
        } catch (err) {
          log.push(`${name}<error:${statusOf(err)}`);
          throw err;
        }
        log.push(`${name}<end`);
      })();
    }
    // `await`, not `.then`: a synchronous unary handler returns its reply as is.
    return (async () => {
      try {
        const reply = await next(call);
        log.push(`${name}<reply`);
        return reply;
      } catch (err) {
        log.push(`${name}<error:${statusOf(err)}`);
        throw err;
      }
    })();
  };
}

async function* mapAsync<T, U>(source: AsyncIterable<T>, map: (v: T) => U): AsyncGenerator<U> {
  for await (const v of source) yield map(v);
}

// ------------------------------------------------------------------ client interceptors

describe('client interceptors', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());
  const rec = new Recorder();
  const outgoing: Array<{ service: string; method: string; kind: string; idempotent: boolean }> = [];
  const seenByInner: Metadata[] = [];
  const replies: unknown[] = [];
  let client!: SvcClient;

  /** Outermost: records the OutgoingCall fields and adds metadata. */
  const describeCall: ClientInterceptor = (next) => (call) => {
    outgoing.push({ service: call.service, method: call.method, kind: call.kind, idempotent: call.idempotent });
    call.options = { ...call.options, metadata: { ...call.options.metadata, 'x-outer': 'a' } };
    return next(call);
  };
  /** Innermost: sees the outer interceptor's metadata, adds its own, keeps unary replies. */
  const inner: ClientInterceptor = (next) => (call) => {
    seenByInner.push({ ...call.options.metadata });
    call.options = { ...call.options, metadata: { ...call.options.metadata, 'x-inner': 'b' } };
    const result = next(call);
    if (isStreaming(call.kind)) return result;
    return (result as Promise<unknown>).then((reply) => {
      replies.push(reply);
      return reply;
    });
  };

  before(async () => {
    ({ client } = await start(cleanup, rec, {}, { interceptors: [describeCall, clientTap('A', rec.log), clientTap('B', rec.log), inner] }));
  });

  it('client interceptors - run in order, the first outermost, around all four shapes', async () => {
    rec.log.length = 0;
    assert.deepEqual(await client.say({ text: 'hi' }), { text: 'hi' });
    assert.deepEqual(rec.log, ['A>unary', 'B>unary', 'handler:say', 'B<reply', 'A<reply']);

    rec.log.length = 0;
    assert.deepEqual(await collect(client.count({ n: 2 })), [{ i: 1 }, { i: 2 }]);
    assert.deepEqual(rec.log, ['A>serverStream', 'B>serverStream', 'handler:count', 'B<msg', 'A<msg', 'B<msg', 'A<msg', 'B<end', 'A<end']);

    rec.log.length = 0;
    assert.deepEqual(await withTimeout(client.sum([{ n: 1 }, { n: 2 }, { n: 3 }]), undefined, 'sum'), { sum: 6 });
    assert.deepEqual(rec.log, ['A>clientStream', 'B>clientStream', 'handler:sum', 'B<reply', 'A<reply']);

    rec.log.length = 0;
    assert.deepEqual(await collect(client.chat([{ text: 'x' }, { text: 'y' }])), [{ text: 'x' }, { text: 'y' }]);
    assert.deepEqual(rec.log, ['A>bidi', 'B>bidi', 'handler:chat', 'B<msg', 'A<msg', 'B<msg', 'A<msg', 'B<end', 'A<end']);
  });

  it('client interceptors - OutgoingCall carries service, method, kind and idempotent', async () => {
    outgoing.length = 0;
    await client.say({ text: 'a' });
    await client.write({ text: 'b' });
    await collect(client.count({ n: 1 }));
    await withTimeout(client.sum([{ n: 1 }]), undefined, 'sum');
    await collect(client.chat([{ text: 'c' }]));
    assert.deepEqual(outgoing, [
      { service: 'icpt', method: 'say', kind: 'unary', idempotent: true },
      { service: 'icpt', method: 'write', kind: 'unary', idempotent: false },
      { service: 'icpt', method: 'count', kind: 'serverStream', idempotent: false },
      { service: 'icpt', method: 'sum', kind: 'clientStream', idempotent: false },
      { service: 'icpt', method: 'chat', kind: 'bidi', idempotent: false },
    ]);
  });

  it('client interceptors - metadata they add reaches the handler, on top of the caller’s', async () => {
    rec.contexts.length = 0;
    seenByInner.length = 0;
    const callerOptions = { metadata: { 'x-caller': 'c' } };
    await client.say({ text: 'md' }, callerOptions);
    await collect(client.count({ n: 1 }, callerOptions));
    await withTimeout(client.sum([{ n: 1 }], callerOptions), undefined, 'sum');
    await collect(client.chat([{ text: 'md' }], callerOptions));
    assert.deepEqual(
      rec.contexts.map((c) => [c.method, c.metadata]),
      (['say', 'count', 'sum', 'chat'] as const).map((m) => [m, { 'x-caller': 'c', 'x-outer': 'a', 'x-inner': 'b' }]),
    );
    // The inner interceptor ran after the outer one: it saw the outer one's key.
    assert.deepEqual(seenByInner, Array(4).fill({ 'x-caller': 'c', 'x-outer': 'a' }));
    assert.deepEqual(callerOptions, { metadata: { 'x-caller': 'c' } }, 'the caller’s options object is untouched');
  });

  it('client interceptors - read the reply of unary and client-stream calls', async () => {
    replies.length = 0;
    await client.say({ text: 'read me' });
    await withTimeout(client.sum([{ n: 40 }, { n: 2 }]), undefined, 'sum');
    assert.deepEqual(replies, [{ text: 'read me' }, { sum: 42 }]);
  });

  it('client interceptors - observe errors of unary and streaming calls, and the caller still gets them', async () => {
    rec.log.length = 0;
    const err = await rejection(client.fail({ status: 'NOT_FOUND', message: 'nope' }));
    assertStatus(err, 'NOT_FOUND');
    assert.equal(err.message, 'nope');
    assert.deepEqual(rec.log, ['A>unary', 'B>unary', 'handler:fail', 'B<error:NOT_FOUND', 'A<error:NOT_FOUND']);

    rec.log.length = 0;
    assertStatus(await rejection(collect(client.count({ n: -1 }))), 'OUT_OF_RANGE');
    assert.deepEqual(rec.log, ['A>serverStream', 'B>serverStream', 'handler:count', 'B<error:OUT_OF_RANGE', 'A<error:OUT_OF_RANGE']);
  });
});

describe('client interceptors that change the flow', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  it('client interceptors - retry an idempotent unary call once on UNAVAILABLE by calling next again', async () => {
    const rec = new Recorder();
    // The server refuses the first attempt of every unary call with UNAVAILABLE.
    const attemptsByText = new Map<string, number>();
    const flaky: ServerInterceptor = (next) => (call) => {
      if (call.kind === 'unary') {
        const text = (call.request as { text: string }).text;
        const n = (attemptsByText.get(text) ?? 0) + 1;
        attemptsByText.set(text, n);
        if (n === 1) throw new SkeinError('UNAVAILABLE', 'try again');
      }
      return next(call);
    };
    const retried: string[] = [];
    const retryOnce: ClientInterceptor = (next) => (call) => {
      const first = next(call);
      if (call.kind !== 'unary' || !call.idempotent) return first;
      return (first as Promise<unknown>).catch((err: unknown) => {
        if (!isSkeinError(err) || err.statusName !== 'UNAVAILABLE') throw err;
        retried.push(call.method);
        return next(call);
      });
    };
    const { client } = await start(cleanup, rec, { interceptors: [flaky] }, { interceptors: [retryOnce] });

    assert.deepEqual(await withTimeout(client.say({ text: 'r1' }), undefined, 'the retried call'), { text: 'r1' });
    assert.deepEqual(retried, ['say']);
    assert.equal(attemptsByText.get('r1'), 2, 'two attempts reached the server');
    assert.equal(rec.calls.say, 1, 'the handler ran once: the first attempt was refused before it');

    // Not idempotent: no retry, the caller sees the first failure.
    assertStatus(await rejection(client.write({ text: 'w1' })), 'UNAVAILABLE');
    assert.deepEqual(retried, ['say']);
    assert.equal(attemptsByText.get('w1'), 1);
    assert.equal(rec.calls.write, 0);
  });

  it('client interceptors - short-circuit with a cached reply without calling next', async () => {
    const rec = new Recorder();
    const cache = new Map<string, unknown>();
    const caching: ClientInterceptor = (next) => (call) => {
      if (call.kind !== 'unary' || !call.idempotent) return next(call);
      const key = `${call.service}.${call.method}:${JSON.stringify(call.request)}`;
      if (cache.has(key)) return Promise.resolve(cache.get(key));
      return (next(call) as Promise<unknown>).then((reply) => {
        cache.set(key, reply);
        return reply;
      });
    };
    const { client } = await start(cleanup, rec, {}, { interceptors: [caching] });

    assert.deepEqual(await client.say({ text: 'c1' }), { text: 'c1' });
    assert.deepEqual(await client.say({ text: 'c1' }), { text: 'c1' });
    assert.deepEqual(await client.say({ text: 'c1' }), { text: 'c1' });
    assert.equal(rec.calls.say, 1, 'only the first call reached the server');
    assert.deepEqual(await client.say({ text: 'c2' }), { text: 'c2' });
    assert.equal(rec.calls.say, 2);
    // Not idempotent: never cached.
    await client.write({ text: 'c1' });
    await client.write({ text: 'c1' });
    assert.equal(rec.calls.write, 2);
  });

  it('client interceptors - wrap the ResponseStream of a server stream (map messages; trailers and cancel pass through)', async () => {
    const rec = new Recorder();
    const addTrailer: ServerInterceptor = (next) => (call) => {
      call.ctx.trailers['x-count'] = 'done';
      return next(call);
    };
    const times10: ClientInterceptor = (next) => (call) => {
      const result = next(call);
      if (call.kind !== 'serverStream') return result;
      return mapStream(result as ResponseStream<{ i: number }>, ({ i }) => ({ i: i * 10 }));
    };
    const { client } = await start(cleanup, rec, { interceptors: [addTrailer] }, { interceptors: [times10] });

    const rs = client.count({ n: 3 });
    assert.deepEqual(await collect(rs), [{ i: 10 }, { i: 20 }, { i: 30 }]);
    assert.equal((await withTimeout(rs.trailers, undefined, 'the trailers'))['x-count'], 'done');

    // cancel() on the wrapper cancels the call underneath.
    const long = client.count({ n: 100_000 });
    const it = long[Symbol.asyncIterator]();
    assert.deepEqual(await withTimeout(it.next(), undefined, 'the first message'), { done: false, value: { i: 10 } });
    long.cancel('enough');
    const err = await rejection(
      (async () => {
        for (;;) if ((await it.next()).done === true) return 'ended without an error';
      })(),
    );
    assertStatus(err, 'CANCELLED');
    assertStatus(await rejection(long.trailers), 'CANCELLED');
  });
});

// ------------------------------------------------------------------ server interceptors

describe('server interceptors', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());
  const rec = new Recorder();
  const incoming: Array<{ service: string; method: string; kind: string; metadata: Metadata; peer: PeerInfo; deadline: number | undefined; request: unknown; now: number }> = [];
  let client!: SvcClient;

  /** Outermost: records what it sees of the call. */
  const inspect: ServerInterceptor = (next) => (call: IncomingCall) => {
    const request = call.request !== null && typeof call.request === 'object' && Symbol.asyncIterator in call.request ? 'an async iterable' : call.request;
    incoming.push({ service: call.service, method: call.method, kind: call.kind, metadata: { ...call.ctx.metadata }, peer: call.ctx.peer, deadline: call.ctx.deadline, request, now: Date.now() });
    return next(call);
  };

  before(async () => {
    ({ client } = await start(cleanup, rec, { interceptors: [inspect, serverTap('A', rec.log), serverTap('B', rec.log)] }));
  });

  it('server interceptors - run in order, the first outermost, around handlers of all four shapes', async () => {
    rec.log.length = 0;
    await client.say({ text: 'hi' });
    assert.deepEqual(rec.log, ['A>unary', 'B>unary', 'handler:say', 'B<reply', 'A<reply']);

    rec.log.length = 0;
    assert.deepEqual(await collect(client.count({ n: 2 })), [{ i: 1 }, { i: 2 }]);
    assert.deepEqual(rec.log, ['A>serverStream', 'B>serverStream', 'handler:count', 'B<msg', 'A<msg', 'B<msg', 'A<msg', 'B<end', 'A<end']);

    rec.log.length = 0;
    assert.deepEqual(await withTimeout(client.sum([{ n: 1 }, { n: 2 }]), undefined, 'sum'), { sum: 3 });
    assert.deepEqual(rec.log, ['A>clientStream', 'B>clientStream', 'handler:sum', 'B<reply', 'A<reply']);

    rec.log.length = 0;
    assert.deepEqual(await collect(client.chat([{ text: 'x' }, { text: 'y' }])), [{ text: 'x' }, { text: 'y' }]);
    assert.deepEqual(rec.log, ['A>bidi', 'B>bidi', 'handler:chat', 'B<msg', 'A<msg', 'B<msg', 'A<msg', 'B<end', 'A<end']);

    rec.log.length = 0;
    assertStatus(await rejection(client.fail({ status: 'ABORTED', message: 'x' })), 'ABORTED');
    assert.deepEqual(rec.log, ['A>unary', 'B>unary', 'handler:fail', 'B<error:ABORTED', 'A<error:ABORTED']);
  });

  it('server interceptors - see the call: service, method, kind, ctx.metadata, ctx.peer, ctx.deadline and the request', async () => {
    incoming.length = 0;
    const md = { metadata: { 'x-user': 'ada' } };
    await client.say({ text: 'seen' }, { ...md, timeout: 60_000 });
    await collect(client.count({ n: 1 }, md));
    await withTimeout(client.sum([{ n: 1 }], md), undefined, 'sum');
    await collect(client.chat([{ text: 'seen' }], md));

    assert.deepEqual(
      incoming.map(({ service, method, kind, metadata, request }) => ({ service, method, kind, metadata, request })),
      [
        { service: 'icpt', method: 'say', kind: 'unary', metadata: { 'x-user': 'ada' }, request: { text: 'seen' } },
        { service: 'icpt', method: 'count', kind: 'serverStream', metadata: { 'x-user': 'ada' }, request: { n: 1 } },
        { service: 'icpt', method: 'sum', kind: 'clientStream', metadata: { 'x-user': 'ada' }, request: 'an async iterable' },
        { service: 'icpt', method: 'chat', kind: 'bidi', metadata: { 'x-user': 'ada' }, request: 'an async iterable' },
      ],
    );
    for (const { peer } of incoming) {
      assert.equal(peer.transport, 'tcp');
      assert.match(peer.address, /^127\.0\.0\.1:\d+$/);
    }
    // A unary call with a timeout carries a deadline (still ahead when the interceptor ran);
    // server-streaming calls have none by default.
    const [say, count] = incoming;
    assert.equal(typeof say!.deadline, 'number');
    assert.ok(say!.deadline! > say!.now, 'the deadline was still ahead');
    assert.equal(count!.deadline, undefined);
  });
});

describe('server interceptors that change the flow', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  /** One call of each shape; `options` for all of them. */
  function callEach(client: SvcClient, options: { metadata?: Metadata } = {}): Array<[MethodName, Promise<unknown>]> {
    return [
      ['say', client.say({ text: 'x' }, options)],
      ['count', collect(client.count({ n: 2 }, options))],
      ['sum', client.sum([{ n: 1 }, { n: 2 }], options)],
      ['chat', collect(client.chat([{ text: 'x' }], options))],
    ];
  }

  it('server interceptors - a thrown SkeinError (PERMISSION_DENIED) stops every shape before its handler', async () => {
    const rec = new Recorder();
    const guard: ServerInterceptor = (next) => (call) => {
      if (call.ctx.metadata['x-allow'] !== 'yes') throw new SkeinError('PERMISSION_DENIED', 'no');
      return next(call);
    };
    const { client } = await start(cleanup, rec, { interceptors: [guard] });
    for (const [method, p] of callEach(client)) {
      const err = await rejection(p, undefined, `${method} to be refused`);
      assertStatus(err, 'PERMISSION_DENIED');
      assert.equal(err.message, 'no', method);
    }
    assert.equal(rec.total(), 0, 'no handler ran');
    for (const [method, p] of callEach(client, { metadata: { 'x-allow': 'yes' } })) await withTimeout(p, undefined, `${method} to be allowed`);
    assert.deepEqual(rec.calls, { say: 1, write: 0, count: 1, sum: 1, chat: 1, fail: 0 });
  });

  it('server interceptors - a thrown plain Error reaches every shape as INTERNAL "internal error" and goes to onError', async () => {
    const rec = new Recorder();
    const reported: Array<{ message: string; where: string }> = [];
    const crash: ServerInterceptor = () => () => {
      throw new Error('secret detail');
    };
    const { client } = await start(cleanup, rec, { interceptors: [crash], onError: (err, where) => reported.push({ message: (err as Error).message, where: `${where.service}.${where.method}` }) });
    for (const [method, p] of callEach(client)) {
      const err = await rejection(p, undefined, `${method} to fail`);
      assertStatus(err, 'INTERNAL');
      assert.equal(err.message, 'internal error', `${method}: no detail leaks`);
    }
    assert.equal(rec.total(), 0, 'no handler ran');
    assert.deepEqual(
      reported.sort((a, b) => a.where.localeCompare(b.where)),
      ['icpt.chat', 'icpt.count', 'icpt.say', 'icpt.sum'].map((where) => ({ message: 'secret detail', where })),
    );
  });

  it('server interceptors - ctx.trailers they set reach the client (unary error metadata, ResponseStream.trailers)', async () => {
    const rec = new Recorder();
    const stamp: ServerInterceptor = (next) => (call) => {
      call.ctx.trailers['x-served-by'] = 'icpt-1';
      return next(call);
    };
    const { client } = await start(cleanup, rec, { interceptors: [stamp] });

    const unaryErr = await rejection(client.fail({ status: 'FAILED_PRECONDITION', message: 'not now' }));
    assertStatus(unaryErr, 'FAILED_PRECONDITION');
    assert.equal(unaryErr.metadata['x-served-by'], 'icpt-1');

    const count = client.count({ n: 2 });
    assert.equal((await collect(count)).length, 2);
    assert.deepEqual(await withTimeout(count.trailers, undefined, 'count trailers'), { 'x-served-by': 'icpt-1' });

    const chat = client.chat([{ text: 'x' }]);
    await collect(chat);
    assert.deepEqual(await withTimeout(chat.trailers, undefined, 'chat trailers'), { 'x-served-by': 'icpt-1' });

    const streamErr = await rejection(collect(client.count({ n: -1 })));
    assertStatus(streamErr, 'OUT_OF_RANGE');
    assert.equal(streamErr.metadata['x-served-by'], 'icpt-1');
    // (A unary or client-stream call that ends OK has no public way to read its trailers.)
  });

  it('server interceptors - transform the reply of a unary call and the request stream of a client stream', async () => {
    const rec = new Recorder();
    const shout: ServerInterceptor = (next) => async (call) => {
      if (call.method === 'say') {
        const reply = (await next(call)) as { text: string };
        return { text: reply.text.toUpperCase() };
      }
      if (call.method === 'sum') return next({ ...call, request: mapAsync(call.request as AsyncIterable<{ n: number }>, ({ n }) => ({ n: n * 2 })) });
      return next(call);
    };
    const { client } = await start(cleanup, rec, { interceptors: [shout] });
    assert.deepEqual(await client.say({ text: 'quiet' }), { text: 'QUIET' });
    assert.deepEqual(await withTimeout(client.sum([{ n: 1 }, { n: 2 }]), undefined, 'sum'), { sum: 6 });
    assert.equal(rec.calls.say, 1);
  });

  it('server interceptors - an auth interceptor refuses calls whose ctx.identity (from authenticate) is missing with UNAUTHENTICATED', async () => {
    const rec = new Recorder();
    const requireIdentity: ServerInterceptor = (next) => (call) => {
      if (call.ctx.identity == null) throw new SkeinError('UNAUTHENTICATED', 'sign in first');
      return next(call);
    };
    // Every connection is accepted; a good credential gives it an identity.
    const authenticate = (credential: Buffer | undefined) => (credential?.toString() === 'token' ? { user: 'ada' } : null);
    const server = cleanup.server({ authenticate, interceptors: [requireIdentity] }).add(svcImpl(rec));
    const { target } = await listenOn(server, 'tcp');
    const signedIn = cleanup.client(Svc, { target, session: { credential: 'token' } });
    const wrong = cleanup.client(Svc, { target, session: { credential: 'not-the-token' } });
    const anonymous = cleanup.client(Svc, { target });

    for (const client of [anonymous, wrong]) {
      for (const [method, p] of callEach(client)) {
        const err = await rejection(p, undefined, `${method} to be refused`);
        assertStatus(err, 'UNAUTHENTICATED');
        assert.equal(err.message, 'sign in first');
      }
    }
    assert.equal(rec.total(), 0, 'no handler ran for a caller without an identity');

    assert.deepEqual(await signedIn.say({ text: 'hello' }), { text: 'hello' });
    assert.deepEqual(await collect(signedIn.count({ n: 2 })), [{ i: 1 }, { i: 2 }]);
    assert.deepEqual(
      rec.contexts.map((c) => [c.method, c.identity]),
      [
        ['say', { user: 'ada' }],
        ['count', { user: 'ada' }],
      ],
    );
  });

  // Regression: an async interceptor hands back a promise of the iterable for streaming
  // methods; the server awaits it (it once failed with INTERNAL, or left a rejection unhandled).
  it('server interceptors - an async interceptor (its Handle returns a Promise) works around serverStream and bidi handlers', async () => {
    const rec = new Recorder();
    const asyncPassThrough: ServerInterceptor = (next) => async (call) => {
      await Promise.resolve(); // e.g. an async permission lookup
      return next(call);
    };
    const { client } = await start(cleanup, rec, { interceptors: [asyncPassThrough] });
    assert.deepEqual(await client.say({ text: 'ok' }), { text: 'ok' }, 'unary works');
    assert.deepEqual(await collect(client.count({ n: 2 })), [{ i: 1 }, { i: 2 }]);
    assert.deepEqual(await collect(client.chat([{ text: 'x' }])), [{ text: 'x' }]);
  });
});
