/**
 * Smoke test of the reliable pipe benchmark (bench/pipe.ts): a real run in a tiny mode
 * (BENCH_PIPE_MB=8, BENCH_RUNS=1) that exits 0, prints the table and the goal line, and
 * writes a --json document with the expected fields. No assertion on the speed figures;
 * every wait is bounded. socat is measured only where it is installed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runBench } from './_run.js';

const SMOKE = { BENCH_PIPE_MB: '8', BENCH_RUNS: '1', BENCH_STRICT: '0', BENCH_VERBOSE: '0' };



const isNum = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x > 0;
const socatInstalled = ((): boolean => {
  const r = spawnSync('socat', ['-V'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
})();

/** The benchmark's temporary directories that exist now (to check it removes its own). */
function benchTmpDirs(): Set<string> {
  return new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('skein-bench-pipe-')));
}

describe('reliable pipe benchmark (smoke)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'skein-bench-pipe-test-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('bench/pipe - smoke run: exit 0, table, goal line, --json fields, every run verified', async () => {
    const file = join(dir, 'pipe.json');
    const tmpBefore = benchTmpDirs();
    const r = await runBench('pipe.js', ['--json', file], SMOKE);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /goal ≥ 0\.9× the bare Node pipe — (met|missed) \(skein \/ net = \d+\.\d\d×\)/);
    if (!socatInstalled) assert.match(r.stdout, /socat: not installed/);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
    assert.equal(doc.bench, 'pipe');
    assert.equal(doc.settings.mib, 8);
    assert.equal(doc.settings.bytes, 8 * 1024 * 1024);
    assert.equal(doc.settings.runs, 1);
    assert.equal(doc.settings.socat_installed, socatInstalled);
    const impls = socatInstalled ? ['skein', 'net', 'net-sha', 'socat'] : ['skein', 'net', 'net-sha'];
    assert.deepEqual(doc.settings.impls, impls);
    assert.match(doc.input_sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(doc.failures, []);
    assert.deepEqual(doc.summary.map((s: { impl: string }) => s.impl), impls);
    for (const s of doc.summary) {
      assert.equal(s.runs, 1, s.impl);
      assert.ok(isNum(s.median_mbps), `${s.impl}: median_mbps`);
      assert.ok(isNum(s.median_seconds), `${s.impl}: median_seconds`);
    }
    assert.equal(doc.runs.length, impls.length);
    for (const run of doc.runs) {
      assert.ok(impls.includes(run.impl));
      assert.equal(run.run, 1);
      assert.equal(run.bytes, 8 * 1024 * 1024);
      assert.equal(run.verified, true);
      assert.ok(isNum(run.seconds) && isNum(run.mbps));
    }
    assert.ok(isNum(doc.ratio_skein_net));
    assert.equal(doc.goal.ratio, doc.ratio_skein_net);
    assert.equal(typeof doc.goal.pass, 'boolean');
    assert.equal(doc.goal.pass, doc.ratio_skein_net >= 0.9);
    for (const k of ['date', 'cpus', 'node', 'platform']) assert.ok(k in doc.meta, `meta.${k}`);
    // It removed its temporary directory (input, output, .skein-part/.skein-state).
    for (const d of benchTmpDirs()) assert.ok(tmpBefore.has(d) || !existsSync(join(tmpdir(), d)), `left ${d} behind`);
  });

  test('bench/pipe - a bad setting exits non-zero', async () => {
    const r = await runBench('pipe.js', [], { ...SMOKE, BENCH_PIPE_MB: 'abc' }, 30_000);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /BENCH_PIPE_MB must be a positive number/);
    const r2 = await runBench('pipe.js', [], { ...SMOKE, BENCH_IMPLS: 'skein,bogus' }, 30_000);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /unknown implementation bogus/);
  });
});
