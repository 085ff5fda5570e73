/**
 * `skein bench SERVICE.METHOD [JSON]`: load a running service and report throughput,
 * latency percentiles and failures by status (the framework's own `ghz`).
 *
 * Design: a closed loop. `--concurrency` workers each make one call, wait for it to end,
 * and make the next, until `--count` calls have been started or `--duration` seconds
 * have passed (calls in flight then finish, each bounded by `--timeout`). Calls go through
 * the same generic path as `skein call`: a one-method bidi definition built at run time,
 * the JSON argument as the only request, and the reply stream drained to its end, so any
 * method kind can be measured without its definition.
 *
 *   first call alone ──► warm-up (--warmup, not measured) ──► measured phase
 *   (start check:         N workers                          N workers, hrtime per call
 *    UNAVAILABLE → exit 1)
 *
 * The first call is made on its own (it opens the connection): the first warm-up call
 * when `--warmup` > 0, else the first measured call. If it fails with UNAVAILABLE the
 * target is not there: `UNAVAILABLE: message` on stderr, exit 1, no summary.
 *
 * Figures: latency per call with `process.hrtime.bigint()`; percentiles (nearest rank)
 * over the calls that succeeded; rps = calls completed (ok + failed) / measured wall time.
 * Exit status: 0 when at least one measured call succeeded (failures are in the summary),
 * 1 when none did (all failed, or the target was unreachable at start), 2 bad usage.
 * SIGINT stops early: calls in flight are cancelled and not counted, the summary so far is
 * printed (`"interrupted": true` in --json), the exit status follows the same rule.
 */
import { Option, type Command } from 'commander';
import { connect, createError, ErrorCode, isSkeinError, pickerNames, statusName, type CallOptions, type ClientOptions, type DiscoveryClientOptions, type Metadata, type ServiceDef } from '../index.js';
import { collectMeta, discoveryOption, exit, ExitCode, type ExitCodeValue, formatError, intOption, log, numberOption, parseJson, readTls, runtimeDef, toJsonLine, UsageError, where, writeLine } from './util.js';

interface BenchFlags {
  target?: string;
  discovery?: string;
  concurrency: number;
  count?: number;
  duration?: number;
  warmup: number;
  balancer?: string;
  timeout: number;
  meta?: Metadata;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  jsonCodec?: boolean;
  json?: boolean;
}

/** `--count` when neither `--count` nor `--duration` is given. */
const DEFAULT_COUNT = 1000;

const EXAMPLES = `
Examples:
  $ skein bench echo.say '{"text":"hi"}' --target 127.0.0.1:7700             # 1000 calls, 10 workers
  $ skein bench echo.say '{"text":"hi"}' -t 127.0.0.1:7700 -c 50 --duration 10
  $ skein bench echo.say '{}' --discovery skein://127.0.0.1:7600 --balancer round-robin --json | tail -1
  $ SKEIN_TARGET=127.0.0.1:7700 skein bench echo.sleep '{"ms":20}' --count 500 --warmup 50

Where: --target HOST:PORT or --discovery URL (one of the two; SKEIN_TARGET and
SKEIN_DISCOVERY stand in for them; a flag on the command line wins over the other's
environment variable). --balancer picks the balancing policy of a --discovery client.

Load: --concurrency workers in a closed loop (each waits for its call to end before the
next), until --count calls (default ${DEFAULT_COUNT}) or --duration seconds; not both.
Every call sends the JSON argument (default {}) as its only request, drains every reply,
and has the --timeout deadline. The first call runs alone and opens the connection; it is
the first warm-up call when --warmup > 0 (warm-up calls are not measured).

Output: progress on stderr once a second (none with --json), then a summary on stdout;
with --json the last line of stdout is one JSON object:
  {"ok","failed","count","duration_s","rps","concurrency","p50_ms","p90_ms","p99_ms",
   "max_ms","min_ms","mean_ms","failures":{"STATUS":n,...},"interrupted"}
Percentiles are over the calls that succeeded (null when none did); rps counts every
completed call (ok + failed) over the measured wall time.

Exit status: 0 when at least one call succeeded, even if others failed; 1 when none did,
or when the first call finds nothing to connect to ("UNAVAILABLE: message" on stderr);
2 bad usage (flags, JSON). Ctrl-C stops early and prints the summary so far.`;

