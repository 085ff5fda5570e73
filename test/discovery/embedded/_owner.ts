/**
 * An owner process for the registry tests (not a test file): serves the echo service on
 * 127.0.0.1 port 0 and registers it in the registry at URL under SERVICE with TTL ms.
 *
 *   node _owner.js skein://127.0.0.1:PORT SERVICE TTL_MS [ID]
 *
 * stdout, one line per event:  registered LEASE_ID ADDRESS  |  lost STATUS MESSAGE
 * SIGTERM deregisters and exits 0. Exits by itself when stdin closes (its parent died).
 */
import { createServer, implement, service, unary } from '../../../src/index.js';
import { embeddedDiscovery } from '../../../src/discovery/embedded/plugin.js';

const [url, name, ttlText, id] = process.argv.slice(2);
if (url === undefined || name === undefined || ttlText === undefined) {
  process.stderr.write('usage: _owner.js URL SERVICE TTL_MS [ID]\n');
  process.exit(2);
}

const Echo = service(name, { say: unary<{ text: string }, { text: string; from: number }>() });
const server = createServer();
server.add(implement(Echo, { say: (req) => ({ text: req.text, from: process.pid }) }));
const bound = await server.listen({ host: '127.0.0.1', port: 0 });
const address = `127.0.0.1:${bound.port}`;

const registrar = embeddedDiscovery.registrar(new URL(url));
const reg = await registrar.register(id === undefined ? { service: name, address } : { service: name, address, id }, { ttlMs: Number(ttlText) });
reg.on('registered', () => process.stdout.write(`registered ${reg.leaseId} ${address}\n`));
reg.on('lost', (err) => process.stdout.write(`lost ${err.statusName} ${err.message}\n`));

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await reg.deregister().catch((err: unknown) => process.stderr.write(`deregister failed: ${String(err)}\n`));
  await registrar.close();
  await server.close(0);
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.stdin.on('end', () => void stop());
process.stdin.resume();
