/**
 * Where a pipe receiver puts the bytes: a Readable for the program (or stdout), or a file
 * written through `F.skein-part` and `F.skein-state` (docs/protocol.md §14.5).
 *
 * The receiver (receiver.ts) owns the order, the checks and the hash; a sink only stores
 * bytes that are already accepted, in order:
 *
 *   ready / whenReady()   may a chunk be written now? (a Readable whose consumer stopped
 *                         reading says no: the receiver stops taking messages, so the
 *                         sender stalls on its window)
 *   write(chunk, offset)  store it (for a file: written, not yet durable)
 *   commit(offset, state) make every byte before `offset` durable, then record it in the
 *                         state file (files only: `durable` is true)
 *   finish()              the digests matched: end the Readable, or fsync and rename the
 *                         part file into place (the state file goes first, see below)
 *   abandon(err)          the transfer failed but what is confirmed stays (file: kept
 *                         with its state, so a later run resumes)
 *   discard(err)          the output cannot be trusted (digest mismatch): deleted
 */
import { constants, write as fsWrite } from 'node:fs';
import { open, rename, stat, type FileHandle } from 'node:fs/promises';
import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import { createError, ErrorCode, Status, type SkeinError } from '../errors.js';
import { outputPaths, readState, removeFile, writeState, type PipeState } from './state.js';

export interface Sink {
  /** Files: confirmed means fdatasync + state file, so the receiver commits before it acknowledges. */
  readonly durable: boolean;
  /** A chunk may be written now. */
  readonly ready: boolean;
  /** Resolves once `ready` (or once the sink is closed). */
  whenReady(): Promise<void>;
  /** Store `chunk`, which starts at `offset` (every byte before it is already written). */
  write(chunk: Buffer, offset: number): Promise<void> | void;
  /** Make every byte before `offset` durable and record `state` (no-op unless durable). */
  commit(state: PipeState): Promise<void>;
  /** The transfer succeeded: finish the output. */
  finish(): Promise<void>;
  /** The transfer failed; keep what is confirmed. */
  abandon(err: SkeinError): Promise<void>;
  /** The transfer failed and the output is worthless: delete it. */
  discard(err: SkeinError): Promise<void>;
}

/**
 * A Readable of the received bytes. Confirmed means pushed: `push()` returning false makes
 * the sink not ready until the consumer reads (`_read`), so a paused consumer holds at most
 * its high-water mark plus one chunk here.
 */
export class ReadableSink implements Sink {
  readonly durable = false;
  readonly readable: Readable;
  private full = false;
  private ended = false;
  private waiters: Array<() => void> = [];

  /** @param onClosed called when the consumer destroys the Readable before its end. */
  constructor(highWaterMark: number, onClosed: (err: SkeinError) => void) {
    this.readable = new Readable({
      highWaterMark,
      read: () => {
        this.full = false;
        this.wake();
      },
      destroy: (err, cb) => {
        this.full = true;
        this.wake();
        if (!this.ended) {
          this.ended = true;
          onClosed(createError(ErrorCode.CANCELLED, `the receiver's output was closed before the end of the transfer${err ? `: ${err.message}` : ''}`, { status: Status.ABORTED, cause: err }));
        }
        cb(err);
      },
    });
  }

  get ready(): boolean {
    return !this.full && !this.readable.destroyed;
  }

