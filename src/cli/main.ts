#!/usr/bin/env node
/**
 * The `skein` command. One file per command (serve.ts, call.ts, demo.ts); each exports a
 * `register*(program)` that adds its subcommand, so commands inherit the program's
 * settings (exit override, output).
 *
 * Contract (scripts depend on it; DESIGN.md "The command line"):
 *  - long-running commands print one `ready <what> HOST:PORT` line on stdout once ready;
 *    all logs go to stderr;
 *  - exit status 0 ok, 1 call/runtime failure, 2 usage (bad flags, bad JSON, bad files);
 *  - `SKEIN_*` environment variables stand in for some flags (SKEIN_TARGET, SKEIN_TIMEOUT).
 */
import { Command, CommanderError } from 'commander';
import { registerCall } from './call.js';
import { registerDemo } from './demo.js';
import { registerServe } from './serve.js';
import { exit, ExitCode, formatError, log, packageVersion } from './util.js';

const EXAMPLES = `
Examples:
  $ skein demo                                              # a tour in one process
  $ skein serve examples/echo.js --port 7700                # prints: ready serve 127.0.0.1:7700
  $ skein call echo.say '{"text":"hi"}' --target 127.0.0.1:7700
  $ skein call echo.count '{"n":3}' --target 127.0.0.1:7700   # one JSON line per reply
  $ skein help call

Exit status: 0 ok, 1 the call or the server failed, 2 bad usage.
Environment: SKEIN_TARGET (call --target), SKEIN_TIMEOUT (call --timeout).`;

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
  registerDemo(program);
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
