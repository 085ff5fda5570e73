import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SkeinError } from '../../src/index.js';
import { bulkhead, fallback } from '../../src/resilience/index.js';
import { FakeClock } from '../helpers/clock.js';
import { caught, fakeCall, gate } from './_helpers.js';

const fail = (status: 'RESOURCE_EXHAUSTED' | 'UNAVAILABLE' | 'NOT_FOUND') => async () => {
  throw new SkeinError(status, 'nope');
};

test('fallback - answers RESOURCE_EXHAUSTED and UNAVAILABLE from the handler', async () => {
  const fb = fallback({ 'svc.m': (err) => ({ cached: true, why: (err as SkeinError).statusName }) });
  assert.deepEqual(await fb(fail('RESOURCE_EXHAUSTED'))(fakeCall()), { cached: true, why: 'RESOURCE_EXHAUSTED' });
  assert.deepEqual(await fb(fail('UNAVAILABLE'))(fakeCall()), { cached: true, why: 'UNAVAILABLE' });
  assert.equal((await caught(() => fb(fail('NOT_FOUND'))(fakeCall()))).statusName, 'NOT_FOUND');
  assert.deepEqual(fb.stats(), { served: 2, failed: 0 });
});

test('fallback - answers a limiter refusal thrown synchronously inside it', async () => {
  const bh = bulkhead({ maxConcurrent: 1, clock: new FakeClock() });
  const fb = fallback({ svc: () => 'fallback' });
  const g = gate<string>();
  const handle = fb(bh(() => g.promise));
  const first = handle(fakeCall());
  assert.equal(await handle(fakeCall()), 'fallback');
  g.resolve('real');
  assert.equal(await first, 'real');
});

test('fallback - leaves other methods, streaming kinds and other statuses alone', async () => {
  const fb = fallback({ 'svc.m': () => 'fb' }, { statuses: ['UNAVAILABLE'] });
  assert.equal((await caught(() => fb(fail('RESOURCE_EXHAUSTED'))(fakeCall()))).statusName, 'RESOURCE_EXHAUSTED', 'statuses option');
  assert.equal((await caught(() => fb(fail('UNAVAILABLE'))(fakeCall({ method: 'other' })))).statusName, 'UNAVAILABLE');
  assert.equal((await caught(() => fb(fail('UNAVAILABLE'))(fakeCall({ kind: 'serverStream' })))).statusName, 'UNAVAILABLE');
  assert.equal(fb.stats().served, 0);
});

test('fallback - a fallback that throws fails the call with what it threw', async () => {
  const fb = fallback({
    'svc.m': () => {
      throw new SkeinError('INTERNAL', 'fallback broke');
    },
  });
  assert.equal((await caught(() => fb(fail('UNAVAILABLE'))(fakeCall()))).message, 'fallback broke');
  assert.deepEqual(fb.stats(), { served: 0, failed: 1 });
});

test('fallback - a cancelled call gets no fallback', async () => {
  const ac = new AbortController();
  ac.abort(new SkeinError('CANCELLED', 'gone'));
  const fb = fallback({ 'svc.m': () => 'fb' });
  assert.equal((await caught(() => fb(fail('UNAVAILABLE'))(fakeCall({ signal: ac.signal })))).statusName, 'UNAVAILABLE');
});
