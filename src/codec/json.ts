/**
 * JSON codec (codec id 2): `JSON.stringify` / `JSON.parse` over UTF-8 bytes.
 *
 * Contract: `encode` writes the UTF-8 bytes of `JSON.stringify(value)`; `decode` accepts one
 * JSON text in well-formed UTF-8 (no byte order mark) and returns `JSON.parse` of it.
 *
 * What JSON cannot carry, it handles as `JSON.stringify` does:
 *  - a top-level `undefined` (or function/symbol) encodes as `null`; object properties with
 *    such values are left out and array slots become `null`;
 *  - `Buffer` encodes through `Buffer#toJSON` as `{"type":"Buffer","data":[1,2,...]}` and
 *    decodes as that plain object (not a Buffer); a bare `Uint8Array` encodes as an object
 *    keyed by index. Use msgpack or protobuf for binary payloads;
 *  - `Date` encodes as its ISO string and decodes as a string;
 *  - `NaN`/`Infinity` encode as `null`; `bigint` and cyclic values fail with SKEIN_ERR_CODEC.
 *
 * Invalid UTF-8 and malformed JSON fail with SKEIN_ERR_CODEC. Decoding copies the bytes
 * into a string first, so nothing decoded refers to the input buffer.
 */
import { isUtf8 } from 'node:buffer';
import { CodecId } from './codec.js';
import type { Codec } from './codec.js';
import { createError, ErrorCode } from '../errors.js';

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export const jsonCodec: Codec = Object.freeze({
  name: 'json',
  id: CodecId.JSON,
  encode(value: unknown): Buffer {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw createError(ErrorCode.CODEC, `json: cannot encode value: ${reason(e)}`, { cause: e });
    }
    return Buffer.from(text ?? 'null', 'utf8');
  },
  decode(bytes: Buffer): unknown {
    if (!isUtf8(bytes)) throw createError(ErrorCode.CODEC, 'json: malformed message: invalid UTF-8');
    try {
      return JSON.parse(bytes.toString('utf8')) as unknown;
    } catch (e) {
      throw createError(ErrorCode.CODEC, `json: malformed message: ${reason(e)}`, { cause: e });
    }
  },
});
