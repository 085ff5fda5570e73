/**
 * `skein registry [--host H] [--port P] [--data DIR]`: run the embedded registry
 * (docs/registry.md). Prints `ready registry HOST:PORT` on stdout once listening; logs go
 * to stderr; SIGTERM/SIGINT end the watch and keepalive streams, drain, flush the data and
 * exit 0. Without --data the state lives in memory only.
 */
import type { Command } from 'commander';
import { DEFAULT_REGISTRY_PORT } from '../discovery/embedded/api.js';
import { openRegistry, type Registry, type RegistryOptions } from '../discovery/embedded/service.js';
import { formatAddress } from '../transport/index.js';
import { exit, ExitCode, formatError, intOption, log } from './util.js';

interface RegistryCliOptions {
  host: string;
  port: number;
  data?: string;
  grace: number;
  history: number;
}

const EXAMPLES = `
Examples:
  $ skein registry                                  # prints: ready registry 127.0.0.1:${DEFAULT_REGISTRY_PORT}
  $ skein registry --port 0                         # any free port
  $ skein registry --host 0.0.0.0 --data /var/lib/skein-registry
  $ skein serve svc.js --discovery skein://127.0.0.1:${DEFAULT_REGISTRY_PORT}

With --data, every registration is fsynced to DIR before it is acknowledged; after a crash
the registry restarts with the same revisions and gives the restored leases one TTL for
their owners to come back. Without --data, state lives in memory.
SIGTERM or SIGINT: watch streams end (clients resume later), the data is flushed, exit 0.
Exit status: 0 stopped cleanly, 1 could not start (port in use, data dir locked or damaged), 2 bad arguments.`;

export function registerRegistry(program: Command): void {
  program
    .command('registry')
    .summary('run the embedded service registry (skein://host:port)')
    .description('Run the embedded registry: instances under leases kept alive by their owners, watched by clients (docs/registry.md).')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('-p, --port <port>', 'port to listen on; 0 picks a free one', intOption(0, 65535), DEFAULT_REGISTRY_PORT)
    .option('--data <dir>', 'keep state in this directory (fsync before every acknowledgement)')
    .option('--grace <ms>', 'on SIGTERM/SIGINT, how long in-flight calls get to finish', intOption(0, 0x7fffffff), 2000)
    .option('--history <n>', 'changes kept for watchers to resume from', intOption(1, 10_000_000), 10000)
    .addHelpText('after', EXAMPLES)
    .action((opts: RegistryCliOptions) => runRegistry(opts));
}

async function runRegistry(opts: RegistryCliOptions): Promise<void> {
  const options: RegistryOptions = {
    store: { historyLimit: opts.history },
    onWarning: (m) => log(`skein registry: warning: ${m}`),
  };
  if (opts.data !== undefined) options.dataDir = opts.data;
  let registry: Registry;
  try {
    registry = await openRegistry(options);
  } catch (err) {
    log(`skein registry: cannot open the registry${opts.data !== undefined ? ` data in ${opts.data}` : ''}: ${formatError(err)}`);
    return exit(ExitCode.FAILED);
  }

  let address: string;
  try {
    const bound = await registry.listen({ host: opts.host, port: opts.port });
    address = bound.port !== undefined ? formatAddress(bound.host ?? opts.host, bound.port) : bound.address;
  } catch (err) {
    log(`skein registry: cannot listen on ${formatAddress(opts.host, opts.port)}: ${(err as Error).message}`);
    await registry.close(0).catch(() => {});
    return exit(ExitCode.FAILED);
  }

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log(`skein registry: ${signal} again: exiting without waiting`);
      void exit(ExitCode.FAILED);
      return;
    }
    stopping = true;
    log(`skein registry: ${signal}: stopping (in-flight calls get ${opts.grace} ms)`);
    registry.close(opts.grace).then(
      () => {
        log('skein registry: stopped');
        return exit(ExitCode.OK);
      },
      (err: unknown) => {
        log(`skein registry: close failed: ${formatError(err)}`);
        return exit(ExitCode.FAILED);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const info = registry.store.info();
  log(
    `skein registry: listening on ${address}; ${opts.data !== undefined ? `data in ${opts.data}` : 'memory only'}; epoch ${info.epoch}, revision ${info.revision}, ${info.leases} lease(s), ${info.instances} instance(s)`,
  );
  process.stdout.write(`ready registry ${address}\n`);
}
