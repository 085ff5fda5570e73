/**
 * `skein demo`: a guided tour on one laptop, in two parts.
 *
 * Discovery (DISCOVERY_STEPS): an embedded registry in this process, three replicas of a
 * small echo service as child processes that register themselves in it, and one client
 * that finds them through it (`connect(Def, { discovery })`). It shows the calls spreading
 * over the replicas (round-robin), then SIGKILLs one replica while calls run and shows the
 * traffic moving on to the other two — and the registry dropping the dead one once its
 * lease expires. Calls in flight on the killed replica are retried on the others by the
 * client's default policies (the method is idempotent); the demo counts the retries, and
 * any call that still failed, honestly.
 *
 * The call shapes (STEPS): a server in this process with the echo service (the one in
 * examples/echo.js), a client over TCP on 127.0.0.1: the four call shapes, a deadline, a
 * cancellation, and a taste of throughput.
 *
 * Adding a step: append a `DemoStep` to `STEPS` (or a `DiscoveryStep` to
 * `DISCOVERY_STEPS`). A step gets the shared context (clients, printer, `defer()` for
 * cleanup of what it starts) and prints its own lines; throwing fails the demo (exit 1)
 * after cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import { EventEmitter, once } from 'node:events';
import type { Command } from 'commander';
import { bidi, clientStream, connect, createServer, implement, openRegistry, pushable, RETRY_CHANNEL, serverStream, service, unary, type ChannelClient, type Client, type Registry, type RetryEvent, type ServerInterceptor, type Subchannel } from '../index.js';
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

// ------------------------------------------------------------------ discovery part

/** What the replicas serve: echo.say, answering with the replica's name. */
const ReplicaEcho = service('echo', {
  say: unary<{ text: string }, { text: string; replica: string }>({ idempotent: true }),
});

/**
 * A replica: a child process (so that it can really be killed) running a skein server that
 * registers itself. Its code is given with `-e`: the demo has no file to find.
 */
const REPLICA_CODE = `
const { createServer, implement, service, unary } = await import(process.env.SKEIN_DEMO_INDEX);
const Echo = service('echo', { say: unary({ idempotent: true }) });
const replica = process.env.SKEIN_DEMO_REPLICA;
const server = createServer({ discovery: process.env.SKEIN_DEMO_DISCOVERY, ttl: Number(process.env.SKEIN_DEMO_TTL), metadata: { replica } });
server.add(implement(Echo, { say: (req) => ({ text: req.text, replica }) }));
const bound = await server.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write('ready ' + bound.advertised + '\\n');
const stop = () => server.close(1000).then(() => process.exit(0), () => process.exit(1));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
`;

/** Lease TTL of the replicas, seconds: short, so the demo sees a dead one leave. */
const REPLICA_TTL = 2;

interface Replica {
  name: string;
  child: ChildProcess;
  address: string;
}

export interface DiscoveryContext {
  options: DemoOptions;
  registry?: Registry;
  url?: string;
  replicas: Replica[];
  client?: ChannelClient<typeof ReplicaEcho.methods>;
  say(line: string): void;
  defer(cleanup: () => unknown): void;
}

export interface DiscoveryStep {
  title: string;
  run(ctx: DiscoveryContext): Promise<void>;
}

function startReplica(name: string, url: string): Promise<Replica> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', REPLICA_CODE], {
    env: { ...process.env, SKEIN_DEMO_INDEX: new URL('../index.js', import.meta.url).href, SKEIN_DEMO_REPLICA: name, SKEIN_DEMO_DISCOVERY: url, SKEIN_DEMO_TTL: String(REPLICA_TTL) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  return new Promise<Replica>((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`replica ${name} ${why}${err === '' ? '' : `: ${err.trim()}`}`));
    };
    const timer = setTimeout(() => fail('did not start within 10 s'), 10_000);
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before it was ready`));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /^ready (\S+)$/m.exec(out);
      if (m === null) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve({ name, child, address: m[1]! });
    });
  });
}

/** Resolve when `cond()` holds, checking on every channel event; reject after `ms`. */
function until(client: ChannelClient<typeof ReplicaEcho.methods>, cond: () => boolean, ms: number, what: string): Promise<void> {
  if (cond()) return Promise.resolve();
  const ch = client.channel;
  return new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (!cond()) return;
      done();
      resolve();
    };
    const onAdd = (s: Subchannel): void => void s.on('state', check);
    const done = (): void => {
      clearTimeout(timer);
      for (const e of ['state', 'add', 'remove', 'update'] as const) ch.off(e, check);
      ch.off('add', onAdd);
      for (const s of ch.subchannels) s.off('state', check);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: not within ${ms} ms`));
    }, ms);
    for (const e of ['state', 'add', 'remove', 'update'] as const) ch.on(e, check);
    ch.on('add', onAdd);
    for (const s of ch.subchannels) s.on('state', check);
  });
}

