import { openPlatform } from '../platform/index.js';
/**
 * The attester's enclave path at the hypervisor client on the emulated platform (the service
 * process holding the Rust core over swtpm): quoteEnclave gives a quote that Node's Ed25519 and
 * the HAK the hypervisor reports agree on, and QUOTE refuses a REPORT whose MAC was forged or
 * whose body was changed after EREPORT — the refusal happens before any evidence exists.
 */
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliMissing, repoRoot, runCli } from '../../test/helpers/cli.js';
import { bootWithRawImage } from '../../test/helpers/boot.js';
import { swtpmAvailable } from '../platform/emulated/swtpm.js';
import { withHypervisor } from '../hypervisor/service.js';
import { createEnclave } from '../enclave/lifecycle.js';
import { loadManifest } from '../enclave/manifest.js';
import { ECALL_QUOTE_REPORT, quoteEnclave } from './enclave-evidence.js';

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const manifest = join(repoRoot, 'test', 'fixtures', 'enclave', 'sealer.manifest.json');
const missing =
  cliMissing() ??
  swtpmAvailable({ ek: true }) ??
  (existsSync(addon) ? undefined : `${addon} not built (make build)`) ??
  (existsSync(join(repoRoot, 'hypervisor/enclaves/out/sealer.bin')) ? undefined : 'sealer payload not built (make build)') ??
  (existsSync('/dev/kvm') ? undefined : '/dev/kvm absent: enclaves cannot run');
if (missing) console.warn(`skipping enclave evidence tests: ${missing}`);

describe.skipIf(!!missing)('enclave quotes through the hypervisor client (emulated platform)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-encl-ev-'));
  const platform = openPlatform({ platform: 'emulated', stateDir: state });
  beforeAll(async () => {
    await bootWithRawImage((...args) => runCli(['--platform', 'emulated', '--state-dir', state, ...args], { timeoutMs: 180_000 }), addon, join(state, 'hv.img'));
  }, 240_000);
  afterAll(async () => {
    await runCli(['--platform', 'emulated', '--state-dir', state, 'emulator', 'stop'], { timeoutMs: 60_000 });
    rmSync(state, { recursive: true, force: true });
  });

  it('quoteEnclave: 496-byte quote, signed by the HAK the hypervisor reports, REPORTDATA bound to the nonce', async () => {
    const nonce = randomBytes(32);
    const { r, hak } = await withHypervisor(platform, async (c) => ({ r: await quoteEnclave(c, manifest, nonce, { userData: Buffer.from('k') }), hak: await c.hakPublic() }));
    const q = Buffer.from(r.evidence.quote, 'base64');
    expect(q.length).toBe(496);
    expect(q.subarray(400, 432).equals(hak.key)).toBe(true);
    expect(q.readUInt32LE(8)).toBe(hak.pcr);
    const spki = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), hak.key]), format: 'der', type: 'spki' });
    expect(verify(null, q.subarray(0, 432), spki, q.subarray(432))).toBe(true);
    expect(q.subarray(16 + 64, 16 + 96).toString('hex')).toBe(r.mrenclave);
    expect(r.evidence.userData).toBe('6b');
    // the enclave is gone afterwards
    expect(await withHypervisor(platform, (c) => c.enclaveList())).toEqual([]);
  });

  it('QUOTE refuses a REPORT with a forged MAC or a body changed after EREPORT (REPORT_MAC_MISMATCH)', async () => {
    await withHypervisor(platform, async (c) => {
      const e = await createEnclave(c, loadManifest(manifest));
      try {
        await c.enclaveLaunch(e.id, 'none');
        const [res] = await c.enclaveRun(e.id, [{ fn: ECALL_QUOTE_REPORT, input: randomBytes(64), ...(e.plan.tcs[0] !== undefined ? { tcs: e.plan.tcs[0] } : {}) }]);
        expect(res?.ok, res?.error ?? '').toBe(true);
        const report = res!.output.subarray(0, 432);
        expect((await c.quote(report)).length).toBe(496);
        const forgedMac = Buffer.from(report);
        forgedMac[420]! ^= 0x01;
        await expect(c.quote(forgedMac)).rejects.toThrow(/REPORT_MAC_MISMATCH/);
        const changedBody = Buffer.from(report);
        changedBody[320]! ^= 0x01; // REPORTDATA
        await expect(c.quote(changedBody)).rejects.toThrow(/REPORT_MAC_MISMATCH/);
        const changedId = Buffer.from(report);
        changedId[64]! ^= 0x01; // MRENCLAVE
        await expect(c.quote(changedId)).rejects.toThrow(/REPORT_MAC_MISMATCH/);
      } finally {
        await c.enclaveDestroy(e.id);
      }
    });
  });
});
