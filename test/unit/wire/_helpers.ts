/**
 * Shared by the wire tests: decode a byte sequence under a given chunking, build fixtures,
 * and assert that something throws a ProtocolError with a given code (and nothing else —
 * in particular never a RangeError or TypeError).
 */
import assert from 'node:assert/strict';
import { ProtocolError, SkeinError, type ErrorCodeValue } from '../../../src/errors.js';
import { FrameDecoder } from '../../../src/wire/decoder.js';
import { encodeFrame, PREFACE } from '../../../src/wire/frame.js';

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** Feed `chunks` to a fresh decoder; return every frame it hands out (payloads as given, not copied). */
export function decodeChunks(chunks: readonly Buffer[], maxFrameSize: number, expectPreface = true): Frame[] {
  const out: Frame[] = [];
  const d = new FrameDecoder({ expectPreface, maxFrameSize }, (type, flags, streamId, payload) => out.push({ type, flags, streamId, payload }));
  for (const c of chunks) d.push(c);
  assert.equal(d.bufferedBytes, 0, 'bytes left in the decoder after the last frame');
  return out;
}

/** Split `bytes` at the given (sorted, in-range) offsets. Empty pieces are kept: the decoder must ignore them. */
export function splitAt(bytes: Buffer, offsets: readonly number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const o of offsets) {
    out.push(bytes.subarray(prev, o));
    prev = o;
  }
  out.push(bytes.subarray(prev));
  return out;
}

/** Preface (optional) followed by every frame, as one buffer. */
export function encodeStream(frames: readonly Frame[], withPreface = true): Buffer {
  const parts = frames.map((f) => encodeFrame(f.type, f.flags, f.streamId, f.payload));
  return Buffer.concat(withPreface ? [PREFACE, ...parts] : parts);
}

/** Assert two frame lists are equal field by field, naming the first difference. */
export function assertFramesEqual(actual: readonly Frame[], expected: readonly Frame[], label: string): void {
  assert.equal(actual.length, expected.length, `${label}: frame count`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.equal(a.type, e.type, `${label}: frame ${i} type`);
    assert.equal(a.flags, e.flags, `${label}: frame ${i} flags`);
    assert.equal(a.streamId, e.streamId, `${label}: frame ${i} stream id`);
    assert.ok(Buffer.isBuffer(a.payload), `${label}: frame ${i} payload is not a Buffer`);
    assert.ok(a.payload.equals(e.payload), `${label}: frame ${i} payload differs (${a.payload.length} vs ${e.payload.length} bytes)`);
  }
}

/** `fn` throws a ProtocolError carrying `code`; returns it for further checks. */
export function assertProtocolError(fn: () => unknown, code: ErrorCodeValue, label = '', message?: RegExp): ProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `${label}: expected a throw`);
  assert.ok(caught instanceof ProtocolError, `${label}: expected a ProtocolError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.ok(caught instanceof SkeinError);
  assert.equal(caught.code, code, `${label}: expected ${code}, got ${caught.code}: ${caught.message}`);
  if (message !== undefined) assert.match(caught.message, message, label);
  return caught;
}

/** A Buffer that owns its own ArrayBuffer (never a slice of Node's shared pool). */
export function ownBuffer(bytes: Buffer): Buffer {
  const b = Buffer.alloc(bytes.length); // Buffer.alloc never uses the pool
  bytes.copy(b);
  return b;
}
