/**
 * The watch plumbing shared by the built-in resolvers: the per-watch queue (lazy start,
 * abort, bounded backlog) and the instance-set diff.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diffInstances, sameInstance, WatchFeed } from '../../src/discovery/index.js';
import type { Instance } from '../../src/discovery/index.js';
import { withTimeout } from '../helpers/wait.js';

function inst(id: string, address = id, metadata: Record<string, string> = {}): Instance {
  return { service: 's', id, address, metadata };
}

test('watch feed - starts on the first next(), ends once, on abort or return()', async () => {
  const calls: string[] = [];
  const ac = new AbortController();
  const feed = new WatchFeed({ signal: ac.signal, snapshot: () => [], onStart: () => calls.push('start'), onEnd: () => calls.push('end') });
  assert.deepEqual(calls, [], 'nothing happens before iteration');
  const pending = feed.next();
  assert.deepEqual(calls, ['start']);
  feed.push({ type: 'snapshot', instances: [] });
  assert.deepEqual(await withTimeout(pending, 1000, 'the snapshot'), { done: false, value: { type: 'snapshot', instances: [] } });
  const waiting = feed.next();
  ac.abort();
  assert.deepEqual(await withTimeout(waiting, 1000, 'the end'), { done: true, value: undefined });
  await feed.return();
  feed.push({ type: 'snapshot', instances: [] });
  assert.equal((await feed.next()).done, true, 'pushes after the end are dropped');
  assert.deepEqual(calls, ['start', 'end']);
});

test('watch feed - an aborted signal ends it before it starts', async () => {
  const calls: string[] = [];
  const feed = new WatchFeed({ signal: AbortSignal.abort(), snapshot: () => [], onStart: () => calls.push('start'), onEnd: () => calls.push('end') });
  assert.equal((await feed.next()).done, true);
  assert.deepEqual(calls, ['end']);
});

test('watch feed - overflow replaces the queue with a snapshot', async () => {
  let current: Instance[] = [];
  const feed = new WatchFeed({ snapshot: () => current, maxQueue: 2 });
  current = [inst('a'), inst('b'), inst('c')];
  feed.push({ type: 'added', instance: inst('a') });
  feed.push({ type: 'added', instance: inst('b') });
  feed.push({ type: 'added', instance: inst('c') });
  assert.deepEqual((await feed.next()).value, { type: 'snapshot', instances: current });
  feed.push({ type: 'removed', instance: inst('a') });
  assert.deepEqual((await feed.next()).value, { type: 'removed', instance: inst('a') });
  await feed.return();
});

test('instance diff - added and updated before removed; equal instances make no event', () => {
  const prev = new Map([
    ['a', inst('a')],
    ['b', inst('b', 'b', { v: '1' })],
    ['c', inst('c')],
  ]);
  const next = new Map([
    ['b', inst('b', 'b', { v: '2' })],
    ['c', inst('c')],
    ['d', inst('d')],
  ]);
  assert.deepEqual(
    diffInstances(prev, next).map((e) => `${e.type}:${e.type === 'error' || e.type === 'snapshot' ? '' : e.instance.id}`),
    ['updated:b', 'added:d', 'removed:a'],
  );
  assert.deepEqual(diffInstances(prev, prev), []);
  assert.equal(sameInstance(inst('x', 'h:1', { a: '1' }), inst('x', 'h:1', { a: '1' })), true);
  assert.equal(sameInstance(inst('x', 'h:1', { a: '1' }), inst('x', 'h:2', { a: '1' })), false);
  assert.equal(sameInstance(inst('x', 'h:1', { a: '1' }), inst('x', 'h:1', { a: '1', b: '2' })), false);
});
