/**
 * `skein serve FILE...`: import ES modules whose default export is an implemented service
 * (`implement(Def, handlers)`) or an array of them, serve them all on one server, print
 * `ready serve HOST:PORT` on stdout once listening, drain on SIGTERM/SIGINT.
 *
 * With `--discovery URL` every service is registered there once listening (before the
 * ready line), under a lease of `--ttl` seconds kept alive; a lost lease and each
 * re-registration are logged on stderr; SIGTERM first reports NOT_SERVING, deregisters,
 * then drains (see rpc/server.ts).
 *
 * Service modules `import ... from 'skein'`. So that this also works for a module outside
 * any project with skein installed (e.g. /tmp/svc.js), an ESM resolve hook
 * (resolve-hook.ts) maps `skein` and `skein/internal` to this package when normal
 * resolution fails. CommonJS modules (`require('skein')`) are not covered.
 */
import { existsSync } from 'node:fs';
import { register } from 'node:module';
import { resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { createServer, type ImplementedService, type ServerInterceptor, type ServerOptions } from '../index.js';
import { formatAddress } from '../transport/index.js';
import type { ResolveHookData } from './resolve-hook.js';
import { checkDiscovery, discoveryOption, exit, ExitCode, formatError, intOption, log, numberOption, readTls, redactUrl, UsageError } from './util.js';

interface ServeOptions {
  host: string;
  port: number;
  discovery?: string;
  ttl: number;
  advertise?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  grace: number;
  verbose?: boolean;
}

const EXAMPLES = `
Examples:
  $ skein serve examples/echo.js
  $ skein serve examples/echo.js --port 7700 --verbose
  $ skein serve a.js b.js --host 0.0.0.0 --port 7700 --grace 5000
  $ skein serve svc.js --tls-cert server.pem --tls-key server-key.pem              # TLS
  $ skein serve svc.js --tls-cert server.pem --tls-key server-key.pem --tls-ca ca.pem  # mutual TLS
  $ skein serve examples/echo.js --discovery skein://127.0.0.1:7600          # register in a registry
  $ SKEIN_DISCOVERY=skein://10.0.0.5:7600 skein serve svc.js --host 0.0.0.0 --ttl 5

A module to serve:
  import { service, unary, implement } from 'skein';
  const Greeter = service('greeter', { hello: unary() });
  export default implement(Greeter, { async hello({ name }) { return { message: \`hi \${name}\` }; } });

Once listening, one line goes to stdout: "ready serve HOST:PORT" (logs go to stderr).
With --discovery, every service is registered first (under a lease of --ttl seconds that
is kept alive; the address is --advertise, else the bound one, else for 0.0.0.0 this
host's first non-internal IPv4 address), and the stderr log says "registered ..." and,
if the lease is lost, "lost ..." and then "registered ..." again. A registry that does
not answer within 5 s does not stop the server: it serves, and registers when it can.
SIGTERM or SIGINT drains: health turns NOT_SERVING, the services are deregistered, new
calls are refused, in-flight calls get --grace ms, exit 0.
Exit status: 0 stopped cleanly, 1 could not listen, 2 bad arguments or modules.`;

export function registerServe(program: Command): void {
  program
    .command('serve')
    .summary('serve the services exported by ES modules')
    .description('Serve the services exported by ES modules. Each FILE (relative to the current directory) must default-export an implemented service - implement(Def, handlers) - or an array of them.')
    .argument('<file...>', 'ES modules to serve')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('-p, --port <port>', 'port to listen on; 0 picks a free one', intOption(0, 65535), 0)
    .option('--tls-cert <file>', 'serve TLS with this PEM certificate chain (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--tls-ca <file>', 'PEM CA that signs client certificates: turns on mutual TLS')
    .option('--grace <ms>', 'on SIGTERM/SIGINT, how long in-flight calls get to finish', intOption(0, 0x7fffffff), 10000)
    .addOption(discoveryOption('register the services there'))
    .option('--ttl <seconds>', 'with --discovery: lease time-to-live; an instance vanishes this long after the server dies', numberOption(0.1, 86400), 10)
    .option('--advertise <host:port>', 'with --discovery: the address to register instead of the bound one')
    .option('-v, --verbose', 'log every call to stderr')
    .addHelpText('after', EXAMPLES)
    .action((files: string[], opts: ServeOptions) => serve(files, opts));
}

async function serve(files: string[], opts: ServeOptions): Promise<void> {
  let server: ReturnType<typeof createServer>;
  try {
    const tls = readTls(opts, 'server');
    const services = await loadServices(files);
    const options: ServerOptions = { drainGraceMs: opts.grace };
    if (tls !== undefined) options.tls = tls;
    if (opts.discovery !== undefined && opts.discovery !== '') {
      options.discovery = checkDiscovery(opts.discovery, 'registrar');
      options.ttl = opts.ttl;
      if (opts.advertise !== undefined) options.advertise = opts.advertise;
    } else if (opts.advertise !== undefined) throw new UsageError('--advertise needs --discovery');
    if (opts.verbose === true) options.interceptors = [logCalls];
    server = createServer(options);
    for (const { file, impl } of services) {
      try {
        server.add(impl);
      } catch (err) {
        throw new UsageError(`${file}: ${(err as Error).message}`);
      }
      log(`skein serve: ${impl.def.name} (${Object.keys(impl.def.methods).join(', ')}) from ${file}`);
    }
  } catch (err) {
    log(err instanceof UsageError ? `skein serve: ${err.message}` : `skein serve: ${formatError(err)}`);
    return exit(err instanceof UsageError ? ExitCode.USAGE : ExitCode.FAILED);
  }

  const where = server.options.discovery;
  if (where !== undefined) {
    server.on('registered', (inst) => log(`skein serve: registered ${inst.service} at ${inst.address} in ${redactUrl(String(where))} (ttl ${opts.ttl} s)`));
    server.on('lost', (err, inst) => log(`skein serve: lost the registration of ${inst.service} at ${inst.address}: ${formatError(err)}; registering again`));
  }
  let address: string;
  try {
    const bound = await server.listen({ host: opts.host, port: opts.port });
    address = bound.port !== undefined ? formatAddress(bound.host ?? opts.host, bound.port) : bound.address;
    if (bound.registered === false) log(`skein serve: ${redactUrl(String(where))} does not answer yet: serving meanwhile, registering as soon as it does`);
  } catch (err) {
    if (String((err as Error)?.message).startsWith('cannot register')) log(`skein serve: ${formatError(err)}`);
    else log(`skein serve: cannot listen on ${formatAddress(opts.host, opts.port)}: ${(err as Error).message}`);
    await server.close(0).catch(() => {});
    return exit(ExitCode.FAILED);
  }

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log(`skein serve: ${signal} again: exiting without waiting`);
      void exit(ExitCode.FAILED);
      return;
    }
    stopping = true;
    log(`skein serve: ${signal}: draining (in-flight calls get ${opts.grace} ms)`);
    server.close(opts.grace).then(
      () => {
        log('skein serve: stopped');
        return exit(ExitCode.OK);
      },
      (err: unknown) => {
        log(`skein serve: close failed: ${formatError(err)}`);
        return exit(ExitCode.FAILED);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  log(`skein serve: listening on ${address}${opts.tlsCa !== undefined ? ' (mutual TLS)' : opts.tlsCert !== undefined ? ' (TLS)' : ''}`);
  process.stdout.write(`ready serve ${address}\n`);
}

const logCalls: ServerInterceptor = (next) => (call) => {
  log(`skein serve: call ${call.service}.${call.method} (${call.kind}) from ${call.ctx.peer.address}`);
  return next(call);
};

let hookRegistered = false;

/** Let modules outside this package `import 'skein'` (see resolve-hook.ts). */
function registerResolveHook(): void {
  if (hookRegistered) return;
  hookRegistered = true;
  const data: ResolveHookData = {
    map: {
      skein: new URL('../index.js', import.meta.url).href,
      'skein/internal': new URL('../internal.js', import.meta.url).href,
    },
  };
  register('./resolve-hook.js', import.meta.url, { data });
}

function isImplementedService(x: unknown): x is ImplementedService {
  if (x === null || typeof x !== 'object') return false;
  const { def, handlers } = x as { def?: { name?: unknown; methods?: unknown; paths?: unknown }; handlers?: unknown };
  return typeof def === 'object' && def !== null && typeof def.name === 'string' && typeof def.methods === 'object' && def.methods !== null && typeof def.paths === 'object' && def.paths !== null && typeof handlers === 'object' && handlers !== null;
}

/** Import every file and check its default export; UsageError with the file name otherwise. */
async function loadServices(files: string[]): Promise<Array<{ file: string; impl: ImplementedService }>> {
  registerResolveHook();
  const out: Array<{ file: string; impl: ImplementedService }> = [];
  for (const file of files) {
    const abs = resolvePath(process.cwd(), file);
    if (!existsSync(abs)) throw new UsageError(`${file}: no such file`);
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(abs).href)) as { default?: unknown };
    } catch (err) {
      throw new UsageError(`${file}: cannot load the module: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
    const exported = mod.default;
    if (exported === undefined) throw new UsageError(`${file}: no default export (expected: export default implement(Def, handlers), or an array of them)`);
    const list: unknown[] = Array.isArray(exported) ? exported : [exported];
    if (list.length === 0) throw new UsageError(`${file}: the default export is an empty array`);
    list.forEach((impl, i) => {
      if (!isImplementedService(impl)) throw new UsageError(`${file}: the default export${Array.isArray(exported) ? `[${i}]` : ''} is not an implemented service (expected implement(Def, handlers))`);
      out.push({ file, impl });
    });
  }
  return out;
}
