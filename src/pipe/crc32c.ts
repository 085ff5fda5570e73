/**
 * CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF, the
 * checksum of iSCSI (RFC 3720), ext4 and SCTP. Used by the reliable pipe (docs/protocol.md §14).
 *
 * `crc32c(data, initial)` returns the unsigned 32-bit CRC; `initial` chains like zlib's
 * crc32: `crc32c(b, crc32c(a)) === crc32c(concat(a, b))`, and `crc32c(empty, x) === x`.
 *
 * Two implementations with the same contract:
 *  - `@node-rs/crc32` (an optional native package, SSE4.2 / ARMv8 CRC instructions), loaded
 *    lazily on first use; a missing or failing package falls back silently to
 *  - a table-driven JavaScript slice-by-8 (`crc32cJs`), always available.
 * Setting SKEIN_CRC32C=js in the environment forces the JavaScript version.
 */
import { createRequire } from 'node:module';

// --- JavaScript: slice-by-8 over 8 tables of 256 entries ---

const POLY = 0x82f63b78;
const TABLES: Int32Array = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
})();

/** CRC-32C in JavaScript (slice-by-8); same contract as `crc32c`. */
export function crc32cJs(data: Uint8Array, initial = 0): number {
  const t = TABLES;
  let crc = ~initial | 0;
  const len = data.length;
  let i = 0;
  // Bytes until the 8-byte loop; the loop reads bytes, so no alignment is needed.
  const end8 = len - (len & 7);
  while (i < end8) {
    const a = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) ^ crc;
    crc =
      t[1792 + (a & 0xff)] ^
      t[1536 + ((a >>> 8) & 0xff)] ^
      t[1280 + ((a >>> 16) & 0xff)] ^
      t[1024 + (a >>> 24)] ^
      t[768 + data[i + 4]] ^
      t[512 + data[i + 5]] ^
      t[256 + data[i + 6]] ^
      t[data[i + 7]];
    i += 8;
  }
  while (i < len) {
    crc = t[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
    i++;
  }
  return ~crc >>> 0;
}

// --- native: @node-rs/crc32, optional, loaded on first use ---

interface NodeRsCrc32 {
  crc32c(input: Uint8Array | string, initialState?: number | null): number;
}

type Impl = (data: Uint8Array, initial: number) => number;

const require = createRequire(import.meta.url);
let impl: Impl | null = null;
let nativeName: 'native' | 'js' = 'js';

/** Loads `@node-rs/crc32` and checks it against a known vector; null when unusable. */
function loadNative(): Impl | null {
  if (process.env.SKEIN_CRC32C === 'js') return null;
  try {
    const m = require('@node-rs/crc32') as NodeRsCrc32;
    if (typeof m.crc32c !== 'function') return null;
    const f: Impl = (data, initial) => m.crc32c(data, initial) >>> 0;
    const check = new TextEncoder().encode('123456789');
    // Known vector and chaining: a wrong or differently-chained binding is not used.
    if (f(check, 0) !== 0xe3069283) return null;
    if (f(check.subarray(4), f(check.subarray(0, 4), 0)) !== 0xe3069283) return null;
    if (f(new Uint8Array(0), 0x12345678) !== 0x12345678) return null;
    return f;
  } catch {
    return null;
  }
}

function resolveImpl(): Impl {
  if (impl === null) {
    const native = loadNative();
    nativeName = native === null ? 'js' : 'native';
    impl = native ?? crc32cJs;
  }
  return impl;
}

/** Below this many bytes the call into native code costs more than the JavaScript loop. */
const NATIVE_MIN = 128;

/**
 * The unsigned CRC-32C of `data`, continuing from `initial` (the CRC of the bytes before it,
 * 0 for none).
 */
export function crc32c(data: Uint8Array, initial = 0): number {
  const f = resolveImpl();
  if (data.length < NATIVE_MIN) return crc32cJs(data, initial);
  return f(data, initial >>> 0);
}

/** Which implementation `crc32c` uses: 'native' (@node-rs/crc32) or 'js'. */
export function crc32cImplementation(): 'native' | 'js' {
  resolveImpl();
  return nativeName;
}

/** The native implementation when it loads, else null (for tests and benchmarks). */
export function crc32cNative(): ((data: Uint8Array, initial?: number) => number) | null {
  const f = loadNative();
  return f === null ? null : (data: Uint8Array, initial = 0) => f(data, initial >>> 0);
}
