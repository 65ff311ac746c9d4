import { existsSync, readFileSync } from 'node:fs';
import { EventLogAppender, parseEventLog } from '../eventlog/index.js';
import { EVENT_TYPES } from '../eventlog/types.js';
import { runtimeLogPath } from '../platform/logs.js';
import { HYPERVISOR_EXIT_EVENT } from './abi.js';

/** EV_NONHOST_INFO, as the HAK event. */
const EV_NONHOST_INFO = EVENT_TYPES.EV_NONHOST_INFO;

/**
 * After a DISABLE on the bare-metal hypervisor: it extended its PCR with the exit event (the cap
 * that keeps the root secret sealed from the host that gets every locality back), so the runtime
 * log records that extension too and keeps replaying to the TPM. Nothing is logged when there is
 * no runtime log (nothing was measured through this tool).
 */
export async function logHypervisorExit(stateDir: string, pcr: number): Promise<boolean> {
  const path = runtimeLogPath(stateDir);
  if (!existsSync(path)) return false;
  const banks = parseEventLog(readFileSync(path), { allowTornTail: true }).banks;
  const log = await EventLogAppender.open(path, { banks });
  try {
    await log.append({ pcr, type: EV_NONHOST_INFO, data: Buffer.from(HYPERVISOR_EXIT_EVENT, 'ascii') });
  } finally {
    await log.close();
  }
  return true;
}
