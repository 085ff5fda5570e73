/**
 * The `skein` program itself: help, version, usage errors, and `skein demo` end to end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, runCli } from './run.js';

test('skein --version - prints the package version', async () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const r = await runCli(['--version']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), version);
});

test('skein --help - lists the commands with examples, exit 0', async () => {
  const r = await runCli(['--help']);
  assert.equal(r.code, 0);
  for (const cmd of ['serve', 'call', 'demo']) assert.match(r.stdout, new RegExp(`^  ${cmd} `, 'm'));
  assert.match(r.stdout, /Examples:/);
});

test('skein help CMD / CMD --help - per-command help with examples', async () => {
  for (const args of [['help', 'call'], ['call', '--help'], ['serve', '--help'], ['help', 'demo']]) {
    const r = await runCli(args);
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.stdout, /Usage: skein /);
    assert.match(r.stdout, /Examples:/);
  }
});

test('skein - unknown command or option is a usage error (exit 2)', async () => {
  for (const args of [['frobnicate'], ['call', 'echo.say', '{}', '--bogus'], []]) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `skein ${args.join(' ')}`);
    assert.notEqual(r.stderr, '');
  }
});

test('skein demo - runs every step and exits 0', async () => {
  const r = await runCli(['demo', '--calls', '500'], { timeoutMs: 30000 });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const steps = r.stdout.match(/^\[\d+\/\d+\] /gm) ?? [];
  assert.ok(steps.length >= 7, r.stdout);
  assert.match(r.stdout, /say \{"text":"hello, skein"\} → \{"text":"hello, skein"\}/);
  assert.match(r.stdout, /count \{"n":5\} → 1 2 3 4 5/);
  assert.match(r.stdout, /→ \{"sum":55\}/);
  assert.match(r.stdout, /sent \{"text":"ping"\} → got \{"text":"ping"\}/);
  assert.match(r.stdout, /DEADLINE_EXCEEDED/);
  assert.match(r.stdout, /abort\(\) → CANCELLED/);
  assert.match(r.stdout, /calls\/s, p50 .* ms, p99 .* ms/);
  assert.doesNotMatch(r.stdout, /FAILED/);
});
