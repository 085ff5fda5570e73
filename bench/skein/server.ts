/** skein bench server: unary echo and a server stream of `count` messages of `size` bytes. */
import { createServer } from '../../src/index.js';
import { serverMain, fatal } from '../lib/child.js';
import { benchImpl } from './service.js';

serverMain(async () => {
  const server = createServer();
  server.add(benchImpl);
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  return {
    address: `127.0.0.1:${addr.port}`,
    // The server API does not expose a connection count; the orchestrator knows it anyway.
    connections: () => -1,
    close: () => server.close(),
  };
}).catch(fatal);
