import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, formatBytes, formatDuration, REDRAW_MS } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;

interface FakeStream {
  stream: NodeJS.WriteStream;
  writes: string[];
}

function fakeStream(isTTY: boolean, columns = 120): FakeStream {
  const writes: string[] = [];
  const stream = {
    isTTY,
    columns,
    write(chunk: string | Uint8Array): boolean {
      writes.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  return { stream, writes };
}

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** The visible text of one redraw: without the leading \r and the trailing clear-to-EOL. */
const CLEAR_EOL = '\x1b[K';

function text(write: string): string {
  let s = write.startsWith('\r') ? write.slice(1) : write;
  if (s.endsWith('\n')) s = s.slice(0, -1);
  return s.endsWith(CLEAR_EOL) ? s.slice(0, -CLEAR_EOL.length) : s;
}

/** A redraw: `\r`, one line of text, clear to end of line, and a newline only when `final`. */
function assertRedraw(write: string, final = false): void {
  assert.ok(write.startsWith('\r'), `${JSON.stringify(write)} starts with \\r`);
  assert.ok(write.endsWith(final ? `${CLEAR_EOL}\n` : CLEAR_EOL), `${JSON.stringify(write)} ends with clear-to-EOL${final ? ' and a newline' : ''}`);
  assert.equal(write.slice(1, write.length - CLEAR_EOL.length - (final ? 1 : 0)).includes('\n'), false, 'one line');
}

test('progress - not a TTY: nothing is written, ever', () => {
  const { stream, writes } = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 10 * MiB, label: 'send', clock: clock.now });
  for (let i = 0; i <= 10; i++) {
    p.update(i * MiB);
    clock.advance(1000);
  }
  p.done();
  assert.deepStrictEqual(writes, []);
});

test('progress - isTTY undefined (a pipe or file) counts as not a TTY', () => {
  const { stream, writes } = fakeStream(false);
  delete (stream as { isTTY?: boolean }).isTTY;
  const p = createProgress({ stream, label: 'send' });
  p.update(5);
  p.done();
  assert.deepStrictEqual(writes, []);
});

test('progress - quiet on a TTY: nothing is written', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 100, quiet: true, label: 'send', clock: clock.now });
  p.update(50);
  clock.advance(1000);
  p.update(100);
  p.done();
  assert.deepStrictEqual(writes, []);
});

test('progress - TTY with a known total: one line redrawn with bytes, rate, percentage, ETA', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 100 * MiB, label: 'send', clock: clock.now });
  p.update(0);
  assert.equal(writes.length, 1);
  assertRedraw(writes[0]);
  assert.match(text(writes[0]), /^send {2}0 B \/ 100 MiB {2}--\/s {2}0\.0% {2}ETA --:--$/);
  // 10 MiB/s for 3 s, one update per 100 ms.
  for (let i = 1; i <= 30; i++) {
    clock.advance(100);
    p.update(i * MiB);
  }
  const last = text(writes[writes.length - 1]);
  assert.match(last, /^send {2}30\.0 MiB \/ 100 MiB {2}10\.0 MiB\/s {2}30% {2}ETA 0:07$/);
  for (const w of writes) assertRedraw(w);
});

test('progress - redraws at most every 250 ms however often update is called', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 1e9, label: 'recv', clock: clock.now });
  // 10 s of updates every 5 ms.
  for (let i = 0; i < 2000; i++) {
    p.update(i * 1000);
    clock.advance(5);
  }
  assert.ok(writes.length <= 10_000 / REDRAW_MS + 1, `${writes.length} redraws in 10 s`);
  assert.ok(writes.length >= 10_000 / REDRAW_MS - 1, `${writes.length} redraws in 10 s`);
  // Nothing drawn between two updates that are closer than REDRAW_MS.
  const before = writes.length;
  p.update(2_000_000);
  clock.advance(REDRAW_MS - 1);
  p.update(2_000_001);
  assert.ok(writes.length - before <= 1);
});

