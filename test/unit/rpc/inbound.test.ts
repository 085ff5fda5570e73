/**
 * InboundQueue: credit goes back to the peer only when the reader takes a message, and a
 * reader that stops early tells the owner.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createError, ErrorCode } from '../../../src/errors.js';
import { InboundQueue } from '../../../src/rpc/inbound.js';
import type { Stream } from '../../../src/session/stream.js';

function consumer() {
  const consumed: number[] = [];
  return { consumed, stream: { consume: (n: number) => consumed.push(n) } as unknown as Stream };
}

describe('rpc inbound queue', () => {
  it('inbound - credit is released as messages are taken, not as they arrive', async () => {
    const q = new InboundQueue<string>(() => {});
    const c = consumer();
    q.attach(c.stream);
    q.push('a', 10);
    q.push('b', 20);
    assert.deepEqual(c.consumed, []);
    assert.deepEqual(await q.next(), { done: false, value: 'a' });
    assert.deepEqual(c.consumed, [10]);
    const waiting = q.next();
    assert.deepEqual(await waiting, { done: false, value: 'b' });
    const pending = q.next();
    q.push('c', 30);
    assert.deepEqual(await pending, { done: false, value: 'c' });
    assert.deepEqual(c.consumed, [10, 20, 30]);
    q.end();
    assert.deepEqual(await q.next(), { done: true, value: undefined });
  });

  it('inbound - a failure reaches a waiting reader; return() before the end notifies the owner', async () => {
    const q = new InboundQueue<string>(() => {});
    const waiting = q.next();
    q.fail(createError(ErrorCode.CANCELLED, 'gone'));
    await assert.rejects(waiting, (e: unknown) => (e as { code?: string }).code === ErrorCode.CANCELLED);
    let returned = 0;
    const q2 = new InboundQueue<string>(() => returned++);
    q2.push('x', 1);
    await q2.return();
    assert.equal(returned, 1);
    assert.deepEqual(await q2.next(), { done: true, value: undefined });
  });
});
