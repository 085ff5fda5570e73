/**
 * Protobuf codecs (codec id 3), one per message type, on protobufjs 8 reflection.
 *
 * Contract: `protobufCodec(type)` encodes a plain object (or a message instance) of `type`
 * to the standard protobuf wire format and decodes bytes to a plain object. Protobuf codecs
 * are not in the name/id registry: the message type comes from the method definition.
 *
 * Decoding returns `type.toObject(message, options)` with, by default:
 *  - `longs: String`  — 64-bit integers as decimal strings (lossless, JSON-safe; the
 *                       proto3 JSON mapping does the same);
 *  - `enums: String`  — enum values by name (numbers the schema does not know stay numbers);
 *  - `bytes`          — left at protobufjs' default, a `Buffer`, copied from the input so it
 *                       never aliases the caller's buffer;
 *  - `defaults: true` — unset singular scalars, enums, repeated and map fields are filled
 *                       with their defaults; unset message fields are `null`; oneof members
 *                       (and proto3 `optional` fields) stay absent unless set.
 * Pass `toObject` to change these.
 *
 * Encoding accepts whatever decoding produces, and the usual input forms: 64-bit integers
 * as number, decimal string, bigint or Long; enums as name or number; bytes as
 * Buffer/Uint8Array or base64 string. Values are checked with `Type.verify` (after names,
 * decimal strings and bigints are turned into the numeric forms verify expects); any
 * problem, e.g. a string in an int32 field or a 64-bit string out of range, fails with
 * SKEIN_ERR_CODEC. As in protobufjs, properties that are not fields are ignored.
 * Malformed bytes fail with SKEIN_ERR_CODEC.
 */
import protobuf from 'protobufjs';
import type { Field, IConversionOptions, Type } from 'protobufjs';
import { CodecId } from './codec.js';
import type { Codec } from './codec.js';
import { createError, ErrorCode } from '../errors.js';

export interface ProtobufCodecOptions {
  /**
   * Options for `Type.toObject` when decoding; merged over the defaults.
   * @default { longs: String, enums: String, defaults: true }
   */
  toObject?: IConversionOptions;
}

export interface LoadProtoOptions {
  /**
   * Keep field names as written in the .proto source (`user_id`) rather than converting
   * them to camelCase (`userId`). Field names never reach the wire, only field numbers.
   * @default true
   */
  keepCase?: boolean;
}

const defaultToObject: IConversionOptions = Object.freeze({ longs: String, enums: String, defaults: true });

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Resolve every field of `type` and of the message types it contains, and report whether
 * any field needs encode-side normalisation (64-bit or enum) or is `bytes`.
 */
function scanType(type: Type): { normalise: boolean; bytes: boolean } {
  const flags = { normalise: false, bytes: false };
  const seen = new Set<Type>();
  const visit = (t: Type): void => {
    if (seen.has(t)) return;
    seen.add(t);
    for (const field of t.fieldsArray) {
      field.resolve();
      if (field.long || field.resolvedType instanceof protobuf.Enum) flags.normalise = true;
      if (field.bytes) flags.bytes = true;
      if (field.resolvedType instanceof protobuf.Type) visit(field.resolvedType);
    }
  };
  visit(type);
  return flags;
}

// --- encode-side normalisation: accepted input forms -> the forms Type.verify checks ---

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;
const DECIMAL = /^-?\d+$/;

/** A long as protobufjs' writer takes it (`LongBits.from` reads `low`/`high`). */
interface LongLike {
  low: number;
  high: number;
  unsigned: boolean;
}

/** A decimal string or bigint in range as a LongLike; anything else is left for verify to refuse. */
function toLong(v: string | bigint, unsigned: boolean): LongLike | undefined {
  if (typeof v === 'string' && !DECIMAL.test(v)) return undefined;
  const n = BigInt(v);
  if (unsigned ? n < 0n || n > UINT64_MAX : n < INT64_MIN || n > INT64_MAX) return undefined;
  const bits = BigInt.asUintN(64, n);
  return { low: Number(bits & 0xffffffffn) | 0, high: Number(bits >> 32n) | 0, unsigned };
}

