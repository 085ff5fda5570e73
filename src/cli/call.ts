/**
 * `skein call SERVICE.METHOD [JSON]`: call one method of a running server and print every
 * reply message as one JSON line.
 *
 * The CLI has no service definition, so it does not know the method's kind. It does not
 * need to: on the wire every shape is the same (CALL, DATA..., END with a status), so the
 * call is always made as a bidi stream of a definition built at run time, and the server
 * decides what it accepts. Requests: the JSON argument as the single message (stdin is
 * not touched), or, without it (or with `-`), NDJSON from stdin until EOF - which is how
 * client streams and bidi calls are fed. Replies: one JSON line each, as they arrive. A
 * unary call prints one line, a server stream one line per message.
 */
import diagnostics from 'node:diagnostics_channel';
import { Option, type Command } from 'commander';
import { connect, createError, ErrorCode, pickerNames, type CallOptions, type ClientInterceptor, type ClientOptions, type DiscoveryClientOptions, type Metadata, type ResponseStream, type ServiceDef, type StateChange } from '../index.js';
import { MethodKind } from '../rpc/define.js';
import { ROUTE_HINT, RouteHint } from '../rpc/types.js';
import { breaker, retry, type RetryEvent } from '../resilience/index.js';
import { collectMeta, discoveryOption, exit, ExitCode, type ExitCodeValue, formatError, intOption, log, OutputClosedError, parseJson, readNdjson, readTls, runtimeDef, toJsonLine, UsageError, where, writeLine } from './util.js';

interface CallFlags {
  target?: string;
  discovery?: string;
  timeout: number;
  meta?: Metadata;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  jsonCodec?: boolean;
  verbose?: boolean;
  balancer?: string;
}

const EXAMPLES = `
Examples:
  $ skein call echo.say '{"text":"hi"}' --target 127.0.0.1:7700
  $ skein call echo.count '{"n":3}' -t 127.0.0.1:7700            # one line per reply
  $ printf '{"n":1}\\n{"n":2}\\n' | skein call echo.sum -t 127.0.0.1:7700   # client stream from NDJSON
  $ skein call echo.chat -t 127.0.0.1:7700 < messages.ndjson       # bidi
  $ SKEIN_TARGET=127.0.0.1:7700 skein call shop.cart.add '{"sku":"a1"}' --meta user=ada --timeout 500
  $ skein call echo.say '{}' -t localhost:7700 --tls-ca ca.pem      # TLS (tls://host:port also works)
  $ skein call echo.say '{"text":"hi"}' --discovery skein://127.0.0.1:7600   # any instance of echo
  $ SKEIN_DISCOVERY=static://127.0.0.1:7701,127.0.0.1:7702 skein call echo.say '{}'

Where: --target HOST:PORT calls that server; --discovery URL finds the instances of the
service (the part before the last dot) there and calls one of them that is ready and
serving. Give one of the two; a flag on the command line wins over the other one's
environment variable (SKEIN_TARGET, SKEIN_DISCOVERY).

Requests: the JSON argument is the only request; without it (or with "-") every line of
stdin is one request (NDJSON) until EOF. This works for every kind of method (unary,
server stream, client stream, bidi): the server takes what the method expects.
Replies: one JSON line per message on stdout. Binary values (MessagePack bin) print as
base64 strings, 64-bit integers beyond 2^53 as decimal strings, dates as ISO strings.
--verbose: print on stderr the decisions taken for the call, one line each: the instance
that answered, every resilience event (retry, breaker, outlier, hedge, shed, rate-limit,
bulkhead) and the channel's state changes. Every call goes through the client's default
policies (retries of what is safe to retry, a circuit breaker: docs/resilience.md). With
--verbose a bidi call whose request is the JSON argument is retried too (as a replayable
client stream); its replies are then printed when the call ends. Requests read from stdin
are not retried.
A JSON argument that starts with "-" goes after "--": skein call svc.m -t H:P -- -1
On failure: "STATUS: message" on stderr (e.g. "DEADLINE_EXCEEDED: ..."), exit status 1.
Bad arguments or bad JSON input: exit status 2.`;

