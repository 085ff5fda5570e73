/**
 * The codec registry: the codecs a peer can name in the handshake or a CALL frame's codec
 * byte. Only self-describing codecs are here (msgpack, json); protobuf codecs are built per
 * message type with `protobufCodec(type)` and chosen by the method definition.
 */
import type { Codec } from './codec.js';
import { jsonCodec } from './json.js';
import { msgpackCodec } from './msgpack.js';

const codecs: readonly Codec[] = [msgpackCodec, jsonCodec];

/** The codec with this name ('msgpack', 'json') or wire id (1, 2); undefined otherwise. */
export function getCodec(nameOrId: string | number): Codec | undefined {
  for (const codec of codecs) if (codec.name === nameOrId || codec.id === nameOrId) return codec;
  return undefined;
}

/** Names of the registered codecs, default (msgpack) first. */
export function codecNames(): string[] {
  return codecs.map((c) => c.name);
}
