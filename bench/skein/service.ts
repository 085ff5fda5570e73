/** The skein bench service, shared by the server, the load client and the idle client. */
import { service, unary, serverStream } from '../../src/index.js';

export const Bench = service('bench', {
  echo: unary<Buffer, Buffer>(),
  stream: serverStream<{ count: number; size: number }, Buffer>(),
});
