/**
 * The embedded registry with real processes: `skein registry` and owner processes as
 * children, watchers in this process.
 *  - kill -9 of an owner: its instance is gone within TTL + 1 s;
 *  - an owner SIGSTOPped past its TTL hears 'lost' after SIGCONT and registers again;
 *  - registry kill -9 and restart with --data on the same port: revisions never decrease,
 *    the watcher resumes with no gap and no duplicate, calls between services go on;
 *  - 1,000 watchers over a few connections all see a change;
 *  - the command line: ready line, SIGTERM exits 0, a locked data dir exits 1.
 *
 * Timing bounds from the issue (TTL + 1 s) are asserted by waiting for the event with that
 * bound plus a margin for slow CI machines, never by measuring durations.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, service, unary } from '../../../src/index.js';
import { RegistryService } from '../../../src/discovery/embedded/api.js';
import { EmbeddedRegistrar, EmbeddedResolver } from '../../../src/discovery/embedded/plugin.js';
import { runCli } from '../../cli/run.js';
import { waitFor, withTimeout } from '../../helpers/wait.js';
import { EventLog, revisionGaps, startOwner, startRegistry, type Child } from './_helpers.js';

/** Slack on top of the contract's bounds for a loaded CI machine. */
const MARGIN_MS = 3000;
const FAST = { backoff: { initialMs: 50, maxMs: 500 } };

const cleanups: Array<() => Promise<unknown>> = [];
const children: Child[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  for (const c of children) if (c.running) await c.kill9().catch(() => {});
});

function track<T extends Child>(c: T): T {
  children.push(c);
  return c;
}

function resolverFor(address: string): EmbeddedResolver {
  const r = new EmbeddedResolver(address, FAST);
  cleanups.push(() => r.close());
  return r;
}

