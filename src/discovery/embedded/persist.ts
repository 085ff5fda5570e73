/**
 * Persistence of the embedded registry (`skein registry --data DIR`): an append-only log
 * of mutations, fsynced before a mutation is acknowledged, and periodic snapshots.
 *
 *   DIR/snapshot      one frame: the whole state (JSON) as of log sequence number `seq`
 *   DIR/log           frames appended since: one mutation each (grant, put, remove, revoke, expire)
 *   DIR/snapshot.tmp  a snapshot being written (ignored and removed on start)
 *   DIR/LOCK          the pid of the registry using DIR
 *
 *   frame := u32be length | u32be crc32(payload) | payload (UTF-8 JSON, `length` bytes)
 *
 * Append: every batch of records is written in one write at the end of the log and
 * `FileHandle.sync()`ed before the store acknowledges anything in it. A failed write or
 * sync (ENOSPC, EIO) truncates the log back to where the batch started and rejects with
 * RESOURCE_EXHAUSTED (disk full, quota) or UNAVAILABLE; if even the truncate fails the
 * log is marked broken and refuses appends until a compaction has started a fresh one.
 *
 * Compaction: write snapshot.tmp, fsync it, rename it over snapshot, fsync DIR, then
 * truncate the log to zero and fsync it. A crash at any point leaves a valid pair: before
 * the rename the old snapshot and the full log; after it the new snapshot, whose `seq`
 * tells the loader to skip the log records it already contains.
 *
 * Load: read the snapshot (a damaged snapshot is fatal: it was renamed into place whole,
 * so damage means the disk lost data, and starting empty would silently lose everything),
 * then the log frame by frame. The first frame that is incomplete, fails its CRC or does
 * not parse ends the log: a crash can tear the last write, so the log is truncated there
 * (with a warning naming the bytes dropped) and the registry starts — never fatal.
 */
import { closeSync, mkdirSync, openSync, readFileSync, readSync, unlinkSync, writeSync, constants as fsConstants } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { createError, ErrorCode } from '../../errors.js';
import { storageError, type LogRecord, type RegistryPersistence, type RestoredState, type SnapshotData } from './store.js';

// ------------------------------------------------------------------ CRC-32 (IEEE, as zlib)

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (the zlib/PNG polynomial) of `buf`. */
export function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ------------------------------------------------------------------ frames

const HEADER = 8;
/** Refuse to believe a frame larger than this (a damaged length field). */
const MAX_FRAME = 256 * 1024 * 1024;

/** Encode one frame: length, CRC-32, JSON payload. */
export function encodeFrame(value: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(value), 'utf8');
  const frame = Buffer.allocUnsafe(HEADER + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt32BE(crc32(payload), 4);
  payload.copy(frame, HEADER);
  return frame;
}

/** The frames of `buf`, and where the valid part ends (`end < buf.length` means a torn or damaged tail). */
export function decodeFrames(buf: Buffer): { values: unknown[]; end: number; problem?: string } {
  const values: unknown[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < HEADER) return { values, end: off, problem: `incomplete frame header (${buf.length - off} bytes)` };
    const len = buf.readUInt32BE(off);
    const crc = buf.readUInt32BE(off + 4);
    if (len > MAX_FRAME) return { values, end: off, problem: `frame length ${len} is not plausible` };
    if (buf.length - off - HEADER < len) return { values, end: off, problem: `incomplete frame (${buf.length - off - HEADER} of ${len} bytes)` };
    const payload = buf.subarray(off + HEADER, off + HEADER + len);
    if (crc32(payload) !== crc) return { values, end: off, problem: 'CRC mismatch' };
    let value: unknown;
    try {
      value = JSON.parse(payload.toString('utf8'));
    } catch {
      return { values, end: off, problem: 'payload is not JSON' };
    }
    values.push(value);
    off += HEADER + len;
  }
  return { values, end: off };
}

// ------------------------------------------------------------------ options

/** The file operations the log uses to append; tests replace them to inject faults (ENOSPC). */
export interface PersistIO {
  /** Write all of `data` at `position`. */
  write(fh: FileHandle, data: Buffer, position: number): Promise<void>;
  /** fsync. */
  sync(fh: FileHandle): Promise<void>;
}

