/**
 * `skein call` against `skein serve examples/echo.js`, both real processes: the four call
 * shapes through the one generic path, failures as `STATUS: message` with exit 1, usage
 * errors with exit 2.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { ECHO, freePort, jsonLines, runCli, spawnCli, startServe, type Served } from './run.js';

describe('skein call', () => {
  let served: Served;
  const call = (args: string[], input?: string) => runCli(['call', ...args, '--target', served.address], input === undefined ? {} : { input });

  before(async () => {
    served = await startServe([ECHO]);
  });
  after(async () => {
    await served?.stop();
  });

  test('call - ready line names 127.0.0.1 and the port picked', () => {
    assert.match(served.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(served.address, '127.0.0.1:0');
  });

  test('call - unary with a JSON argument prints the reply and does not wait for stdin', async () => {
    // runCli leaves stdin open: reading it would hang the call.
    const r = await call(['echo.say', '{"text":"hi"}']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ text: 'hi' }]);
  });

  test('call - server stream prints one JSON line per message', async () => {
    const r = await call(['echo.count', '{"n":5}']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [1, 2, 3, 4, 5].map((i) => ({ i })));
  });

  test('call - client stream reads NDJSON requests from stdin', async () => {
    const r = await call(['echo.sum'], '{"n":1}\n{"n":2}\n\n{"n":3}\n{"n":4}');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ sum: 10 }]);
  });

  test('call - "-" as the argument also reads stdin', async () => {
    const r = await call(['echo.sum', '-'], '{"n":20}\n{"n":22}\n');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ sum: 42 }]);
  });

  test('call - bidi echoes every stdin line', async () => {
    const msgs = [{ text: 'a' }, { text: 'b' }, { n: [1, 2, 3] }];
    const r = await call(['echo.chat'], msgs.map((m) => JSON.stringify(m)).join('\n') + '\n');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), msgs);
  });

  test('call - bidi with empty stdin ends cleanly with no output', async () => {
    const r = await call(['echo.chat'], '');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
  });

  test('call - the reader closing stdout (| head -1) cancels a long stream, exit 0', async () => {
    const child = spawnCli(['call', 'echo.count', '{"n":100000000}', '--target', served.address], {});
    child.stdin!.end();
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const [first] = (await once(child.stdout!, 'data', { signal: AbortSignal.timeout(10000) })) as [Buffer];
    assert.match(first.toString(), /^\{"i":1\}/);
    child.stdout!.destroy();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    const code = await exited;
    clearTimeout(timer);
    assert.equal(code, 0, stderr);
  });

  test('call - --json-codec speaks JSON on the wire', async () => {
    const r = await call(['echo.say', '{"text":"json"}', '--json-codec']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ text: 'json' }]);
  });

  test('call - SKEIN_TARGET stands in for --target', async () => {
    const r = await runCli(['call', 'echo.say', '[1,2]'], { env: { SKEIN_TARGET: served.address } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [[1, 2]]);
  });

  test('call - deadline: DEADLINE_EXCEEDED on stderr, exit 1', async () => {
    const r = await call(['echo.sleep', '{"ms":5000}', '--timeout', '200']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^DEADLINE_EXCEEDED: /);
    assert.equal(r.stdout, '');
  });

  test('call - unknown method: UNIMPLEMENTED, exit 1', async () => {
    const r = await call(['echo.nope', '{}']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^UNIMPLEMENTED: .*echo\.nope/);
  });

  test('call - unknown service: UNIMPLEMENTED, exit 1', async () => {
    const r = await call(['no.such.service.m', '{}']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^UNIMPLEMENTED: .*no\.such\.service/);
  });

  test('call - a unary method given two requests fails with INVALID_ARGUMENT', async () => {
    const r = await call(['echo.say'], '{"a":1}\n{"b":2}\n');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^INVALID_ARGUMENT: /);
  });

  test('call - connection refused: UNAVAILABLE, exit 1', async () => {
    const port = await freePort();
    const r = await runCli(['call', 'echo.say', '{}', '--target', `127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^UNAVAILABLE: /);
  });

  test('call - bad JSON argument: exit 2', async () => {
    const r = await call(['echo.say', '{bad']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bad JSON/);
  });

  test('call - bad NDJSON line on stdin: exit 2 naming the line', async () => {
    const r = await call(['echo.sum'], '{"n":1}\n{nope\n');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /stdin line 2/);
  });

  test('call - usage errors exit 2: no target, bad target, bad --meta, bad --timeout, no method', async () => {
    const cases: string[][] = [
      ['call', 'echo.say', '{}'],
      ['call', 'echo.say', '{}', '--target', 'nonsense'],
      ['call', 'echo.say', '{}', '--target', served.address, '--meta', 'Upper=1'],
      ['call', 'echo.say', '{}', '--target', served.address, '--meta', 'novalue'],
      ['call', 'echo.say', '{}', '--target', served.address, '--timeout', 'soon'],
      ['call', 'echosay', '{}', '--target', served.address],
      ['call'],
    ];
    for (const args of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `skein ${args.join(' ')}: ${r.stderr}`);
      assert.notEqual(r.stderr, '', `skein ${args.join(' ')} printed no message`);
    }
  });
});
