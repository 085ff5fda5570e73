/**
 * Channels: public names of the channel layer (docs/channels.md). Every name is listed
 * explicitly. Importing this module registers nothing; `setupChannel()` lets
 * `connect(Def, { discovery })` build channels.
 */
export { Channel, setup as setupChannel } from './channel.js';
export type { ChannelEvents } from './channel.js';
export { Subchannel } from './subchannel.js';
export type { SubchannelCounters, SubchannelOptions } from './subchannel.js';
