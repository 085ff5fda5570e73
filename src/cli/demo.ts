/**
 * `skein demo`: a guided tour on one laptop. It starts a server in this process with the
 * echo service (the one in examples/echo.js), connects a real client over TCP on
 * 127.0.0.1 and runs a list of steps: the four call shapes, a deadline, a cancellation,
 * and a taste of throughput.
 *
 * Adding a step: append a `DemoStep` to `STEPS`. A step gets the shared `DemoContext`
 * (client, server events, printer, `defer()` for cleanup of what it starts) and prints its
 * own lines; throwing fails the demo (exit 1) after cleanup.
 */
import { EventEmitter, once } from 'node:events';
import type { Command } from 'commander';
import { bidi, clientStream, connect, createServer, implement, pushable, serverStream, service, unary, type Client, type ServerInterceptor } from '../index.js';
import { exit, ExitCode, type ExitCodeValue, formatError, intOption, toJsonLine } from './util.js';

// The echo service of examples/echo.js, defined here so the demo has no file to find.
const Echo = service('echo', {
  say: unary<{ text: string }, { text: string }>({ idempotent: true }),
  count: serverStream<{ n: number }, { i: number }>(),
  sum: clientStream<{ n: number }, { sum: number }>(),
  chat: bidi<{ text: string }, { text: string }>(),
  sleep: unary<{ ms: number }, { slept: number }>(),
});

const echo = implement(Echo, {
  async say(req) {
    return req;
  },
  async *count({ n }) {
    for (let i = 1; i <= n; i++) yield { i };
  },
  async sum(stream) {
    let s = 0;
    for await (const { n } of stream) s += n;
    return { sum: s };
  },
  async *chat(stream) {
    for await (const m of stream) yield m;
  },
  async sleep({ ms }, ctx) {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(t);
        reject(ctx.signal.reason);
      });
    });
    return { slept: ms };
  },
});

export interface DemoContext {
  client: Client<typeof Echo.methods>;
  target: string;
  /** Server-side events: 'aborted' (method, reason) when a handler's signal aborts. */
  serverEvents: EventEmitter;
  options: DemoOptions;
  /** Print one line of the step's output (indented under its header). */
  say(line: string): void;
  /** Register cleanup for what a step started (servers, clients); run at the end, last first. */
  defer(cleanup: () => unknown): void;
}

export interface DemoStep {
  title: string;
  run(ctx: DemoContext): Promise<void>;
}

interface DemoOptions {
  calls: number;
  concurrency: number;
}

const j = toJsonLine;

async function expectFailure(p: Promise<unknown>): Promise<string> {
  try {
    const v = await p;
    throw new Error(`expected the call to fail, it returned ${j(v)}`);
  } catch (err) {
    return formatError(err);
  }
}

