/**
 * The reliable pipe (docs/pipe.md, docs/protocol.md §14): `pipe.listen()` receives one
 * transfer, `pipe.send()` sends one; bytes arrive complete, in order and once across lost
 * connections, or the transfer fails with a typed error. `byteChunks()`/`collectBytes()`
 * carry bytes over an ordinary raw client-streaming method with the same flow control.
 */
import { byteChunks, collectBytes } from './bytes.js';
import { pipeListen } from './receiver.js';
import { pipeSend } from './sender.js';

export { pipeListen, PipeReceiver } from './receiver.js';
export type { PipeListenOptions, PipeReceiverEvents, PipeProgress, PipeResult, PipeAttachInfo } from './receiver.js';
export { pipeSend, PipeSender } from './sender.js';
export type { PipeSendOptions, PipeSendAttachInfo } from './sender.js';
export { byteChunks, collectBytes } from './bytes.js';
export type { ByteChunksOptions, CollectBytesOptions } from './bytes.js';
export { PipeService, PIPE_SERVICE } from './service.js';
export { PipeDefaults } from './defaults.js';

/** The pipe API as one object: `pipe.listen()`, `pipe.send()`, `pipe.byteChunks()`, `pipe.collectBytes()`. */
export const pipe = Object.freeze({
  listen: pipeListen,
  send: pipeSend,
  byteChunks,
  collectBytes,
});
