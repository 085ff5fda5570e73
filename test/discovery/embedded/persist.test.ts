/**
 * Registry persistence (`--data DIR`): frames and CRC, restart restores state and history,
 * a torn last record is truncated (never fatal), revisions never decrease, compaction and
 * its crash windows, write failures fail the mutation with nothing acknowledged, restored
 * leases get their grace period, one registry per directory.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Status, type SkeinError } from '../../../src/errors.js';
import type { Instance } from '../../../src/discovery/types.js';
import type { WatchMessage } from '../../../src/discovery/embedded/api.js';
import { crc32, decodeFrames, encodeFrame, FilePersistence, LOG_FILE, SNAPSHOT_FILE, type FilePersistenceOptions } from '../../../src/discovery/embedded/persist.js';
import { RegistryStore, type RegistryStoreOptions, type Watcher } from '../../../src/discovery/embedded/store.js';
import { FakeClock } from '../../helpers/clock.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'skein-registry-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function inst(service: string, id: string, metadata: Record<string, string> = {}): Instance {
  return { service, id, address: `10.0.0.1:${id.length}`, metadata };
}

/** Open a store on `dir` as the registry does (a first snapshot on a fresh directory). */
async function openStore(dir: string, options: RegistryStoreOptions = {}, popts: FilePersistenceOptions = {}): Promise<{ store: RegistryStore; persistence: FilePersistence; warnings: string[] }> {
  const warnings: string[] = [];
  const { persistence, restored } = await FilePersistence.open(dir, { ...popts, onWarning: (m) => warnings.push(m) });
  const store = new RegistryStore({ ...options, persistence, restored, onWarning: (m) => warnings.push(m) });
  if (restored.snapshot === undefined || persistence.hasLog) await store.compactNow();
  return { store, persistence, warnings };
}

/** Simulate a crash: release the files without the final compaction `close()` would do. */
async function crash(p: FilePersistence): Promise<void> {
  await p.close();
}

async function drain(w: Watcher): Promise<WatchMessage[]> {
  const out: WatchMessage[] = [];
  while (w.buffered > 0) {
    const r = await w.next();
    if (r.done === true) break;
    out.push(r.value);
  }
  return out;
}

