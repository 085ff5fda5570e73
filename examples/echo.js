// The echo service from the README and issue #2: one module, four call shapes.
// Serve it with: npx skein serve examples/echo.js --port 7700
import { service, unary, serverStream, clientStream, bidi, implement, SkeinError } from 'skein';

export const Echo = service('echo', {
  say: unary({ idempotent: true }), count: serverStream(), sum: clientStream(), chat: bidi(), sleep: unary(),
});

export default implement(Echo, {
  async say(req) { return req; },
  async *count({ n }) { for (let i = 1; i <= n; i++) yield { i }; },
  async sum(stream) { let s = 0; for await (const { n } of stream) s += n; return { sum: s }; },
  async *chat(stream) { for await (const m of stream) yield m; },
  async sleep({ ms }, ctx) { await new Promise((r, j) => { const t = setTimeout(r, ms); ctx.signal.addEventListener('abort', () => { clearTimeout(t); j(ctx.signal.reason); }); }); return { slept: ms }; },
});

// Keep SkeinError imported as in the documented module (handlers may throw it).
void SkeinError;
