/** The skein bench service, shared by the server, the load client and the idle client. */
import { implement, service, unary, serverStream } from '../../src/index.js';

export const Bench = service('bench', {
  echo: unary<Buffer, Buffer>(),
  stream: serverStream<{ count: number; size: number }, Buffer>(),
});

/** Its implementation: unary echo, and a server stream of `count` messages of `size` bytes. */
export const benchImpl = implement(Bench, {
  async echo(req) {
    return req;
  },
  async *stream({ count, size }) {
    const b = Buffer.alloc(size, 7);
    for (let i = 0; i < count; i++) yield b;
  },
});
