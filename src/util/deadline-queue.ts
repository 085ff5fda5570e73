/**
 * Deadline lists: per-call deadline timers without a Timeout object per call.
 *
 * Every call has a deadline, and most calls in a process share the same timeout (the
 * client's default). A `setTimeout` per call allocates a Timeout, runs async-hooks init and
 * touches Node's timer lists twice; measured on the unary hot path that was ~20 % of the
 * client's throughput. Here the call object itself is the list node (intrusive links, so
 * adding and removing allocate nothing), calls are grouped by timeout duration — within a
 * group, deadlines are in insertion order — and each group owns one Node timer, armed for
 * its earliest deadline. This is the scheme Node uses internally, minus the per-call object.
 *
 *   lists: Map<durationMs, List>   List: head ⇄ … ⇄ tail (due ascending), one setTimeout
 *
 * Durations beyond setTimeout's range (2^31-1 ms) are not handled here: callers use
 * `startTimer` (session/timer.ts) for those.
 */

/** A call that can sit in a deadline list. The fields belong to this module. */
export interface DeadlineEntry {
  dlNext: DeadlineEntry | null;
  dlPrev: DeadlineEntry | null;
  dlList: DeadlineList | null;
  dlDue: number;
  /** Called once when the deadline passes (never after `cancelDeadline`). */
  onDeadline(): void;
}

export class DeadlineList {
  head: DeadlineEntry | null = null;
  tail: DeadlineEntry | null = null;
  timer: NodeJS.Timeout | undefined;
  /** Whether the timer keeps the process alive: only while the list holds entries. */
  refed = true;
  constructor(readonly duration: number) {}
}

/** The longest duration handled here (setTimeout's limit). */
export const MAX_DEADLINE_MS = 0x7fffffff;

const lists = new Map<number, DeadlineList>();

function fire(list: DeadlineList): void {
  list.timer = undefined;
  const now = Date.now();
  let e = list.head;
  while (e !== null && e.dlDue <= now) {
    unlink(e);
    e.onDeadline();
    e = list.head;
  }
  if (list.head !== null) {
    list.timer = setTimeout(fire, Math.max(1, list.head.dlDue - now), list);
    list.refed = true;
  } else if (lists.get(list.duration) === list) lists.delete(list.duration);
}

function unlink(e: DeadlineEntry): void {
  const list = e.dlList!;
  if (e.dlPrev !== null) e.dlPrev.dlNext = e.dlNext;
  else list.head = e.dlNext;
  if (e.dlNext !== null) e.dlNext.dlPrev = e.dlPrev;
  else list.tail = e.dlPrev;
  e.dlNext = e.dlPrev = null;
  e.dlList = null;
}

/** Call `e.onDeadline()` in `ms` milliseconds (0 ≤ ms ≤ MAX_DEADLINE_MS). */
export function addDeadline(e: DeadlineEntry, ms: number, now = Date.now()): void {
  const duration = ms <= 0 ? 0 : Math.ceil(ms);
  let list = lists.get(duration);
  if (list === undefined) {
    list = new DeadlineList(duration);
    lists.set(duration, list);
  }
  e.dlDue = now + duration;
  e.dlList = list;
  e.dlNext = null;
  e.dlPrev = list.tail;
  if (list.tail !== null) list.tail.dlNext = e;
  else list.head = e;
  list.tail = e;
  if (list.timer === undefined) {
    list.timer = setTimeout(fire, Math.max(1, duration), list);
    list.refed = true;
  } else if (!list.refed) {
    list.timer.ref();
    list.refed = true;
  }
}

/**
 * Remove `e` from its list (no-op if it is in none). The list's timer stays armed (it will
 * find nothing due), but once the list is empty it no longer keeps the process alive.
 */
export function cancelDeadline(e: DeadlineEntry): void {
  const list = e.dlList;
  if (list === null) return;
  unlink(e);
  if (list.head === null && list.refed && list.timer !== undefined) {
    list.timer.unref();
    list.refed = false;
  }
}