export function registerBench(program: Command): void {
  program
    .command('bench')
    .summary('load a method with concurrent calls; print rps, latency percentiles, failures')
    .description('Call SERVICE.METHOD from --concurrency workers in a closed loop and report throughput, latency percentiles and failures by status.')
    .argument('<service.method>', 'e.g. echo.say, shop.cart.add')
    .argument('[json]', 'the request sent by every call, as JSON', '{}')
    .addOption(new Option('-t, --target <host:port>', 'server address: host:port, tls://host:port, unix:/path').env('SKEIN_TARGET'))
    .addOption(discoveryOption('find the service there instead of --target'))
    .addOption(new Option('-c, --concurrency <n>', 'workers, each with one call in flight').argParser(intOption(1, 100_000)).default(10))
    .addOption(new Option('-n, --count <n>', `calls to make (default ${DEFAULT_COUNT} when --duration is not given)`).argParser(intOption(1, Number.MAX_SAFE_INTEGER)))
    .addOption(new Option('-d, --duration <seconds>', 'make calls for this long instead of --count').argParser(numberOption(0.001, 31_536_000)))
    .addOption(new Option('--warmup <n>', 'calls made first and not measured').argParser(intOption(0, Number.MAX_SAFE_INTEGER)).default(0))
    .option('--balancer <name>', 'balancing policy for --discovery (e.g. round-robin)')
    .addOption(new Option('--timeout <ms>', 'deadline of every call').argParser(intOption(1, 0x7fffffff)).default(30000))
    .option('-m, --meta <key=value>', 'metadata sent with every call (repeatable)', collectMeta)
    .option('--tls-ca <file>', 'connect with TLS, trusting this PEM CA')
    .option('--tls-cert <file>', 'client certificate for mutual TLS (with --tls-key)')
    .option('--tls-key <file>', 'private key for --tls-cert')
    .option('--json-codec', 'encode messages as JSON on the wire instead of MessagePack')
    .option('--json', 'no progress; the last line of stdout is the summary as one JSON object')
    .addHelpText('after', EXAMPLES)
    .action((path: string, json: string, flags: BenchFlags, cmd: Command) => bench(path, json, flags, cmd));
}

/** What a run measured. */
interface Tally {
  ok: number;
  failed: number;
  /** Latency of each successful call, in ms. */
  samples: number[];
  failures: Record<string, number>;
  /** The first message seen for each failure status (for the human summary). */
  examples: Record<string, string>;
}

/** The JSON summary (field names are the contract; see EXAMPLES). */
export interface BenchSummary {
  ok: number;
  failed: number;
  count: number;
  duration_s: number;
  rps: number;
  /** Workers that ran: --concurrency, or --count when that is smaller. */
  concurrency: number;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
  min_ms: number | null;
  mean_ms: number | null;
  failures: Record<string, number>;
  interrupted: boolean;
}

const round = (n: number, digits: number): number => Number(n.toFixed(digits));

/** Nearest-rank percentile of ascending `sorted` (not empty). */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function summarize(t: Tally, wallNs: bigint, concurrency: number, interrupted: boolean): BenchSummary {
  const sorted = Float64Array.from(t.samples).sort();
  const arr = Array.from(sorted);
  const seconds = Number(wallNs) / 1e9;
  const count = t.ok + t.failed;
  const pct = (p: number): number | null => (arr.length === 0 ? null : round(percentile(arr, p), 3));
  return {
    ok: t.ok,
    failed: t.failed,
    count,
    duration_s: round(seconds, 3),
    rps: seconds > 0 ? round(count / seconds, 1) : 0,
    concurrency,
    p50_ms: pct(50),
    p90_ms: pct(90),
    p99_ms: pct(99),
    max_ms: pct(100),
    min_ms: arr.length === 0 ? null : round(arr[0]!, 3),
    mean_ms: arr.length === 0 ? null : round(arr.reduce((a, b) => a + b, 0) / arr.length, 3),
    failures: { ...t.failures },
    interrupted,
  };
}