test('progress - unknown total: bytes and rate only, no percentage, no ETA', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, label: 'recv', clock: clock.now });
  for (let i = 0; i <= 20; i++) {
    p.update(i * 512 * 1024);
    clock.advance(REDRAW_MS);
  }
  const last = text(writes[writes.length - 1]);
  assert.match(last, /^recv {2}10\.0 MiB {2}2\.00 MiB\/s$/);
  assert.ok(writes.every((w) => !w.includes('%') && !w.includes('ETA')));
});

test('progress - the rate is a moving average: it follows a change of speed within the window', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 10_000 * MiB, label: 'send', clock: clock.now });
  let bytes = 0;
  const run = (mibPerSec: number, seconds: number): void => {
    for (let i = 0; i < seconds * 10; i++) {
      clock.advance(100);
      bytes += (mibPerSec * MiB) / 10;
      p.update(bytes);
    }
  };
  run(100, 10);
  assert.match(text(writes[writes.length - 1]), / 100 MiB\/s /);
  run(10, 2);
  const mid = / {2}([\d.]+) MiB\/s /.exec(text(writes[writes.length - 1]));
  assert.ok(mid !== null && Number(mid[1]) < 100 && Number(mid[1]) > 10, `rate during the change: ${mid?.[1]}`);
  run(10, 10);
  assert.match(text(writes[writes.length - 1]), / 10\.0 MiB\/s /);
});

test('progress - done() draws a final line with a newline, once; later updates draw nothing', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 20 * MiB, label: 'send', clock: clock.now });
  p.update(0);
  clock.advance(2000);
  p.update(20 * MiB);
  clock.advance(10);
  p.done();
  const final = writes[writes.length - 1];
  assertRedraw(final, true);
  assert.match(text(final), /^send {2}20\.0 MiB {2}in 2\.0 s {2}9\.95 MiB\/s$/);
  const n = writes.length;
  p.done();
  clock.advance(1000);
  p.update(30 * MiB);
  assert.equal(writes.length, n);
});

test('progress - done() with no update at all still ends the line', () => {
  const { stream, writes } = fakeStream(true);
  const p = createProgress({ stream, label: 'recv', clock: () => 0 });
  p.done();
  assert.equal(writes.length, 1);
  assertRedraw(writes[0], true);
  assert.equal(text(writes[0]), 'recv  0 B  in 0.0 s');
});

test('progress - the line never exceeds the terminal width', () => {
  const { stream, writes } = fakeStream(true, 30);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 123 * MiB, label: 'a-rather-long-label', clock: clock.now });
  for (let i = 0; i < 10; i++) {
    clock.advance(REDRAW_MS);
    p.update(i * MiB);
  }
  p.done();
  assert.ok(writes.length > 2);
  for (const w of writes) assert.ok(text(w).length <= 29, `${JSON.stringify(text(w))} is wider than 29`);
});

test('progress - a position going back (resume from an earlier offset) restarts the rate', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress({ stream, total: 100 * MiB, label: 'send', clock: clock.now });
  for (let i = 0; i <= 10; i++) {
    p.update(i * 5 * MiB);
    clock.advance(REDRAW_MS);
  }
  p.update(10 * MiB);
  const after = text(writes[writes.length - 1]);
  assert.match(after, /^send {2}10\.0 MiB \/ 100 MiB {2}--\/s {2}10% {2}ETA --:--$/);
  for (const w of writes) assert.doesNotMatch(w, /-\d/, 'no negative figure');
});

test('progress - formatBytes and formatDuration', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1.00 KiB');
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(15.5 * MiB), '15.5 MiB');
  assert.equal(formatBytes(1024 * MiB), '1.00 GiB');
  assert.equal(formatBytes(700 * 1024 * MiB), '700 GiB');
  assert.equal(formatBytes(-1), '?');
  assert.equal(formatBytes(Number.NaN), '?');
  assert.equal(formatDuration(0), '0:00');
  assert.equal(formatDuration(7.4), '0:07');
  assert.equal(formatDuration(61), '1:01');
  assert.equal(formatDuration(3600 + 62), '1:01:02');
  assert.equal(formatDuration(Number.POSITIVE_INFINITY), '--:--');
  assert.equal(formatDuration(-3), '--:--');
});
