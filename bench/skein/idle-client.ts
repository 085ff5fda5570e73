/** skein idle client: real connect() clients, one 1-byte echo call each. */
import { connect } from '../../src/index.js';
import { idleClientMain } from '../lib/idle-client.js';
import { Bench } from './service.js';

const ping = Buffer.alloc(1);

await idleClientMain((target) => {
  const client = connect(Bench, { target });
  return {
    ping: async () => {
      await client.echo(ping);
    },
    close: () => client.close(),
  };
});
