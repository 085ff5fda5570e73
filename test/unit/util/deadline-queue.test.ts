/**
 * Deadline lists: entries fire once, in deadline order, never after cancel, and an empty
 * list does not keep the process alive.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addDeadline, cancelDeadline, type DeadlineEntry } from '../../../src/util/deadline-queue.js';
import { waitFor } from '../../helpers/wait.js';

function entry(name: string, fired: string[]): DeadlineEntry & { name: string } {
  return { name, dlNext: null, dlPrev: null, dlList: null, dlDue: 0, onDeadline: () => fired.push(name) };
}

describe('deadline queue', () => {
  it('deadline queue - entries of one duration fire once each, in insertion order', async () => {
    const fired: string[] = [];
    const es = ['a', 'b', 'c', 'd'].map((n) => entry(n, fired));
    for (const e of es) addDeadline(e, 5);
    await waitFor(() => fired.length === 4, { what: 'all four deadlines' });
    assert.deepEqual(fired, ['a', 'b', 'c', 'd']);
    for (const e of es) assert.equal(e.dlList, null);
  });

  it('deadline queue - a cancelled entry never fires; the others still do', async () => {
    const fired: string[] = [];
    const a = entry('a', fired);
    const b = entry('b', fired);
    const c = entry('c', fired);
    addDeadline(a, 5);
    addDeadline(b, 5);
    addDeadline(c, 5);
    cancelDeadline(b);
    cancelDeadline(b); // idempotent
    // c was added after b with the same duration: once c has fired, b's deadline has passed too.
    await waitFor(() => fired.includes('c'), { what: 'c to fire' });
    assert.deepEqual(fired, ['a', 'c']);
  });

  it('deadline queue - different durations fire by deadline, not by insertion', async () => {
    const fired: string[] = [];
    addDeadline(entry('slow', fired), 40);
    addDeadline(entry('fast', fired), 1);
    await waitFor(() => fired.length === 2, { what: 'both deadlines' });
    assert.deepEqual(fired, ['fast', 'slow']);
  });

  it('deadline queue - once its list is empty, the timer no longer holds the process', () => {
    const e = entry('x', []);
    addDeadline(e, 60_000);
    const list = e.dlList!;
    assert.equal(list.timer?.hasRef(), true);
    cancelDeadline(e);
    assert.equal(list.timer?.hasRef(), false);
    const e2 = entry('y', []);
    addDeadline(e2, 60_000);
    assert.equal(list.timer?.hasRef(), true, 'a new entry in the same list refs it again');
    cancelDeadline(e2);
  });
});
