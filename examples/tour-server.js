// The README's "Serve it": the tour's Echo service on 127.0.0.1.
//   node examples/tour-server.js [PORT]      (PORT 0, the default, picks a free one)
// Prints "ready serve HOST:PORT" on stdout once listening; SIGTERM or SIGINT drains and exits.
import { createServer, implement, SkeinError } from 'skein';
import { Echo } from './tour-service.js';

const wanted = Number(process.argv[2] ?? 0);
if (!Number.isInteger(wanted) || wanted < 0 || wanted > 65535) {
  console.error('usage: node examples/tour-server.js [PORT]');
  process.exit(2);
}

const server = createServer();
server.add(implement(Echo, {
  async say(req) { return req; },
  async *count({ n }) { for (let i = 1; i <= n; i++) yield { i }; },
  async sum(requests) { let sum = 0; for await (const { n } of requests) sum += n; return { sum }; },
  async *chat(requests) {
    for await (const m of requests) {
      if (m.text === '') throw new SkeinError('INVALID_ARGUMENT', 'empty message');
      yield m;
    }
  },
}));
const { host, port } = await server.listen({ host: '127.0.0.1', port: wanted });
console.log(`ready serve ${host}:${port}`);

const stop = () => server.close(1000).then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
