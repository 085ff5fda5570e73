import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isSkeinError } from '../../../src/errors.js';
import { createMemoryPair, memoryTransport } from '../../../src/transport/memory.js';
import type { Connection } from '../../../src/transport/transport.js';
import { closed, once, readAll, readBytes, waitFor } from '../../helpers/wait.js';

function ignore(): void {}

function hasCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => isSkeinError(err) && err.code === code;
}

let seq = 0;
const uniqueName = (): string => `memory-test-${process.pid}-${++seq}`;

describe('memory socket pair', () => {
  it('memory - a write is delivered on a later turn, never inside write()', async () => {
    const [a, b] = createMemoryPair();
    const got: Buffer[] = [];
    b.on('data', (chunk: Buffer) => got.push(chunk));
    a.write('x');
    assert.equal(got.length, 0, 'delivered synchronously');
    await once(b, 'data');
    assert.equal(Buffer.concat(got).toString(), 'x');
    a.destroy();
    b.destroy();
  });

  it('memory - writes, writev batches and corked writes arrive in order', async () => {
    const [a, b] = createMemoryPair();
    const expected = Array.from({ length: 300 }, (_, i) => `${i};`).join('');
    const got = readBytes(b, expected.length);
    let i = 0;
    for (; i < 100; i++) a.write(`${i};`);
    a.cork();
    for (; i < 200; i++) a.write(`${i};`);
    process.nextTick(() => {
      a.uncork();
      for (; i < 300; i++) a.write(`${i};`);
    });
    assert.equal((await got).toString(), expected);
    a.destroy();
    b.destroy();
  });

  it('memory - end gives EOF on the other end and then both ends close', async () => {
    const [a, b] = createMemoryPair();
    const got = readAll(b);
    a.end('bye');
    assert.equal((await got).toString(), 'bye');
    a.resume();
    await closed(a);
    await closed(b);
  });

  it('memory - destroy delivers data written before it, then EOF and close on the other end', async () => {
    const [a, b] = createMemoryPair();
    a.write('last words');
    a.destroy();
    const ended = once(b, 'end');
    const got = readAll(b);
    await ended;
    assert.equal((await got).toString(), 'last words');
    await closed(b);
  });

  it('memory - destroy with an error errors only the side that was destroyed', async () => {
    const [a, b] = createMemoryPair();
    const aError = once(a, 'error');
    let bError: unknown;
    b.on('error', (err) => (bError = err));
    a.destroy(new Error('boom'));
    assert.equal(((await aError)[0] as Error).message, 'boom');
    b.resume();
    await closed(b);
    assert.equal(bError, undefined);
  });

  it('memory - backpressure holds the writer until the reader reads, then drain', async () => {
    const [a, b] = createMemoryPair({ highWaterMark: 1024 });
    const chunk = Buffer.alloc(256, 1);
    let written = 0;
    while (a.write(chunk)) written += chunk.length;
    written += chunk.length;
    let drained = false;
    a.once('drain', () => (drained = true));
    // The reader's buffer fills up to its highWaterMark; the rest must wait in the writer.
    await waitFor(() => b.readableLength >= 1024, { what: 'the reader buffer to fill' });
    assert.equal(drained, false, 'drained although nothing was read');
    assert.equal(a.writableNeedDrain, true);
    assert.ok(a.writableLength > 0, 'the writer holds what the reader has no room for');
    const all = readAll(b);
    await once(a, 'drain');
    a.end();
    assert.equal((await all).length, written);
  });

  it('memory - writes to a destroyed peer are dropped, and the writer sees EOF then close', async () => {
    const [a, b] = createMemoryPair();
    a.on('error', ignore);
    b.destroy();
    a.write('into the void');
    a.resume();
    await closed(a);
  });
});

describe('memory transport', () => {
  it('memory - dial reaches the listener by name, with or without the scheme', async () => {
    const name = uniqueName();
    const accepted: Connection[] = [];
    const listener = await memoryTransport.listen({ name }, (c) => accepted.push(c));
    try {
      assert.equal(listener.address, `memory:${name}`);
      await memoryTransport.dial(`memory:${name}`);
      await memoryTransport.dial(name);
      await waitFor(() => accepted.length === 2, { what: 'two accepted connections' });
      for (const c of accepted) c.socket.destroy();
    } finally {
      await listener.close();
    }
  });

  it('memory - listening on a name in use fails, and the name is free again after close', async () => {
    const name = uniqueName();
    const first = await memoryTransport.listen({ name }, ignore);
    await assert.rejects(memoryTransport.listen({ name: `memory:${name}` }, ignore), (err: unknown) => hasCode(ErrorCode.INVALID_OPTIONS)(err) && (err as Error).message.includes('EADDRINUSE'));
    await first.close();
    const second = await memoryTransport.listen({ name }, ignore);
    await second.close();
  });

  it('memory - listening without a name picks a unique one', async () => {
    const a = await memoryTransport.listen({}, ignore);
    const b = await memoryTransport.listen({}, ignore);
    assert.notEqual(a.address, b.address);
    await a.close();
    await b.close();
  });

  it('memory - dialing an unknown name fails with SKEIN_ERR_CONNECT_FAILED', async () => {
    const name = uniqueName();
    await assert.rejects(memoryTransport.dial(`memory:${name}`), (err: unknown) => hasCode(ErrorCode.CONNECT_FAILED)(err) && (err as Error).message === `connect ECONNREFUSED memory:${name}`);
  });

  it('memory - bad addresses and options fail with SKEIN_ERR_INVALID_OPTIONS', async () => {
    await assert.rejects(memoryTransport.dial('memory:'), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(memoryTransport.dial('x', { connectTimeoutMs: -1 }), hasCode(ErrorCode.INVALID_OPTIONS));
    await assert.rejects(memoryTransport.listen({ name: 'memory:' }, ignore), hasCode(ErrorCode.INVALID_OPTIONS));
  });
});
