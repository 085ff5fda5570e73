/**
 * The reliable pipe through its library API (src/pipe, docs/pipe.md), on real sockets on
 * 127.0.0.1: Writable → Readable and file → file transfers, flow control with a paused
 * consumer, restarts of either side (simulated in-process), the receiver's handling of
 * every message (driven by hand over a raw `skein.pipe/transfer` call), and
 * byteChunks/collectBytes over a raw client-streaming method.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, createReadStream, createWriteStream } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, afterEach, describe, it } from 'node:test';
import { byteChunks, clientStream, collectBytes, connect, createServer, ErrorCode, implement, isSkeinError, pipeListen, pipeSend, pushable, service, Status, type PipeReceiver, type PipeSender, type SkeinError } from '../../src/index.js';
import { crc32c } from '../../src/pipe/crc32c.js';
import { decodeToSender, encodeData, encodeEnd, encodeOpen, OpenFlags, PipeMessageType, type ToSender } from '../../src/pipe/messages.js';
import { PipeService } from '../../src/pipe/service.js';
import { once, readAll, waitFor, withTimeout } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'skein-pipe-lib-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Everything a test opened, closed after it (failures included). */
const open: { receivers: PipeReceiver[]; senders: PipeSender[]; closers: Array<() => Promise<unknown>> } = { receivers: [], senders: [], closers: [] };
afterEach(async () => {
  for (const s of open.senders.splice(0)) s.destroy();
  await Promise.all(open.receivers.splice(0).map((r) => r.close().catch(() => {})));
  await Promise.all(open.closers.splice(0).map((c) => c().catch(() => {})));
});

async function listen(options: Parameters<typeof pipeListen>[0] = {}): Promise<PipeReceiver> {
  const r = await pipeListen(options);
  open.receivers.push(r);
  return r;
}

function send(target: string, options: Parameters<typeof pipeSend>[1] = {}): PipeSender {
  const s = pipeSend(target, options);
  open.senders.push(s);
  return s;
}

/** Write `data` in `piece`-byte writes, honouring backpressure; end unless told not to. */
async function writeAll(s: PipeSender, data: Buffer, piece = MiB, end = true): Promise<void> {
  for (let at = 0; at < data.length; at += piece) {
    if (!s.write(data.subarray(at, at + piece))) await once(s, 'drain', 15_000);
  }
  if (end) s.end();
}

function rejectsWith(p: Promise<unknown>, code: string, what: string): Promise<SkeinError> {
  return withTimeout(
    p.then(
      () => assert.fail(`${what}: expected ${code}, it succeeded`),
      (err: unknown) => {
        assert.ok(isSkeinError(err), `${what}: not a SkeinError: ${String(err)}`);
        assert.equal(err.code, code, `${what}: ${err.code} ${err.message}`);
        return err;
      },
    ),
    15_000,
    what,
  );
}

/** Resolve once the receiver has confirmed at least `n` bytes. */
function confirmed(r: PipeReceiver, n: number): Promise<void> {
  return waitFor(() => r.bytes >= n, { what: `${n} bytes confirmed (have ${r.bytes})`, timeoutMs: 10_000 });
}

/** A hand-driven attachment: send messages, read replies (ACKs skipped by `reply`). */
async function rawAttach(address: string) {
  const client = connect(PipeService, { target: address, resilience: false });
  open.closers.push(() => client.close());
  const requests = pushable<Buffer>();
  const replies = client.transfer(requests);
  const it = replies[Symbol.asyncIterator]();
  return {
    send: (m: Buffer) => requests.push(m),
    end: () => requests.end(),
    /** The next reply other than an ACK. */
    async reply(): Promise<ToSender> {
      for (;;) {
        const r = await withTimeout(it.next(), 5000, 'a pipe reply');
        assert.equal(r.done, false, 'the call ended without the reply expected');
        const m = decodeToSender(r.value);
        if (m.type !== PipeMessageType.ACK) return m;
      }
    },
    /** Resolves with the error the call ends with (or undefined when it ends OK). */
    async ending(): Promise<SkeinError | undefined> {
      try {
        for (;;) if ((await withTimeout(it.next(), 5000, 'the end of the call')).done) return undefined;
      } catch (err) {
        return err as SkeinError;
      }
    },
  };
}

