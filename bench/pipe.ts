/**
 * Reliable pipe benchmark (issue 5): one file of BENCH_PIPE_MB MiB (default 1024 = 1 GiB)
 * copied over TCP loopback, file → file, by
 *   - skein: `skein pipe listen --out F --quiet` / `skein pipe send HOST:PORT --in F --quiet`
 *     (the real CLI, dist/src/cli/main.js: CRC32C per chunk, SHA-256 end to end, ACK
 *     window, fdatasync of the output before each ACK, rename into place);
 *   - net: a bare Node pipe, two child processes of this script (`net-recv OUT`: a
 *     `net` server, socket → fs.createWriteStream; `net-send HOST:PORT IN`:
 *     fs.createReadStream → socket), default buffer sizes, no checksum, no fsync;
 *   - net-sha: the same, with a SHA-256 of every byte on both sides (the digest work
 *     skein does), as a reference;
 *   - socat: `socat -u TCP-LISTEN:P,reuseaddr OPEN:out,creat,trunc` and
 *     `socat -u FILE:in TCP:127.0.0.1:P`, when `socat` is on the PATH (else skipped).
 * Goal: skein ≥ 0.9 × the bare Node pipe (median MB/s).
 *
 *   npm run bench:pipe
 *   BENCH_PIPE_MB=256 BENCH_RUNS=5 node dist/bench/pipe.js --json
 *
 * Each measurement: start the receiver, wait until it is ready (skein and net: the
 * `ready pipe HOST:PORT` line; socat: its `listening on` notice), then start the sender;
 * the time runs from spawning the sender until BOTH processes have exited (so process start
 * is included, the same for all three). Every run's output is checked against the input
 * (size and SHA-256) and deleted; a mismatch or a failed process is a failure (exit 1).
 * Runs are interleaved (the order of the implementations rotates per run); the table shows
 * the median across runs. MB = 10^6 bytes. The input is random bytes in a temporary
 * directory (removed at the end, also on errors and Ctrl-C); it stays in the page cache,
 * so reading it costs the same to all three.
 *
 * `--json [FILE]` also writes the results (default .bench-out/pipe-<date>.json).
 * Env: BENCH_PIPE_MB (1024), BENCH_RUNS (3), BENCH_IMPLS (skein,net,net-sha,socat; also skein-stdout),
 * BENCH_STRICT=1 (exit 1 when the goal is missed), BENCH_VERBOSE=1 (children's stderr).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { fatal } from './lib/child.js';
import { envNum, errorMessage, firstLine, fmtRatio, fmtRuns, fmtSpread, machineMeta, parseJsonArg, printHeader, rotate, table, writeJson } from './lib/report.js';
import { median, spread } from './lib/stats.js';

/**
 * Measured by default. `net-sha` is the bare Node pipe doing the digest work skein's pipe
 * must do (SHA-256 of every byte, on both sides, in the process): not a goal, a reference
 * that separates the cost of the digest from the cost of the protocol.
 */
const IMPLS = ['skein', 'net', 'net-sha', 'socat'] as const;
/**
 * Only when named in BENCH_IMPLS, to locate costs: `skein-stdout` is skein with the
 * receiver writing to its stdout (redirected to the output file): no `.skein-part`, no
 * fdatasync, no state file.
 */
const EXTRA_IMPLS = ['skein-stdout'] as const;
const ALL_IMPLS = [...IMPLS, ...EXTRA_IMPLS] as const;
type Impl = (typeof ALL_IMPLS)[number];

const SELF = fileURLToPath(import.meta.url);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------- children: the bare Node pipe

/** A pass-through that hashes every chunk (SHA-256), for `net-sha`; the digest is taken at the end. */
function hashing(): Transform {
  const h = createHash('sha256');
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      h.digest();
      cb();
    },
  });
}

