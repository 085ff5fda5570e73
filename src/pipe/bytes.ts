/**
 * Bytes over an ordinary client-streaming call, with the session's flow control: a
 * `clientStream<Buffer, R>({ raw: true })` method (codec id 4, docs/protocol.md §12.5)
 * carries Buffers as they are, and these two helpers connect it to Node streams.
 *
 *   // client                                   // handler
 *   await client.upload(byteChunks(fs.createReadStream(f)));
 *                                              upload: (requests) => collectBytes(requests, fs.createWriteStream(g))
 *
 * Backpressure runs end to end: the client pulls the next chunk from the Readable only when
 * the stream has credit, and the handler takes the next message (giving credit back) only
 * after the Writable accepted the previous one — a slow disk on the server stalls the
 * client's reads. Unlike the reliable pipe, a call that fails is not resumed.
 */
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import { createError, ErrorCode } from '../errors.js';
import { PipeDefaults } from './defaults.js';
import { MAX_CHUNK } from './messages.js';

export interface ByteChunksOptions {
  /** Largest message, in bytes (≤ the peer's maxFrameSize). @default 262144 (256 KiB) */
  chunkSize?: number;
}

/**
 * The bytes of `source` (a Readable, or any async iterable of Buffers, Uint8Arrays or
 * strings) as Buffers of at most `chunkSize` bytes, without copying: larger reads are cut
 * into views, empty ones skipped.
 */
export async function* byteChunks(source: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>, options: ByteChunksOptions = {}): AsyncGenerator<Buffer, void, undefined> {
  const max = options.chunkSize ?? PipeDefaults.chunkSize;
  if (!Number.isInteger(max) || max < 1 || max > MAX_CHUNK) throw createError(ErrorCode.INVALID_OPTIONS, `byteChunks(): chunkSize must be an integer in [1, ${MAX_CHUNK}], got ${max}`);
  for await (const c of source) {
    const b = typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    for (let i = 0; i < b.length; i += max) yield i === 0 && b.length <= max ? b : b.subarray(i, Math.min(b.length, i + max));
  }
}

export interface CollectBytesOptions {
  /** End the writable after the last message (and wait for 'finish'). @default true */
  end?: boolean;
}

/**
 * Write every message of `requests` to `writable`, waiting for 'drain' whenever `write()`
 * returns false (the call's credit goes back only as messages are taken, so the sender
 * stalls too). Resolves with the number of bytes once the writable has finished. Rejects
 * if the call fails (the writable is left as it is) or the writable errors or closes early.
 */
export async function collectBytes(requests: AsyncIterable<Buffer | Uint8Array>, writable: Writable, options: CollectBytesOptions = {}): Promise<number> {
  let bytes = 0;
  for await (const b of requests) {
    if (b.length === 0) continue;
    bytes += b.length;
    if (!writable.write(b)) await drained(writable);
  }
  if (options.end !== false) {
    writable.end();
    await finished(writable, { readable: false });
  }
  return bytes;
}

async function drained(w: Writable): Promise<void> {
  if (w.destroyed) throw createError(ErrorCode.CLOSED, 'the writable was destroyed');
  const ac = new AbortController();
  try {
    await Promise.race([
      once(w, 'drain', { signal: ac.signal }),
      once(w, 'close', { signal: ac.signal }).then(() => {
        throw createError(ErrorCode.CLOSED, 'the writable closed before it drained');
      }),
    ]);
  } finally {
    ac.abort();
  }
}
