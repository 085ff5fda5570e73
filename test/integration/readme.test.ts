/**
 * The README's examples, run for real:
 *  - the tour: examples/tour-server.js and examples/tour-client.js as child processes (and
 *    a check that their code is the README's snippets), examples/greeter-zod.js;
 *  - every command line of "From the command line", taken from README.md itself and run
 *    through /bin/sh against `skein serve examples/echo.js` (`npx skein` becomes
 *    `node dist/src/cli/main.js`, the README's port the actual one), its output checked
 *    against the README's comments;
 *  - the quick start's `skein demo`, and `skein --help` / `skein help CMD`;
 *  - a claim of the prose: failures are SkeinErrors with a status.
 *
 * Every child is bounded (killed and reported when it overruns) and killed in `after`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { isSkeinError } from '../../src/index.js';
import { withTimeout } from '../helpers/wait.js';
import { Cleanup, collect, Echo, echoPair } from './_harness.js';

/** Repository root (this file runs from dist/test/integration/). */
const ROOT = fileURLToPath(new URL(import.meta.url.includes('/dist/test/') ? '../../../' : '../../', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
/** The address the README uses; replaced by the real one when its lines run. */
const README_ADDRESS = '127.0.0.1:7700';
const RUN_TIMEOUT_MS = 15_000;

// ------------------------------------------------------------------ child processes

const children = new Set<ChildProcess>();

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Kill `child` and everything it started (it leads its own process group), bounded. */
async function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (!exited(child)) {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      child.kill(signal);
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((r) => child.once('close', () => r())), new Promise<void>((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }
  children.delete(child);
}

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete e.SKEIN_TARGET;
  delete e.SKEIN_TIMEOUT;
  delete e.NODE_OPTIONS; // the test runner's flags are not the user's
  return e;
}

function spawnTracked(file: string, args: string[], extraEnv: Record<string, string> = {}): ChildProcess {
  const child = spawn(file, args, { cwd: ROOT, env: env(extraEnv), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  child.once('close', () => children.delete(child));
  return child;
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run to completion within `timeoutMs` (then kill it and fail with its output). */
function run(file: string, args: string[], what: string, extraEnv: Record<string, string> = {}, timeoutMs = RUN_TIMEOUT_MS): Promise<RunResult> {
  const child = spawnTracked(file, args, extraEnv);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise<RunResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      void kill(child);
      reject(new Error(`${what} did not finish within ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Start a long-running program and wait (bounded) for its `ready serve HOST:PORT` line. */
function startReady(file: string, args: string[], what: string, timeoutMs = RUN_TIMEOUT_MS): Promise<{ child: ChildProcess; readyLine: string; address: string; stderr: () => string }> {
  const child = spawnTracked(file, args);
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      void kill(child);
      reject(new Error(`${what}: ${why}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    };
    const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
    const onClose = (code: number | null): void => fail(`exited with ${code} before its ready line`);
    child.once('close', onClose);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const m = /^(ready serve (\S+))\n/m.exec(stdout);
      if (m === null) return;
      clearTimeout(timer);
      child.off('close', onClose);
      resolve({ child, readyLine: m[1]!, address: m[2]!, stderr: () => stderr });
    });
  });
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

// ------------------------------------------------------------------ README parsing

/** The bodies of the ```LANG blocks between `heading` and `until`. */
function codeBlocks(heading: string, lang: string, until?: string): string[] {
  const start = README.indexOf(heading);
  assert.ok(start >= 0, `README.md has no "${heading}"`);
  const end = until === undefined ? README.length : README.indexOf(until, start);
  const section = README.slice(start, end < 0 ? README.length : end);
  return [...section.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]!);
}

/** A snippet's code lines, comments and TypeScript type arguments removed, blank lines dropped. */
function codeLines(snippet: string): string[] {
  return snippet
    .split('\n')
    .map((l) =>
      l
        .replace(/\s+\/\/ .*$/, '')
        .replace(/\b(unary|serverStream|clientStream|bidi|pushable)<.*?>\(/g, '$1(')
        .trim(),
    )
    .filter((l) => l !== '' && !l.startsWith('//'));
}

/** Every code line of `snippet` (except those matching `skip`) is a line of examples/`file`. */
function assertSnippetIn(snippet: string, file: string, skip: RegExp[]): void {
  const have = new Set(codeLines(readFileSync(join(ROOT, 'examples', file), 'utf8')));
  const missing = codeLines(snippet).filter((l) => !skip.some((re) => re.test(l)) && !have.has(l));
  assert.deepEqual(missing, [], `README lines missing from examples/${file}`);
}

interface CliLine {
  /** The command as written in the README (comment removed). */
  command: string;
  /** The README's comment on the same line, if any. */
  comment: string;
  /** Comment lines right below it (`#   ...`). */
  below: string[];
}

function readmeCliLines(): CliLine[] {
  const [block] = codeBlocks('### From the command line', 'sh', '## Documentation');
  assert.ok(block !== undefined, 'README.md has a sh block under "From the command line"');
  const raw = block.split('\n');
  const out: CliLine[] = [];
  raw.forEach((line, k) => {
    if (line.trimStart().startsWith('#') || !/\bnpx skein\b/.test(line)) return;
    const m = /^(.*?)\s+#\s*(.*)$/.exec(line);
    const below: string[] = [];
    for (let j = k + 1; j < raw.length && raw[j]!.trimStart().startsWith('#'); j++) below.push(raw[j]!.replace(/^\s*#\s*/, ''));
    out.push({ command: (m?.[1] ?? line).trim(), comment: m?.[2]?.trim() ?? '', below });
  });
  return out;
}

/** What a README call line should do, from its comments: JSON replies on stdout, or an error line. */
function expectation(line: CliLine): { code: number; stdout: unknown[]; stderr?: string } {
  const failure = line.below.map((b) => /^(.*?)\s+\(stderr, exit status (\d+)\)$/.exec(b)).find((m) => m !== null);
  if (failure) return { code: Number(failure[2]), stdout: [], stderr: failure[1]!.trim() };
  const json = line.comment.match(/\{[^{}]*\}/g) ?? [];
  assert.ok(json.length > 0, `README line has no expected output in its comment: ${line.command}`);
  return { code: 0, stdout: json.map((j) => JSON.parse(j) as unknown) };
}

after(async () => {
  await Promise.all([...children].map((c) => kill(c)));
});

// ------------------------------------------------------------------ the tour

describe('README tour', () => {
  it('tour - the example programs hold the README snippets (apart from the address)', () => {
    const [define, greeter, ...rest] = codeBlocks('### Define a service', 'ts', '### Serve it');
    assert.equal(rest.length, 0);
    assert.ok(greeter !== undefined);
    assertSnippetIn(define!, 'tour-service.js', [/^import /]);
    const [serve] = codeBlocks('### Serve it', 'ts', '### Call it');
    assertSnippetIn(serve!, 'tour-server.js', [/7700/]);
    const [call] = codeBlocks('### Call it', 'ts', '### From the command line');
    assertSnippetIn(call!, 'tour-client.js', [/7700/]);
  });

  it('tour - examples/tour-server.js serves, examples/tour-client.js runs every call of the README against it, SIGTERM stops the server', async () => {
    const server = await startReady(process.execPath, ['examples/tour-server.js', '0'], 'examples/tour-server.js 0');
    assert.match(server.readyLine, /^ready serve 127\.0\.0\.1:\d+$/);
    assert.notEqual(server.address, '127.0.0.1:0');

    const client = await run(process.execPath, ['examples/tour-client.js', server.address], 'examples/tour-client.js');
    assert.equal(client.code, 0, `tour-client failed:\n${client.stderr}`);
    // The outputs the README's comments show.
    assert.deepEqual(lines(client.stdout), ["{ text: 'hi' }", '1', '2', '3', '{ sum: 3 }', 'ping', 'pong', 'INVALID_ARGUMENT empty message', 'CANCELLED']);
    assert.equal(client.stderr, '');

    const closed = new Promise<number | null>((r) => server.child.once('close', (code) => r(code)));
    server.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([closed, new Promise<string>((r) => (timer = setTimeout(() => r('still running'), 10_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, `tour-server after SIGTERM; stderr:\n${server.stderr()}`);
  });

  it('tour - examples/greeter-zod.js: zod lets a good request through and refuses a bad one with INVALID_ARGUMENT', async () => {
    const r = await run(process.execPath, ['examples/greeter-zod.js'], 'examples/greeter-zod.js');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(lines(r.stdout), ["{ message: 'hello, ada' }", 'INVALID_ARGUMENT [["name"]]']);
  });
});

// ------------------------------------------------------------------ the command line

describe('README command line', () => {
  const cliLines = readmeCliLines();
  const serveLine = cliLines.find((l) => /\bnpx skein serve\b/.test(l.command));
  const callLines = cliLines.filter((l) => l !== serveLine);
  let address = '';

  before(async () => {
    assert.ok(serveLine !== undefined, 'the README shows `npx skein serve`');
    // The serve line holds no quotes: split on blanks; `npx skein` → node CLI; any free port.
    const argv = serveLine.command.split(/\s+/);
    assert.deepEqual(argv.slice(0, 2), ['npx', 'skein']);
    const args = argv.slice(2).map((a) => (a === '7700' ? '0' : a));
    const served = await startReady(process.execPath, [CLI, ...args], serveLine.command);
    address = served.address;
    // "# prints: ready serve 127.0.0.1:7700", with the real port.
    const printed = /^prints: (.*)$/.exec(serveLine.comment);
    assert.ok(printed !== null, `the serve line says what it prints: ${serveLine.comment}`);
    assert.equal(served.readyLine, printed[1]!.replace(README_ADDRESS, address));
  });

  it('cli - the README shows serve and the four calls (say, count, sum, sleep)', () => {
    assert.deepEqual(
      callLines.map((l) => /\bcall (\S+)/.exec(l.command)?.[1]),
      ['echo.say', 'echo.count', 'echo.sum', 'echo.sleep'],
    );
  });

  for (const line of callLines) {
    const method = /\bcall (\S+)/.exec(line.command)?.[1] ?? line.command;
    it(`cli - ${method}: the README line prints what its comment says`, async () => {
      assert.ok(line.command.includes(README_ADDRESS), `the README line calls ${README_ADDRESS}`);
      const expected = expectation(line);
      const script = line.command.replaceAll(README_ADDRESS, address).replace(/\bnpx skein\b/g, '"$README_NODE" "$README_CLI"');
      const r = await run('/bin/sh', ['-c', script], line.command, { README_NODE: process.execPath, README_CLI: CLI });
      assert.equal(r.code, expected.code, `exit status of: ${line.command}\nstderr:\n${r.stderr}`);
      assert.deepEqual(
        lines(r.stdout).map((l) => JSON.parse(l) as unknown),
        expected.stdout,
      );
      if (expected.stderr !== undefined) {
        // The client's own deadline timer fires first; the server's (armed later, on the
        // same deadline) could in theory answer first: same status, "in" for "calling".
        const got = lines(r.stderr);
        assert.ok(got.includes(expected.stderr) || got.includes(expected.stderr.replace(' calling ', ' in ')), `stderr ${JSON.stringify(r.stderr)} should hold ${JSON.stringify(expected.stderr)}`);
      }
    });
  }

  it('cli - `skein --help` lists every command and `skein help CMD` explains one', async () => {
    assert.match(README, /`skein --help` lists every command; `skein help CMD` explains one\./);
    const help = await run(process.execPath, [CLI, '--help'], 'skein --help');
    assert.equal(help.code, 0, help.stderr);
    for (const cmd of ['serve', 'call', 'demo']) {
      assert.match(help.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), `--help lists ${cmd}`);
      const one = await run(process.execPath, [CLI, 'help', cmd], `skein help ${cmd}`);
      assert.equal(one.code, 0, one.stderr);
      assert.match(one.stdout, new RegExp(`^Usage: skein ${cmd} `, 'm'));
    }
  });

  it('cli - the quick start: `skein demo` runs the tour and exits 0', async () => {
    assert.match(README, /npm install && npx skein demo/);
    const r = await run(process.execPath, [CLI, 'demo'], 'skein demo', {}, 60_000);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^done in [\d.]+ s$/m);
    assert.doesNotMatch(r.stdout, /FAILED/);
  });
});

// ------------------------------------------------------------------ claims of the prose

describe('README claims', () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  // Regression: an already-aborted signal once let the raw DOMException out (or threw
  // synchronously); every failure is a SkeinError.
  it('claims - a call whose signal is already aborted fails with a SkeinError CANCELLED, like every failure', async () => {
    const { client, listening } = await echoPair(cleanup, 'tcp');
    await client.ready({ timeout: 5000 });
    const idle = cleanup.client(Echo, { target: listening.target, eager: false });
    const ac = new AbortController();
    ac.abort();
    const name = (err: unknown): string => (isSkeinError(err) ? `SkeinError ${err.statusName}` : `${(err as Error)?.name}: ${(err as Error)?.message}`);
    const outcome = async (call: () => Promise<unknown>): Promise<string> => {
      let p: Promise<unknown>;
      try {
        p = call();
      } catch (err) {
        return `threw synchronously ${name(err)}`;
      }
      try {
        await withTimeout(p, undefined, 'the call to end');
        return 'resolved';
      } catch (err) {
        return name(err);
      }
    };
    const got = {
      'unary, connected': await outcome(() => client.say({ text: 'x' }, { signal: ac.signal })),
      'server stream, connected': await outcome(() => collect(client.count({ n: 1 }, { signal: ac.signal }))),
      'unary, not connected yet': await outcome(() => idle.say({ text: 'x' }, { signal: ac.signal })),
      'server stream, not connected yet': await outcome(() => collect(idle.count({ n: 1 }, { signal: ac.signal }))),
    };
    const cancelled = 'SkeinError CANCELLED';
    assert.deepEqual(got, { 'unary, connected': cancelled, 'server stream, connected': cancelled, 'unary, not connected yet': cancelled, 'server stream, not connected yet': cancelled });
  });
});
