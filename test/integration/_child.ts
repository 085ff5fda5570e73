/**
 * Run test/integration/fixtures/sleep-server in a child process: wait for its `ready`
 * line, watch its output, and always be able to get rid of it (SIGCONT, then SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DEFAULT_WAIT_MS } from '../helpers/wait.js';

export interface FixtureProcess {
  readonly child: ChildProcess;
  /** 'host:port' from the ready line. */
  readonly address: string;
  /** Every stdout line so far. */
  readonly lines: string[];
  /** Resolve with the first line (seen or to come) matching `pred`, bounded. */
  waitLine(pred: (line: string) => boolean, what: string, ms?: number): Promise<string>;
  /** Resume (if stopped) and kill the process; resolves once it has exited (bounded). */
  kill(): Promise<void>;
}

const SCRIPT = fileURLToPath(new URL('./fixtures/sleep-server.js', import.meta.url));

export async function startSleepServer(port = 0): Promise<FixtureProcess> {
  const child = spawn(process.execPath, [SCRIPT, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const watchers = new Set<{ pred: (l: string) => boolean; resolve: (l: string) => void }>();
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const w of [...watchers]) {
      if (w.pred(line)) {
        watchers.delete(w);
        w.resolve(line);
      }
    }
  });
  const waitLine = (pred: (l: string) => boolean, what: string, ms = DEFAULT_WAIT_MS): Promise<string> => {
    const seen = lines.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const w = {
        pred,
        resolve: (l: string) => {
          clearTimeout(timer);
          child.off('exit', onExit);
          resolve(l);
        },
      };
      const onExit = () => {
        watchers.delete(w);
        clearTimeout(timer);
        reject(new Error(`fixture exited while waiting for ${what}`));
      };
      const timer = setTimeout(() => {
        watchers.delete(w);
        child.off('exit', onExit);
        reject(new Error(`timed out after ${ms}ms waiting for ${what} (output: ${JSON.stringify(lines)})`));
      }, ms);
      watchers.add(w);
      child.once('exit', onExit);
    });
  };
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise<void>((r) => (timer = setTimeout(r, DEFAULT_WAIT_MS)))]);
    clearTimeout(timer);
  };
  try {
    const ready = await waitLine((l) => l.startsWith('ready '), 'the fixture to be ready', 10_000);
    return { child, address: ready.slice('ready '.length).trim(), lines, waitLine, kill };
  } catch (err) {
    await kill();
    throw err;
  }
}
