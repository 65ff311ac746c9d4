import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliMissing, repoRoot, runCli } from '../helpers/cli.js';
import { swtpmAvailable } from '../../src/platform/emulated/swtpm.js';
import { runtimeLogPath } from '../../src/platform/logs.js';
import { emulatedTpmRecord } from '../../src/platform/emulated/tpm-daemon.js';
import { serviceRecord } from '../../src/platform/emulated/service-process.js';
import { RpcClient } from '../../src/platform/emulated/rpc.js';
import { EmulatedHypervisorClient } from '../../src/hypervisor/emulated-client.js';
import { ECALL_QUOTE_REPORT, encodeKeyRequest, encodeTargetInfo, KEYNAME, parseReport } from '../../src/hypervisor/abi.js';
import { createEnclave } from '../../src/enclave/lifecycle.js';
import { loadManifest } from '../../src/enclave/manifest.js';
import { parseEventLog } from '../../src/eventlog/index.js';
import { archForCpuVendor } from '../../src/measure/container.js';
import { readCpuFacts } from '../../src/platform/cpu.js';

/** The image's arch must be this CPU's (boot refuses another). */
const ARCH = archForCpuVendor(readCpuFacts().vendor) ?? 'intel-vmx';

/**
 * The hypervisor's root of trust on the emulated platform, end to end with the built CLI and the
 * service's Rust core over the emulated swtpm: boot creates and seals the root, the HAK event is
 * in PCR 13 (read by tpm2_pcrread) and in the runtime log, an enclave's quote-report ECALL
 * becomes a HAK-signed quote that Node's crypto verifies, the host's REPORT/GET_KEY are refused;
 * a service restart unseals the same root (sealed data opens again), a reboot with another image
 * does not.
 */

const addon = join(repoRoot, 'hypervisor', 'addon', 'hyperenclave-addon.node');
const sealer = join(repoRoot, 'hypervisor', 'enclaves', 'out', 'sealer.bin');
const missing =
  cliMissing() ??
  swtpmAvailable({ ek: true }) ??
  (existsSync(addon) ? undefined : `${addon} not built (make build)`) ??
  (existsSync(sealer) ? undefined : `${sealer} not built (make build)`) ??
  (existsSync('/dev/kvm') ? undefined : '/dev/kvm absent: enclaves cannot run');
if (missing) console.warn(`skipping trust tests: ${missing}`);

const SEAL = 0;
const UNSEAL = 1;
const REPORT = 2;