export function registerCall(program: Command): void {
  program
    .command('call')
    .summary('call a method and print the replies as JSON lines')
    .description('Call SERVICE.METHOD (the method is the part after the last dot) and print each reply message as one JSON line.')
    .argument('<service.method>', 'e.g. echo.say, shop.cart.add')
    .argument('[json]', 'the request as JSON; omit (or "-") to read NDJSON requests from stdin')
    .addOption(new Option('-t, --target <host:port>', 'server address: host:port, tls://host:port, unix:/path').env('SKEIN_TARGET'))
    .addOption(discoveryOption('find the service there instead of --target'))
    .addOption(new Option('--timeout <ms>', 'deadline for the whole call; 0 for none').argParser(intOption(0, 0x7fffffff)).default(30000).env('SKEIN_TIMEOUT'))
    .option('-m, --meta <key=value>', 'metadata sent with the call (repeatable)', collectMeta)
    .option('--tls-ca <file>', 'connect with TLS, trusting this PEM CA')
    .option('--tls-cert <file>', 'client certificate for mutual TLS (with --tls-key)')
    .option('--tls-key <file>', 'private key for --tls-cert')
    .option('--json-codec', 'encode messages as JSON on the wire instead of MessagePack')
    .option('--balancer <name>', 'balancing policy for --discovery (e.g. round-robin)')
    .option('-v, --verbose', 'print the decisions taken for the call on stderr')
    .addHelpText('after', EXAMPLES)
    .action((path: string, json: string | undefined, flags: CallFlags, cmd: Command) => call(path, json, flags, cmd));
}

async function call(path: string, json: string | undefined, flags: CallFlags, cmd: Command): Promise<void> {
  let stdinError: UsageError | undefined;
  let options: ClientOptions | DiscoveryClientOptions;
  let def: ServiceDef;
  let key: string;
  let requests: Iterable<unknown> | AsyncIterable<unknown>;
  try {
    ({ def, key } = runtimeDef(path));
    const to = where(flags, cmd);
    const codec = flags.jsonCodec === true ? 'json' : 'msgpack';
    options = 'target' in to ? { target: to.target, codec, waitForReady: false } : { discovery: to.discovery, codec, waitForReady: false };
    const tls = readTls(flags, 'client') ?? ('target' in to && to.target.startsWith('tls://') ? {} : undefined);
    if (tls !== undefined) options.tls = tls;
    if (flags.balancer !== undefined) {
      if ('target' in to) throw new UsageError('--balancer needs --discovery (a --target client has one connection)');
      if (!pickerNames().includes(flags.balancer)) throw new UsageError(`--balancer: unknown balancer ${JSON.stringify(flags.balancer)} (registered: ${pickerNames().join(', ')})`);
      (options as DiscoveryClientOptions).balancer = flags.balancer;
    }
    if (flags.verbose === true) {
      options.resilience = false;
      options.interceptors = verboseInterceptors();
    }
    if (json !== undefined && json !== '-') requests = [parseJson(json, 'the request argument')];
    else {
      if (process.stdin.isTTY) log('skein call: reading NDJSON requests from stdin (one per line; end with Ctrl-D)');
      requests = (async function* () {
        try {
          yield* readNdjson(process.stdin);
        } catch (err) {
          if (err instanceof UsageError) stdinError = err;
          throw err;
        }
      })();
    }
  } catch (err) {
    log(`skein call: ${err instanceof UsageError ? err.message : formatError(err)}`);
    return exit(ExitCode.USAGE);
  }

  const client = connect(def, options);
  const verbose = flags.verbose === true ? watchDecisions(client) : undefined;
  const ac = new AbortController();
  const onSigint = (): void => ac.abort(createError(ErrorCode.CANCELLED, `call to ${path} interrupted`));
  process.once('SIGINT', onSigint);
  // Whoever read stdout stopped (EPIPE, `| head -1`): cancel the call and exit quietly
  // with 0. Any other write error cancels it too, with exit status 1.
  let outputError: NodeJS.ErrnoException | undefined;
  const onStdoutError = (err: NodeJS.ErrnoException): void => {
    outputError ??= err;
    ac.abort(createError(ErrorCode.CANCELLED, 'stdout closed'));
  };
  process.stdout.on('error', onStdoutError);
  const callOptions: CallOptions = { timeout: flags.timeout === 0 ? Infinity : flags.timeout, signal: ac.signal };
  if (flags.meta !== undefined) callOptions.metadata = flags.meta;
  if (verbose !== undefined) callOptions[ROUTE_HINT] = verbose.hint;

  let code: ExitCodeValue = ExitCode.OK;
  try {
    const invoke = (client as unknown as Record<string, (r: unknown, o: CallOptions) => AsyncIterable<unknown>>)[key]!;
    for await (const reply of invoke(requests, callOptions)) await writeLine(process.stdout, toJsonLine(reply));
  } catch (err) {
    if (outputError !== undefined && outputError.code !== 'EPIPE') {
      log(`skein call: cannot write to stdout: ${outputError.message}`);
      code = ExitCode.FAILED;
    } else if (outputError !== undefined || err instanceof OutputClosedError) {
      code = ExitCode.OK;
    } else if (stdinError !== undefined) {
      log(`skein call: ${stdinError.message}`);
      code = ExitCode.USAGE;
    } else {
      log(formatError(err));
      code = ExitCode.FAILED;
    }
  } finally {
    verbose?.done(code === ExitCode.OK);
    process.off('SIGINT', onSigint);
    await client.close().catch(() => {});
  }
  return exit(code);
}

// ------------------------------------------------------------------ --verbose

