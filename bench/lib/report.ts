/**
 * What the benchmark orchestrators (bench/run.ts, balance.ts, pipe.ts, policies.ts,
 * shed.ts) share to read their settings and report: environment settings, the
 * `--json [FILE]` argument, the order of interleaved runs, the machine description, number
 * formats, plain-text tables, and the JSON results file.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, resolve } from 'node:path';

// ---------------------------------------------------------------------------- settings

/**
 * The number in environment variable `name`, or `def` when it is unset or empty. Throws
 * when it is not a finite number >= 0 (`positive`: > 0).
 */
export function envNum(name: string, def: number, { positive = false }: { positive?: boolean } = {}): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || (positive ? n <= 0 : n < 0)) throw new Error(`${name} must be a ${positive ? 'positive' : 'non-negative'} number, got ${v}`);
  return n;
}

/**
 * The comma-separated integers in environment variable `name`, or `def` when it is unset or
 * empty. Throws on an entry that is not an integer >= `min` (default 1).
 */
export function envList(name: string, def: number[], { min = 1 }: { min?: number } = {}): number[] {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  return v.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < min) throw new Error(`${name}: bad entry ${s}`);
    return n;
  });
}

// ---------------------------------------------------------------------------- arguments

/** `.bench-out/<name>-<date>.json`, the results file `--json` writes when given no FILE. */
export function defaultJsonPath(name: string): string {
  return `.bench-out/${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
}

/**
 * Reads a `--json`, `--json=FILE` or `--json FILE` argument at `argv[i]`: returns the file
 * (`defaultJsonPath(name)` when none is given) and the index of the last argument it used,
 * or null when `argv[i]` is something else. The next argument is taken as FILE unless it is
 * empty, starts with `-` or `isOther` claims it (a script's own positional words).
 */
export function jsonArgAt(argv: readonly string[], i: number, name: string, isOther: (arg: string) => boolean = () => false): { path: string; last: number } | null {
  const a = argv[i]!;
  if (a.startsWith('--json=')) return { path: a.slice('--json='.length), last: i };
  if (a !== '--json') return null;
  const next = argv[i + 1];
  if (next !== undefined && next !== '' && !next.startsWith('-') && !isOther(next)) return { path: next, last: i + 1 };
  return { path: defaultJsonPath(name), last: i };
}

/**
 * The command line of a script that takes only `[--json [FILE]]` (see `jsonArgAt`): returns
 * the JSON file to write, or null without `--json`. `-h`/`--help` prints `usage` and exits 0;
 * any other argument throws.
 */
export function parseJsonArg(argv: readonly string[], { name, usage }: { name: string; usage: string }): string | null {
  let json: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') {
      console.log(usage);
      process.exit(0);
    }
    const j = jsonArgAt(argv, i, name);
    if (j === null) throw new Error(`unknown argument ${a}`);
    json = j.path;
    i = j.last;
  }
  return json;
}

// ---------------------------------------------------------------------------- runs

/** `xs` rotated left by `k`: the order of the implementations (or modes) in run `k`. */
export function rotate<T>(xs: readonly T[], k: number): T[] {
  return xs.map((_, i) => xs[(i + k) % xs.length]!);
}

// ---------------------------------------------------------------------------- machine

/** The machine a run happens on, as the `meta` of the JSON results. */
export interface MachineMeta {
  date: string;
  cpus: number;
  cpu_model: string;
  total_mem_mb: number;
  platform: string;
  node: string;
  loadavg_at_start: number[];
}

export function machineMeta(): MachineMeta {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    cpus: cpus.length,
    cpu_model: cpus[0]?.model ?? 'unknown',
    total_mem_mb: Math.round(os.totalmem() / 1e6),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadavg_at_start: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

/** Prints `skein bench <title> — <date>` and the `machine: ...` line. */
export function printHeader(title: string, meta: MachineMeta): void {
  console.log(`skein bench ${title ? `${title} ` : ''}— ${meta.date}`);
  console.log(`machine: ${meta.cpus} × ${meta.cpu_model}, ${meta.total_mem_mb} MB RAM, ${meta.platform}, node ${meta.node}, load ${meta.loadavg_at_start.join(' ')}`);
}

// ---------------------------------------------------------------------------- formats

/** Rounded, with thousands separators: `12,345`; `n/a` when not finite. */
export const fmtInt = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');

/** Microseconds as `12.3 µs`, or `1.23 ms` from 1 ms on; `n/a` when not finite. */
export const fmtUs = (x: number): string => (!Number.isFinite(x) ? 'n/a' : x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(1)} µs`);

/** A ratio as `0.987×` (`digits` decimals, default 3); `n/a` when null or not finite. */
export const fmtRatio = (x: number | null, digits = 3): string => (x === null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(digits)}×`);

/** A `spread()` (max − min) / median as ±half of it in %: `±4%`; empty when null or not finite (fewer than two runs). */
export const fmtSpread = (x: number | null): string => (x !== null && Number.isFinite(x) ? `±${(x * 50).toFixed(0)}%` : '');

/** The runs column: `3`, or `2 (1 failed)`. */
export const fmtRuns = (ok: number, failed: number): string => `${ok}${failed ? ` (${failed} failed)` : ''}`;

/** a / b, or null when either is missing or not finite, or b is 0. */
export const ratio = (a: number | undefined, b: number | undefined): number | null =>
  a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? null : a / b;

/** An error's message (a non-Error as a string). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The first line of an error's message. */
export function firstLine(err: unknown): string {
  return errorMessage(err).split('\n')[0]!;
}

// ---------------------------------------------------------------------------- output

/**
 * Rows as a plain-text table: columns two spaces apart, each as wide as its widest cell (in
 * code points), trailing blanks trimmed; an empty row is an empty line. `align`: a number
 * n left-aligns the first n columns and right-aligns the rest; a function says per column
 * whether to right-align it.
 */
export function table(rows: readonly (readonly string[])[], align: number | ((col: number) => boolean) = 2): string {
  const right = typeof align === 'number' ? (col: number) => col >= align : align;
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, [...c].length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => {
          const pad = ' '.repeat(widths[i]! - [...c].length);
          return right(i) ? pad + c : c + pad;
        })
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Writes `data` as indented JSON to `path` (creating its directory); returns the absolute path. */
export function writeJson(path: string, data: unknown): string {
  const file = resolve(path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}