function humanSummary(s: BenchSummary, path: string, examples: Record<string, string>): string {
  const ms = (v: number | null): string => (v === null ? '-' : `${v.toFixed(3)} ms`);
  const lines = [
    `Summary: ${path}${s.interrupted ? ' (interrupted)' : ''}`,
    `  calls        ${s.count} (${s.ok} ok, ${s.failed} failed)`,
    `  concurrency  ${s.concurrency}`,
    `  duration     ${s.duration_s.toFixed(3)} s`,
    `  rps          ${s.rps.toFixed(1)}`,
    'Latency of successful calls:',
    `  p50          ${ms(s.p50_ms)}`,
    `  p90          ${ms(s.p90_ms)}`,
    `  p99          ${ms(s.p99_ms)}`,
    `  max          ${ms(s.max_ms)}`,
    `  min          ${ms(s.min_ms)}`,
    `  mean         ${ms(s.mean_ms)}`,
  ];
  const statuses = Object.keys(s.failures).sort();
  if (statuses.length > 0) {
    lines.push('Failures by status:');
    const width = Math.max(...statuses.map((k) => k.length));
    for (const k of statuses) lines.push(`  ${k.padEnd(width)}  ${s.failures[k]}  (e.g. ${examples[k] ?? ''})`);
  }
  return lines.join('\n');
}