/** `net-recv OUT [sha]`: accept one connection, write everything it sends to OUT (hashing it with `sha`), exit 0. */
async function netRecv(out: string, sha: boolean): Promise<void> {
  const server = createServer({ pauseOnConnect: false });
  server.once('connection', (socket) => {
    server.close();
    (sha ? pipeline(socket, hashing(), createWriteStream(out)) : pipeline(socket, createWriteStream(out))).then(
      () => process.exit(0),
      (err: unknown) => fatal(err),
    );
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`ready pipe 127.0.0.1:${port}\n`);
}

/** `net-send HOST:PORT IN [sha]`: connect, stream IN into the socket (hashing it with `sha`), exit 0 once it is all written. */
async function netSend(target: string, input: string, sha: boolean): Promise<void> {
  const i = target.lastIndexOf(':');
  const socket = connect({ host: target.slice(0, i), port: Number(target.slice(i + 1)) });
  await new Promise<void>((res, rej) => {
    socket.once('connect', res);
    socket.once('error', rej);
  });
  await (sha ? pipeline(createReadStream(input), hashing(), socket) : pipeline(createReadStream(input), socket));
  process.exit(0);
}

// ---------------------------------------------------------------------------- process plumbing

interface Proc {
  name: string;
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();
let tmpDir: string | undefined;

function cleanup(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
  if (tmpDir !== undefined) {
    rmSync(tmpDir, { recursive: true, force: true });
    tmpDir = undefined;
  }
}

/** Spawn a child; `stdoutFd`: give it this file descriptor as its stdout instead of a pipe. */
function start(name: string, cmd: string, args: string[], stdoutFd?: number): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', stdoutFd ?? 'pipe', 'pipe'] });
  live.add(child);
  const p: Proc = {
    name,
    child,
    stdout: '',
    stderr: '',
    exit: new Promise((res) => {
      child.once('error', (err) => {
        live.delete(child);
        p.stderr += `spawn failed: ${err.message}\n`;
        res({ code: null, signal: null });
      });
      child.once('close', (code, signal) => {
        live.delete(child);
        res({ code, signal });
      });
    }),
  };
  const verbose = process.env.BENCH_VERBOSE === '1';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (p.stdout = (p.stdout + s).slice(-8000)));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    p.stderr = (p.stderr + s).slice(-8000);
    if (verbose) process.stderr.write(`[${name}] ${s}`);
  });
  return p;
}

function describe(p: Proc): string {
  const t = p.stderr.trim();
  return t ? `\n--- ${p.name} stderr (tail) ---\n${t.slice(-2000)}` : '';
}

