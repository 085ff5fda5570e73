/**
 * Running the compiled `skein` CLI (dist/src/cli/main.js) as real child processes, with
 * every wait bounded: a command that hangs is killed and the test fails with its stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/test/cli/). */
export const ROOT: string = fileURLToPath(new URL(import.meta.url.includes('/dist/test/') ? '../../../' : '../../', import.meta.url));
export const CLI: string = join(ROOT, 'dist/src/cli/main.js');
export const ECHO: string = join(ROOT, 'examples/echo.js');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to stdin, which is then closed. Without it stdin stays open (and unused). */
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the process and fail after this long. @default 15000 */
  timeoutMs?: number;
}

/** Spawn `skein ...args` with piped stdio; SKEIN_* variables only from `options.env`. */
export function spawnCli(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string }): ChildProcess {
  const env = { ...process.env, ...options.env };
  delete env.SKEIN_TARGET;
  delete env.SKEIN_TIMEOUT;
  if (options.env?.SKEIN_TARGET !== undefined) env.SKEIN_TARGET = options.env.SKEIN_TARGET;
  if (options.env?.SKEIN_TIMEOUT !== undefined) env.SKEIN_TIMEOUT = options.env.SKEIN_TIMEOUT;
  return spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Run `skein ...args` to completion. */
export function runCli(args: string[], options: RunOptions = {}): Promise<RunResult> {
  const { timeoutMs = 15000 } = options;
  const child = spawnCli(args, options);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin!.on('error', () => {}); // the CLI may exit without reading its input
  if (options.input !== undefined) child.stdin!.end(options.input);
  return new Promise<RunResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`skein ${args.join(' ')} did not finish within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      child.stdin!.destroy();
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A running `skein serve`. */
export class Served {
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly watchers = new Set<() => void>();

  constructor(
    readonly child: ChildProcess,
    /** HOST:PORT from the ready line. */
    public address = '',
  ) {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      for (const w of this.watchers) w();
    });
    this.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  }

  /** Resolve once stderr contains `text` (bounded). */
  waitForStderr(text: string, timeoutMs = 10000): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!this.stderr.includes(text)) return;
        this.watchers.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.watchers.delete(check);
        reject(new Error(`timed out waiting for ${JSON.stringify(text)} on serve's stderr:\n${this.stderr}`));
      }, timeoutMs);
      this.watchers.add(check);
      check();
    });
  }

  /** Send `signal` and wait for the exit (SIGKILL and fail after `timeoutMs`). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`skein serve did not exit within ${timeoutMs} ms of ${signal}; stderr:\n${this.stderr}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Start `skein serve ...args` and wait (bounded) for its `ready serve HOST:PORT` line. */
export function startServe(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<Served> {
  const { timeoutMs = 15000 } = options;
  const child = spawnCli(['serve', ...args], options);
  child.stdin!.end();
  const served = new Served(child);
  let stdout = '';
  return new Promise<Served>((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`skein serve ${args.join(' ')}: ${why}; stdout:\n${stdout}\nstderr:\n${served.stderr}`));
    };
    const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
    const onClose = (code: number | null): void => fail(`exited with ${code} before ready`);
    child.on('close', onClose);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const m = /^ready serve (\S+)\n/m.exec(stdout);
      if (m === null) return;
      clearTimeout(timer);
      child.off('close', onClose);
      served.address = m[1]!;
      resolve(served);
    });
  });
}

/** A port nothing listens on (bound then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A temp dir holding `files` (name → content); `cleanup()` removes it. */
export function tempDir(files: Record<string, string>): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'skein-cli-'));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The JSON lines of a command's stdout. */
export function jsonLines(stdout: string): unknown[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as unknown);
}
