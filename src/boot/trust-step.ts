import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Platform } from '../platform/index.js';
import { writeFileAtomic } from '../platform/state.js';
import { runtimeLogPath } from '../platform/logs.js';
import { EventLogAppender, parseEventLog } from '../eventlog/index.js';
import { measureTpmFor } from '../measure/index.js';
import { openTpm } from '../tpm/index.js';
import { withHypervisor } from '../hypervisor/index.js';
import { hakEventData, HypervisorError } from '../hypervisor/abi.js';
import { HyperEnclaveError, EXIT } from '../errors.js';
import { log } from '../log.js';

/** Where the sealed root secret lives between boots (untrusted storage: the TPM guards it). */
export const trustRootPath = (stateDir: string): string => join(stateDir, 'trust-root.blob');
/** EV_NONHOST_INFO: the HAK event's type in the runtime log (CONTRACT-12). */
const EV_NONHOST_INFO = 0x11;

export interface TrustStepResult {
  created: boolean;
  hakPublic: string;
  hakPcr: number;
  logged: boolean;
  blob: string;
}

/**
 * The boot flow's trust step, after enable: the hypervisor unseals its root secret from
 * <stateDir>/trust-root.blob (or creates and seals one; the new blob is written atomically) and
 * extends its HAK into the HAK PCR; the host logs that event in the runtime log. A blob that does
 * not unseal (another image or PCR state, or tampered) stops the boot: it is never replaced
 * silently, since data sealed under it would be lost.
 */
export async function trustStep(platform: Platform, tcti?: string): Promise<TrustStepResult> {
  const path = trustRootPath(platform.stateDir);
  const blob = existsSync(path) ? readFileSync(path) : undefined;
  let r;
  try {
    r = await withHypervisor(platform, async (c) => {
      // A boot killed after TRUST_INIT (or run again in the same enable) finds the root already
      // established: TRUST_INIT answers only once per enable, so take the HAK as it stands.
      if ((await c.status()).hv?.trustEstablished) {
        const hak = await c.hakPublic();
        if (!blob)
          log().warn(
            { path },
            `trust: the hypervisor's root of trust is established but its sealed copy ${path} was never saved (an earlier boot was killed in between): data sealed in this boot will not unseal after a reboot (the next boot creates and saves a new root)`,
          );
        return { created: false, pcrExtended: false, hakPublic: hak.key, hakPcr: hak.pcr, blob: undefined };
      }
      return c.trustInit(blob);
    });
  } catch (e) {
    if (blob && e instanceof Error && (e instanceof HypervisorError ? e.statusName === 'TRUST_SEAL_FAILED' : /\bTRUST_SEAL_FAILED\b/.test(e.message)))
      throw new HyperEnclaveError(`trust: the sealed root ${path} does not unseal for this hypervisor image and PCR state (${e.message}); data sealed under it stays sealed. Move the file aside to create a new root`, EXIT.VERIFY_FAILED, { cause: e });
    throw e;
  }
  if (r.blob) writeFileAtomic(path, r.blob, 0o600);
  const data = hakEventData(r.hakPublic);
  const logPath = runtimeLogPath(platform.stateDir);
  const existing = existsSync(logPath) ? parseEventLog(readFileSync(logPath), { allowTornTail: true }) : undefined;
  // Log when this call extended the PCR, or when an earlier boot step died between the extension
  // and the log (the PCR holds exactly this one event, the log has none for that PCR).
  const logged = r.pcrExtended || (existing !== undefined && !existing.events.some((e) => e.pcr === r.hakPcr));
  if (logged) {
    let banks = existing?.banks;
    if (!banks) {
      const tpm = await openTpm(tcti ?? (await platform.defaultTcti()));
      try {
        banks = await measureTpmFor(tpm).activeBanks();
      } finally {
        await tpm.close();
      }
    }
    const log = await EventLogAppender.open(logPath, { banks });
    try {
      await log.append({ pcr: r.hakPcr, type: EV_NONHOST_INFO, data });
    } finally {
      await log.close();
    }
  }
  return { created: r.created, hakPublic: r.hakPublic.toString('hex'), hakPcr: r.hakPcr, logged, blob: path };
}
