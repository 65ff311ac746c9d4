import type { EventLog } from './parse.js';

/** Whether an event's data matches its digest: `verified`, `forged` (edited), `unverified` (the digest covers bytes the log does not carry). */
export type EventDataStatus = 'verified' | 'forged' | 'unverified';

export interface EventDataCheck {
  index: number;
  pcr: number;
  status: EventDataStatus;
  reason: string;
}

/**
 * Checks the data of the events a producer knows (ours: src/measure/runtime-events.ts). The
 * event-log layer does not know any producer's event format: callers pass the checker.
 */
export type EventDataChecker = (log: EventLog) => EventDataCheck[];
