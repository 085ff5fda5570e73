/** Raw baseline idle client: plain TCP connections, one echo frame each. */
import { idleClientMain } from '../lib/idle-client.js';
import { splitTarget } from '../lib/child.js';
import { RawConn } from './conn.js';

const ping = Buffer.alloc(1);

await idleClientMain(async (target) => {
  const { host, port } = splitTarget(target);
  const conn = await RawConn.connect(host, port);
  return {
    ping: async () => {
      await conn.echo(ping);
    },
    close: () => conn.close(),
  };
});