const ID = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
const data = (epoch: number, offset: number, chunk: Buffer, crc = crc32c(chunk)) => encodeData(epoch, offset, crc, chunk);

describe('pipe library', () => {
  it('transfer - Writable to Readable: 16 MiB arrive equal and both sides report the same SHA-256', async () => {
    const payload = randomBytes(16 * MiB);
    const r = await listen();
    const s = send(r.address);
    const received = readAll(r.readable!, 15_000);
    await writeAll(s, payload, 3 * MiB + 7);
    const [sent, got, bytes] = await withTimeout(Promise.all([s.done, r.done, received]), 15_000, 'the transfer');
    assert.equal(bytes.length, payload.length);
    assert.ok(bytes.equals(payload));
    assert.deepEqual(sent, { bytes: payload.length, sha256: sha256(payload) });
    assert.deepEqual(got, sent);
    assert.equal(s.acknowledged, payload.length);
    assert.equal(s.buffered, 0);
  });

  it('transfer - an empty stream completes with the SHA-256 of nothing', async () => {
    const r = await listen();
    const s = send(r.address);
    s.end();
    const received = readAll(r.readable!);
    const [sent, got] = await withTimeout(Promise.all([s.done, r.done]), 10_000, 'the empty transfer');
    assert.deepEqual(sent, { bytes: 0, sha256: sha256(Buffer.alloc(0)) });
    assert.deepEqual(got, sent);
    assert.equal((await received).length, 0);
  });

  it('transfer - "finish" fires only once the receiver confirmed everything', async () => {
    const r = await listen();
    const s = send(r.address);
    const received = readAll(r.readable!);
    let ackedAtFinish = -1;
    s.on('finish', () => (ackedAtFinish = s.acknowledged));
    await writeAll(s, randomBytes(MiB));
    await withTimeout(s.done, 10_000, 'the transfer');
    await waitFor(() => ackedAtFinish >= 0, { what: "'finish'" });
    assert.equal(ackedAtFinish, MiB);
    await received;
  });

  it('flow control - a paused consumer stalls the sender: what it buffers stays within the window', async () => {
    const window = MiB;
    const chunkSize = 64 * 1024;
    const payload = randomBytes(24 * MiB);
    const r = await listen({ window });
    const s = send(r.address, { chunkSize });
    let worst = 0;
    const check = () => {
      worst = Math.max(worst, s.buffered);
      assert.ok(s.inFlight <= window, `in flight ${s.inFlight} > window ${window}`);
      assert.ok(s.buffered <= window + chunkSize, `buffered ${s.buffered} > window + chunk`);
    };
    s.on('progress', check);
    const writing = (async () => {
      for (let at = 0; at < payload.length; at += 256 * 1024) {
        if (!s.write(payload.subarray(at, at + 256 * 1024))) await once(s, 'drain', 30_000);
        check();
      }
      s.end();
    })();
    // Nobody reads: the Readable fills to its high-water mark, the receiver stops confirming,
    // and the sender fills its window.
    const readable = r.readable!;
    await waitFor(() => readable.readableLength >= readable.readableHighWaterMark && s.buffered >= window, { what: 'the consumer buffer and the sender window to fill', timeoutMs: 10_000 });
    check();
    assert.ok(s.writableNeedDrain, 'write() should be returning false');
    assert.ok(r.bytes <= readable.readableHighWaterMark + 2 * chunkSize, `confirmed ${r.bytes} bytes with nobody reading`);
    assert.ok(s.acknowledged < payload.length / 4);
    // Reading again delivers everything.
    const received = await readAll(readable, 15_000);
    await writing;
    await withTimeout(Promise.all([s.done, r.done]), 15_000, 'the transfer');
    assert.ok(received.equals(payload));
    assert.ok(worst <= window + chunkSize, `worst buffered ${worst}`);
  });

  it('transfer - file to file: the output appears only complete, without its part and state files', async () => {
    const input = join(dir, 'f2f.in');
    const out = join(dir, 'f2f.out');
    const payload = randomBytes(12 * MiB + 12345);
    writeFileSync(input, payload);
    const r = await listen({ out });
    assert.equal(r.readable, undefined);
    const s = send(r.address, { in: input });
    const seen: boolean[] = [];
    r.on('progress', (p) => {
      if (p.bytes < payload.length) seen.push(existsSync(out));
      assert.equal(p.size, payload.length);
    });
    const [sent, got] = await withTimeout(Promise.all([s.done, r.done]), 15_000, 'the transfer');
    assert.equal(sent.sha256, sha256(payload));
    assert.deepEqual(got, sent);
    assert.ok(readFileSync(out).equals(payload));
    assert.ok(!seen.includes(true), 'the output existed before the end');
    assert.ok(!existsSync(`${out}.skein-part`) && !existsSync(`${out}.skein-state`));
  });

  it('restart - a receiver closed mid-transfer and started again on its port and file resumes from the state file', async () => {
    const input = join(dir, 'rr.in');
    const out = join(dir, 'rr.out');
    const payload = randomBytes(32 * MiB);
    writeFileSync(input, payload);
    const r1 = await listen({ out, window: MiB });
    const port = r1.port!;
    const s = send(r1.address, { in: input, retryTimeoutMs: 20_000 });
    let closing: Promise<void> | undefined;
    r1.on('progress', (p) => {
      if (p.bytes >= 4 * MiB) closing ??= r1.close();
    });
    await waitFor(() => closing !== undefined, { what: '4 MiB confirmed', timeoutMs: 10_000 });
    await closing;
    await rejectsWith(r1.done, ErrorCode.CLOSED, 'the first receiver');
    // What survives the receiver: the part file and its state, nothing at `out`.
    const state = JSON.parse(readFileSync(`${out}.skein-state`, 'utf8')) as { version: number; id: string; size: number; offset: number; restartable: boolean; name: string };
    assert.deepEqual(state, { version: 1, id: s.transferId, size: payload.length, offset: r1.bytes, restartable: true, name: 'rr.in' });
    assert.ok(state.offset >= 4 * MiB && state.offset < payload.length);
    assert.ok(statSync(`${out}.skein-part`).size >= state.offset);
    assert.ok(!existsSync(out));
    assert.ok(readFileSync(`${out}.skein-part`).subarray(0, state.offset).equals(payload.subarray(0, state.offset)));

    const r2 = await listen({ port, out });
    assert.equal(r2.bytes, state.offset, 'the restarted receiver starts at the confirmed offset');
    const attached = once<[{ offset: number; epoch: number }]>(r2, 'attach', 15_000);
    const [sent, got] = await withTimeout(Promise.all([s.done, r2.done]), 15_000, 'the resumed transfer');
    assert.equal((await attached)[0].offset, state.offset);
    assert.equal(sent.sha256, sha256(payload));
    assert.deepEqual(got, sent);
    assert.ok(readFileSync(out).equals(payload));
    assert.ok(!existsSync(`${out}.skein-part`) && !existsSync(`${out}.skein-state`));
    assert.ok(s.attachments >= 2);
  });

  it('restart - a file sender started again resumes the same transfer from the confirmed offset', async () => {
    const input = join(dir, 'sr.in');
    const payload = randomBytes(24 * MiB);
    writeFileSync(input, payload);
    const r = await listen({ window: MiB });
    const received = readAll(r.readable!, 20_000);
    const s1 = send(r.address, { in: input });
    await confirmed(r, 4 * MiB);
    s1.destroy();
    await rejectsWith(s1.done, ErrorCode.CANCELLED, 'the first sender');
    const s2 = send(r.address, { in: input });
    const attached = once<[{ offset: number }]>(r, 'attach', 10_000);
    const [sent, got, bytes] = await withTimeout(Promise.all([s2.done, r.done, received]), 20_000, 'the resumed transfer');
    assert.ok((await attached)[0].offset >= 4 * MiB);
    assert.equal(s2.transferId, s1.transferId, 'a file source has a stable transfer id');
    assert.equal(sent.sha256, sha256(payload), 'the restarted sender hashed the prefix it did not send');
    assert.deepEqual(got, sent);
    assert.ok(bytes.equals(payload));
  });

  it('restart - a stream sender that is gone cannot resume: the next sender is refused, the receiver fails with SKEIN_ERR_PIPE_ABANDONED', async () => {
    const r = await listen();
    r.readable!.resume();
    const s1 = send(r.address);
    void writeAll(s1, randomBytes(2 * MiB), MiB, false).catch(() => {});
    await confirmed(r, MiB);
    const detached = once(r, 'detach', 10_000);
    s1.destroy();
    await detached;
    const s2 = send(r.address);
    s2.end('x');
    const e2 = await rejectsWith(s2.done, ErrorCode.PIPE_ABANDONED, 'the second sender');
    assert.equal(e2.status, Status.ABORTED);
    const e = await rejectsWith(r.done, ErrorCode.PIPE_ABANDONED, 'the receiver');
    assert.match(e.message, /stream source cannot resume/);
  });

  it('resume - no sender back within resumeTimeoutMs: SKEIN_ERR_PIPE_ABANDONED, the partial file and its state kept', async () => {
    const out = join(dir, 'abandoned.out');
    const r = await listen({ out, resumeTimeoutMs: 300 });
    const s = send(r.address);
    void writeAll(s, randomBytes(MiB), 256 * 1024, false).catch(() => {});
    await confirmed(r, MiB);
    s.destroy();
    const e = await rejectsWith(r.done, ErrorCode.PIPE_ABANDONED, 'the receiver');
    assert.match(e.message, /no sender came back for 300 ms/);
    assert.ok(existsSync(`${out}.skein-part`) && existsSync(`${out}.skein-state`));
    assert.equal((JSON.parse(readFileSync(`${out}.skein-state`, 'utf8')) as { offset: number }).offset, MiB);
    assert.ok(!existsSync(out));
  });

  it('retry - a sender that reaches no receiver fails with SKEIN_ERR_CONNECT_FAILED after retryTimeoutMs', async () => {
    const free = createNetServer();
    await new Promise<void>((res) => free.listen(0, '127.0.0.1', res));
    const port = (free.address() as { port: number }).port;
    await new Promise<void>((res) => free.close(() => res()));
    const s = send(`127.0.0.1:${port}`, { retryTimeoutMs: 400 });
    s.end('hello');
    const e = await rejectsWith(s.done, ErrorCode.CONNECT_FAILED, 'the sender');
    assert.match(e.message, /no receiver accepted the transfer for 400 ms/);
  });

  it('transfer - over a unix socket (listen({ path }), target unix:/path)', async () => {
    const path = join(dir, 'pipe.sock');
    const r = await listen({ path });
    assert.equal(r.address, `unix:${path}`);
    const s = send(r.address);
    const payload = randomBytes(2 * MiB + 1);
    const received = readAll(r.readable!);
    s.end(payload);
    const [sent, got] = await withTimeout(Promise.all([s.done, r.done]), 10_000, 'the transfer');
    assert.deepEqual(got, sent);
    assert.ok((await received).equals(payload));
  });

  it('cancel - an aborted signal fails the sender (and its receiver keeps waiting); aborting listen closes the receiver', async () => {
    const rac = new AbortController();
    const r = await listen({ signal: rac.signal });
    r.readable!.resume();
    const ac = new AbortController();
    const s = send(r.address, { signal: ac.signal });
    s.write(randomBytes(64 * 1024));
    await confirmed(r, 64 * 1024);
    ac.abort();
    await rejectsWith(s.done, ErrorCode.CANCELLED, 'the aborted sender');
    rac.abort();
    await rejectsWith(r.done, ErrorCode.CANCELLED, 'the aborted receiver');
    await assert.rejects(pipeListen({ signal: AbortSignal.abort() }));
  });

  it('options - bad options are SKEIN_ERR_INVALID_OPTIONS', async () => {
    const bad = (fn: () => unknown) => assert.throws(fn, (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    bad(() => pipeSend('', {}));
    bad(() => pipeSend('127.0.0.1:1', { chunkSize: 0 }));
    bad(() => pipeSend('127.0.0.1:1', { chunkSize: 4 * MiB }));
    bad(() => pipeSend('127.0.0.1:1', { retryTimeoutMs: -1 }));
    bad(() => pipeSend('127.0.0.1:1', { in: 'x', size: 3 }));
    await assert.rejects(pipeListen({ window: 1000 }), (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    await assert.rejects(pipeListen({ resumeTimeoutMs: 0 }), (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    const s = send('127.0.0.1:1', { in: join(dir, 'does-not-exist') });
    const e = await rejectsWith(s.done, ErrorCode.INVALID_OPTIONS, 'a missing file');
    assert.match(e.message, /does-not-exist/);
  });

  it('protocol - bad CRC32C is NACKed (1), out of order NACKed once per gap (2), duplicates and stale epochs dropped', async () => {
    const r = await listen();
    const received = readAll(r.readable!);
    const a = await rawAttach(r.address);
    await a.send(encodeOpen({ flags: 0, id: ID, size: 0, name: 'raw' }));
    assert.deepEqual(await a.reply(), { type: PipeMessageType.ACCEPT, epoch: 1, offset: 0, window: 8 * MiB });
    const A = Buffer.from('aaaa');
    const B = Buffer.from('bbbb');
    const C = Buffer.from('cccc');
    await a.send(data(1, 0, A, 0x12345678)); // bad checksum
    assert.deepEqual(await a.reply(), { type: PipeMessageType.NACK, epoch: 1, offset: 0, reason: 1 });
    await a.send(data(1, 4, B)); // same gap: no second NACK
    await a.send(data(1, 0, A));
    await a.send(data(1, 8, C)); // a new gap at 4
    await a.send(data(1, 12, C)); // same gap
    assert.deepEqual(await a.reply(), { type: PipeMessageType.NACK, epoch: 1, offset: 4, reason: 2 });
    await a.send(data(1, 4, B));
    await a.send(data(1, 0, A)); // duplicate
    await a.send(data(7, 8, C)); // stale epoch
    await a.send(data(1, 8, C));
    const all = Buffer.concat([A, B, C]);
    await a.send(encodeEnd(1, 12, createHash('sha256').update(all).digest()));
    assert.deepEqual(await a.reply(), { type: PipeMessageType.DONE, epoch: 1, total: 12, sha256: createHash('sha256').update(all).digest() });
    assert.equal(await a.ending(), undefined);
    assert.deepEqual(await r.done, { bytes: 12, sha256: sha256(all) });
    assert.equal((await received).toString(), 'aaaabbbbcccc');
    assert.equal(r.nacks, 2);
  });

  it('protocol - an END whose SHA-256 differs: DATA_LOSS, SKEIN_ERR_DIGEST_MISMATCH, the partial output deleted', async () => {
    const out = join(dir, 'mismatch.out');
    const r = await listen({ out });
    const a = await rawAttach(r.address);
    await a.send(encodeOpen({ flags: OpenFlags.RESTARTABLE | OpenFlags.SIZE_KNOWN, id: ID, size: 3, name: 'x' }));
    assert.equal((await a.reply()).type, PipeMessageType.ACCEPT);
    assert.ok(existsSync(`${out}.skein-state`));
    await a.send(data(1, 0, Buffer.from('abc')));
    await a.send(encodeEnd(1, 3, Buffer.alloc(32)));
    const err = await a.ending();
    assert.ok(isSkeinError(err) && err.status === Status.DATA_LOSS, `call ended with ${String(err)}`);
    const e = await rejectsWith(r.done, ErrorCode.DIGEST_MISMATCH, 'the receiver');
    assert.match(e.message, /SHA-256 mismatch/);
    assert.ok(!existsSync(out) && !existsSync(`${out}.skein-part`) && !existsSync(`${out}.skein-state`));
  });

  it('protocol - a newer attachment wins: the older call is reset (CANCELLED), the transfer goes on from the confirmed offset', async () => {
    const r = await listen();
    const received = readAll(r.readable!);
    const a = await rawAttach(r.address);
    await a.send(encodeOpen({ flags: 0, id: ID, size: 0, name: '' }));
    assert.equal((await a.reply()).type, PipeMessageType.ACCEPT);
    await a.send(data(1, 0, Buffer.from('first-')));
    await confirmed(r, 6);
    const b = await rawAttach(r.address);
    await b.send(encodeOpen({ flags: 0, id: ID, size: 0, name: '' }));
    assert.deepEqual(await b.reply(), { type: PipeMessageType.ACCEPT, epoch: 2, offset: 6, window: 8 * MiB });
    const err = await a.ending();
    assert.ok(isSkeinError(err) && err.status === Status.CANCELLED, `older call ended with ${String(err)}`);
    await b.send(data(2, 6, Buffer.from('second')));
    const all = Buffer.from('first-second');
    await b.send(encodeEnd(2, all.length, createHash('sha256').update(all).digest()));
    assert.equal((await b.reply()).type, PipeMessageType.DONE);
    assert.equal((await received).toString(), 'first-second');
    assert.equal(r.attachments, 2);
  });

  it('protocol - another transfer while a restartable one is held: FAILED_PRECONDITION, the held one goes on', async () => {
    const r = await listen();
    const a = await rawAttach(r.address);
    await a.send(encodeOpen({ flags: OpenFlags.RESTARTABLE, id: ID, size: 0, name: '' }));
    assert.equal((await a.reply()).type, PipeMessageType.ACCEPT);
    const b = await rawAttach(r.address);
    await b.send(encodeOpen({ flags: OpenFlags.RESTARTABLE, id: Buffer.alloc(16, 9), size: 0, name: '' }));
    const err = await b.ending();
    assert.ok(isSkeinError(err) && err.status === Status.FAILED_PRECONDITION && /another source/.test(err.message), `call ended with ${String(err)}`);
    const c = await rawAttach(r.address);
    await c.send(encodeOpen({ flags: 0, id: ID, size: 0, name: '' }));
    const e2 = await c.ending();
    assert.ok(isSkeinError(e2) && e2.status === Status.FAILED_PRECONDITION && /disagrees/.test(e2.message), `call ended with ${String(e2)}`);
  });

  it('bytes - byteChunks and collectBytes carry a file over a raw clientStream method with backpressure', async () => {
    const Upload = service('test.upload', { put: clientStream<Buffer, Buffer>({ raw: true }) });
    const input = join(dir, 'upload.in');
    const out = join(dir, 'upload.out');
    const payload = randomBytes(8 * MiB + 3);
    writeFileSync(input, payload);
    let slowWrites = 0;
    const server = createServer({ resilience: false }).add(
      implement(Upload, {
        async put(requests) {
          // A slow disk: every write completes on a later turn, and the buffer is small.
          const file = createWriteStream(out);
          const slow = new Writable({
            highWaterMark: 64 * 1024,
            write(chunk: Buffer, _enc, cb) {
              slowWrites++;
              file.write(chunk, (err) => setImmediate(() => cb(err)));
            },
            final(cb) {
              file.end(cb);
            },
          });
          const n = await collectBytes(requests, slow);
          return Buffer.from(String(n));
        },
      }),
    );
    open.closers.push(() => server.close(0));
    const bound = await server.listen({ port: 0 });
    const client = connect(Upload, { target: bound.address, resilience: false });
    open.closers.push(() => client.close());
    const chunks: number[] = [];
    const source = (async function* () {
      for await (const c of byteChunks(createReadStream(input, { highWaterMark: 512 * 1024 }), { chunkSize: 100_000 })) {
        chunks.push(c.length);
        yield c;
      }
    })();
    const reply = await withTimeout(client.put(source), 15_000, 'the upload');
    assert.equal(reply.toString(), String(payload.length));
    assert.ok(readFileSync(out).equals(payload));
    assert.ok(chunks.every((n) => n > 0 && n <= 100_000));
    assert.ok(slowWrites > 0);
  });

  it('bytes - byteChunks refuses a bad chunkSize; collectBytes can leave the writable open', async () => {
    await assert.rejects(async () => {
      for await (const _ of byteChunks([Buffer.from('x')], { chunkSize: 0 })) void _;
    }, (e: unknown) => isSkeinError(e) && e.code === ErrorCode.INVALID_OPTIONS);
    const parts: string[] = [];
    const w = new Writable({
      write(c: Buffer, _e, cb) {
        parts.push(c.toString());
        cb();
      },
    });
    const n = await collectBytes(byteChunks(['ab', Buffer.from('cd'), new Uint8Array([101])], { chunkSize: 1 }), w, { end: false });
    assert.equal(n, 5);
    assert.deepEqual(parts, ['a', 'b', 'c', 'd', 'e']);
    assert.equal(w.writableEnded, false);
  });
});
