/** grpc-js baseline client process: one channel, insecure, default options. Usage: see lib/driver.ts. */
import * as grpc from '@grpc/grpc-js';
import { clientMain } from '../lib/driver.js';
import { BenchService } from './service.js';

const BenchClient = grpc.makeGenericClientConstructor(BenchService, 'Bench');
const { echo, stream } = BenchService;

await clientMain(async (target) => {
  const client = new BenchClient(target, grpc.credentials.createInsecure());
  await new Promise<void>((resolve, reject) => {
    client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve()));
  });
  return {
    echo: (payload) =>
      new Promise<Buffer>((resolve, reject) => {
        client.makeUnaryRequest(echo.path, echo.requestSerialize, echo.responseDeserialize, payload, (err, reply) =>
          err || !reply ? reject(err ?? new Error('empty reply')) : resolve(reply),
        );
      }),
    stream: (count, size, onMessage) =>
      new Promise<number>((resolve, reject) => {
        let received = 0;
        const call = client.makeServerStreamRequest(stream.path, stream.requestSerialize, stream.responseDeserialize, { count, size });
        call.on('data', (msg: Buffer) => {
          received++;
          onMessage(msg.length);
        });
        call.on('error', reject);
        call.on('end', () => resolve(received));
      }),
    close: () => client.close(),
  };
});