function counts(byReplica: Map<string, number>, names: string[]): string {
  return names.map((n) => `${n} ${byReplica.get(n) ?? 0}`).join(' · ');
}

export const DISCOVERY_STEPS: DiscoveryStep[] = [
  {
    title: 'discovery: an embedded registry, three replicas that register themselves',
    async run(ctx) {
      const registry = (ctx.registry = await openRegistry());
      ctx.defer(() => registry.close(500));
      const bound = await registry.listen({ host: '127.0.0.1', port: 0 });
      const url = (ctx.url = `skein://${bound.address}`);
      ctx.say(`registry: ${url} (in this process; \`skein registry\` runs one on its own)`);
      ctx.defer(async () => {
        // The survivors drain and deregister; anything left is killed.
        await Promise.all(
          ctx.replicas.map(async (r) => {
            if (r.child.exitCode !== null || r.child.signalCode !== null) return;
            const exited = once(r.child, 'exit');
            r.child.kill('SIGTERM');
            const t = setTimeout(() => r.child.kill('SIGKILL'), 3000);
            await exited;
            clearTimeout(t);
          }),
        );
      });
      const replicas = await Promise.all(['r1', 'r2', 'r3'].map((n) => startReplica(n, url)));
      ctx.replicas.push(...replicas);
      for (const r of replicas) ctx.say(`replica ${r.name} (pid ${r.child.pid}) serves echo on ${r.address}, registered with a ${REPLICA_TTL} s lease`);
      const client = (ctx.client = connect(ReplicaEcho, { discovery: url, balancer: 'round-robin' }));
      ctx.defer(() => client.close());
      await until(client, () => client.channel.readySubchannels.length === 3, 5000, 'three replicas ready');
      ctx.say(`client: connect(Echo, { discovery: '${url}', balancer: 'round-robin' }) → ${client.state}, ${client.channel.readySubchannels.length} instances, each connected and SERVING (skein.health)`);
    },
  },
  {
    title: 'balancing: 300 calls spread over the replicas (round-robin)',
    async run({ client, replicas, say }) {
      const by = new Map<string, number>();
      for (let k = 0; k < 300; k++) {
        const { replica } = await client!.say({ text: `call ${k}` });
        by.set(replica, (by.get(replica) ?? 0) + 1);
      }
      say(`replies per replica: ${counts(by, replicas.map((r) => r.name))}`);
    },
  },
  {
    title: 'failover: SIGKILL one replica while calls run; the traffic moves on',
    async run({ client, replicas, say }) {
      const victim = replicas[2]!;
      const names = replicas.map((r) => r.name);
      const channel = client!.channel;
      const victimSub = channel.subchannels.find((s) => s.address === victim.address);
      if (victimSub === undefined) throw new Error(`no subchannel for ${victim.name}`);
      // Phases: before the kill; 'dying' until the client sees the connection drop (the
      // process may still answer for a moment after the signal is sent); after.
      let phase: 'before' | 'dying' | 'after' = 'before';
      const tally = { before: new Map<string, number>(), dying: new Map<string, number>(), after: new Map<string, number>() };
      const failures = new Map<string, number>();
      let killedAt = 0;
      let droppedAt = 0;
      victimSub.on('state', (c) => {
        if (phase === 'dying' && c.state !== 'READY') {
          phase = 'after';
          droppedAt = Date.now();
        }
      });
      const removed = new Promise<number>((resolve) => {
        const onRemove = (s: Subchannel): void => {
          if (s.address !== victim.address) return;
          channel.off('remove', onRemove);
          resolve(Date.now());
        };
        channel.on('remove', onRemove);
      });
      // The client's default policies retry the idempotent calls that were in flight on the
      // victim (on another replica): count those decisions.
      let retried = 0;
      const onRetry = (e: unknown): void => {
        if ((e as RetryEvent).reason !== 'budget-exhausted') retried++;
      };
      diagnostics.subscribe(RETRY_CHANNEL, onRetry);
      let stop = false;
      // Four callers, each pacing its calls (1 ms apart) so the kill lands mid-traffic.
      const worker = async (): Promise<void> => {
        while (!stop) {
          try {
            const { replica } = await client!.say({ text: 'x' }, { timeout: 1000 });
            const m = tally[phase];
            m.set(replica, (m.get(replica) ?? 0) + 1);
          } catch (err) {
            const status = formatError(err).replace(/:.*/, '');
            failures.set(status, (failures.get(status) ?? 0) + 1);
          }
          await new Promise((r) => setTimeout(r, 1));
        }
      };
      const workers = Array.from({ length: 4 }, worker);
      await new Promise((r) => setTimeout(r, 400));
      killedAt = Date.now();
      phase = 'dying';
      victim.child.kill('SIGKILL');
      say(`SIGKILL ${victim.name} (pid ${victim.child.pid}) after ${counts(tally.before, names)} replies`);
      await new Promise((r) => setTimeout(r, 800));
      stop = true;
      await Promise.all(workers);
      diagnostics.unsubscribe(RETRY_CHANNEL, onRetry);
      if ((phase as string) !== 'after') throw new Error(`the client did not see ${victim.name}'s connection drop within 800 ms`);
      const dying = [...tally.dying.values()].reduce((a, b) => a + b, 0);
      say(`the client saw ${victim.name}'s connection drop ${droppedAt - killedAt} ms after the kill and stopped picking it${dying > 0 ? ` (${dying} replies came in between: ${counts(tally.dying, names)})` : ''}`);
      say(`replies after that: ${counts(tally.after, names)}`);
      const failed = [...failures.values()].reduce((a, b) => a + b, 0);
      say(`calls retried on another replica by the client's default policy (echo.say is idempotent): ${retried}`);
      say(
        failed === 0
          ? 'calls that did not get a reply: 0'
          : `calls that did not get a reply: ${failed} (${[...failures].map(([st, n]) => `${n} ${st}`).join(', ')}): in flight on ${victim.name} when it died, and not retried (deadline or retry budget)`,
      );
      if ((tally.after.get(victim.name) ?? 0) > 0) throw new Error(`${victim.name} answered after its connection dropped`);
      const goneAt = await Promise.race([removed, new Promise<undefined>((r) => setTimeout(r, (REPLICA_TTL + 2) * 1000, undefined))]);
      say(
        goneAt === undefined
          ? `the registry has not dropped ${victim.name} yet`
          : `the registry dropped ${victim.name} when its lease expired, ${goneAt - killedAt} ms after the kill (TTL ${REPLICA_TTL} s): "- echo ${victim.address}"`,
      );
      say(`instances now: ${channel.instances.map((i) => i.address).join(', ')}`);
    },
  },
];