describe('registry persistence', () => {
  it('persist - crc32 matches the standard check value; frames round-trip and a damaged one ends the log', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    const a = encodeFrame({ a: 1 });
    const b = encodeFrame({ b: 'two' });
    assert.deepEqual(decodeFrames(Buffer.concat([a, b])), { values: [{ a: 1 }, { b: 'two' }], end: a.length + b.length });
    for (let cut = 1; cut < b.length; cut++) {
      const r = decodeFrames(Buffer.concat([a, b.subarray(0, cut)]));
      assert.deepEqual(r.values, [{ a: 1 }], `cut at ${cut}`);
      assert.equal(r.end, a.length);
    }
    const flipped = Buffer.concat([a, b]);
    flipped[flipped.length - 2] ^= 0x01;
    const r = decodeFrames(flipped);
    assert.equal(r.end, a.length);
    assert.equal(r.problem, 'CRC mismatch');
  });

  it('persist - a restart restores instances, leases, revision, epoch and the history', async () => {
    const dir = tempDir();
    const first = await openStore(dir);
    const { leaseId } = await first.store.grant(60000);
    await first.store.put(leaseId, inst('a', 'i1', { zone: 'z1' }));
    await first.store.put(leaseId, inst('a', 'i2'));
    await first.store.remove('a', 'i2');
    const epoch = first.store.epoch;
    await crash(first.persistence);

    const second = await openStore(dir);
    assert.equal(second.store.epoch, epoch);
    assert.equal(second.store.revision, 3);
    const { instances } = await second.store.list();
    assert.deepEqual(
      instances.map((i) => [i.id, i.leaseId, i.metadata]),
      [['i1', leaseId, { zone: 'z1' }]],
    );
    // A watcher that had seen revision 1 resumes with no gap.
    const w = await second.store.watch('a', 2, epoch);
    assert.deepEqual((await drain(w)).map((m) => [m.type, m.revision]), [
      ['added', 2],
      ['removed', 3],
    ]);
    w.close();
    // New leases get new ids; new changes continue the revisions.
    const again = await second.store.grant(60000);
    assert.ok(again.leaseId > leaseId);
    assert.equal((await second.store.put(again.leaseId, inst('a', 'i3'))).revision, 4);
    await second.store.close();

    // After a clean close (compaction), still the same.
    const third = await openStore(dir);
    assert.equal(third.store.revision, 4);
    assert.equal(third.store.instanceCount, 2);
    assert.equal(third.persistence.logBytes, 0);
    await third.store.close();
  });

  it('persist - a torn last record is truncated with a warning, never fatal; earlier records survive', async () => {
    const dir = tempDir();
    const first = await openStore(dir);
    const { leaseId } = await first.store.grant(60000);
    await first.store.put(leaseId, inst('a', 'i1'));
    await first.store.put(leaseId, inst('a', 'i2'));
    await crash(first.persistence);
    const logPath = join(dir, LOG_FILE);
    const whole = statSync(logPath).size;
    // The last record torn in the middle, as a crash during write() leaves it.
    truncateSync(logPath, whole - 5);

    const second = await openStore(dir);
    assert.ok(second.warnings.some((w) => /truncating \d+ byte/.test(w)), second.warnings.join('\n'));
    assert.deepEqual((await second.store.list()).instances.map((i) => i.id), ['i1']);
    assert.equal(second.store.revision, 1);
    // Writes go on after the truncation point.
    assert.equal((await second.store.put(leaseId, inst('a', 'i3'))).revision, 2);
    await crash(second.persistence);

    // Garbage after valid records (a partially written header) is cut as well.
    appendFileSync(logPath, Buffer.from([0, 0, 1]));
    const third = await openStore(dir);
    assert.ok(third.warnings.some((w) => /incomplete frame header/.test(w)), third.warnings.join('\n'));
    assert.deepEqual((await third.store.list()).instances.map((i) => i.id).sort(), ['i1', 'i3']);
    await third.store.close();
  });

  it('persist - revisions never decrease across restarts, crashes and compactions', async () => {
    const dir = tempDir();
    let last = 0;
    for (let round = 0; round < 4; round++) {
      const { store, persistence } = await openStore(dir, {}, { compactBytes: 300 });
      assert.ok(store.revision >= last, `round ${round}: revision ${store.revision} < ${last}`);
      const { leaseId } = await store.grant(60000);
      for (let i = 0; i < 5; i++) {
        const { revision } = await store.put(leaseId, inst('a', `r${round}-${i}`));
        assert.ok(revision > last);
        last = revision;
      }
      await store.revoke(leaseId);
      last = store.revision;
      if (round % 2 === 0) await crash(persistence);
      else await store.close();
    }
  });

  it('persist - a crash between the snapshot rename and the log truncation replays nothing twice', async () => {
    const dir = tempDir();
    const first = await openStore(dir);
    const { leaseId } = await first.store.grant(60000);
    await first.store.put(leaseId, inst('a', 'i1'));
    await first.store.remove('a', 'i1');
    const logCopy = readFileSync(join(dir, LOG_FILE));
    await first.store.compactNow();
    await crash(first.persistence);
    // Put the old log back, as if the truncation after the rename never happened.
    writeFileSync(join(dir, LOG_FILE), logCopy);

    const second = await openStore(dir);
    assert.equal(second.store.revision, 2);
    assert.equal(second.store.instanceCount, 0);
    const w = await second.store.watch('a', 1, second.store.epoch);
    assert.deepEqual((await drain(w)).map((m) => m.revision), [1, 2], 'each change once in the history');
    w.close();
    await second.store.close();
  });

  it('persist - a full disk fails the mutation with RESOURCE_EXHAUSTED; nothing is seen or kept; writes resume after', async () => {
    const dir = tempDir();
    let full = false;
    const { store, persistence } = await openStore(
      dir,
      {},
      {
        io: {
          write: async (fh, data, position) => {
            if (full) {
              // A partial write then ENOSPC, as a filling disk does.
              await fh.write(data, 0, Math.min(3, data.length), position);
              throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
            }
            await fh.write(data, 0, data.length, position);
          },
        },
      },
    );
    const { leaseId } = await store.grant(60000);
    await store.put(leaseId, inst('a', 'i1'));
    const w = await store.watch('a');
    await drain(w);
    const before = persistence.logBytes;
    full = true;
    await assert.rejects(store.put(leaseId, inst('a', 'i2')), (e: SkeinError) => e.status === Status.RESOURCE_EXHAUSTED && /no space/.test(e.message));
    await assert.rejects(store.revoke(leaseId), (e: SkeinError) => e.status === Status.RESOURCE_EXHAUSTED);
    assert.equal(w.buffered, 0, 'the watcher saw nothing');
    assert.deepEqual((await store.list('a')).instances.map((i) => i.id), ['i1'], 'the failed put and revoke are undone');
    assert.equal(statSync(join(dir, LOG_FILE)).size, before, 'the partial write is cut off');
    full = false;
    const { revision } = await store.put(leaseId, inst('a', 'i2'));
    assert.ok(revision > 1);
    assert.deepEqual((await drain(w)).map((m) => [m.type, m.revision]), [['added', revision]]);
    w.close();
    await crash(persistence);
    const again = await openStore(dir);
    assert.deepEqual((await again.store.list('a')).instances.map((i) => i.id).sort(), ['i1', 'i2']);
    await again.store.close();
  });

  it('persist - concurrent mutations are committed together and all acknowledged in order', async () => {
    const dir = tempDir();
    let writes = 0;
    const { store } = await openStore(
      dir,
      {},
      {
        io: {
          write: async (fh, data, position) => {
            writes++;
            await fh.write(data, 0, data.length, position);
          },
        },
      },
    );
    const { leaseId } = await store.grant(60000);
    const before = writes;
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(leaseId, inst('a', `i${i}`))));
    assert.deepEqual(
      results.map((r) => r.revision),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    assert.ok(writes - before < 20, `${writes - before} writes for 200 puts: no group commit`);
    await store.close();
  });

  it('persist - restored leases get a grace period of one TTL from the restart', async () => {
    const dir = tempDir();
    const clock1 = new FakeClock();
    const first = await openStore(dir, { clock: clock1 });
    const { leaseId } = await first.store.grant(2000);
    await first.store.put(leaseId, inst('a', 'i1'));
    clock1.advance(1900); // nearly expired when the registry dies
    await crash(first.persistence);

    const clock2 = new FakeClock(1_000_000);
    const second = await openStore(dir, { clock: clock2 });
    assert.equal(second.store.leaseInfo(leaseId)?.remainingMs, 2000);
    clock2.advance(1500);
    assert.ok(second.store.keepAlive(leaseId), 'the owner came back in time');
    clock2.advance(1999);
    assert.equal(second.store.instanceCount, 1);
    clock2.advance(1);
    // Expiry goes through the log: wait for the commit.
    await second.store.compactNow();
    assert.equal(second.store.instanceCount, 0);
    await second.store.close();

    // A lease whose owner never came back is gone for good after the next restart.
    const third = await openStore(dir, { clock: new FakeClock() });
    assert.equal(third.store.leaseInfo(leaseId), undefined);
    assert.equal(third.store.instanceCount, 0);
    await third.store.close();
  });

  it('persist - one registry per data directory; a stale lock (dead process) is taken over', async () => {
    const dir = tempDir();
    const first = await openStore(dir);
    await assert.rejects(FilePersistence.open(dir), (e: SkeinError) => e.status === Status.FAILED_PRECONDITION && /in use by process/.test(e.message));
    await first.store.close();
    writeFileSync(join(dir, 'LOCK'), '2147483646\n'); // no such process
    const second = await openStore(dir);
    await second.store.close();
  });

  it('persist - a damaged snapshot refuses to start (DATA_LOSS) instead of starting empty', async () => {
    const dir = tempDir();
    const first = await openStore(dir);
    const { leaseId } = await first.store.grant(60000);
    await first.store.put(leaseId, inst('a', 'i1'));
    await first.store.close();
    const snap = readFileSync(join(dir, SNAPSHOT_FILE));
    snap[snap.length - 3] ^= 0x20;
    writeFileSync(join(dir, SNAPSHOT_FILE), snap);
    await assert.rejects(FilePersistence.open(dir), (e: SkeinError) => e.status === Status.DATA_LOSS && /damaged/.test(e.message));
    // The lock is released on failure.
    writeFileSync(join(dir, SNAPSHOT_FILE), encodeFrame({ ...JSON.parse('{}'), v: 1, epoch: 'e', revision: 7, compactedThrough: 0, nextLease: 1, leases: [], instances: [], history: [], seq: 0 }));
    const again = await openStore(dir);
    assert.equal(again.store.revision, 7);
    await again.store.close();
  });
});
