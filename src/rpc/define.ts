/**
 * Service definitions: `service(name, methods)` with `unary`, `serverStream`,
 * `clientStream` and `bidi`. Request and reply types flow from the definition to the
 * server's handlers and the client's methods; there is no code generation.
 *
 *   const Echo = service('echo', {
 *     say: unary<{ text: string }, { text: string }>({ idempotent: true }),
 *     hello: unary({ input: z.object({ name: z.string() }), output: z.object({ message: z.string() }) }),
 *   });
 *
 * With Standard Schema validators (zod, valibot, ...), the types come from the schemas: the
 * client sends the schema's input type, the handler receives its output type.
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import type { Codec } from '../codec/codec.js';
import { createError, ErrorCode } from '../errors.js';
import { encodeCallPath } from '../wire/payloads.js';

export const MethodKind = {
  UNARY: 'unary',
  SERVER_STREAM: 'serverStream',
  CLIENT_STREAM: 'clientStream',
  BIDI: 'bidi',
} as const;
export type MethodKindValue = (typeof MethodKind)[keyof typeof MethodKind];

export interface MethodOptions<I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined> {
  /**
   * Safe to run more than once (no side effect beyond the first run): lets retry and
   * hedging policies re-send it. @default false
   */
  idempotent?: boolean;
  /** Schema every request must pass on the server; a failure is INVALID_ARGUMENT before the handler runs. */
  input?: I;
  /** Schema every reply must pass on the server before it is sent; a failure is INTERNAL. */
  output?: O;
  /**
   * Protobuf bodies for this method (cross-language): codecs for the request and the reply
   * messages, e.g. `protobufCodec(loadProtoType(src, 'pkg.Req'))`. Without it the
   * connection's codec (MessagePack by default) is used.
   */
  protobuf?: { request: Codec; response: Codec };
  /**
   * Binary messages sent as they are (codec id 4, `bytes`): requests and replies are
   * Buffers (or Uint8Arrays when sending), with no encoding and no copy — file chunks,
   * byte streams. Not together with `protobuf`. @default false
   */
  raw?: boolean;
}

/**
 * A method definition. Type parameters: `Req`/`Res` are what the client sends/receives,
 * `HReq`/`HRes` what the handler receives/returns (they differ only when schemas transform).
 */
export interface MethodDef<K extends MethodKindValue = MethodKindValue, Req = any, Res = any, HReq = Req, HRes = Res> {
  readonly kind: K;
  readonly idempotent: boolean;
  readonly input: StandardSchemaV1 | undefined;
  readonly output: StandardSchemaV1 | undefined;
  readonly protobuf: { request: Codec; response: Codec } | undefined;
  /** Messages are raw bytes (codec id 4). */
  readonly raw: boolean;
  /** Phantom field carrying the types; never set at run time. */
  readonly __types?: { req: Req; res: Res; hreq: HReq; hres: HRes };
}

type In<S, D> = S extends StandardSchemaV1 ? StandardSchemaV1.InferInput<S> : D;
type Out<S, D> = S extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<S> : D;

function method<K extends MethodKindValue>(kind: K, o: MethodOptions<any, any> | undefined): MethodDef<K> {
  const opts = o ?? {};
  if (opts.input !== undefined && typeof opts.input?.['~standard']?.validate !== 'function') throw createError(ErrorCode.INVALID_OPTIONS, 'input must be a Standard Schema (zod, valibot, ...)');
  if (opts.output !== undefined && typeof opts.output?.['~standard']?.validate !== 'function') throw createError(ErrorCode.INVALID_OPTIONS, 'output must be a Standard Schema (zod, valibot, ...)');
  if (opts.raw === true && opts.protobuf !== undefined) throw createError(ErrorCode.INVALID_OPTIONS, 'a method is either raw or protobuf, not both');
  return Object.freeze({ kind, idempotent: opts.idempotent === true, input: opts.input, output: opts.output, protobuf: opts.protobuf, raw: opts.raw === true });
}

/** One request, one reply. */
export function unary<Req = any, Res = any, I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined>(
  options?: MethodOptions<I, O>,
): MethodDef<'unary', In<I, Req>, Out<O, Res>, Out<I, Req>, In<O, Res>> {
  return method(MethodKind.UNARY, options);
}

/** One request, a stream of replies. */
export function serverStream<Req = any, Res = any, I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined>(
  options?: MethodOptions<I, O>,
): MethodDef<'serverStream', In<I, Req>, Out<O, Res>, Out<I, Req>, In<O, Res>> {
  return method(MethodKind.SERVER_STREAM, options);
}

/** A stream of requests, one reply. */
export function clientStream<Req = any, Res = any, I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined>(
  options?: MethodOptions<I, O>,
): MethodDef<'clientStream', In<I, Req>, Out<O, Res>, Out<I, Req>, In<O, Res>> {
  return method(MethodKind.CLIENT_STREAM, options);
}

/** Streams both ways. */
export function bidi<Req = any, Res = any, I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined>(
  options?: MethodOptions<I, O>,
): MethodDef<'bidi', In<I, Req>, Out<O, Res>, Out<I, Req>, In<O, Res>> {
  return method(MethodKind.BIDI, options);
}

export type MethodMap = Record<string, MethodDef>;

export interface ServiceDef<M extends MethodMap = MethodMap> {
  readonly name: string;
  readonly methods: Readonly<M>;
  /** Pre-encoded CALL paths per method (wire/payloads encodeCallPath). */
  readonly paths: Readonly<Record<keyof M & string, Buffer>>;
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** Define a service. The name may contain dots ('shop.cart'); method names may not. */
export function service<M extends MethodMap>(name: string, methods: M): ServiceDef<M> {
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw createError(ErrorCode.INVALID_OPTIONS, `invalid service name ${JSON.stringify(name)}`);
  const paths: Record<string, Buffer> = {};
  for (const [m, def] of Object.entries(methods)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(m) || m === '__proto__') throw createError(ErrorCode.INVALID_OPTIONS, `invalid method name ${JSON.stringify(m)} in service ${name}`);
    if (def === null || typeof def !== 'object' || !Object.values(MethodKind).includes(def.kind)) throw createError(ErrorCode.INVALID_OPTIONS, `${name}.${m} is not a method definition (use unary(), serverStream(), clientStream() or bidi())`);
    paths[m] = encodeCallPath(name, m);
  }
  return Object.freeze({ name, methods: Object.freeze({ ...methods }), paths: Object.freeze(paths) as ServiceDef<M>['paths'] });
}