const EXAMPLES = `
Examples:
  $ skein demo
  $ skein demo --calls 20000 --concurrency 128

Then try the same from a shell:
  $ skein registry --port 7600 &
  $ skein serve examples/echo.js --discovery skein://127.0.0.1:7600 &    # twice, or more
  $ skein ls --discovery skein://127.0.0.1:7600
  $ skein call echo.count '{"n":3}' --discovery skein://127.0.0.1:7600`;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .summary('a guided tour: discovery and failover, every call shape, deadlines, cancellation')
    .description('Start a registry and three replicas that register in it, spread calls over them and kill one; then start an echo server in this process, connect a client over TCP and walk through the four call shapes, a deadline, a cancellation and a short throughput run.')
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
  // The reader of stdout went away (`skein demo | head`): stop printing, finish quietly.
  let outputClosed = false;
  process.stdout.on('error', () => (outputClosed = true));
  const print = (line: string): void => void (outputClosed || process.stdout.write(`${line}\n`));
  const cleanups: Array<() => unknown> = [];
  const say = (line: string): void => print(`    ${line}`);
  const defer = (fn: () => unknown): void => void cleanups.push(fn);
  const total = DISCOVERY_STEPS.length + STEPS.length;
  let code: ExitCodeValue = ExitCode.OK;
  let k = 0;
  const replicas: Replica[] = [];
  // Never leave a replica behind, whatever happens.
  const killReplicas = (): void => {
    for (const r of replicas) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  };
  process.once('exit', killReplicas);
  print('skein demo, part 1: a registry, three replicas, one client that finds them\n');
  const dctx: DiscoveryContext = { options, replicas, say, defer };
  for (const step of DISCOVERY_STEPS) {
    print(`[${++k}/${total}] ${step.title}`);
    try {
      await step.run(dctx);
    } catch (err) {
      print(`    FAILED: ${err instanceof Error && !('code' in err) ? err.message : formatError(err)}`);
      code = ExitCode.FAILED;
      break;
    }
  }
  print(`\nskein demo, part 2: echo service served on ${bound.address}, one client connected over TCP\n`);
  const ctx: DemoContext = { client, target: bound.address, serverEvents, options, say, defer };
  for (const step of code === ExitCode.OK ? STEPS : []) {
    print(`[${++k}/${total}] ${step.title}`);
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
  killReplicas();
  await client.close();
  await server.close(1000);
  print(`\n${code === ExitCode.OK ? 'done' : 'demo failed'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return exit(code);
}
