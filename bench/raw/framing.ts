/**
 * The raw baseline's wire format: every frame is
 *
 *   u32 LE payload length | u32 LE request id | payload
 *
 * Requests whose id has bit 31 set are stream requests: their 8-byte payload is
 * `u32 count | u32 size` and the server answers with `count` frames of `size` bytes, all
 * carrying the same id. Any other frame is echoed back unchanged.
 */
export const HEADER = 8;
export const STREAM_BIT = 0x8000_0000;

/**
 * Incremental frame decoder. Complete frames inside a chunk are handed out as zero-copy
 * subarrays of that chunk; only a frame split across chunks is copied (once) into its own
 * buffer.
 */
export class FrameDecoder {
  private readonly head = Buffer.allocUnsafe(HEADER);
  private headLen = 0;
  private partial: Buffer | null = null;
  private partialLen = 0;

  constructor(private readonly onFrame: (frame: Buffer, id: number) => void) {}

  push(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;

    // Finish a frame left over from the previous chunk.
    if (this.headLen > 0 || this.partial) {
      if (!this.partial) {
        const take = Math.min(HEADER - this.headLen, n);
        chunk.copy(this.head, this.headLen, 0, take);
        this.headLen += take;
        off = take;
        if (this.headLen < HEADER) return;
        this.partial = Buffer.allocUnsafe(HEADER + this.head.readUInt32LE(0));
        this.head.copy(this.partial, 0);
        this.partialLen = HEADER;
        this.headLen = 0;
      }
      const p = this.partial;
      const take = Math.min(p.length - this.partialLen, n - off);
      chunk.copy(p, this.partialLen, off, off + take);
      this.partialLen += take;
      off += take;
      if (this.partialLen < p.length) return;
      this.partial = null;
      this.partialLen = 0;
      this.onFrame(p, p.readUInt32LE(4));
    }

    while (n - off >= HEADER) {
      const total = HEADER + chunk.readUInt32LE(off);
      if (n - off < total) break;
      this.onFrame(chunk.subarray(off, off + total), chunk.readUInt32LE(off + 4));
      off += total;
    }

    const rest = n - off;
    if (rest === 0) return;
    if (rest < HEADER) {
      chunk.copy(this.head, 0, off);
      this.headLen = rest;
    } else {
      this.partial = Buffer.allocUnsafe(HEADER + chunk.readUInt32LE(off));
      chunk.copy(this.partial, 0, off);
      this.partialLen = rest;
    }
  }
}

/** One frame: header and payload in a single buffer. */
export function encodeFrame(id: number, payload: Buffer): Buffer {
  const f = Buffer.allocUnsafe(HEADER + payload.length);
  f.writeUInt32LE(payload.length, 0);
  f.writeUInt32LE(id >>> 0, 4);
  payload.copy(f, HEADER);
  return f;
}