/** Wait until `re` matches the process's stdout or stderr; fails if it exits first or times out. */
async function waitOutput(p: Proc, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void p.exit.then(() => (exited = true));
  for (;;) {
    const m = re.exec(p.stdout) ?? re.exec(p.stderr);
    if (m) return m;
    if (exited) throw new Error(`${p.name} exited before printing ${re}${describe(p)}`);
    if (Date.now() > deadline) throw new Error(`${p.name}: no ${re} within ${timeoutMs} ms${describe(p)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function waitExit(p: Proc, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([p.exit, new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), timeoutMs)))]);
  clearTimeout(timer);
  if (r === 'timeout') {
    p.child.kill('SIGKILL');
    throw new Error(`${p.name} did not exit within ${timeoutMs} ms${describe(p)}`);
  }
  if (r.code !== 0) throw new Error(`${p.name} exited with code ${r.code}, signal ${r.signal}${describe(p)}`);
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => res(port));
    });
  });
}

function haveSocat(): boolean {
  const r = spawnSync('socat', ['-V'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

// ---------------------------------------------------------------------------- files

async function makeInput(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const ws = createWriteStream(file);
  const block = 4 * MiB;
  for (let left = bytes; left > 0; left -= block) {
    const chunk = randomBytes(Math.min(block, left));
    hash.update(chunk);
    if (!ws.write(chunk)) await new Promise<void>((r) => ws.once('drain', () => r()));
  }
  await new Promise<void>((res, rej) => ws.end((err?: Error | null) => (err ? rej(err) : res())));
  return hash.digest('hex');
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 4 * MiB }), hash);
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------- one measurement

interface RunResult {
  impl: Impl;
  run: number;
  seconds: number;
  mbps: number;
  bytes: number;
  verified: boolean;
}

async function measure(impl: Impl, input: string, out: string, timeoutMs: number): Promise<number> {
  rmSync(out, { force: true });
  let recv: Proc;
  let target: string;
  if (impl === 'socat') {
    const port = await freePort();
    recv = start('socat receiver', 'socat', ['-d', '-d', '-u', `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr`, `OPEN:${out},creat,trunc`]);
    await waitOutput(recv, /listening on/, 20_000);
    target = `127.0.0.1:${port}`;
  } else if (impl === 'skein-stdout') {
    const fd = openSync(out, 'w');
    try {
      recv = start('skein pipe listen (stdout)', process.execPath, [CLI, 'pipe', 'listen', '--host', '127.0.0.1', '--port', '0', '--quiet'], fd);
    } finally {
      closeSync(fd);
    }
    target = (await waitOutput(recv, /^ready pipe (\S+)$/m, 20_000))[1]!;
  } else {
    recv =
      impl === 'skein'
        ? start('skein pipe listen', process.execPath, [CLI, 'pipe', 'listen', '--host', '127.0.0.1', '--port', '0', '--out', out, '--quiet'])
        : start('net receiver', process.execPath, [SELF, 'net-recv', out, ...(impl === 'net-sha' ? ['sha'] : [])]);
    target = (await waitOutput(recv, /^ready pipe (\S+)$/m, 20_000))[1]!;
  }
  const t0 = process.hrtime.bigint();
  const send =
    impl === 'skein' || impl === 'skein-stdout'
      ? start('skein pipe send', process.execPath, [CLI, 'pipe', 'send', target, '--in', input, '--quiet'])
      : impl === 'net' || impl === 'net-sha'
        ? start('net sender', process.execPath, [SELF, 'net-send', target, input, ...(impl === 'net-sha' ? ['sha'] : [])])
        : start('socat sender', 'socat', ['-u', `FILE:${input}`, `TCP:${target}`]);
  try {
    await Promise.all([waitExit(send, timeoutMs), waitExit(recv, timeoutMs)]);
  } finally {
    for (const p of [send, recv]) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

// ---------------------------------------------------------------------------- orchestrator

const fmtMBps = (x: number | null): string => (x === null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(0)} MB/s`);

async function orchestrate(argv: string[]): Promise<void> {
  const json = parseJsonArg(argv, {
    name: 'pipe',
    usage: 'usage: node dist/bench/pipe.js [--json [FILE]]\nenv: BENCH_PIPE_MB (1024) BENCH_RUNS (3) BENCH_IMPLS (skein,net,net-sha,socat; also skein-stdout) BENCH_STRICT (0) BENCH_VERBOSE (0)',
  });
  const mib = envNum('BENCH_PIPE_MB', 1024, { positive: true });
  const runs = Math.max(1, Math.round(envNum('BENCH_RUNS', 3, { positive: true })));
  const bytes = Math.round(mib * MiB);
  const strict = process.env.BENCH_STRICT === '1';
  const wanted = (process.env.BENCH_IMPLS ?? IMPLS.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  for (const w of wanted) if (!(ALL_IMPLS as readonly string[]).includes(w)) throw new Error(`BENCH_IMPLS: unknown implementation ${w}`);
  const socat = haveSocat();
  const impls = ALL_IMPLS.filter((i) => wanted.includes(i) && (i !== 'socat' || socat));

  const meta = machineMeta();
  printHeader('pipe', meta);
  console.log(`settings: ${mib} MiB file → file over TCP 127.0.0.1 | ${impls.join(', ')} | ${runs} run(s), interleaved, medians`);
  if (!socat && wanted.includes('socat')) console.log('socat: not installed');

  tmpDir = mkdtempSync(join(os.tmpdir(), 'skein-bench-pipe-'));
  const input = join(tmpDir, 'in.bin');
  const out = join(tmpDir, 'out.bin');
  process.stderr.write(`writing ${mib} MiB of random bytes to ${input} ...\n`);
  const inputSha = await makeInput(input, bytes);
  // A slow path (skein over a slow disk) still has a bound: 5 MB/s and a minute of slack.
  const timeoutMs = 60_000 + (bytes / 5e6) * 1000;

  const results: RunResult[] = [];
  const failures: Array<{ impl: Impl; run: number; error: string }> = [];
  for (let run = 0; run < runs; run++) {
    for (const impl of rotate(impls, run)) {
      try {
        const seconds = await measure(impl, input, out, timeoutMs);
        const size = statSync(out).size;
        if (size !== bytes) throw new Error(`output is ${size} bytes, expected ${bytes}`);
        const sha = await sha256File(out);
        if (sha !== inputSha) throw new Error(`output SHA-256 ${sha} differs from the input's ${inputSha}`);
        const r: RunResult = { impl, run: run + 1, seconds, mbps: bytes / 1e6 / seconds, bytes: size, verified: true };
        results.push(r);
        process.stderr.write(`[run ${run + 1}/${runs}] ${impl}: ${seconds.toFixed(2)} s, ${fmtMBps(r.mbps)} (size and SHA-256 verified)\n`);
      } catch (err) {
        failures.push({ impl, run: run + 1, error: firstLine(err) });
        process.stderr.write(`[run ${run + 1}/${runs}] ${impl}: FAILED: ${errorMessage(err)}\n`);
      } finally {
        rmSync(out, { force: true });
        for (const suffix of ['.skein-part', '.skein-state']) rmSync(out + suffix, { force: true });
      }
    }
  }

  const summary = impls.map((impl) => {
    const rs = results.filter((r) => r.impl === impl);
    return {
      impl,
      runs: rs.length,
      median_mbps: rs.length ? median(rs.map((r) => r.mbps)) : null,
      median_seconds: rs.length ? median(rs.map((r) => r.seconds)) : null,
      spread: rs.length > 1 ? spread(rs.map((r) => r.mbps)) : null,
    };
  });
  const med = (impl: Impl): number | null => summary.find((s) => s.impl === impl)?.median_mbps ?? null;
  const skein = med('skein');
  const net = med('net');
  const ratio = skein !== null && net !== null && net > 0 ? skein / net : null;
  const pass = ratio === null ? null : ratio >= 0.9;

  console.log(`\n${mib} MiB file → file over loopback; time from starting the sender until both processes exited; median of ${runs} run(s); MB = 10^6 bytes\n`);
  const rows: string[][] = [['impl', 'MB/s', 'seconds', 'spread', 'vs net', 'runs']];
  for (const s of summary) {
    rows.push([
      s.impl,
      fmtMBps(s.median_mbps),
      s.median_seconds === null ? 'n/a' : s.median_seconds.toFixed(2),
      fmtSpread(s.spread),
      s.impl === 'net' ? '1' : fmtRatio(s.median_mbps !== null && net !== null ? s.median_mbps / net : null, 2),
      fmtRuns(s.runs, failures.filter((f) => f.impl === s.impl).length),
    ]);
  }
  if (!socat && wanted.includes('socat')) rows.push(['socat', 'not installed', '', '', '', '']);
  console.log(table(rows, 1));
  console.log(`\ngoal ≥ 0.9× the bare Node pipe — ${pass === null ? 'n/a' : pass ? 'met' : 'missed'} (skein / net = ${fmtRatio(ratio, 2)})`);

  if (json !== null) {
    const doc = {
      bench: 'pipe',
      meta,
      settings: { mib, bytes, runs, impls, socat_installed: socat, strict },
      input_sha256: inputSha,
      summary,
      runs: results,
      ratio_skein_net: ratio,
      goal: { description: 'skein pipe ≥ 0.9 × the bare Node net pipe (median MB/s, 1 GiB file → file)', ratio, pass },
      failures,
    };
    console.log(`\nresults written to ${writeJson(json, doc)}`);
  }
  if (failures.length > 0) {
    process.stderr.write(`bench pipe: ${failures.length} measurement(s) failed\n`);
    process.exitCode = 1;
  } else process.exitCode = strict && pass !== true ? 1 : 0;
}

// ---------------------------------------------------------------------------- main

const [role, ...args] = process.argv.slice(2);
if (role === 'net-recv') {
  netRecv(args[0]!, args[1] === 'sha').catch(fatal);
} else if (role === 'net-send') {
  netSend(args[0]!, args[1]!, args[2] === 'sha').catch(fatal);
} else if (role === undefined || role.startsWith('-')) {
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      cleanup();
      process.stderr.write(`\nbench pipe: ${sig}, children killed\n`);
      process.exit(130);
    });
  }
  orchestrate(process.argv.slice(2))
    .catch((err: unknown) => {
      process.stderr.write(`bench pipe: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    })
    .finally(cleanup);
} else {
  fatal(new Error(`usage: node dist/bench/pipe.js [--json [FILE]]   (roles 'net-recv' and 'net-send' are for its own children)`));
}