/** The diagnostics channels whose events `--verbose` prints. */
const DECISION_CHANNELS = ['retry', 'breaker', 'outlier', 'hedge', 'shed', 'rate-limit', 'bulkhead'].map((n) => `skein:resilience:${n}`);

/** One line for a resilience event, e.g. `retry: echo.say attempt 2 after 37 ms (SKEIN_ERR_NOT_READY, refused)`. */
export function decisionLine(channel: string, event: unknown): string {
  const name = channel.slice(channel.lastIndexOf(':') + 1);
  if (name === 'retry') {
    const e = event as RetryEvent;
    if (e.reason === 'budget-exhausted') return `retry: ${e.service}.${e.method} no attempt ${e.attempt + 1}: budget exhausted (${e.code})`;
    return `retry: ${e.service}.${e.method} attempt ${e.attempt + 1} after ${e.delayMs} ms (${e.code}, ${e.reason})`;
  }
  const fields = Object.entries(event as Record<string, unknown>)
    .filter(([, v]) => v !== undefined && typeof v !== 'object')
    .map(([k, v]) => `${k}=${String(v)}`);
  return `${name}: ${fields.join(' ')}`;
}

/**
 * The interceptors of a `--verbose` call: the default client policies (retry → breaker),
 * made to apply to the CLI's bidi call when its requests are an array (the JSON argument).
 * They only guard unary and array client-stream calls, so the call is shown to them as a
 * client stream whose reply is the list of every reply, and turned back into a bidi call
 * under them. That is safe for any
 * method kind: the CLI's runtime method is not idempotent, so retry() only retries failures
 * that never reached a handler, and those come before any reply.
 */
function verboseInterceptors(): ClientInterceptor[] {
  const asClientStream: ClientInterceptor = (next) => (call) => {
    if (call.kind !== MethodKind.BIDI || !Array.isArray(call.request)) return next(call);
    const all = next({ ...call, kind: MethodKind.CLIENT_STREAM }) as Promise<unknown[]>;
    return streamOf(all);
  };
  const backToBidi: ClientInterceptor = (next) => async (call) => {
    if (call.kind !== MethodKind.CLIENT_STREAM) return next(call);
    const replies: unknown[] = [];
    for await (const r of next({ ...call, kind: MethodKind.BIDI }) as ResponseStream<unknown>) replies.push(r);
    return replies;
  };
  // In place of the default chain (which passes bidi calls through): the same policies
  // between the two adapters, so a bidi call with its one JSON request is retried too.
  return [asClientStream, retry(), breaker(), backToBidi];
}

function streamOf(all: Promise<unknown[]>): ResponseStream<unknown> {
  all.catch(() => {}); // read by the iterator
  return {
    async *[Symbol.asyncIterator]() {
      yield* await all;
    },
    cancel: () => {},
    trailers: all.then(() => ({})),
  };
}

/**
 * Subscribe to every decision channel and to the channel's (and its instances') state
 * changes, printing one line each on stderr; `done()` unsubscribes and prints which
 * instance answered (the last one the call's route hint recorded).
 */
function watchDecisions(client: unknown): { hint: RouteHint; done(ok: boolean): void } {
  const hint = new RouteHint();
  let done = false;
  const print = (line: string): void => {
    if (!done) log(`skein call: ${line}`);
  };
  const subs = DECISION_CHANNELS.map((name) => {
    const fn = (event: unknown): void => print(decisionLine(name, event));
    diagnostics.subscribe(name, fn);
    return () => diagnostics.unsubscribe(name, fn);
  });
  type Sub = { id: string; address: string; on(e: 'state', f: (c: StateChange) => void): void };
  type Chan = { subchannels: Sub[]; on(e: 'state', f: (c: StateChange) => void): void; on(e: 'add', f: (s: Sub) => void): void };
  const channel = (client as { channel?: Chan }).channel;
  const watchSub = (s: Sub): void => s.on('state', (c) => print(`instance ${s.address}: ${c.previous} -> ${c.state}${c.error !== undefined ? ` (${c.error.code})` : ''}`));
  if (channel !== undefined) {
    channel.on('state', (c: StateChange) => print(`channel: ${c.previous} -> ${c.state}`));
    channel.subchannels.forEach(watchSub);
    channel.on('add', watchSub);
  }
  return {
    hint,
    done(ok: boolean): void {
      for (const unsubscribe of subs) unsubscribe();
      done = true;
      const tried = hint.ids();
      const last = tried.at(-1);
      const address = channel?.subchannels.find((s) => s.id === last)?.address ?? last;
      if (channel === undefined) log(`skein call: ${ok ? 'answered by' : 'failed at'} the target`);
      else if (address !== undefined) log(`skein call: ${ok ? 'answered by' : 'last tried'} instance ${address} (instances tried: ${tried.length})`);
    },
  };
}
