/** skein bench client process: one connect() to the server. Usage: see lib/driver.ts. */
import { connect } from '../../src/index.js';
import { clientMain } from '../lib/driver.js';
import { Bench } from './service.js';

await clientMain(async (target) => {
  const client = connect(Bench, { target });
  return {
    echo: (payload) => client.echo(payload),
    stream: async (count, size, onMessage) => {
      let received = 0;
      for await (const msg of client.stream({ count, size })) {
        received++;
        onMessage(msg.length);
      }
      return received;
    },
    close: () => client.close(),
  };
});
