/**
 * A registration owner in its own process, for the "kill -9 of an owner" test
 * (test/engines/etcd.test.ts): registers one instance in etcd, prints
 * `registered <leaseId>` and keeps the lease alive until it is killed.
 *
 *   node dist/test/engines/_etcd-owner.js <etcd-url> <service> <address> <ttlMs>
 */
import { createEtcdDiscovery } from '../../src/engines/etcd.js';

const [url, service, address, ttl] = process.argv.slice(2);
if (url === undefined || service === undefined || address === undefined) {
  console.error('usage: _etcd-owner.js <etcd-url> <service> <address> [ttlMs]');
  process.exit(2);
}
const registrar = createEtcdDiscovery().registrar(new URL(url));
const registration = await registrar.register({ service, address }, { ttlMs: Number(ttl ?? 2000) });
registration.on('lost', (err) => console.log(`lost ${err.message}`));
registration.on('registered', () => console.log(`re-registered ${registration.leaseId}`));
console.log(`registered ${registration.leaseId}`);
setInterval(() => {}, 1 << 30); // stay up until killed
