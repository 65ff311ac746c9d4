import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EventLogAppender, parseEventLog } from '../eventlog/index.js';
import { runtimeLogPath } from '../platform/logs.js';
import { logHypervisorExit } from './exit-event.js';

describe('the DISABLE cap in the runtime log', () => {
  it('appends the exit event to PCR 12 in every bank of an existing log; nothing without one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'he-exit-'));
    try {
      expect(await logHypervisorExit(dir, 12)).toBe(false);
      const a = await EventLogAppender.open(runtimeLogPath(dir), { banks: ['sha1', 'sha256'] });
      await a.append({ pcr: 12, type: 0x0d, data: Buffer.from('image') });
      await a.close();
      expect(await logHypervisorExit(dir, 12)).toBe(true);
      const log = parseEventLog(readFileSync(runtimeLogPath(dir)));
      const last = log.events.at(-1)!;
      expect([last.pcr, last.type, last.data.toString()]).toEqual([12, 0x11, 'hyperenclave:hypervisor-exit v=1']);
      // the digests are the TPM's PCR_Event digests: H_bank(data) (Node's hashes as the peer)
      const byBank = Object.fromEntries(last.digests.map((d) => [d.bank, Buffer.from(d.digest).toString('hex')]));
      expect(byBank).toEqual({
        sha1: createHash('sha1').update('hyperenclave:hypervisor-exit v=1').digest('hex'),
        sha256: createHash('sha256').update('hyperenclave:hypervisor-exit v=1').digest('hex'),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
