/**
 * Bytes codec (codec id 4): the message IS its bytes. For methods declared `raw: true`
 * (`clientStream<Buffer, R>({ raw: true })`), whose messages are binary already — file
 * chunks, the reliable pipe — so nothing is copied or framed twice.
 *
 * Contract: `encode` accepts a Buffer or any Uint8Array and returns a Buffer over the same
 * memory (no copy: the caller must not modify it until it is sent); anything else fails
 * with SKEIN_ERR_CODEC. `decode` returns the received bytes as they are: a view of the
 * session's receive buffer. The session never reuses a receive buffer (each socket read is
 * a fresh allocation, and a frame split across reads is copied into a fresh one), so the
 * view stays valid; it keeps that read's memory alive while it is referenced.
 *
 * Not negotiated in the handshake (it is not a general-purpose codec): chosen per method
 * by its definition, as protobuf is.
 */
import { CodecId } from './codec.js';
import type { Codec } from './codec.js';
import { createError, ErrorCode } from '../errors.js';

export const bytesCodec: Codec<Buffer> = Object.freeze({
  name: 'bytes',
  id: CodecId.BYTES,
  encode(value: Buffer | Uint8Array): Buffer {
    if (Buffer.isBuffer(value)) return value;
    if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    throw createError(ErrorCode.CODEC, `a raw method's messages must be Buffers or Uint8Arrays, got ${value === null ? 'null' : typeof value}`);
  },
  decode(bytes: Buffer): Buffer {
    return bytes;
  },
});
