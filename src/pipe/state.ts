/**
 * The state file of a restartable file output (docs/protocol.md §14.5): `F.skein-state`
 * beside `F.skein-part`, a JSON object rewritten atomically (temporary file, fsync,
 * rename) after each fdatasync of the data and before the ACK that confirms it.
 *
 *   { "version": 1, "id": "<32 hex digits>", "size": <number or null>,
 *     "offset": <confirmed offset>, "restartable": <bool>, "name": "<string>" }
 *
 * A state file that cannot be parsed is an error naming the file (SKEIN_ERR_PIPE_MISMATCH):
 * it is never silently replaced, since it may describe a transfer someone wants to resume.
 */
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { createError, ErrorCode, Status } from '../errors.js';

export interface PipeState {
  version: 1;
  /** The transfer id, 32 lower-case hex digits. */
  id: string;
  /** The total length when the sender announced it, else null. */
  size: number | null;
  /** Every byte before it is in the part file and durable. */
  offset: number;
  /** The sender's source can be read again from any offset (a file). */
  restartable: boolean;
  /** The sender's informative name. */
  name: string;
}

export const PART_SUFFIX = '.skein-part';
export const STATE_SUFFIX = '.skein-state';

/** The part and state file paths for an output file. */
export function outputPaths(out: string): { part: string; state: string } {
  return { part: out + PART_SUFFIX, state: out + STATE_SUFFIX };
}

function bad(path: string, why: string): Error {
  return createError(ErrorCode.PIPE_MISMATCH, `cannot use the state file ${path}: ${why}; delete it (and the .skein-part beside it) to start over`, { status: Status.FAILED_PRECONDITION });
}

/** Read and check a state file; undefined when there is none. */
export async function readState(path: string): Promise<PipeState | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw bad(path, (err as Error).message);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw bad(path, `not JSON (${(err as Error).message})`);
  }
  const s = v as Partial<PipeState> | null;
  if (s === null || typeof s !== 'object') throw bad(path, 'not a JSON object');
  if (s.version !== 1) throw bad(path, `unsupported version ${JSON.stringify(s.version)}`);
  if (typeof s.id !== 'string' || !/^[0-9a-f]{32}$/.test(s.id)) throw bad(path, 'bad "id"');
  if (s.size !== null && !(Number.isSafeInteger(s.size) && (s.size as number) >= 0)) throw bad(path, 'bad "size"');
  if (!Number.isSafeInteger(s.offset) || (s.offset as number) < 0 || (s.size !== null && (s.offset as number) > (s.size as number))) throw bad(path, 'bad "offset"');
  if (typeof s.restartable !== 'boolean') throw bad(path, 'bad "restartable"');
  if (typeof s.name !== 'string') throw bad(path, 'bad "name"');
  return { version: 1, id: s.id, size: s.size as number | null, offset: s.offset as number, restartable: s.restartable, name: s.name };
}

/** Replace the state file atomically and durably: write a temporary file, fsync it, rename it over. */
export async function writeState(path: string, state: PipeState): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(`${JSON.stringify(state)}\n`, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Remove a file; a missing one is fine. */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