  whenReady(): Promise<void> {
    if (this.ready || this.readable.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  write(chunk: Buffer): void {
    if (!this.readable.push(chunk)) this.full = true;
  }

  commit(): Promise<void> {
    return Promise.resolve();
  }

  finish(): Promise<void> {
    this.ended = true;
    this.readable.push(null);
    return Promise.resolve();
  }

  abandon(err: SkeinError): Promise<void> {
    this.ended = true;
    this.readable.destroy(err);
    this.wake();
    return Promise.resolve();
  }

  discard(err: SkeinError): Promise<void> {
    return this.abandon(err);
  }

  private wake(): void {
    const w = this.waiters;
    if (w.length === 0) return;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** A partial transfer found on disk when a receiver starts (a state file and its part file). */
export interface HeldTransfer {
  state: PipeState;
  /** SHA-256 of the part file's first `state.offset` bytes, ready to continue. */
  hash: Hash;
}

function storageError(what: string, err: unknown): SkeinError {
  const code = (err as NodeJS.ErrnoException)?.code;
  return createError(ErrorCode.STORAGE, `${what}: ${(err as Error)?.message ?? String(err)}`, { status: code === 'ENOSPC' || code === 'EDQUOT' ? Status.RESOURCE_EXHAUSTED : Status.UNAVAILABLE, cause: err });
}

const READ_BLOCK = 1024 * 1024;

/**
 * A file output `F`: bytes go to `F.skein-part` (positional writes), the confirmed offset
 * to `F.skein-state`. On success the state file is removed first and then the part file
 * renamed to `F`, so `F` only ever appears complete; a crash between the two leaves a part
 * file without state, which the next run starts over.
 */
export class FileSink implements Sink {
  readonly durable = true;
  readonly ready = true;
  readonly part: string;
  readonly statePath: string;
  private fh: FileHandle | undefined;

  constructor(readonly out: string) {
    const p = outputPaths(out);
    this.part = p.part;
    this.statePath = p.state;
  }

  /**
   * Look for a partial transfer: with a state file, truncate the part file to the
   * confirmed offset (bytes after it were never confirmed) and hash what stays. Without
   * one, nothing is held (a part file without state is overwritten by the next transfer).
   */
  async load(): Promise<HeldTransfer | undefined> {
    const state = await readState(this.statePath);
    if (state === undefined) return undefined;
    let size: number;
    try {
      size = (await stat(this.part)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw storageError(`cannot read ${this.part}`, err);
      // The state names data that is gone: nothing to resume.
      await removeFile(this.statePath).catch(() => {});
      return undefined;
    }
    // A part file shorter than its state was cut by someone else: resume from what is there.
    const offset = Math.min(state.offset, size);
    const hash = createHash('sha256');
    try {
      this.fh = await open(this.part, constants.O_RDWR);
      await this.fh.truncate(offset);
      const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, Math.max(1, offset)));
      for (let at = 0; at < offset; ) {
        const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, offset - at), at);
        if (bytesRead === 0) throw new Error(`${this.part} ended at ${at} bytes while reading its first ${offset}`);
        hash.update(buf.subarray(0, bytesRead));
        at += bytesRead;
      }
    } catch (err) {
      await this.close();
      throw storageError(`cannot resume from ${this.part}`, err);
    }
    return { state: { ...state, offset }, hash };
  }

  /** A new transfer: an empty part file, and its state at offset 0. */
  async begin(state: PipeState): Promise<void> {
    try {
      await this.close();
      this.fh = await open(this.part, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o644);
      await writeState(this.statePath, state);
    } catch (err) {
      throw storageError(`cannot create ${this.part}`, err);
    }
  }

  whenReady(): Promise<void> {
    return Promise.resolve();
  }

  async write(chunk: Buffer, offset: number): Promise<void> {
    const fh = this.fh;
    if (fh === undefined) throw createError(ErrorCode.CLOSED, `${this.part} is closed`);
    try {
      // The callback API on the handle's fd: cheaper per call than FileHandle.write.
      for (let done = 0; done < chunk.length; ) {
        done += await new Promise<number>((resolve, reject) => fsWrite(fh.fd, chunk, done, chunk.length - done, offset + done, (err, n) => (err ? reject(err) : resolve(n))));
      }
    } catch (err) {
      throw storageError(`cannot write ${this.part}`, err);
    }
  }

  async commit(state: PipeState): Promise<void> {
    const fh = this.fh;
    if (fh === undefined) throw createError(ErrorCode.CLOSED, `${this.part} is closed`);
    try {
      await fh.datasync();
      await writeState(this.statePath, state);
    } catch (err) {
      throw storageError(`cannot make ${this.part} durable`, err);
    }
  }

  async finish(): Promise<void> {
    try {
      const fh = this.fh;
      if (fh !== undefined) await fh.sync();
      await this.close();
      await removeFile(this.statePath);
      await removeFile(`${this.statePath}.tmp`);
      await rename(this.part, this.out);
    } catch (err) {
      throw storageError(`cannot move ${this.part} to ${this.out}`, err);
    }
  }

  async abandon(): Promise<void> {
    await this.close();
  }

  async discard(): Promise<void> {
    await this.close();
    await removeFile(this.statePath).catch(() => {});
    await removeFile(`${this.statePath}.tmp`).catch(() => {});
    await removeFile(this.part).catch(() => {});
  }

  private async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => {});
  }
}
