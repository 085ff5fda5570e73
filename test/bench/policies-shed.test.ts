/**
 * Smoke test of the two resilience benchmarks (bench/policies.ts, bench/shed.ts): each runs
 * as a real process in a tiny mode (BENCH_SECONDS=0.3, BENCH_RUNS=1), exits 0 and writes a
 * --json document with the expected fields; a bad setting makes it exit non-zero. No
 * assertion on the speed figures; every wait is bounded.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runBench } from './_run.js';

const SMOKE = { BENCH_SECONDS: '0.3', BENCH_RUNS: '1', BENCH_WARMUP: '0.1', BENCH_STRICT: '0', BENCH_VERBOSE: '0' };



const isNum = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x);
const isNumOrNull = (x: unknown): boolean => x === null || isNum(x);

describe('resilience benchmarks (smoke)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'skein-bench-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('bench/policies - smoke run: exit 0, table, goal line and --json fields', async () => {
    const file = join(dir, 'policies.json');
    const r = await runBench('policies.js', ['--json', file], SMOKE);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /goal: ≤ 10 % loss — (met|missed)/);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
    assert.equal(doc.bench, 'policies');
    assert.equal(doc.failures, 0);
    assert.deepEqual(doc.settings.inflight, [1, 256]);
    assert.deepEqual(doc.settings.modes, ['none', 'default', 'server', 'client']);
    assert.equal(doc.cases.length, 8);
    for (const c of doc.cases) {
      assert.ok(['none', 'default', 'server', 'client'].includes(c.mode), JSON.stringify(c));
      assert.ok(c.inflight === 1 || c.inflight === 256);
      assert.ok(c.server === 'default' || c.server === 'none');
      assert.ok(c.client === 'default' || c.client === 'none');
      assert.equal(c.runs.length, 1, JSON.stringify(c.failures));
      // Latency is null only in a window where a shedding server refused every call.
      for (const k of ['rps', 'errors', 'server_cpu_us_per_call', 'client_cpu_us_per_call']) assert.ok(isNum(c.median[k]), `${c.mode} ×${c.inflight}: median.${k}`);
      for (const k of ['p50_us', 'p99_us']) assert.ok(isNumOrNull(c.median[k]), `${c.mode} ×${c.inflight}: median.${k}`);
      for (const k of ['count', 'seconds', 'rps', 'client_cpu_us_per_call', 'server_cpu_us_per_call']) assert.ok(isNum(c.runs[0][k]), `${c.mode} ×${c.inflight}: runs[0].${k}`);
      assert.equal(typeof c.runs[0].errors, 'object');
    }
    assert.equal(doc.ratios.length, 8);
    for (const x of doc.ratios) for (const k of ['rps', 'p50', 'p99', 'cpu_per_call', 'rps_paired']) assert.ok(isNumOrNull(x[k]), `ratios.${k}`);
    assert.equal(doc.goal.inflight, 256);
    assert.ok(isNum(doc.goal.ratio) && isNum(doc.goal.loss) && isNumOrNull(doc.goal.ratio_paired));
    assert.equal(typeof doc.goal.pass, 'boolean');
  });

  test('bench/shed - smoke run: exit 0, table and --json fields', async () => {
    const file = join(dir, 'shed.json');
    const r = await runBench('shed.js', ['--json', file], SMOKE);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /p99 ratio shed\/no-shed/);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
    assert.equal(doc.bench, 'shed');
    assert.equal(doc.failures, 0);
    assert.ok(isNum(doc.capacity.rps) && doc.capacity.rps > 0);
    assert.deepEqual(
      doc.modes.map((m: { mode: string }) => m.mode),
      ['shed', 'no-shed'],
    );
    for (const m of doc.modes) {
      assert.equal(m.runs.length, 1, JSON.stringify(m.failures));
      for (const phase of ['reference', 'overload']) {
        const p = m.runs[0].phases[phase];
        for (const k of ['offered', 'offered_rps', 'ok', 'ok_rps', 'ok_done_rps', 'refused', 'deadline_exceeded']) assert.ok(isNum(p[k]), `${m.mode} ${phase}.${k}`);
        for (const k of ['ok_p50_us', 'ok_p99_us', 'refused_p50_us', 'refused_p99_us']) assert.ok(isNumOrNull(p[k]), `${m.mode} ${phase}.${k}`);
        assert.equal(typeof p.other, 'object');
        assert.ok(p.offered > 0);
        for (const k of ['offered_rps', 'ok_rps', 'refused', 'deadline_exceeded', 'ok_p99_us']) assert.ok(k in m.median[phase], `${m.mode} median.${phase}.${k}`);
      }
      assert.ok(m.runs[0].phases.reference.ok > 0, 'calls succeed below capacity');
    }
    for (const k of ['p99_ratio_shed_over_noshed', 'p99_ratio_shed_paired', 'p99_shed_overload_over_reference']) assert.ok(isNumOrNull(doc[k]), k);
  });

  test('bench/policies and bench/shed - a bad setting exits non-zero', async () => {
    for (const script of ['policies.js', 'shed.js']) {
      const r = await runBench(script, [], { ...SMOKE, BENCH_SECONDS: '-1' }, 30_000);
      assert.notEqual(r.code, 0, `${script}: ${r.stdout}`);
      assert.match(r.stderr, /BENCH_SECONDS/);
    }
  });
});
