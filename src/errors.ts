/**
 * Errors: one class, stable string codes, and one status enum that crosses the wire.
 *
 * Every error skein raises or delivers is a `SkeinError`. It carries
 *  - `status`: a gRPC-style status number (see `Status`), the part that travels to the peer;
 *  - `code`:   a stable `SKEIN_ERR_*` string saying which mechanism produced it (never sent
 *              on the wire; a remote failure arrives as `SKEIN_ERR_REMOTE`);
 *  - `details` and `metadata` for structured information (e.g. validation issues, trailers).
 *
 * Handlers throw `new SkeinError('NOT_FOUND', 'no such user')`; the status and message reach
 * the caller. Any other thrown value becomes INTERNAL with a generic message (no stack leaks).
 * `docs/errors.md` lists every code; a test keeps the two in step.
 */

/** The 17 status codes, numbered as in gRPC. */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusName = keyof typeof Status;
export type StatusCode = (typeof Status)[StatusName];

const statusNames: readonly StatusName[] = Object.keys(Status) as StatusName[];

/** The name of a status number; unknown numbers map to UNKNOWN. */
export function statusName(status: number): StatusName {
  return statusNames[status] ?? 'UNKNOWN';
}

/** A status number from a name or number; anything unrecognised is UNKNOWN. */
export function toStatus(status: StatusName | number): StatusCode {
  if (typeof status === 'number') return (Number.isInteger(status) && status >= 0 && status <= 16 ? status : Status.UNKNOWN) as StatusCode;
  return Status[status] ?? Status.UNKNOWN;
}