export const STEPS: DemoStep[] = [
  {
    title: 'unary: one request, one reply (echo.say)',
    async run({ client, say }) {
      const req = { text: 'hello, skein' };
      say(`say ${j(req)} → ${j(await client.say(req))}`);
    },
  },
  {
    title: 'server stream: one request, a stream of replies (echo.count)',
    async run({ client, say }) {
      const got: number[] = [];
      for await (const { i } of client.count({ n: 5 })) got.push(i);
      say(`count {"n":5} → ${got.join(' ')}`);
    },
  },
  {
    title: 'client stream: a stream of requests, one reply (echo.sum)',
    async run({ client, say }) {
      const reply = await client.sum(Array.from({ length: 10 }, (_, k) => ({ n: k + 1 })));
      say(`sum {"n":1} .. {"n":10} → ${j(reply)}`);
    },
  },
  {
    title: 'bidi: both sides stream, each message echoed as it is sent (echo.chat)',
    async run({ client, say }) {
      const requests = pushable<{ text: string }>();
      const replies = client.chat(requests)[Symbol.asyncIterator]();
      for (const text of ['ping', 'are you there?', 'bye']) {
        await requests.push({ text });
        const r = await replies.next();
        say(`sent ${j({ text })} → got ${j(r.value)}`);
      }
      requests.end();
      const last = await replies.next();
      say(`end of requests → ${last.done === true ? 'server ended the stream with OK' : `unexpected ${j(last.value)}`}`);
    },
  },
  {
    title: 'deadline: sleep 2000 ms with a 200 ms timeout (echo.sleep)',
    async run({ client, say }) {
      const t0 = Date.now();
      const result = await expectFailure(client.sleep({ ms: 2000 }, { timeout: 200 }));
      say(`sleep {"ms":2000} --timeout 200 → ${result} (after ${Date.now() - t0} ms)`);
    },
  },
  {
    title: 'cancel: AbortSignal in the middle of a stream (echo.count n=1000000)',
    async run({ client, say, serverEvents }) {
      const ac = new AbortController();
      const serverSaw = once(serverEvents, 'aborted', { signal: AbortSignal.timeout(2000) }).then(
        ([, reason]) => formatError(reason),
        () => 'nothing within 2 s',
      );
      let got = 0;
      const result = await expectFailure(
        (async () => {
          for await (const _ of client.count({ n: 1_000_000 }, { signal: ac.signal })) if (++got === 3) ac.abort();
        })(),
      );
      say(`client: ${got} replies, then abort() → ${result}`);
      say(`server: the handler's ctx.signal → ${await serverSaw}`);
    },
  },
  {
    title: 'throughput: a taste (see bench/ for real numbers)',
    async run({ client, say, options }) {
      const { calls, concurrency } = options;
      const latencies = new Float64Array(calls);
      const run = async (n: number, record: boolean): Promise<number> => {
        let next = 0;
        const t0 = process.hrtime.bigint();
        const worker = async (): Promise<void> => {
          while (next < n) {
            const k = next++;
            const start = process.hrtime.bigint();
            await client.say({ text: 'x' });
            if (record) latencies[k] = Number(process.hrtime.bigint() - start) / 1e6;
          }
        };
        await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
        return Number(process.hrtime.bigint() - t0) / 1e9;
      };
      await run(Math.min(calls, 1000), false); // warm-up: let the JIT settle first
      const seconds = await run(calls, true);
      latencies.sort();
      const pct = (p: number): string => latencies[Math.min(calls - 1, Math.floor((p / 100) * calls))]!.toFixed(2);
      say(`${calls} unary calls, ${concurrency} in flight → ${Math.round(calls / seconds)} calls/s, p50 ${pct(50)} ms, p99 ${pct(99)} ms`);
    },
  },
];

const EXAMPLES = `
Examples:
  $ skein demo
  $ skein demo --calls 20000 --concurrency 128

Then try the same service from a shell:
  $ skein serve examples/echo.js --port 7700 &
  $ skein call echo.count '{"n":3}' --target 127.0.0.1:7700`;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .summary('a guided tour: the echo service, every call shape, deadlines, cancellation')
    .description('Start an echo server in this process, connect a client over TCP and walk through the four call shapes, a deadline, a cancellation and a short throughput run.')
    .option('--calls <n>', 'unary calls in the throughput step', intOption(1, 10_000_000), 5000)
    .option('--concurrency <n>', 'calls in flight in the throughput step', intOption(1, 10_000), 64)
    .addHelpText('after', EXAMPLES)
    .action((opts: DemoOptions) => demo(opts));
}

async function demo(options: DemoOptions): Promise<void> {
  const started = Date.now();
  const serverEvents = new EventEmitter();
  // Report handler aborts of echo.count, for the cancellation step (ctx.signal is created
  // lazily, so the other calls pay nothing).
  const watchAborts: ServerInterceptor = (next) => (call) => {
    if (call.method === 'count') call.ctx.signal.addEventListener('abort', () => serverEvents.emit('aborted', call.method, call.ctx.signal.reason), { once: true });
    return next(call);
  };
  const server = createServer({ interceptors: [watchAborts] }).add(echo);
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  const client = connect(Echo, { target: bound.address });
  const print = (line: string): void => void process.stdout.write(`${line}\n`);
  print(`skein demo: echo service served on ${bound.address}, one client connected over TCP\n`);
  const cleanups: Array<() => unknown> = [];
  const ctx: DemoContext = { client, target: bound.address, serverEvents, options, say: (line) => print(`    ${line}`), defer: (fn) => void cleanups.push(fn) };
  let code: ExitCodeValue = ExitCode.OK;
  for (const [k, step] of STEPS.entries()) {
    print(`[${k + 1}/${STEPS.length}] ${step.title}`);
    try {
      await step.run(ctx);
    } catch (err) {
      print(`    FAILED: ${formatError(err)}`);
      code = ExitCode.FAILED;
      break;
    }
  }
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch (err) {
      print(`cleanup failed: ${formatError(err)}`);
    }
  }
  await client.close();
  await server.close(1000);
  print(`\n${code === ExitCode.OK ? 'done' : 'demo failed'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return exit(code);
}