const defaultIO: PersistIO = {
  async write(fh, data, position) {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await fh.write(data, off, data.length - off, position + off);
      if (bytesWritten <= 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO' });
      off += bytesWritten;
    }
  },
  sync: (fh) => fh.sync(),
};

export interface FilePersistenceOptions {
  /** Compact once the log is larger than this, bytes. @default 8388608 (8 MiB) */
  compactBytes?: number;
  /** File operations for appends (fault injection in tests). @default node:fs/promises */
  io?: Partial<PersistIO>;
  /** Problems that do not stop the registry (torn log tail truncated, stale files). @default ignored */
  onWarning?: (message: string) => void;
}

export const SNAPSHOT_FILE = 'snapshot';
export const LOG_FILE = 'log';
export const LOCK_FILE = 'LOCK';

interface SeqRecord {
  seq: number;
  r: LogRecord;
}

interface StoredSnapshot extends SnapshotData {
  seq: number;
}

// ------------------------------------------------------------------ the log

export class FilePersistence implements RegistryPersistence {
  private size: number;
  private seq: number;
  private broken: Error | undefined;
  private closed = false;
  private readonly io: PersistIO;
  private readonly compactBytes: number;

  private constructor(
    readonly dir: string,
    private fh: FileHandle,
    size: number,
    seq: number,
    options: FilePersistenceOptions,
  ) {
    this.size = size;
    this.seq = seq;
    this.io = { ...defaultIO, ...options.io };
    this.compactBytes = options.compactBytes ?? 8 * 1024 * 1024;
  }

  /**
   * Open (creating) DIR: take the lock, load the snapshot and the log (truncating a torn
   * tail), and return the persistence with what it loaded.
   */
  static async open(dir: string, options: FilePersistenceOptions = {}): Promise<{ persistence: FilePersistence; restored: RestoredState }> {
    const warn = options.onWarning ?? (() => {});
    try {
      mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw storageError(err, `create ${dir}`);
    }
    takeLock(dir);
    try {
      // Snapshot.
      let snapshot: StoredSnapshot | undefined;
      const snapBuf = readIfExists(join(dir, SNAPSHOT_FILE));
      if (snapBuf !== undefined) {
        const { values, end, problem } = decodeFrames(snapBuf);
        const snap = values[0] as StoredSnapshot | undefined;
        if (end !== snapBuf.length || values.length !== 1 || snap?.v !== 1) {
          throw createError(ErrorCode.STORAGE, `registry data in ${dir} is damaged: ${SNAPSHOT_FILE} is not a valid snapshot (${problem ?? 'unexpected content'}); move it away to start without it`, { status: 'DATA_LOSS' });
        }
        snapshot = snap;
      }
      try {
        await unlink(join(dir, `${SNAPSHOT_FILE}.tmp`));
        warn(`registry: removed an unfinished ${SNAPSHOT_FILE}.tmp in ${dir}`);
      } catch {
        // none: the usual case
      }

      // Log.
      const logPath = join(dir, LOG_FILE);
      const logBuf = readIfExists(logPath) ?? Buffer.alloc(0);
      const { values, end, problem } = decodeFrames(logBuf);
      const fh = await open(logPath, fsConstants.O_RDWR | fsConstants.O_CREAT);
      if (end < logBuf.length) {
        warn(`registry: ${logPath}: ${problem} at byte ${end}; truncating ${logBuf.length - end} byte(s) (a write torn by a crash)`);
        await fh.truncate(end);
        await fh.sync();
      }
      await syncDir(dir);
      const baseSeq = snapshot?.seq ?? 0;
      let seq = baseSeq;
      const records: LogRecord[] = [];
      for (const v of values as SeqRecord[]) {
        if (typeof v?.seq !== 'number' || typeof v.r?.op !== 'string') {
          warn(`registry: ${logPath}: skipping a malformed record`);
          continue;
        }
        if (v.seq <= baseSeq) continue; // already in the snapshot (crash between rename and truncate)
        records.push(v.r);
        seq = Math.max(seq, v.seq);
      }
      let snapData: SnapshotData | undefined;
      if (snapshot !== undefined) {
        const { seq: _seq, ...rest } = snapshot;
        snapData = rest;
      }
      const persistence = new FilePersistence(dir, fh, end, seq, options);
      return { persistence, restored: { snapshot: snapData, records } };
    } catch (err) {
      releaseLock(dir);
      throw err;
    }
  }

