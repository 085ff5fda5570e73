/**
 * The service a pipe receiver serves (docs/protocol.md §14.1): `skein.pipe/transfer`, one
 * bidi call per attachment, raw bytes (codec id 4) both ways; each message is one pipe
 * message of §14.2 (src/pipe/messages.ts).
 */
import { bidi, service } from '../rpc/define.js';

export const PIPE_SERVICE = 'skein.pipe';

export const PipeService = service(PIPE_SERVICE, {
  transfer: bidi<Buffer, Buffer>({ raw: true }),
});
