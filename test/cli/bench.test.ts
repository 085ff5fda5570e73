/**
 * `skein bench` against `skein serve examples/echo.js`, both real processes: the --json
 * summary, --duration, failures counted by status, the exit status rule (0 when some call
 * succeeded, 1 when none did or the target is unreachable, 2 bad usage), the human
 * summary, --discovery, and Ctrl-C. No timing assertions beyond bounded waits.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ECHO, freePort, runCli, spawnCli, startServe, type Served } from './run.js';
import type { BenchSummary } from '../../src/cli/bench.js';

type Summary = BenchSummary;

/** The last non-empty line of stdout, parsed. */
function lastJson(stdout: string): Summary {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  assert.ok(lines.length > 0, 'no output on stdout');
  return JSON.parse(lines[lines.length - 1]!) as Summary;
}

describe('skein bench', () => {
  let served: Served;
  const bench = (args: string[], timeoutMs?: number) => runCli(['bench', ...args, '--target', served.address], timeoutMs === undefined ? {} : { timeoutMs });

  before(async () => {
    served = await startServe([ECHO]);
  });
  after(async () => {
    await served?.stop();
  });

  test('bench - --count with --json: the last stdout line is the summary, exit 0', async () => {
    const r = await bench(['echo.say', '{"text":"x"}', '--count', '200', '--concurrency', '8', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = lastJson(r.stdout);
    assert.equal(s.ok, 200);
    assert.equal(s.failed, 0);
    assert.equal(s.count, 200);
    assert.equal(s.concurrency, 8);
    assert.deepEqual(s.failures, {});
    assert.ok(s.rps > 0, `rps ${s.rps}`);
    assert.ok(s.p50_ms !== null && s.p90_ms !== null && s.p99_ms !== null && s.max_ms !== null);
    assert.ok(s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.max_ms, JSON.stringify(s));
    assert.equal(s.interrupted, false);
    assert.equal(r.stderr, '', 'no progress with --json');
  });

  test('bench - --duration ends by itself with calls made', async () => {
    const r = await bench(['echo.say', '{"text":"x"}', '--duration', '1', '--concurrency', '4', '--json'], 15000);
    assert.equal(r.code, 0, r.stderr);
    const s = lastJson(r.stdout);
    assert.ok(s.ok > 0, JSON.stringify(s));
    assert.equal(s.failed, 0);
    assert.ok(s.duration_s > 0);
  });

  test('bench - failures are counted by status; all failed exits 1', async () => {
    const r = await bench(['echo.sleep', '{"ms":500}', '--timeout', '50', '--count', '10', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const s = lastJson(r.stdout);
    assert.equal(s.ok, 0);
    assert.equal(s.failed, 10);
    assert.deepEqual(s.failures, { DEADLINE_EXCEEDED: 10 });
    assert.equal(s.p50_ms, null, 'percentiles are over successful calls only');
  });

  test('bench - an unknown method fails every call with UNIMPLEMENTED, exit 1', async () => {
    const r = await bench(['echo.nope', '--count', '5', '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.deepEqual(lastJson(r.stdout).failures, { UNIMPLEMENTED: 5 });
  });

  test('bench - unreachable target: UNAVAILABLE on stderr, exit 1', async () => {
    const port = await freePort();
    const r = await runCli(['bench', 'echo.say', '--target', `127.0.0.1:${port}`, '--count', '5', '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^UNAVAILABLE: /m);
    assert.equal(r.stdout, '');
  });

  test('bench - usage errors exit 2: --count with --duration, bad JSON, no target, --balancer', async () => {
    const port = await freePort();
    const cases: { args: string[]; env?: NodeJS.ProcessEnv }[] = [
      { args: ['echo.say', '--target', `127.0.0.1:${port}`, '--count', '5', '--duration', '1'] },
      { args: ['echo.say', '{bad', '--target', `127.0.0.1:${port}`] },
      { args: ['echo.say'], env: { SKEIN_DISCOVERY: '' } },
      { args: ['say', '--target', `127.0.0.1:${port}`] },
      { args: ['echo.say', '--target', `127.0.0.1:${port}`, '--concurrency', '0'] },
      { args: ['echo.say', '--target', `127.0.0.1:${port}`, '--balancer', 'round-robin'] },
      { args: ['echo.say', '--discovery', `static://127.0.0.1:${port}`, '--balancer', 'no-such-picker'] },
    ];
    for (const { args, env } of cases) {
      const r = await runCli(['bench', ...args], env === undefined ? {} : { env });
      assert.equal(r.code, 2, `skein bench ${args.join(' ')}: ${r.stderr}`);
      assert.notEqual(r.stderr, '', `skein bench ${args.join(' ')} printed no message`);
    }
  });

  test('bench - the human summary shows rps and percentiles; progress goes to stderr', async () => {
    const r = await bench(['echo.say', '{"text":"x"}', '--count', '300', '--concurrency', '4']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /calls\s+300 \(300 ok, 0 failed\)/);
    assert.match(r.stdout, /rps\s+\d/);
    for (const p of ['p50', 'p90', 'p99', 'max']) assert.match(r.stdout, new RegExp(`${p}\\s+\\d+\\.\\d+ ms`));
    assert.doesNotMatch(r.stdout, /^\{/m);
  });

  test('bench - --discovery static:// with --balancer works like --target', async () => {
    const r = await runCli(['bench', 'echo.say', '{"text":"d"}', '--discovery', `static://${served.address}`, '--balancer', 'round-robin', '--count', '100', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = lastJson(r.stdout);
    assert.equal(s.ok, 100);
    assert.equal(s.failed, 0);
  });

  test('bench - SKEIN_TARGET stands in for --target; --warmup calls are not counted', async () => {
    const r = await runCli(['bench', 'echo.say', '--count', '20', '--warmup', '7', '--json'], { env: { SKEIN_TARGET: served.address } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(lastJson(r.stdout).ok, 20);
  });

  test('bench - SIGINT stops early and prints the summary so far', async () => {
    const child = spawnCli(['bench', 'echo.sleep', '{"ms":100}', '--target', served.address, '--duration', '60', '--concurrency', '2', '--json'], {});
    child.stdin!.end();
    let stdout = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    // Let a few calls complete (100 ms each), then interrupt.
    await new Promise((resolve) => setTimeout(resolve, 700));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    const code = await exited;
    clearTimeout(timer);
    const s = lastJson(stdout);
    assert.equal(s.interrupted, true);
    assert.equal(code, s.ok > 0 ? 0 : 1, JSON.stringify(s));
    assert.equal(s.failed, 0, 'calls cancelled by Ctrl-C are not failures');
  });
});
