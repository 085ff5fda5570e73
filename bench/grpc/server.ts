/** grpc-js baseline server: unary echo and a server stream that honours backpressure. */
import * as grpc from '@grpc/grpc-js';
import { serverMain, fatal } from '../lib/child.js';
import { BenchService, type StreamRequest } from './service.js';

const echo: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
  callback(null, call.request);
};

const stream: grpc.handleServerStreamingCall<StreamRequest, Buffer> = (call) => {
  const { count, size } = call.request;
  const payload = Buffer.alloc(size, 7);
  let sent = 0;
  let cancelled = false;
  call.on('cancelled', () => {
    cancelled = true;
  });
  const pump = (): void => {
    while (sent < count && !cancelled) {
      sent++;
      if (!call.write(payload)) {
        call.once('drain', pump);
        return;
      }
    }
    if (!cancelled) call.end();
  };
  pump();
};

serverMain(async () => {
  const server = new grpc.Server();
  server.addService(BenchService, { echo, stream });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return {
    address: `127.0.0.1:${port}`,
    connections: () => -1,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}).catch(fatal);
