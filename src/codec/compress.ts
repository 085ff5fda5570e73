/**
 * Compressors for DATA payloads: gzip (node:zlib, always there), lz4 and snappy (optional
 * native packages, loaded on first use so skein runs without them).
 *
 * Contract (see `Compressor` in codec.ts): `decompress(data, maxOutput)` never produces
 * more than `maxOutput` bytes; a larger result fails with SKEIN_ERR_MESSAGE_TOO_LARGE without
 * ever allocating more than the limit; corrupt input fails with SKEIN_ERR_CODEC; a negative
 * or NaN `maxOutput` is a program error (SKEIN_ERR_INVALID_OPTIONS). The lz4 and snappy block
 * formats carry no checksum: a damaged block may decode to wrong bytes of the right length.
 *
 * How each format is bounded:
 *  - gzip: zlib's `maxOutputLength` stops inflating at the limit (no declared size exists).
 *  - lz4 (lz4-napi, an lz4_flex block): `compressSync` prepends the uncompressed size as a
 *    4-byte little-endian u32. That size is also the decoder's output capacity (a block that
 *    would inflate past it is an error), so checking it against `maxOutput` first bounds
 *    the allocation. A block that decodes to fewer bytes than declared is corrupt.
 *  - snappy (raw block format, not the framed one): the block starts with the uncompressed
 *    length as a varint (at most 5 bytes for a u32); it is checked first, and the decoder
 *    itself fails when the block does not decode to exactly that length.
 *
 * `availableCompressors()` lists the loadable ones in preference order: lz4, snappy, gzip.
 */
import { createRequire } from 'node:module';
import { constants as bufferConstants } from 'node:buffer';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Compressor } from './codec.js';
import { createError, ErrorCode } from '../errors.js';
import type { SkeinError } from '../errors.js';

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function corrupt(name: string, detail: string, cause?: unknown): SkeinError {
  return createError(ErrorCode.CODEC, `${name}: corrupt compressed payload: ${detail}`, cause === undefined ? {} : { cause });
}

function tooLarge(name: string, maxOutput: number, size?: number): SkeinError {
  const what = size === undefined ? 'decompressed payload' : `decompressed size ${size}`;
  return createError(ErrorCode.MESSAGE_TOO_LARGE, `${name}: ${what} exceeds the limit of ${maxOutput} bytes`);
}

function checkMaxOutput(name: string, maxOutput: number): void {
  if (!(maxOutput >= 0)) throw createError(ErrorCode.INVALID_OPTIONS, `${name}: maxOutput must be a number >= 0, got ${String(maxOutput)}`);
}

export const gzipCompressor: Compressor = Object.freeze({
  name: 'gzip',
  compress(data: Buffer): Buffer {
    return gzipSync(data);
  },
  decompress(data: Buffer, maxOutput: number): Buffer {
    checkMaxOutput('gzip', maxOutput);
    // zlib wants 1 <= maxOutputLength <= buffer.constants.MAX_LENGTH; 0 is checked below.
    const limit = Math.min(Math.max(Math.floor(maxOutput), 1), bufferConstants.MAX_LENGTH);
    let out: Buffer;
    try {
      out = gunzipSync(data, { maxOutputLength: limit });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge('gzip', maxOutput);
      throw corrupt('gzip', reason(e), e);
    }
    if (out.length > maxOutput) throw tooLarge('gzip', maxOutput, out.length);
    return out;
  },
});

// --- optional native packages: typed locally so the build does not need them installed ---

interface Lz4Module {
  compressSync(data: Buffer): Buffer;
  uncompressSync(data: Uint8Array): Buffer;
}

interface SnappyModule {
  compressSync(data: Uint8Array): Buffer;
  uncompressSync(data: Uint8Array, options: { asBuffer: true }): string | Buffer;
}

const require = createRequire(import.meta.url);

/** Load an optional package and wrap it; null when it is missing or fails to load. */
function tryLoad<M>(pkg: string, make: (m: M) => Compressor): Compressor | null {
  try {
    return make(require(pkg) as M);
  } catch {
    return null;
  }
}

function makeLz4(lz4: Lz4Module): Compressor {
  return Object.freeze({
    name: 'lz4',
    compress(data: Buffer): Buffer {
      return lz4.compressSync(data);
    },
    decompress(data: Buffer, maxOutput: number): Buffer {
      checkMaxOutput('lz4', maxOutput);
      if (data.length < 4) throw corrupt('lz4', 'shorter than its 4-byte size prefix');
      const declared = data.readUInt32LE(0);
      if (declared > maxOutput) throw tooLarge('lz4', maxOutput, declared);
      let out: Buffer;
      try {
        out = lz4.uncompressSync(data);
      } catch (e) {
        throw corrupt('lz4', reason(e), e);
      }
      if (out.length !== declared) throw corrupt('lz4', `declared ${declared} bytes, decoded ${out.length}`);
      return out;
    },
  });
}

/** The uncompressed length a raw snappy block declares (a little-endian base-128 u32). */
function snappyLength(data: Buffer): number {
  let length = 0;
  for (let i = 0; i < 5 && i < data.length; i++) {
    const b = data[i];
    length += (b & 0x7f) * 2 ** (7 * i);
    if (b < 0x80) {
      if (length > 0xffffffff) break;
      return length;
    }
  }
  throw corrupt('snappy', 'bad length header');
}

function makeSnappy(snappy: SnappyModule): Compressor {
  return Object.freeze({
    name: 'snappy',
    compress(data: Buffer): Buffer {
      return snappy.compressSync(data);
    },
    decompress(data: Buffer, maxOutput: number): Buffer {
      checkMaxOutput('snappy', maxOutput);
      const declared = snappyLength(data);
      if (declared > maxOutput) throw tooLarge('snappy', maxOutput, declared);
      let out: string | Buffer;
      try {
        out = snappy.uncompressSync(data, { asBuffer: true });
      } catch (e) {
        throw corrupt('snappy', reason(e), e);
      }
      if (typeof out === 'string') out = Buffer.from(out); // not with asBuffer: true; keeps the type honest
      if (out.length !== declared) throw corrupt('snappy', `declared ${declared} bytes, decoded ${out.length}`);
      return out;
    },
  });
}

/** `undefined` until first asked for; `null` when the package did not load. */
let lz4Compressor: Compressor | null | undefined;
let snappyCompressor: Compressor | null | undefined;

function lz4OrNull(): Compressor | null {
  if (lz4Compressor === undefined) lz4Compressor = tryLoad('lz4-napi', makeLz4);
  return lz4Compressor;
}

function snappyOrNull(): Compressor | null {
  if (snappyCompressor === undefined) snappyCompressor = tryLoad('snappy', makeSnappy);
  return snappyCompressor;
}

/** Names of the compressors that load here, in preference order (lz4, snappy, gzip). */
export function availableCompressors(): string[] {
  const names: string[] = [];
  if (lz4OrNull() !== null) names.push('lz4');
  if (snappyOrNull() !== null) names.push('snappy');
  names.push('gzip');
  return names;
}

/** The compressor called `name`, or undefined if the name is unknown or its package did not load. */
export function getCompressor(name: string): Compressor | undefined {
  switch (name) {
    case 'gzip':
      return gzipCompressor;
    case 'lz4':
      return lz4OrNull() ?? undefined;
    case 'snappy':
      return snappyOrNull() ?? undefined;
    default:
      return undefined;
  }
}
