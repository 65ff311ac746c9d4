import { join } from 'node:path';

/** Where Linux exposes the firmware's (SRTM) event log. */
export const FIRMWARE_EVENT_LOG = '/sys/kernel/security/tpm0/binary_bios_measurements';

/** Our runtime measurement log (every PCR extend the management plane makes). */
export function runtimeLogPath(stateDir: string): string {
  return join(stateDir, 'runtime-measurements.log');
}

/** The DRTM log written by the (emulated or real) dynamic launch. */
export function drtmLogPath(stateDir: string): string {
  return join(stateDir, 'drtm-measurements.log');
}

/** The write-ahead journal of runtime-log measurements (src/measure/journal.ts). */
export function measureJournalPath(stateDir: string): string {
  return join(stateDir, 'measure-journal.json');
}
