/**
 * Real `skein pipe listen|send` processes for the process-level pipe tests
 * (test/pipe/cli-*.test.ts): spawning the compiled CLI (dist/src/cli/main.js), waiting for
 * its lines and exit (always bounded), test files of random bytes with their SHA-256, and a
 * registry of every child so that `killAll()` in an `afterEach` leaves nothing running
 * (SIGCONT first, so a SIGSTOPped child dies too).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CLI, ROOT } from '../cli/run.js';

export const MiB = 1024 * 1024;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const children = new Set<PipeProc>();

/** A running `skein pipe ...`. stdout is kept as bytes (it may carry the transfer). */
export class PipeProc {
  readonly child: ChildProcess;
  readonly args: string[];
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  private readonly out: Buffer[] = [];
  stdoutBytes = 0;
  stderr = '';
  private readonly watchers = new Set<() => void>();

  constructor(args: string[], options: { stdin?: 'pipe' | 'ignore'; keepStdout?: boolean } = {}) {
    this.args = args;
    const keep = options.keepStdout ?? true;
    this.child = spawn(process.execPath, [CLI, 'pipe', ...args], { cwd: ROOT, env: { ...process.env }, stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] });
    children.add(this);
    this.child.stdin?.on('error', () => {}); // EPIPE when it exits without reading
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdoutBytes += d.length;
      if (keep) this.out.push(d);
      this.notify();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.notify();
    });
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once('error', (err) => {
        this.stderr += `\n[spawn error] ${err.message}`;
        this.exit = { code: null, signal: null };
        children.delete(this);
        this.notify();
        resolve(this.exit);
      });
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        children.delete(this);
        this.notify();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get stdout(): Buffer {
    return Buffer.concat(this.out);
  }

  get stdoutText(): string {
    return this.stdout.toString('utf8');
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  private notify(): void {
    for (const w of [...this.watchers]) w();
  }

  /** What to show when something about this process fails. */
  describe(): string {
    const shown = this.stdoutBytes > 4096 ? `<${this.stdoutBytes} bytes>` : JSON.stringify(this.stdoutText);
    return `skein pipe ${this.args.join(' ')}\n  exit: ${this.exit === undefined ? 'running' : `code ${this.exit.code}, signal ${this.exit.signal}`}\n  stdout: ${shown}\n  stderr: ${this.stderr.trim() === '' ? '(empty)' : `\n${this.stderr.trimEnd()}`}`;
  }

  /** Resolve with the first match of `re` in stderr or stdout (per `where`); fails on exit or timeout. */
  waitOutput(re: RegExp, where: 'stdout' | 'stderr', timeoutMs = 20_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = re.exec(where === 'stdout' ? this.stdoutText : this.stderr);
        if (m !== null) {
          done();
          resolve(m);
        } else if (this.exit !== undefined) {
          done();
          reject(new Error(`exited before printing ${re} on ${where}:\n${this.describe()}`));
        }
      };
      const done = (): void => {
        clearTimeout(timer);
        this.watchers.delete(check);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} on ${where}:\n${this.describe()}`));
      }, timeoutMs);
      this.watchers.add(check);
      check();
    });
  }

  /** The exit status, within `timeoutMs` (SIGKILL and fail after). */
  async waitExit(timeoutMs = 60_000): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const what = this.describe();
        this.kill('SIGKILL');
        reject(new Error(`did not exit within ${timeoutMs} ms:\n${what}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Wait for exit 0; fails with the process's output otherwise. */
  async succeeds(timeoutMs = 60_000): Promise<void> {
    const e = await this.waitExit(timeoutMs);
    if (e.code !== 0) throw new Error(`expected exit 0:\n${this.describe()}`);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.exit !== undefined) return;
    try {
      this.child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** SIGKILL every child still running (SIGCONT first, in case it was stopped); wait for them. */
export async function killAll(): Promise<void> {
  const all = [...children];
  for (const p of all) {
    p.kill('SIGCONT');
    p.kill('SIGKILL');
  }
  await Promise.all(all.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 5000))])));
}

/** `skein pipe listen ...args`, ready: its address from the `ready pipe HOST:PORT` line. */
export async function listen(args: string[], options: { readyOn?: 'stdout' | 'stderr'; timeoutMs?: number } = {}): Promise<{ proc: PipeProc; address: string }> {
  const readyOn = options.readyOn ?? (args.includes('--out') ? 'stdout' : 'stderr');
  const proc = new PipeProc(['listen', ...args]);
  const m = await proc.waitOutput(/^ready pipe (\S+:\d+)\r?\n/m, readyOn, options.timeoutMs ?? 20_000);
  return { proc, address: m[1]! };
}

/** `skein pipe send TARGET ...args`; stdin is a pipe when `stdin` is 'pipe'. */
export function send(target: string, args: string[], options: { stdin?: 'pipe' | 'ignore' } = {}): PipeProc {
  return new PipeProc(['send', target, ...args], { stdin: options.stdin ?? 'ignore', keepStdout: true });
}

/** A temporary directory; `cleanup()` removes it. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'skein-pipe-test-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Write `bytes` random bytes to `file`; resolves with their SHA-256 (hex). */
export async function randomFile(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const ws = createWriteStream(file);
  for (let left = bytes; left > 0; left -= 4 * MiB) {
    const chunk = randomBytes(Math.min(4 * MiB, left));
    hash.update(chunk);
    if (!ws.write(chunk)) await new Promise<void>((r) => ws.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => ws.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return hash.digest('hex');
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 4 * MiB }), hash);
  return hash.digest('hex');
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Size of `file`, or -1 when it does not exist. */
export function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return -1;
  }
}

/** The receiver's state file (§14.5), or undefined when absent or mid-rewrite. */
export function readState(file: string): { version: number; id: string; size: number | null; offset: number; restartable: boolean; name: string } | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as { version: number; id: string; size: number | null; offset: number; restartable: boolean; name: string };
  } catch {
    return undefined;
  }
}

/**
 * Watch `file` (polling every 2 ms) and record any moment it exists with a size other than
 * `expected`: a restartable output must never exist short. `stop()` returns what was seen.
 */
export function watchNeverShort(file: string, expected: number): { stop: () => { violations: string[]; sawComplete: boolean } } {
  const violations: string[] = [];
  let sawComplete = false;
  const timer = setInterval(() => {
    const n = sizeOf(file);
    if (n === expected) sawComplete = true;
    else if (n >= 0 && violations.length < 5) violations.push(`${file} existed with ${n} of ${expected} bytes`);
  }, 2);
  return {
    stop: () => {
      clearInterval(timer);
      return { violations, sawComplete: sawComplete || sizeOf(file) === expected };
    },
  };
}

/**
 * A typed error line: `CODE: message` (e.g. `UNAUTHENTICATED: ...`), possibly after the
 * command's name (`skein pipe send: UNAUTHENTICATED: ... (SKEIN_ERR_AUTH_REFUSED)`).
 */
export const TYPED_ERROR = /^(?:skein pipe (?:listen|send): )?[A-Z][A-Z0-9_]+: \S.*$/m;

/** VmRSS of a process in bytes (Linux /proc), or undefined when it is gone. */
export function rssOf(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}
