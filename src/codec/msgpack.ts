/**
 * MessagePack codec (codec id 1, the default), on msgpackr.
 *
 * Contract: `encode` produces standard MessagePack that any conforming implementation can
 * read; `decode` accepts exactly one MessagePack value filling the whole input.
 *
 * The `Packr` is set up for plain interop, not for msgpackr's own extensions:
 *  - `useRecords: false`, `structuredClone: false`, `moreTypes: false`, no string bundles:
 *    objects are MessagePack maps, no record/reference/typed-array extensions are written;
 *  - `variableMapSize: true`: maps use the smallest header (fixmap/map16/map32), so objects
 *    with more than 65535 keys encode (the default always writes map16);
 *  - `Buffer`/`Uint8Array` encode as `bin` and decode as `Buffer`;
 *  - `Date` encodes as the standard timestamp extension (-1) and decodes as `Date`;
 *  - `bigint` encodes as int64/uint64 (out of 64-bit range: SKEIN_ERR_CODEC); 64-bit
 *    integers decode as `number` when within ±2^53, otherwise as `bigint` (lossless);
 *  - integral numbers use the smallest int format, so -0 comes back as 0 (as with JSON);
 *  - `Map` encodes as a map and decodes as a plain object; `Set` encodes as an array.
 *
 * `undefined`: at top level and in arrays it encodes as nil, which decodes as `null` (nil
 * has one meaning on the wire); object properties whose value is `undefined` are left out,
 * as `JSON.stringify` does, so optional fields stay absent rather than becoming `null`.
 * Functions encode as nil; symbols and cyclic values fail with SKEIN_ERR_CODEC.
 *
 * Decoding: maps become plain objects, with a `__proto__` key renamed to `__proto_`
 * (msgpackr's guard against prototype pollution). `bin` values are copied
 * (`copyBuffers: true`), so nothing decoded aliases the input buffer, which the caller may
 * reuse. Strings are always fresh copies. A top-level 0xC1 (a byte MessagePack reserves as
 * "never used") is refused; nested, msgpackr decodes it as its `C1` marker object. Note that msgpackr's decoder still understands a few of its own
 * extension types (e.g. 0x73 Set, 0x78 RegExp, 0x65 Error) if a peer sends them; skein never
 * writes them.
 *
 * Hot path: `encode` returns msgpackr's output view directly (a slice of its slab allocator,
 * never overwritten later), with no copy. Trade-off: leaving out `undefined` properties
 * (`skipValues`) makes msgpackr walk objects with for-in, about 30% slower on encode than
 * its defaults in a quick measurement; it is kept because a schema with an optional field
 * rejects `null`, which is what a written `undefined` would come back as.
 */
import { C1, Packr } from 'msgpackr';
import type { Options as PackrOptions } from 'msgpackr';
import { CodecId } from './codec.js';
import type { Codec } from './codec.js';
import { createError, ErrorCode } from '../errors.js';

/** Options msgpackr 2.1 supports but its typings leave out (see its README). */
const untypedOptions = { skipValues: [undefined], int64AsType: 'auto' };

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  structuredClone: false,
  bundleStrings: false,
  variableMapSize: true,
  encodeUndefinedAsNil: true,
  copyBuffers: true,
  ...(untypedOptions as PackrOptions),
});

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export const msgpackCodec: Codec = Object.freeze({
  name: 'msgpack',
  id: CodecId.MSGPACK,
  encode(value: unknown): Buffer {
    try {
      return packr.pack(value);
    } catch (e) {
      throw createError(ErrorCode.CODEC, `msgpack: cannot encode value: ${reason(e)}`, { cause: e });
    }
  },
  decode(bytes: Buffer): unknown {
    let value: unknown;
    try {
      value = packr.unpack(bytes);
    } catch (e) {
      throw createError(ErrorCode.CODEC, `msgpack: malformed message: ${reason(e)}`, { cause: e });
    }
    if (value === C1) throw createError(ErrorCode.CODEC, 'msgpack: malformed message: reserved byte 0xc1');
    return value;
  },
});
