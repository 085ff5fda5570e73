/** skein bench server: unary echo and a server stream of `count` messages of `size` bytes. */
import { implement, createServer } from '../../src/index.js';
import { serverMain, fatal } from '../lib/child.js';
import { Bench } from './service.js';

serverMain(async () => {
  const server = createServer();
  server.add(
    implement(Bench, {
      async echo(req) {
        return req;
      },
      async *stream({ count, size }) {
        const b = Buffer.alloc(size, 7);
        for (let i = 0; i < count; i++) yield b;
      },
    }),
  );
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  return {
    address: `127.0.0.1:${addr.port}`,
    // The server API does not expose a connection count; the orchestrator knows it anyway.
    connections: () => -1,
    close: () => server.close(),
  };
}).catch(fatal);
