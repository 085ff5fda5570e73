// The README's "Call it": every call shape against examples/tour-server.js.
//   node examples/tour-client.js HOST:PORT
import { connect, pushable, SkeinError } from 'skein';
import { Echo } from './tour-service.js';

const target = process.argv[2];
if (target === undefined) {
  console.error('usage: node examples/tour-client.js HOST:PORT');
  process.exit(2);
}

const echo = connect(Echo, { target });

console.log(await echo.say({ text: 'hi' }, { timeout: 2000 }));  // unary, with a deadline: { text: 'hi' }
for await (const { i } of echo.count({ n: 3 })) console.log(i);   // server stream: 1 2 3
console.log(await echo.sum([{ n: 1 }, { n: 2 }]));                // client stream from any (async) iterable: { sum: 3 }

const requests = pushable();                                      // bidi, with requests produced over time
const replies = echo.chat(requests);
await requests.push({ text: 'ping' });                            // waits when too many are queued (backpressure)
await requests.push({ text: 'pong' });
requests.end();
for await (const { text } of replies) console.log(text);          // ping pong

try {
  for await (const m of echo.chat([{ text: '' }])) console.log(m);
} catch (err) {
  if (!(err instanceof SkeinError)) throw err;
  console.log(err.statusName, err.message);                       // INVALID_ARGUMENT empty message
}

const ac = new AbortController();
const call = echo.say({ text: 'x' }, { signal: ac.signal, metadata: { 'x-request-id': 'r1' } });
ac.abort();                                                       // cancel the call
await call.catch((err) => console.log(err.statusName));           // CANCELLED
await echo.close();