  get compactionDue(): boolean {
    return this.broken !== undefined || this.size >= this.compactBytes;
  }

  get hasLog(): boolean {
    return this.size > 0;
  }

  /** Bytes in the log now. */
  get logBytes(): number {
    return this.size;
  }

  async append(records: readonly LogRecord[]): Promise<void> {
    if (this.closed) throw createError(ErrorCode.CLOSED, 'registry storage is closed');
    if (this.broken !== undefined) throw storageError(this.broken, 'the log could not be repaired after a failed write; waiting for a compaction');
    const firstSeq = this.seq;
    const frames = records.map((r) => encodeFrame({ seq: ++this.seq, r } satisfies SeqRecord));
    const data = frames.length === 1 ? frames[0]! : Buffer.concat(frames);
    const at = this.size;
    try {
      await this.io.write(this.fh, data, at);
      await this.io.sync(this.fh);
    } catch (err) {
      this.seq = firstSeq;
      try {
        await this.fh.truncate(at);
        await this.fh.sync();
      } catch (err2) {
        this.broken = err2 as Error;
      }
      throw storageError(err, 'append to the log');
    }
    this.size = at + data.length;
  }

  async compact(snapshot: SnapshotData): Promise<void> {
    if (this.closed) throw createError(ErrorCode.CLOSED, 'registry storage is closed');
    const stored: StoredSnapshot = { ...snapshot, seq: this.seq };
    const tmp = join(this.dir, `${SNAPSHOT_FILE}.tmp`);
    try {
      const data = encodeFrame(stored);
      const fh = await open(tmp, 'w');
      try {
        await defaultIO.write(fh, data, 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, join(this.dir, SNAPSHOT_FILE));
      await syncDir(this.dir);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw storageError(err, 'write a snapshot');
    }
    // The snapshot holds everything: the log can start over. If this fails, the records
    // stay and are skipped on load by their seq.
    try {
      if (this.broken !== undefined) {
        await this.fh.close().catch(() => {});
        this.fh = await open(join(this.dir, LOG_FILE), fsConstants.O_RDWR | fsConstants.O_CREAT);
      }
      await this.fh.truncate(0);
      await this.fh.sync();
      this.size = 0;
      this.broken = undefined;
    } catch (err) {
      throw storageError(err, 'truncate the log after a snapshot');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close().catch(() => {});
    releaseLock(this.dir);
  }
}

// ------------------------------------------------------------------ files

function readIfExists(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw storageError(err, `read ${path}`);
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return false; // a lock left by an earlier process that had our pid
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Directories locked by this process (its own pid in LOCK is not proof of a stale lock). */
const heldLocks = new Set<string>();

/**
 * One registry per data directory: DIR/LOCK holds the owner's pid. A lock whose process is
 * gone (kill -9) is taken over.
 */
function takeLock(dir: string): void {
  const path = join(dir, LOCK_FILE);
  if (heldLocks.has(resolvePath(dir))) throw createError(ErrorCode.STORAGE, `registry data in ${dir} is in use by process ${process.pid} (this process)`, { status: 'FAILED_PRECONDITION' });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      heldLocks.add(resolvePath(dir));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw storageError(err, `lock ${dir}`);
    }
    const pid = Number.parseInt(readLock(path), 10);
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
      throw createError(ErrorCode.STORAGE, `registry data in ${dir} is in use by process ${pid} (${path})`, { status: 'FAILED_PRECONDITION' });
    }
    try {
      unlinkSync(path);
    } catch {
      // raced with another starter: the next attempt decides
    }
  }
  throw createError(ErrorCode.STORAGE, `could not lock ${dir}`, { status: 'FAILED_PRECONDITION' });
}

function readLock(path: string): string {
  try {
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(32);
      const n = readSync(fd, buf, 0, 32, 0);
      return buf.subarray(0, n).toString('utf8').trim();
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

function releaseLock(dir: string): void {
  heldLocks.delete(resolvePath(dir));
  const path = join(dir, LOCK_FILE);
  if (readLock(path) === String(process.pid)) {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  }
}
