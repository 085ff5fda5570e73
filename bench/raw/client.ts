/** Raw baseline client process. Usage: see lib/driver.ts. */
import { clientMain } from '../lib/driver.js';
import { splitTarget } from '../lib/child.js';
import { RawConn } from './conn.js';

await clientMain(async (target) => {
  const { host, port } = splitTarget(target);
  const conn = await RawConn.connect(host, port);
  return {
    echo: (payload) => conn.echo(payload),
    stream: (count, size, onMessage) => conn.stream(count, size, onMessage),
    close: () => conn.close(),
  };
});