/** Stable error codes, one per mechanism. Documented in docs/errors.md. */
export const ErrorCode = {
  /** A handler (or interceptor) raised this status on purpose; also the default for user-made errors. */
  STATUS: 'SKEIN_ERR_STATUS',
  /** The peer ended the call with a non-OK status. */
  REMOTE: 'SKEIN_ERR_REMOTE',
  /** The peer sent bytes that break the protocol (bad magic, unknown frame, bad payload...). */
  PROTOCOL: 'SKEIN_ERR_PROTOCOL',
  /** The peer speaks a protocol version this side does not. */
  VERSION: 'SKEIN_ERR_VERSION',
  /** A frame's declared length exceeds the negotiated maximum. */
  FRAME_TOO_LARGE: 'SKEIN_ERR_FRAME_TOO_LARGE',
  /** A message to send is larger than the peer accepts. */
  MESSAGE_TOO_LARGE: 'SKEIN_ERR_MESSAGE_TOO_LARGE',
  /** The peer sent more data than its flow-control credit allows. */
  FLOW_CONTROL: 'SKEIN_ERR_FLOW_CONTROL',
  /** The handshake failed or did not finish in time. */
  HANDSHAKE: 'SKEIN_ERR_HANDSHAKE',
  /** The server's authenticate hook refused the connection. */
  AUTH_REFUSED: 'SKEIN_ERR_AUTH_REFUSED',
  /** Dialing the target failed (refused, unreachable, timed out). */
  CONNECT_FAILED: 'SKEIN_ERR_CONNECT_FAILED',
  /** The connection dropped while the call was in flight. */
  CONNECTION_LOST: 'SKEIN_ERR_CONNECTION_LOST',
  /** The peer stopped answering pings (keepalive). */
  KEEPALIVE_TIMEOUT: 'SKEIN_ERR_KEEPALIVE_TIMEOUT',
  /** No call ran on the connection for the idle timeout. */
  IDLE_TIMEOUT: 'SKEIN_ERR_IDLE_TIMEOUT',
  /** The peer is draining (GOAWAY): the call was refused before it reached a handler. */
  GOAWAY: 'SKEIN_ERR_GOAWAY',
  /** Fail-fast: the client has no ready connection and the call did not ask to wait. */
  NOT_READY: 'SKEIN_ERR_NOT_READY',
  /** The session, client or server is closed. */
  CLOSED: 'SKEIN_ERR_CLOSED',
  /** The peer's max-concurrent-streams limit is reached. */
  STREAM_LIMIT: 'SKEIN_ERR_STREAM_LIMIT',
  /** The peer reset the stream. */
  STREAM_RESET: 'SKEIN_ERR_STREAM_RESET',
  /** The call's deadline passed. */
  DEADLINE: 'SKEIN_ERR_DEADLINE',
  /** The call was cancelled (AbortSignal, or the client went away). */
  CANCELLED: 'SKEIN_ERR_CANCELLED',
  /** A message could not be encoded or decoded. */
  CODEC: 'SKEIN_ERR_CODEC',
  /** A request or reply failed its schema. */
  VALIDATION: 'SKEIN_ERR_VALIDATION',
  /** Unknown service or method. */
  UNIMPLEMENTED: 'SKEIN_ERR_UNIMPLEMENTED',
  /** A handler threw something that is not a SkeinError. */
  INTERNAL: 'SKEIN_ERR_INTERNAL',
  /** Bad options or arguments given to a skein API by the program itself. */
  INVALID_OPTIONS: 'SKEIN_ERR_INVALID_OPTIONS',
  /** A discovery lease expired or was revoked: the instance is not visible until re-registered. */
  LEASE_LOST: 'SKEIN_ERR_LEASE_LOST',
  /** The registry could not make a change durable (disk full, I/O error); nothing was acknowledged. */
  STORAGE: 'SKEIN_ERR_STORAGE',
  /** A resilience limiter (rate limit, bulkhead, load shedding) refused the call before its handler ran. */
  LIMITED: 'SKEIN_ERR_LIMITED',
  /** A client circuit breaker is open: the call failed fast without being sent. */
  CIRCUIT_OPEN: 'SKEIN_ERR_CIRCUIT_OPEN',
  /** Reliable pipe: the SHA-256 of the bytes received differs from the sender's; the output is discarded. */
  DIGEST_MISMATCH: 'SKEIN_ERR_DIGEST_MISMATCH',
  /** Reliable pipe: the transfer was given up (no sender came back in time, or the receiver gave it up). */
  PIPE_ABANDONED: 'SKEIN_ERR_PIPE_ABANDONED',
  /** Reliable pipe: sender and receiver do not agree on the transfer (another id, version or source). */
  PIPE_MISMATCH: 'SKEIN_ERR_PIPE_MISMATCH',
} as const;
export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeValue = (typeof ErrorCode)[ErrorCodeName];

/** The status each code carries unless told otherwise. */
const defaultStatus: Record<ErrorCodeValue, StatusCode> = {
  SKEIN_ERR_STATUS: Status.UNKNOWN,
  SKEIN_ERR_REMOTE: Status.UNKNOWN,
  SKEIN_ERR_PROTOCOL: Status.INTERNAL,
  SKEIN_ERR_VERSION: Status.UNAVAILABLE,
  SKEIN_ERR_FRAME_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
  SKEIN_ERR_MESSAGE_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
  SKEIN_ERR_FLOW_CONTROL: Status.INTERNAL,
  SKEIN_ERR_HANDSHAKE: Status.UNAVAILABLE,
  SKEIN_ERR_AUTH_REFUSED: Status.UNAUTHENTICATED,
  SKEIN_ERR_CONNECT_FAILED: Status.UNAVAILABLE,
  SKEIN_ERR_CONNECTION_LOST: Status.UNAVAILABLE,
  SKEIN_ERR_KEEPALIVE_TIMEOUT: Status.UNAVAILABLE,
  SKEIN_ERR_IDLE_TIMEOUT: Status.UNAVAILABLE,
  SKEIN_ERR_GOAWAY: Status.UNAVAILABLE,
  SKEIN_ERR_NOT_READY: Status.UNAVAILABLE,
  SKEIN_ERR_CLOSED: Status.UNAVAILABLE,
  SKEIN_ERR_STREAM_LIMIT: Status.RESOURCE_EXHAUSTED,
  SKEIN_ERR_STREAM_RESET: Status.CANCELLED,
  SKEIN_ERR_DEADLINE: Status.DEADLINE_EXCEEDED,
  SKEIN_ERR_CANCELLED: Status.CANCELLED,
  SKEIN_ERR_CODEC: Status.INTERNAL,
  SKEIN_ERR_VALIDATION: Status.INVALID_ARGUMENT,
  SKEIN_ERR_UNIMPLEMENTED: Status.UNIMPLEMENTED,
  SKEIN_ERR_INTERNAL: Status.INTERNAL,
  SKEIN_ERR_INVALID_OPTIONS: Status.INVALID_ARGUMENT,
  SKEIN_ERR_LEASE_LOST: Status.NOT_FOUND,
  SKEIN_ERR_STORAGE: Status.UNAVAILABLE,
  SKEIN_ERR_LIMITED: Status.RESOURCE_EXHAUSTED,
  SKEIN_ERR_CIRCUIT_OPEN: Status.UNAVAILABLE,
  SKEIN_ERR_DIGEST_MISMATCH: Status.DATA_LOSS,
  SKEIN_ERR_PIPE_ABANDONED: Status.ABORTED,
  SKEIN_ERR_PIPE_MISMATCH: Status.FAILED_PRECONDITION,
};