async function bench(path: string, json: string, flags: BenchFlags, cmd: Command): Promise<void> {
  let options: ClientOptions | DiscoveryClientOptions;
  let def: ServiceDef;
  let key: string;
  let request: unknown;
  try {
    ({ def, key } = runtimeDef(path));
    if (flags.count !== undefined && flags.duration !== undefined) throw new UsageError('give --count or --duration, not both');
    request = parseJson(json, 'the request argument');
    const to = where(flags, cmd);
    const codec = flags.jsonCodec === true ? 'json' : 'msgpack';
    if ('target' in to) {
      if (flags.balancer !== undefined) throw new UsageError('--balancer needs --discovery (a --target client has one connection)');
      options = { target: to.target, codec, waitForReady: false };
    } else {
      options = { discovery: to.discovery, codec, waitForReady: false };
      if (flags.balancer !== undefined) {
        if (!pickerNames().includes(flags.balancer)) throw new UsageError(`--balancer: unknown balancer ${JSON.stringify(flags.balancer)} (registered: ${pickerNames().join(', ')})`);
        options.balancer = flags.balancer;
      }
    }
    const tls = readTls(flags, 'client') ?? ('target' in to && to.target.startsWith('tls://') ? {} : undefined);
    if (tls !== undefined) options.tls = tls;
  } catch (err) {
    log(`skein bench: ${err instanceof UsageError ? err.message : formatError(err)}`);
    return exit(ExitCode.USAGE);
  }

  const count = flags.duration === undefined ? (flags.count ?? DEFAULT_COUNT) : undefined;
  const durationNs = flags.duration === undefined ? undefined : BigInt(Math.round(flags.duration * 1e9));
  const quiet = flags.json === true;
  const client = connect(def, options);
  const invoke = (client as unknown as Record<string, (r: unknown, o: CallOptions) => AsyncIterable<unknown>>)[key]!;

  const ac = new AbortController();
  let interrupted = false;
  const onSigint = (): void => {
    if (interrupted) process.exit(ExitCode.FAILED); // second Ctrl-C: give up at once
    interrupted = true;
    ac.abort(createError(ErrorCode.CANCELLED, `bench of ${path} interrupted`));
  };
  process.on('SIGINT', onSigint);
  const callOptions: CallOptions = { timeout: flags.timeout, signal: ac.signal };
  if (flags.meta !== undefined) callOptions.metadata = flags.meta;

  const tally: Tally = { ok: 0, failed: 0, samples: [], failures: {}, examples: {} };
  /** One call; undefined when it succeeded, else its error (not counted once interrupted). */
  const once = async (measure: boolean): Promise<unknown> => {
    const start = process.hrtime.bigint();
    try {
      for await (const reply of invoke([request], callOptions)) void reply; // drain every reply
    } catch (err) {
      if (measure && !interrupted) {
        const status = isSkeinError(err) ? statusName(err.status) : 'UNKNOWN';
        tally.failed++;
        tally.failures[status] = (tally.failures[status] ?? 0) + 1;
        tally.examples[status] ??= err instanceof Error ? err.message : String(err);
      }
      return err ?? new Error('call failed');
    }
    if (measure && !interrupted) {
      tally.ok++;
      tally.samples.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    return undefined;
  };
  /** Workers in a closed loop until `limit` calls have started or `until` has passed. */
  const phase = async (limit: number | undefined, until: bigint | undefined, measure: boolean): Promise<void> => {
    let started = 0;
    const more = (): boolean => !interrupted && (limit === undefined || started < limit) && (until === undefined || process.hrtime.bigint() < until);
    const worker = async (): Promise<void> => {
      while (more()) {
        started++;
        await once(measure);
      }
    };
    const n = limit === undefined ? flags.concurrency : Math.min(flags.concurrency, limit);
    await Promise.all(Array.from({ length: n }, worker));
  };

  // Progress: once a second on stderr; overwritten in place on a terminal.
  const tty = process.stderr.isTTY === true;
  let progressShown = false;
  let lastDone = 0;
  let lastAt = process.hrtime.bigint();
  const progress = (): void => {
    const now = process.hrtime.bigint();
    const done = tally.ok + tally.failed;
    const rps = (done - lastDone) / (Number(now - lastAt) / 1e9);
    lastDone = done;
    lastAt = now;
    const line = `${done} calls, ${rps.toFixed(0)} rps, ${tally.failed} failed`;
    if (tty) process.stderr.write(`\r${line}\x1b[K`);
    else log(line);
    progressShown = true;
  };

  let code: ExitCodeValue = ExitCode.OK;
  let timer: NodeJS.Timeout | undefined;
  try {
    let t0 = process.hrtime.bigint();
    // The start check: the first call alone (the first warm-up call when there is one).
    const first = await once(flags.warmup === 0);
    if (isSkeinError(first) && statusName(first.status) === 'UNAVAILABLE' && !interrupted) {
      log(formatError(first));
      return await exit(ExitCode.FAILED);
    }
    if (flags.warmup > 0) {
      await phase(flags.warmup - 1, undefined, false);
      t0 = process.hrtime.bigint();
    }
    lastAt = t0;
    if (!quiet) timer = setInterval(progress, 1000);
    await phase(count === undefined ? undefined : count - (flags.warmup === 0 ? 1 : 0), durationNs === undefined ? undefined : t0 + durationNs, true);
    const wall = process.hrtime.bigint() - t0;
    clearInterval(timer);
    if (tty && progressShown) process.stderr.write('\n');
    const workers = count === undefined ? flags.concurrency : Math.min(flags.concurrency, count);
    const summary = summarize(tally, wall, workers, interrupted);
    await writeLine(process.stdout, quiet ? toJsonLine(summary) : humanSummary(summary, path, tally.examples));
    code = summary.ok > 0 ? ExitCode.OK : ExitCode.FAILED;
  } catch (err) {
    log(formatError(err));
    code = ExitCode.FAILED;
  } finally {
    clearInterval(timer);
    process.off('SIGINT', onSigint);
    await client.close().catch(() => {});
  }
  return exit(code);
}