function normaliseValue(field: Field, v: unknown, depth: number): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) return typeof v === 'string' && Object.hasOwn(rt.values, v) ? rt.values[v] : v;
  if (rt instanceof protobuf.Type) return normaliseMessage(rt, v, depth + 1);
  if (field.long && (typeof v === 'string' || typeof v === 'bigint')) {
    return toLong(v, field.type === 'uint64' || field.type === 'fixed64') ?? v;
  }
  return v;
}

/** Copy-on-write: returns `obj` itself when nothing needed converting. */
function normaliseMessage(type: Type, obj: unknown, depth: number): unknown {
  if (typeof obj !== 'object' || obj === null || depth > protobuf.util.recursionLimit) return obj;
  const src = obj as Record<string, unknown>;
  let out: Record<string, unknown> | undefined;
  for (const field of type.fieldsArray) {
    const v = src[field.name];
    if (v === undefined || v === null) continue;
    let n: unknown = v;
    if (field.map) {
      if (typeof v === 'object') {
        let entries: Record<string, unknown> | undefined;
        for (const [k, e] of Object.entries(v)) {
          const ne = normaliseValue(field, e, depth);
          if (ne !== e) (entries ??= { ...v })[k] = ne;
        }
        if (entries) n = entries;
      }
    } else if (field.repeated) {
      if (Array.isArray(v)) {
        let items: unknown[] | undefined;
        for (let i = 0; i < v.length; i++) {
          const ne = normaliseValue(field, v[i], depth);
          if (ne !== v[i]) (items ??= v.slice())[i] = ne;
        }
        if (items) n = items;
      }
    } else {
      n = normaliseValue(field, v, depth);
    }
    if (n !== v) (out ??= { ...src })[field.name] = n;
  }
  return out ?? obj;
}

/** A Codec for messages of `type` (see the module header for the value mapping). */
export function protobufCodec<T extends object = Record<string, unknown>>(type: Type, options: ProtobufCodecOptions = {}): Codec<T> {
  const toObjectOptions: IConversionOptions = { ...defaultToObject, ...options.toObject };
  const label = `protobuf(${type.fullName.replace(/^\./, '')})`;
  let scan: { normalise: boolean; bytes: boolean };
  try {
    scan = scanType(type);
  } catch (e) {
    throw createError(ErrorCode.INVALID_OPTIONS, `${label}: cannot resolve the message type: ${reason(e)}`, { cause: e });
  }
  const needsNormalise = scan.normalise;
  // Decoded `bytes` fields are views of the reader's buffer: decode from a private copy.
  const copyInput = scan.bytes;

  return Object.freeze({
    name: 'protobuf',
    id: CodecId.PROTOBUF,
    encode(value: T): Buffer {
      const message = needsNormalise ? normaliseMessage(type, value, 0) : value;
      const problem = type.verify(message as Record<string, unknown>);
      if (problem !== null) throw createError(ErrorCode.CODEC, `${label}: cannot encode value: ${problem}`);
      let out: Uint8Array;
      try {
        out = type.encode(message as Record<string, unknown>).finish();
      } catch (e) {
        throw createError(ErrorCode.CODEC, `${label}: cannot encode value: ${reason(e)}`, { cause: e });
      }
      return Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    },
    decode(bytes: Buffer): T {
      try {
        const message = type.decode(copyInput ? Buffer.from(bytes) : bytes);
        return type.toObject(message, toObjectOptions) as T;
      } catch (e) {
        throw createError(ErrorCode.CODEC, `${label}: malformed message: ${reason(e)}`, { cause: e });
      }
    },
  });
}

/**
 * Parse .proto source and return the message type `typeName` (package-qualified, e.g.
 * `shop.v1.Order`). The source must be self-contained (imports are not followed).
 * Bad source or an unknown type fail with SKEIN_ERR_INVALID_OPTIONS: both are mistakes in
 * the program, not in a peer's bytes.
 */
export function loadProtoType(protoSource: string, typeName: string, options: LoadProtoOptions = {}): Type {
  let root: protobuf.Root;
  try {
    root = protobuf.parse(protoSource, { keepCase: options.keepCase ?? true }).root;
    root.resolveAll();
  } catch (e) {
    throw createError(ErrorCode.INVALID_OPTIONS, `protobuf: cannot parse .proto source: ${reason(e)}`, { cause: e });
  }
  try {
    return root.lookupType(typeName);
  } catch (e) {
    throw createError(ErrorCode.INVALID_OPTIONS, `protobuf: no message type '${typeName}' in the .proto source`, { cause: e });
  }
}
