/** Every built-in picker runs the picker compliance suite (test/compliance/picker.ts). */
import { pickerCompliance } from '../compliance/picker.js';
import { roundRobin } from '../../src/balance/picker-round-robin.js';
import { weighted } from '../../src/balance/picker-weighted.js';
import { leastInflight } from '../../src/balance/picker-least-inflight.js';
import { random } from '../../src/balance/picker-random.js';
import { p2cEwma } from '../../src/balance/picker-p2c-ewma.js';
import { ringHash } from '../../src/balance/picker-ring-hash.js';
import { load } from '../../src/balance/picker-load.js';
import { ManualClock, type MockSubchannel } from '../helpers/mock-subchannel.js';

pickerCompliance('round-robin', roundRobin);
pickerCompliance('weighted', weighted);
pickerCompliance('least-inflight', leastInflight);
pickerCompliance('random', random);
pickerCompliance('p2c-ewma', p2cEwma, { config: () => ({ clock: new ManualClock() }) });
pickerCompliance('ring-hash', ringHash, { config: () => ({ hashMetadata: 'x-user' }) });
pickerCompliance('load', load);
// With load reports (the picker's own path; without them it is least-inflight).
const withLoad = (s: MockSubchannel): void => {
  if (s.load === undefined) s.setLoad({ cpu: (s.id.charCodeAt(0) % 5) / 5, mem: 0.3, inflight: 2, latencyMs: 5 + (s.id.charCodeAt(0) % 3) });
};
pickerCompliance('load (inverse, with reports)', load, { decorate: withLoad });
pickerCompliance('load (score, with reports)', load, { config: () => ({ mode: 'score' }), decorate: withLoad });