describe.skipIf(!!missing)('root of trust on the emulated platform (CLI boot + service core + swtpm)', () => {
  const state = mkdtempSync(join(tmpdir(), 'he-trust-'));
  const run = (...a: string[]) => runCli(['--platform', 'emulated', '--state-dir', state, ...a], { timeoutMs: 120_000 });
  const manifest = loadManifest(join(repoRoot, 'test', 'fixtures', 'enclave', 'sealer.manifest.json'));
  const imgA = join(state, 'hv-a.img');
  const imgB = join(state, 'hv-b.img');
  const blobPath = join(state, 'trust-root.blob');
  let sealed: Buffer;
  let hak: Buffer;
  afterAll(async () => {
    await run('emulator', 'stop');
    rmSync(state, { recursive: true, force: true });
  });

  const withClient = async <T>(fn: (c: EmulatedHypervisorClient) => Promise<T>): Promise<T> => {
    const c = await EmulatedHypervisorClient.connect(state, { start: false });
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  };
  const sealerCall = (c: EmulatedHypervisorClient, fn: number, input: Buffer) =>
    withEnclave(c, async (id) => {
      const [r] = await c.enclaveRun(id, [{ fn, input }]);
      return r!;
    });
  const withEnclave = async <T>(c: EmulatedHypervisorClient, fn: (id: number) => Promise<T>): Promise<T> => {
    const e = await createEnclave(c, manifest);
    try {
      return await fn(e.id);
    } finally {
      await c.enclaveDestroy(e.id);
    }
  };

  it('boot creates and seals the root; the HAK event is in PCR 13 and in the runtime log', async () => {
    expect((await run('firmware', 'build', addon, '-o', imgA, '--arch', ARCH, '--raw', '--entry', '0')).code).toBe(0);
    const b = await run('boot', '--image', imgA, '--json');
    expect(b.code, b.stderr).toBe(0);
    const st = b.json!.state as { steps: { name: string; status: string }[]; trust: { created: boolean; hakPublic: string; hakPcr: number; logged: boolean } };
    expect(st.steps.map((s) => `${s.name}:${s.status}`)).toContain('trust:done');
    expect(st.trust).toMatchObject({ created: true, hakPcr: 13, logged: true });
    expect(readFileSync(blobPath).subarray(0, 4).toString()).toBe('HER1');
    hak = Buffer.from(st.trust.hakPublic, 'hex');
    expect(hak).toHaveLength(32);
    // PCR 13 by tpm2-tools = extend(0, SHA-256("hyperenclave-hak:ed25519:" ‖ hex))
    const event = Buffer.from(`hyperenclave-hak:ed25519:${hak.toString('hex')}`);
    const out = join(state, 'pcr13.bin');
    execFileSync('tpm2_pcrread', ['-T', emulatedTpmRecord(state)!.tcti, '-o', out, 'sha256:13']);
    expect(readFileSync(out).toString('hex')).toBe(createHash('sha256').update(Buffer.alloc(32)).update(createHash('sha256').update(event).digest()).digest('hex'));
    const log = parseEventLog(readFileSync(runtimeLogPath(state)));
    const hakEvents = log.events.filter((e) => e.pcr === 13);
    expect(hakEvents.map((e) => [e.type, e.data.toString()])).toEqual([[0x11, event.toString()]]);
    const status = await run('status', '--json');
    expect((status.json!.hv as { trustEstablished: boolean }).trustEstablished).toBe(true);
    // the runtime log replays to the TPM's PCRs (12 and 13 included)
    const replay = await run('eventlog', 'replay', '--compare', '--json');
    expect(replay.code, replay.stdout + replay.stderr).toBe(0);
  });

  it('enclave quote-report → QUOTE: Node verifies the HAK signature; the host gets no REPORT or GET_KEY', async () => {
    const reportData = randomBytes(64);
    const quote = await withClient(async (c) => {
      expect((await c.hakPublic()).key.equals(hak)).toBe(true);
      const r = await sealerCall(c, ECALL_QUOTE_REPORT, reportData);
      expect(r.ok, r.error ?? '').toBe(true);
      return c.quote(r.output);
    });
    expect(quote.subarray(0, 4).toString()).toBe('HEQ1');
    expect(quote.subarray(400, 432).equals(hak)).toBe(true);
    const body = parseReport(Buffer.concat([quote.subarray(16, 400), Buffer.alloc(48)]));
    expect(body.reportData.equals(reportData)).toBe(true);
    const key = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), hak]), format: 'der', type: 'spki' });
    expect(verify(null, quote.subarray(0, 432), key, quote.subarray(432))).toBe(true);
    // host REPORT / GET_KEY through the service: the core refuses them (ENCLAVE_ONLY)
    await withClient((c) =>
      withEnclave(c, async (id) => {
        const rpc = await RpcClient.connect(serviceRecord(state)!.socket);
        try {
          await expect(rpc.call('getKey', { id, keyRequest: encodeKeyRequest({ keyName: KEYNAME.SEAL, keyPolicy: 1 }).toString('hex') })).rejects.toThrow(/GET_KEY: ENCLAVE_ONLY/);
          await expect(rpc.call('report', { id, targetinfo: encodeTargetInfo({ mrenclave: Buffer.alloc(32) }).toString('hex'), reportData: '00'.repeat(64) })).rejects.toThrow(/REPORT: ENCLAVE_ONLY/);
        } finally {
          rpc.close();
        }
        // the enclave itself still gets its report (EREPORT from inside)
        const [r] = await c.enclaveRun(id, [{ fn: REPORT, input: Buffer.concat([reportData, encodeTargetInfo({ mrenclave: Buffer.alloc(32) })]) }]);
        expect(r!.ok).toBe(true);
      }),
    );
  });

  it('data sealed before a service restart unseals after it (same TPM, the root from its blob)', async () => {
    const r = await withClient((c) => sealerCall(c, SEAL, Buffer.from('sealed before the restart')));
    expect(r.ok).toBe(true);
    sealed = r.output;
    expect((await run('emulator', 'status', '--json')).json!.running).toBe(true);
    // stop only the hypervisor service (the TPM keeps its PCRs), then boot again; meanwhile the
    // runtime log lost its HAK event (as after a crash between the extension and the log)
    await EmulatedHypervisorClient.stop(state);
    const logFile = runtimeLogPath(state);
    const before = parseEventLog(readFileSync(logFile));
    const hakEvent = before.events.find((e) => e.pcr === 13)!;
    writeFileSync(logFile, readFileSync(logFile).subarray(0, hakEvent.offset));
    expect(parseEventLog(readFileSync(logFile)).events.some((e) => e.pcr === 13)).toBe(false);
    const b = await run('boot', '--image', imgA, '--json');
    expect(b.code, b.stderr).toBe(0);
    const st = b.json!.state as { trust: { created: boolean; hakPublic: string; logged: boolean } };
    // the same root, PCR 13 not extended again, the missing event logged once more
    expect(st.trust).toMatchObject({ created: false, hakPublic: hak.toString('hex'), logged: true });
    expect(parseEventLog(readFileSync(logFile)).events.filter((e) => e.pcr === 13)).toHaveLength(1);
    expect((await run('eventlog', 'replay', '--compare', '--json')).code).toBe(0);
    const opened = await withClient((c) => sealerCall(c, UNSEAL, sealed));
    expect(opened.ok, opened.error ?? '').toBe(true);
    expect(opened.output.toString()).toBe('sealed before the restart');
  });

  it('a reboot with another image (one byte changed) does not unseal the root; the same image after a reboot does', async () => {
    const raw = readFileSync(addon);
    const other = join(state, 'hv-b.bin');
    const changed = Buffer.from(raw);
    changed[changed.length - 1]! ^= 1;
    writeFileSync(other, changed);
    expect((await run('firmware', 'build', other, '-o', imgB, '--arch', ARCH, '--raw', '--entry', '0')).code).toBe(0);
    expect((await run('emulator', 'stop')).code).toBe(0); // power-off: PCRs reset
    const before = readFileSync(blobPath);
    const b = await run('boot', '--image', imgB, '--json');
    expect(b.code).not.toBe(0);
    expect(b.stderr).toContain(`sealed root ${blobPath} does not unseal`);
    expect(b.stderr).toMatch(/TRUST_SEAL_FAILED/);
    expect(readFileSync(blobPath).equals(before)).toBe(true); // never replaced
    // the same stack after another reboot: the root unseals, the sealed data opens
    expect((await run('emulator', 'stop')).code).toBe(0);
    const ok = await run('boot', '--image', imgA, '--json');
    expect(ok.code, ok.stderr).toBe(0);
    expect((ok.json!.state as { trust: { created: boolean; hakPublic: string } }).trust).toMatchObject({ created: false, hakPublic: hak.toString('hex') });
    const opened = await withClient((c) => sealerCall(c, UNSEAL, sealed));
    expect(opened.output.toString()).toBe('sealed before the restart');
  });
});
