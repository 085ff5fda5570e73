/**
 * The command line with discovery: `serve --discovery --ttl`, `ls`, `watch`,
 * `call --discovery`, SKEIN_DISCOVERY, usage errors, and the discovery part of `skein demo`.
 * The registry is the embedded one, opened in this test process on 127.0.0.1:0.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { openRegistry, type Registry } from '../../src/index.js';
import { ECHO, freePort, jsonLines, runCli, spawnCli, startServe, type Served } from './run.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

/** A long-running CLI child whose stdout is collected. */
class Running {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    child.stdin!.end();
    this.exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
  }
  until(re: RegExp, what: string, timeoutMs = 10000): Promise<void> {
    return waitFor(() => re.test(this.stdout), { timeoutMs, intervalMs: 10, what: `${what}; stdout so far:\n${this.stdout}\nstderr:\n${this.stderr}` });
  }
  async stop(): Promise<number | null> {
    this.child.kill('SIGTERM');
    return withTimeout(this.exited, 10000, 'the command to exit on SIGTERM');
  }
}

describe('discovery cli', () => {
  let registry: Registry;
  let url: string;
  let served: Served;

  before(async () => {
    registry = await openRegistry();
    const bound = await registry.listen({ host: '127.0.0.1', port: 0 });
    url = `skein://${bound.address}`;
    served = await startServe([ECHO, '--discovery', url, '--ttl', '3']);
  });
  after(async () => {
    await served?.stop();
    await registry?.close(0);
  });

  test('discovery cli - serve --discovery registers before the ready line and logs it', async () => {
    assert.match(served.stderr, new RegExp(`registered echo at ${served.address.replace(/\./g, '\\.')} in skein://.* \\(ttl 3 s\\)`));
    const { instances } = await registry.store.list('echo');
    assert.deepEqual(
      instances.map((i) => [i.address, i.ttlMs]),
      [[served.address, 3000]],
    );
  });

  test('discovery cli - ls lists services, addresses, lease time left and metadata; --json', async () => {
    const r = await runCli(['ls', '--discovery', url]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /^SERVICE\s+ADDRESS\s+LEASE LEFT\s+METADATA$/);
    assert.match(lines[1]!, new RegExp(`^echo\\s+${served.address.replace(/\./g, '\\.')}\\s+[0-3](\\.\\d)? s/3 s\\s+\\{\\}$`));
    assert.equal(lines.length, 2);

    const j = await runCli(['ls', 'echo', '--json'], { env: { SKEIN_DISCOVERY: url } });
    assert.equal(j.code, 0, j.stderr);
    const [inst] = jsonLines(j.stdout) as Array<Record<string, unknown>>;
    assert.equal(inst!.service, 'echo');
    assert.equal(inst!.address, served.address);
    assert.deepEqual(inst!.metadata, {});
    assert.equal(inst!.ttlMs, 3000);
    assert.ok(typeof inst!.leaseRemainingMs === 'number' && inst!.leaseRemainingMs <= 3000);

    const none = await runCli(['ls', 'nothing-here', '--discovery', url]);
    assert.equal(none.code, 0);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /no instances of nothing-here/);
  });

  test('discovery cli - call --discovery reaches an instance; SKEIN_DISCOVERY stands in for the flag', async () => {
    const r = await runCli(['call', 'echo.say', '{"text":"via registry"}', '--discovery', url]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ text: 'via registry' }]);

    const s = await runCli(['call', 'echo.count', '{"n":2}'], { env: { SKEIN_DISCOVERY: url } });
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual(jsonLines(s.stdout), [{ i: 1 }, { i: 2 }]);

    // A flag on the command line beats the other one's environment variable.
    const dead = `127.0.0.1:${await freePort()}`;
    const f = await runCli(['call', 'echo.say', '{"text":"flag"}', '--discovery', url], { env: { SKEIN_TARGET: dead } });
    assert.equal(f.code, 0, f.stderr);
    const t = await runCli(['call', 'echo.say', '{"text":"flag"}', '--target', served.address], { env: { SKEIN_DISCOVERY: 'skein://127.0.0.1:1' } });
    assert.equal(t.code, 0, t.stderr);
  });

  test('discovery cli - call --discovery static://HOST:PORT', async () => {
    const r = await runCli(['call', 'echo.say', '{"text":"static"}', '--discovery', `static://${served.address}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stdout), [{ text: 'static' }]);
  });

  test('discovery cli - call --discovery with no instance: UNAVAILABLE, exit 1', async () => {
    const r = await runCli(['call', 'nobody.say', '{}', '--discovery', url]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^UNAVAILABLE: no instance of nobody is ready: skein:\/\/.* lists no instances/);
  });

  test('discovery cli - watch prints the snapshot, then + and - as servers come and go', async () => {
    const watch = new Running(spawnCli(['watch', 'echo', '--discovery', url], {}));
    const json = new Running(spawnCli(['watch', 'echo', '--discovery', url, '--json'], {}));
    let second: Served | undefined;
    try {
      await watch.until(/^# echo snapshot: 1 instance \(revision \d+\)\n= echo \S+ \{\}\n/m, 'the snapshot');
      assert.match(watch.stdout, new RegExp(`^= echo ${served.address.replace(/\./g, '\\.')} \\{\\}$`, 'm'));
      await json.until(/"type":"snapshot"/, 'the JSON snapshot');
      second = await startServe([ECHO, '--discovery', url, '--ttl', '3']);
      const addr = second.address.replace(/\./g, '\\.');
      await watch.until(new RegExp(`^\\+ echo ${addr} \\{\\}$`, 'm'), 'the + line');
      assert.equal((await second.stop()).code, 0, second.stderr);
      await watch.until(new RegExp(`^- echo ${addr} \\{\\}$`, 'm'), 'the - line after SIGTERM (deregistered)');
      await json.until(/"type":"removed"/, 'the JSON removal');
      const events = jsonLines(json.stdout) as Array<{ type: string; service: string; instance?: { address: string }; instances?: unknown[]; revision?: number }>;
      assert.deepEqual(
        events.map((e) => e.type),
        ['snapshot', 'added', 'removed'],
      );
      assert.equal(events[1]!.instance!.address, second.address);
      assert.ok(events.every((e) => e.service === 'echo' && typeof e.revision === 'number'));
    } finally {
      await second?.stop();
      assert.equal(await watch.stop(), 0, watch.stderr);
      assert.equal(await json.stop(), 0, json.stderr);
    }
  });

  test('discovery cli - usage errors exit 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['ls'], /no discovery URL/],
      [['ls', '--discovery', 'bogus://x'], /unknown scheme "bogus:"/],
      [['ls', '--discovery', 'not a url'], /--discovery/],
      [['watch', '--discovery', 'static://127.0.0.1:1'], /name the service to watch/],
      [['watch', 'echo'], /no discovery URL/],
      [['serve', ECHO, '--discovery', 'static://127.0.0.1:1'], /read-only/],
      [['serve', ECHO, '--discovery', url, '--ttl', '0'], /--ttl/],
      [['serve', ECHO, '--advertise', '1.2.3.4:5'], /--advertise needs --discovery/],
      [['call', 'echo.say', '{}', '--target', '127.0.0.1:1', '--discovery', url], /not both/],
      [['call', 'echo.say', '{}', '--discovery', 'nope://x'], /unknown scheme/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args, { env: { SKEIN_DISCOVERY: '' } });
      assert.equal(r.code, 2, `skein ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, `skein ${args.join(' ')}`);
    }
  });

  test('discovery cli - ls when the registry is unreachable: STATUS: message, exit 1', async () => {
    const r = await runCli(['ls', '--discovery', `skein://127.0.0.1:${await freePort()}`, '--timeout', '300']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^(DEADLINE_EXCEEDED|UNAVAILABLE): /);
  });

  test('discovery cli - serve with the registry down: serves anyway, registers once it is up', async () => {
    const port = await freePort();
    const late = await startServe([ECHO, '--discovery', `skein://127.0.0.1:${port}`, '--ttl', '3'], { timeoutMs: 20000 });
    let reg: Registry | undefined;
    try {
      assert.match(late.stderr, /does not answer yet: serving meanwhile/);
      const direct = await runCli(['call', 'echo.say', '{"text":"direct"}', '--target', late.address]);
      assert.equal(direct.code, 0, direct.stderr);
      reg = await openRegistry();
      await reg.listen({ host: '127.0.0.1', port });
      await late.waitForStderr(`registered echo at ${late.address}`, 15000);
      assert.deepEqual(
        (await reg.store.list('echo')).instances.map((i) => i.address),
        [late.address],
      );
    } finally {
      await late.stop();
      await reg?.close(0);
    }
  });
});

test('skein demo - a registry and three replicas: calls spread, one is killed, the traffic moves on', async () => {
  const r = await runCli(['demo', '--calls', '200'], { timeoutMs: 30000 });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /registry: skein:\/\/127\.0\.0\.1:\d+/);
  assert.equal((r.stdout.match(/^ {4}replica r\d \(pid \d+\) serves echo on 127\.0\.0\.1:\d+, registered/gm) ?? []).length, 3);
  assert.match(r.stdout, /→ READY, 3 instances/);
  assert.match(r.stdout, /replies per replica: r1 100 · r2 100 · r3 100/);
  assert.match(r.stdout, /SIGKILL r3 \(pid \d+\)/);
  assert.match(r.stdout, /replies after that: r1 \d+ · r2 \d+ · r3 0/);
  assert.match(r.stdout, /calls that did not get a reply: \d+/);
  assert.match(r.stdout, /the registry dropped r3 when its lease expired/);
  assert.doesNotMatch(r.stdout, /FAILED/);
});
