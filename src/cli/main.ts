#!/usr/bin/env node
/**
 * The `skein` command. One file per command (serve.ts, call.ts, demo.ts, ls.ts, watch.ts, ...); each exports a
 * `register*(program)` that adds its subcommand, so commands inherit the program's
 * settings (exit override, output).
 *
 * Contract (scripts depend on it; DESIGN.md "The command line"):
 *  - long-running commands print one `ready <what> HOST:PORT` line on stdout once ready;
 *    all logs go to stderr (`skein watch` is the exception: its stdout is the changes);
 *  - exit status 0 ok, 1 call/runtime failure, 2 usage (bad flags, bad JSON, bad files);
 *  - `SKEIN_*` environment variables stand in for some flags (SKEIN_TARGET, SKEIN_TIMEOUT,
 *    SKEIN_DISCOVERY).
 */
import { Command, CommanderError } from 'commander';
import { registerBench } from './bench.js';
import { registerCall } from './call.js';
import { registerDemo } from './demo.js';
import { registerLs } from './ls.js';
import { registerPipe } from './pipe.js';
import { registerWatch } from './watch.js';
import { registerRegistry } from './registry.js';
import { registerServe } from './serve.js';
import { exit, ExitCode, formatError, log, packageVersion } from './util.js';

const EXAMPLES = `
Examples:
  $ skein demo                                              # a tour: discovery, failover, call shapes
  $ skein serve examples/echo.js --port 7700                # prints: ready serve 127.0.0.1:7700
  $ skein call echo.say '{"text":"hi"}' --target 127.0.0.1:7700
  $ skein call echo.count '{"n":3}' --target 127.0.0.1:7700   # one JSON line per reply
  $ skein serve examples/echo.js --discovery skein://127.0.0.1:7600   # register itself
  $ skein call echo.say '{"text":"hi"}' --discovery skein://127.0.0.1:7600
  $ skein ls --discovery skein://127.0.0.1:7600               # services, instances, leases
  $ skein watch echo --discovery skein://127.0.0.1:7600       # one line per change
  $ skein pipe listen --port 7900 --out copy.bin              # prints: ready pipe 127.0.0.1:7900
  $ skein pipe send 127.0.0.1:7900 --in file.bin              # resumes across lost connections
  $ skein help call

Exit status: 0 ok, 1 the call or the server failed, 2 bad usage.
Environment: SKEIN_TARGET (call and bench --target), SKEIN_TIMEOUT (call --timeout),
SKEIN_DISCOVERY (--discovery of serve, call, bench, ls, watch).`;

function buildProgram(): Command {
  const program = new Command('skein')
    .description('skein: socket-level RPC for TypeScript on Node.js')
    .version(packageVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .showSuggestionAfterError(true)
    .exitOverride()
    .addHelpText('after', EXAMPLES);
  registerServe(program);
  registerCall(program);
  registerBench(program);
  registerDemo(program);
  registerLs(program);
  registerWatch(program);
  registerRegistry(program);
  registerPipe(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    // Commander has already printed its message (or the help / version).
    if (err instanceof CommanderError) return exit(err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE);
    log(`skein: ${formatError(err)}`);
    if (err instanceof Error && err.stack !== undefined) log(err.stack);
    return exit(ExitCode.FAILED);
  }
}

await main(process.argv);