describe('embedded registry with real processes', () => {
  it('registry process - kill -9 of an owner: its instance is gone within TTL + 1 s', async () => {
    const registry = track(await startRegistry());
    const ttl = 1500;
    const resolver = resolverFor(registry.address);
    const log = new EventLog(resolver.watch('victim'));
    const owner = track(await startOwner(registry.url, 'victim', ttl));
    await log.waitFor((e) => e.type === 'added' || (e.type === 'snapshot' && e.instances.length === 1), 'the owner to appear');
    const from = log.events.length;
    await owner.kill9();
    const removed = await log.waitFor((e) => e.type === 'removed', `the instance to vanish within TTL (${ttl} ms) + 1 s`, ttl + 1000 + MARGIN_MS, from);
    assert.equal(removed.type === 'removed' && removed.instance.address, owner.address);
    assert.deepEqual(await resolver.list('victim'), []);
  });

  it('registry process - an owner SIGSTOPped past its TTL is told after SIGCONT that its lease was lost, and registers again', async () => {
    const registry = track(await startRegistry());
    const ttl = 1500;
    const resolver = resolverFor(registry.address);
    const log = new EventLog(resolver.watch('sleepy'));
    const owner = track(await startOwner(registry.url, 'sleepy', ttl));
    await log.waitFor((e) => e.type === 'added' || (e.type === 'snapshot' && e.instances.length === 1), 'the owner to appear');
    const from = log.events.length;
    owner.child.kill('SIGSTOP');
    try {
      // The registry drops the instance while the owner is stopped: that is "past its TTL".
      await log.waitFor((e) => e.type === 'removed', 'the stopped owner to expire', ttl + 1000 + MARGIN_MS, from);
    } finally {
      owner.child.kill('SIGCONT');
    }
    const lines = owner.lines.length;
    const lost = await owner.waitLine((l) => l.startsWith('lost '), "the owner's 'lost'", 10000, lines);
    assert.match(lost, /^lost NOT_FOUND lease lost/);
    await owner.waitLine((l) => l.startsWith('registered '), 'the owner to register again', 10000, lines);
    const back = await log.waitFor((e) => e.type === 'added', 'the instance back in the watch', 10000, from);
    assert.equal(back.type === 'added' && back.instance.address, owner.address);
    assert.equal(revisionGaps(log.events), undefined);
  });

  it('registry process - kill -9 and restart with --data: revisions never decrease, the watcher resumes with no gap or duplicate, calls go on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-registry-proc-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const first = track(await startRegistry({ data: dir }));
    const resolver = resolverFor(first.address);
    const log = new EventLog(resolver.watch('svc'));
    await log.waitFor((e) => e.type === 'snapshot', 'the snapshot');
    const a = track(await startOwner(first.url, 'svc', 3000, 'a'));
    const b = track(await startOwner(first.url, 'svc', 3000, 'b'));
    await log.waitFor(() => log.view.size === 2, 'both owners in the watch');
    await a.stop(); // deregisters: one more change in the history
    await log.waitFor(() => log.view.size === 1, 'a deregistered');

    // A client of b, by the address the watch gave, calling all along.
    const Svc = service('svc', { say: unary<{ text: string }, { text: string; from: number }>() });
    assert.equal(log.view.get('b')?.address, b.address);
    const client = connect(Svc, { target: b.address });
    cleanups.push(() => client.close());
    let ok = 0;
    const failures: string[] = [];
    let calling = true;
    const caller = (async () => {
      while (calling) {
        try {
          await client.say({ text: 'hi' }, { timeout: 2000 });
          ok++;
        } catch (err) {
          failures.push(String(err));
        }
        await new Promise<void>((r) => setImmediate(r));
      }
    })();
    await waitFor(() => ok > 0, { what: 'the first call', timeoutMs: 5000 });

    const raw = connect(RegistryService, { target: first.address, waitForReady: true, timeout: 5000, backoff: { initialMs: 50, maxMs: 500 } });
    cleanups.push(() => raw.close());
    const before = await raw.info({});
    const from = log.events.length;
    await first.kill9();
    await log.waitFor((e) => e.type === 'error', 'the watch to notice the registry is gone', 10000, from);
    const okAtKill = ok;
    await waitFor(() => ok > okAtKill, { what: 'a call while the registry is down', timeoutMs: 5000 });

    const second = track(await startRegistry({ port: first.port, data: dir }));
    const after = await raw.info({});
    assert.equal(after.epoch, before.epoch);
    assert.ok(after.revision >= before.revision, `revision went from ${before.revision} to ${after.revision}`);
    // A change after the restart reaches the resumed watch with the next revision.
    const c = track(await startOwner(second.url, 'svc', 3000, 'c'));
    await log.waitFor((e) => e.type === 'added' && e.instance.id === 'c', 'the new owner through the resumed watch', 10000, from);
    assert.ok(c.running);
    assert.equal(log.count('snapshot'), 1, 'the watch resumed: no resync');
    assert.equal(revisionGaps(log.events), undefined);
    const listed = await resolver.list('svc');
    await waitFor(() => log.view.size === listed.length, { what: 'the watch to match list()', timeoutMs: 5000 });
    assert.deepEqual([...log.view.keys()].sort(), listed.map((i) => i.id).sort());
    assert.ok(listed.some((i) => i.id === 'b'), 'b kept (or regained) its registration through the restart');

    calling = false;
    await withTimeout(caller, 5000, 'the caller to stop');
    assert.deepEqual(failures, [], 'calls between services failed during the registry outage');
    assert.ok(ok > okAtKill);
  });

  it('registry process - 1,000 concurrent watchers over 4 connections all see a change', async () => {
    const registry = track(await startRegistry());
    const ac = new AbortController();
    let snapshots = 0;
    let added = 0;
    const done: Promise<void>[] = [];
    for (let c = 0; c < 4; c++) {
      const resolver = resolverFor(registry.address);
      for (let w = 0; w < 250; w++) {
        done.push(
          (async () => {
            for await (const e of resolver.watch('fan', { signal: ac.signal })) {
              if (e.type === 'snapshot') snapshots++;
              else if (e.type === 'added') added++;
            }
          })(),
        );
      }
    }
    await waitFor(() => snapshots === 1000, { what: '1,000 snapshots', timeoutMs: 30000, intervalMs: 20 });
    const registrar = new EmbeddedRegistrar(registry.address, FAST);
    cleanups.push(() => registrar.close());
    await registrar.register({ service: 'fan', address: '127.0.0.1:9' }, { ttlMs: 5000 });
    await waitFor(() => added === 1000, { what: `1,000 watchers to see the change (${added} so far)`, timeoutMs: 10000, intervalMs: 10 });
    ac.abort();
    await withTimeout(Promise.all(done), 10000, 'the watches to end');
  });

  it('registry command - ready line, SIGTERM exits 0, a data dir in use exits 1, bad flags exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-registry-cli-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const registry = track(await startRegistry({ data: dir }));
    assert.match(registry.lines[0]!, /^ready registry 127\.0\.0\.1:\d+$/);
    const locked = await runCli(['registry', '--port', '0', '--data', dir]);
    assert.equal(locked.code, 1, locked.stderr);
    assert.match(locked.stderr, /in use by process/);
    assert.equal(locked.stdout, '');
    const badFlag = await runCli(['registry', '--port', 'nope']);
    assert.equal(badFlag.code, 2);
    const { code } = await registry.stop('SIGTERM');
    assert.equal(code, 0, registry.stderr);
    assert.match(registry.stderr, /stopped/);
  });
});
