/**
 * `skein call --verbose`: the decisions taken for a call on stderr. A discovery list with a
 * closed port (DEAD) and a live `skein serve examples/echo.js` (LIVE), round-robin: the
 * call succeeds from LIVE, stderr names the instance that answered, and when a retry was
 * made (the first pick went to DEAD) it is printed as a `retry:` line.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decisionLine } from '../../src/cli/call.js';
import { createServer, implement, service, unary, type ServerInterceptor } from '../../src/index.js';
import { refusal, ResilienceChannel } from '../../src/resilience/events.js';
import { ECHO, freePort, runCli, startServe, type Served } from './run.js';

describe('skein call --verbose', () => {
  let served: Served;
  before(async () => {
    served = await startServe([ECHO]);
  });
  after(async () => {
    await served?.stop();
  });

  test('call --verbose - prints the answering instance and every retry', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    for (const order of [`${dead},${served.address}`, `${served.address},${dead}`]) {
      const r = await runCli(['call', 'echo.say', '{"text":"hi"}', '--discovery', `static://${order}`, '--balancer', 'round-robin', '--verbose', '--timeout', '5000']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /"hi"/);
      assert.match(r.stderr, new RegExp(`answered by instance ${served.address.replace(/\./g, '\\.')}`), r.stderr);
      if (/tried: [2-9]/.test(r.stderr)) assert.match(r.stderr, /retry: echo\.say attempt 2 after \d+ ms \(SKEIN_ERR_[A-Z_]+, (refused|pushback)\)/, r.stderr);
    }
  });

  test('call --verbose - a server-side refusal is retried and the retry printed', async () => {
    // An in-process echo whose first call is refused before its handler (retry-after 0).
    let seen = 0;
    const refuseFirst: ServerInterceptor = (next) => (call) => {
      if (call.service !== 'echo') return next(call);
      if (seen++ === 0) throw refusal(ResilienceChannel.RATE_LIMIT, call.service, call.method, 'method-limit', 0, 'refused on purpose');
      return next(call);
    };
    const Echo = service('echo', { say: unary<{ text: string }, { text: string }>() });
    const server = createServer({ interceptors: [refuseFirst], onError: () => {} }).add(implement(Echo, { say: (r) => r }));
    const bound = await server.listen({ host: '127.0.0.1', port: 0 });
    const live = `127.0.0.1:${bound.port}`;
    try {
      const dead = `127.0.0.1:${await freePort()}`;
      const r = await runCli(['call', 'echo.say', '{"text":"again"}', '--discovery', `static://${dead},${live}`, '--verbose', '--timeout', '5000']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /"again"/);
      assert.match(r.stderr, /retry: echo\.say attempt 2 after \d+ ms \(SKEIN_ERR_REMOTE, pushback\)/, r.stderr);
      assert.match(r.stderr, new RegExp(`answered by instance ${live.replace(/\./g, '\\.')}`), r.stderr);
      assert.equal(seen, 2, 'refused once, then answered');
    } finally {
      await server.close(0);
    }
  });

  test('call --verbose - one line per event', () => {
    assert.equal(decisionLine('skein:resilience:retry', { service: 'echo', method: 'say', attempt: 1, code: 'SKEIN_ERR_CONNECT_FAILED', delayMs: 37, reason: 'refused' }), 'retry: echo.say attempt 2 after 37 ms (SKEIN_ERR_CONNECT_FAILED, refused)');
    assert.equal(decisionLine('skein:resilience:hedge', { service: 'echo', method: 'say', delayMs: 20, winner: 2 }), 'hedge: service=echo method=say delayMs=20 winner=2');
  });

  test('call --verbose - --balancer needs --discovery', async () => {
    const r = await runCli(['call', 'echo.say', '{}', '--target', served.address, '--balancer', 'round-robin']);
    assert.equal(r.code, 2);
  });
});
