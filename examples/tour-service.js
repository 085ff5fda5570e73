// The Echo service of the README's tour ("Define a service"), shared by
// examples/tour-server.js and examples/tour-client.js. (In TypeScript, give each method
// its types as in the README: unary<{ text: string }, { text: string }>(...).)
import { service, unary, serverStream, clientStream, bidi } from 'skein';

export const Echo = service('echo', {
  say: unary({ idempotent: true }),
  count: serverStream(),
  sum: clientStream(),
  chat: bidi(),
});