export interface SkeinErrorOptions {
  /** Stable code; defaults to SKEIN_ERR_STATUS. */
  code?: ErrorCodeValue;
  /** JSON-serialisable structured details; they travel to the peer. */
  details?: unknown;
  /** Trailing metadata received with (or to send with) the status. */
  metadata?: Record<string, string | Buffer>;
  cause?: unknown;
}

export class SkeinError extends Error {
  override name = 'SkeinError';
  /** Stable `SKEIN_ERR_*` code. */
  readonly code: ErrorCodeValue;
  /** Status number (see `Status`). */
  readonly status: StatusCode;
  readonly details: unknown;
  readonly metadata: Record<string, string | Buffer>;

  constructor(status: StatusName | number, message: string, options: SkeinErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = toStatus(status);
    this.code = options.code ?? ErrorCode.STATUS;
    this.details = options.details;
    this.metadata = options.metadata ?? {};
  }

  /** The status as a name, e.g. 'DEADLINE_EXCEEDED'. */
  get statusName(): StatusName {
    return statusName(this.status);
  }
}

/** Malformed input from the peer; the connection carrying it is closed. */
export class ProtocolError extends SkeinError {
  override name = 'ProtocolError';
}

/** Build an error for a code, with the code's default status unless one is given. */
export function createError(code: ErrorCodeValue, message: string, options: Omit<SkeinErrorOptions, 'code'> & { status?: StatusName | number } = {}): SkeinError {
  const status = options.status ?? defaultStatus[code];
  const opts: SkeinErrorOptions = { ...options, code };
  return code === ErrorCode.PROTOCOL || code === ErrorCode.FRAME_TOO_LARGE || code === ErrorCode.FLOW_CONTROL || code === ErrorCode.VERSION
    ? new ProtocolError(status, message, opts)
    : new SkeinError(status, message, opts);
}

/**
 * `createError` without a stack trace, for errors that are expected outcomes on a hot path
 * (a limiter refusing a call, a finished call's cancellation): a stack says nothing there,
 * and capturing one costs more than the rest of the refusal.
 */
export function expectedError(code: ErrorCodeValue, message: string, options: Omit<SkeinErrorOptions, 'code'> & { status?: StatusName | number } = {}): SkeinError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return createError(code, message, options);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** True for any SkeinError (also across duplicated module copies, by shape). */
export function isSkeinError(e: unknown): e is SkeinError {
  return e instanceof SkeinError || (typeof e === 'object' && e !== null && typeof (e as SkeinError).code === 'string' && (e as SkeinError).code.startsWith('SKEIN_ERR_') && typeof (e as SkeinError).status === 'number');
}
