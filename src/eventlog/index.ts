/** TCG PC Client event logs: parse, write, replay, append (runtime log), display. */
export { EventLogError } from './errors.js';
export { EVENT_TYPES, eventTypeName, eventTypeByName, type EventTypeName } from './types.js';
export { parseEventLog, parseSpecIdEvent, type EventLog, type LogEvent, type EventDigest, type SpecIdEvent, type SpecIdAlgorithm, type ParseOptions } from './parse.js';
export { writeEventLog, encodeEvent2, encodeSha1Event, encodeSpecIdHeader, startupLocalityEvent, type EventInput, type SpecIdInput, type WriteSpec } from './write.js';
export { EventLogAppender, readEventLogFile, type AppenderOptions, type AppendResult } from './appender.js';
export {
  replay,
  compareReplay,
  defaultInitialValue,
  ReplayResult,
  type ReplayOptions,
  type ReplayComparison,
  type ReplayMismatch,
  type PcrValues,
  type BankPcrValues,
  type PcrContribution,
} from './replay.js';
export { decodeEvent, type DecodedEvent } from './decode.js';
export { devicePathToText } from './devicepath.js';
export { checkPayloadDigest } from './payload-digest.js';
export type { EventDataCheck, EventDataChecker, EventDataStatus } from './data-check.js';
export { formatEventLogText, formatReplayText, eventLogToJson, replayToJson, EVENTLOG_JSON_SCHEMA, REPLAY_JSON_SCHEMA, type EventLogJson, type EventJson, type ReplayJson } from './format.js';
