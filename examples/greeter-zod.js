// The README's schema example: a Greeter whose requests and replies zod checks on the
// server. Serves on a free port of 127.0.0.1, calls it twice, exits.
//   node examples/greeter-zod.js
import { z } from 'zod';
import { service, unary, implement, createServer, connect } from 'skein';

const Greeter = service('greeter', {
  hello: unary({ input: z.object({ name: z.string() }), output: z.object({ message: z.string() }) }),
});

const server = createServer().add(implement(Greeter, {
  async hello({ name }) { return { message: `hello, ${name}` }; },
}));
const { address } = await server.listen({ host: '127.0.0.1', port: 0 });
const greeter = connect(Greeter, { target: address });

console.log(await greeter.hello({ name: 'ada' }));               // { message: 'hello, ada' }
try {
  await greeter.hello({ name: 42 });                             // refused before the handler runs
} catch (err) {
  console.log(err.statusName, JSON.stringify(err.details.issues.map((i) => i.path)));  // INVALID_ARGUMENT [["name"]]
}
await greeter.close();
await server.close();
