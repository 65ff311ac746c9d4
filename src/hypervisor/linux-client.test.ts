import { createHash, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeMrEnclave } from '../enclave/sgx.js';
import { createPublicKey } from 'node:crypto';
import { HC, HE_BUF_ARG_MASK, HE_HYPERCALL_BUF_MAX, HE_STATE, LAYOUT, STATUS_SIZE, encodeHeHypercall, encodeMemoryMap, readRecord, statusName, writeRecord } from './abi.js';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { addonUnavailable } from './addon.js';
import { buildSigstruct, newSigstructSigner } from './core-hypervisor.js';
import { loadPayload, payloadPage, type EnclavePayload } from './enclave-vm.js';
import { addonCore } from './addon-adapter.js';
import type { CoreHv } from './core-binding.js';
import { LinuxHypervisorClient, type DeviceBridge } from './linux-client.js';
import { skipUnless } from '../../test/helpers/require.js';

/**
 * The linux client's buffer hypercalls (ioctl ABI 1.1) against the real Rust core: the device
 * bridge below (in place of the addon's typed calls) does what hypervisor/driver/main.c does for HE_IOC_HYPERCALL (copy the caller's buffer
 * into one page, add the page's physical address to each argument marked in buf_arg, copy the
 * page back), so packing and relocation are checked against the core's own buffer checks. The
 * driver itself is exercised under QEMU by the system tier.
 */

const noAddon = addonUnavailable();
const noCore = skipUnless('linux client over the core', [
  ['addon', noAddon],
  ['swtpm', swtpmAvailable()],
  ['enclave-payloads', !noAddon && (() => {
    try {
      loadPayload('crypto');
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  })()],
]) ?? null;

const MB = 1n << 20n;
const RESERVED = 0x1_8000_0000n;
const PAGE_GPA = 0x30_0000n; // the driver's staging page (host RAM)

function driverBridge(core: CoreHv, driverAbi: number, seen: { bufArgs: number[] }): DeviceBridge {
  const page = Buffer.alloc(HE_HYPERCALL_BUF_MAX);
  const unexpected = (what: string) => () => {
    throw new Error(`unexpected ${what}`);
  };
  return {
    open: () => 3,
    close: () => undefined,
    version: () => writeRecord(LAYOUT.he_version, { ioctl_abi: driverAbi }, 'he_version'),
    load: unexpected('HE_IOC_LOAD'),
    enable: unexpected('HE_IOC_ENABLE'),
    disable: unexpected('HE_IOC_DISABLE'),
    status() {
      // the driver's status: state ENABLED plus the hypervisor's STATUS record
      const st = Buffer.alloc(4096);
      const r = core.hypercall(HC.STATUS, [PAGE_GPA, BigInt(STATUS_SIZE)], PAGE_GPA, st);
      if (r.status !== 0) throw new Error(`STATUS: ${statusName(r.status)}`);
      return writeRecord(
        LAYOUT.he_status,
        { ioctl_abi: driverAbi, state: HE_STATE.ENABLED, hv_status_len: BigInt(STATUS_SIZE), hv_status: st.subarray(0, STATUS_SIZE) },
        'he_status',
      );
    },
    hypercall(_fd, rec, staging) {
      // what hypervisor/driver/main.c does for HE_IOC_HYPERCALL (the addon points buf at `staging`)
      const h = readRecord(LAYOUT.he_hypercall, rec, 'he_hypercall');
      const args = [h.rdi, h.rsi, h.rdx, h.rcx, h.r8];
      seen.bufArgs.push(h.buf_arg);
      if (h.buf_len) {
        if (!staging || staging.length < h.buf_len) throw new Error('EFAULT: no user buffer');
        if (h.buf_len > HE_HYPERCALL_BUF_MAX) throw new Error('EINVAL: buf_len');
        if ((h.buf_arg & HE_BUF_ARG_MASK) === 0 || driverAbi < 0x0001_0001) throw new Error('EINVAL: buf_arg');
        page.fill(0);
        staging.copy(page, 0, 0, h.buf_len);
        for (let i = 0; i < 5; i++)
          if (h.buf_arg & (1 << i)) {
            if (args[i]! >= BigInt(h.buf_len)) throw new Error(`EINVAL: argument ${i + 1} offset outside the buffer`);
            args[i] = PAGE_GPA + args[i]!;
          }
      }
      const r = core.hypercall(Number(h.rax), args, PAGE_GPA, page);
      if (h.buf_len) page.copy(staging!, 0, 0, h.buf_len);
      return writeRecord(LAYOUT.he_hypercall, { ...h, rax: BigInt(r.status), rdi: r.rdi, rsi: r.rsi, rdx: r.rdx }, 'he_hypercall');
    },
  };
}

describe.skipIf(noCore !== null)('linux client: buffer hypercalls through the driver ABI 1.1 into the core', () => {
  let core: CoreHv;
  let tpm: SwtpmInstance;
  let client: LinuxHypervisorClient;
  let signer: KeyObject;
  let dir: string;
  const seen = { bufArgs: [] as number[] };

  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'unix' });
    dir = mkdtempSync(join(tmpdir(), 'he-linux-client-'));
    const device = join(dir, 'hyperenclave');
    writeFileSync(device, '');
    core = (await addonCore()).createHypervisor({
      base: RESERVED,
      total: 16n * MB,
      hypervisorSize: 4n * MB,
      imageSize: 1n * MB,
      paging: 'npt',
      tpm: { server: tpm.serverPath!, ctrl: tpm.ctrlPath! },
      imageDigest: createHash('sha256').update('image').digest(),
      keySlots: null,
      requireSignedSigstruct: true,
    });
    // HE_IOC_ENABLE: the driver hands the kernel's memory map to ENABLE (not a user hypercall).
    const map = encodeMemoryMap([
      { start: 0n, size: RESERVED, kind: 'ram' },
      { start: RESERVED, size: 16n * MB, kind: 'reserved' },
    ]);
    const scratch = Buffer.alloc(4096);
    map.copy(scratch);
    expect(core.hypercall(HC.ENABLE, [PAGE_GPA, 2n], PAGE_GPA, scratch).status).toBe(0);
    client = await LinuxHypervisorClient.open(device, driverBridge(core, 0x0001_0001, seen));
    signer = newSigstructSigner();
  });
  afterAll(async () => {
    client?.close();
    core?.close();
    await tpm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const mrenclaveOf = (p: EnclavePayload) =>
    computeMrEnclave(BigInt(p.layout.size), p.layout.ssaFrameSize, p.layout.pages.map((pg) => ({ offset: BigInt(pg.offset), flags: pg.secinfo, data: payloadPage(p, pg.offset) })));

  it('creates, measures and initializes an enclave; INFO; host REPORT/GET_KEY refused (ENCLAVE_ONLY); TRUST_INIT, HAK_PUBLIC, QUOTE', async () => {
    const p = loadPayload('crypto');
    const id = await client.enclaveCreate({ size: BigInt(p.layout.size), base: BigInt(p.layout.base), ssaFrameSize: p.layout.ssaFrameSize, attributes: 4n, xfrm: 3n });
    await client.enclaveAddPages(id, p.layout.pages.map((pg) => ({ offset: BigInt(pg.offset), data: payloadPage(p, pg.offset), flags: pg.secinfo, measure: true })));
    const mr = mrenclaveOf(p);
    await client.enclaveInit(id, buildSigstruct({ enclaveHash: mr, attributes: 4n, xfrm: 3n, attributeMask: 0xffff_ffff_ffff_fffdn, isvProdId: 1, isvSvn: 2 }, signer));
    const info = await client.enclaveInfo(id);
    expect(info.state).toBe('initialized');
    expect(info.mrenclave.toString('hex')).toBe(mr.toString('hex'));
    expect(info.epcPages).toBe(p.layout.pages.length + 1);

    const listed = await client.enclaveList();
    expect(listed.map((e) => [e.id, e.state, e.mrenclave])).toEqual([[id, 'initialized', mr.toString('hex')]]);
    expect((await client.status()).enclaves).toHaveLength(1);

    // the host's REPORT and GET_KEY (raw hypercalls with packed buffers): refused, named
    const raw = (nr: number, args: bigint[]) => {
      const buf = Buffer.alloc(2048);
      const h = encodeHeHypercall(nr, args, { pointer: 0n, length: buf.length, arg: HE_BUF_ARG_MASK | 0b1110 });
      const r = driverBridge(core, 0x0001_0002, seen).hypercall(3, h, buf);
      return statusName(Number(readRecord(LAYOUT.he_hypercall, r, 'he_hypercall').rax));
    };
    expect(raw(HC.REPORT, [BigInt(id), 0n, 512n, 1024n])).toBe('ENCLAVE_ONLY');
    expect(raw(HC.GET_KEY, [BigInt(id), 0n, 512n])).toBe('ENCLAVE_ONLY');
    expect(client).not.toHaveProperty('getKey');
    expect(client).not.toHaveProperty('report');

    // TRUST_INIT (blob in + 4 KiB out in one staging area), HAK_PUBLIC; QUOTE refuses a forged report
    await expect(client.hakPublic()).rejects.toThrow(/^HAK_PUBLIC: TRUST_NOT_ESTABLISHED/);
    const t = await client.trustInit();
    expect(t).toMatchObject({ created: true, pcrExtended: true, hakPcr: 13 });
    expect(t.blob!.subarray(0, 4).toString()).toBe('HER1');
    // once per enable: a second TRUST_INIT is refused (the blob and the output were relocated)
    await expect(client.trustInit(t.blob)).rejects.toThrow(/^TRUST_INIT: TRUST_SEAL_FAILED/);
    expect(seen.bufArgs.at(-1)).toBe(HE_BUF_ARG_MASK | 0b0101); // RDI (blob) and RDX (output)
    expect((await client.hakPublic()).key.equals(t.hakPublic)).toBe(true);
    await expect(client.quote(Buffer.alloc(432))).rejects.toThrow(/^QUOTE: REPORT_MAC_MISMATCH/);
    expect(createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), t.hakPublic]), format: 'der', type: 'spki' }).asymmetricKeyType).toBe('ed25519');
    expect(await client.enclaveDestroy(id)).toBe(p.layout.pages.length + 1);
  });

  it('core refusals come back as one line with the status name', async () => {
    const id = await client.enclaveCreate({ size: 0x4000n, base: 0x4000_0000n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n });
    await client.enclaveAdd(id, 0x1000n, Buffer.alloc(4096), 0x201);
    await expect(client.enclaveAdd(id, 0x1000n, Buffer.alloc(4096), 0x201)).rejects.toThrow(/^ENCLAVE_ADD: PAGE_OVERLAP/);
    await expect(client.enclaveAdd(id, 0x1000n, Buffer.alloc(100), 0x201)).rejects.toThrow('ENCLAVE_ADD: page of 100 bytes (must be 4096)');
    await expect(client.enclaveCreate({ size: 0x3000n, base: 0x4000_0000n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n })).rejects.toThrow(/^ENCLAVE_CREATE: SECS_INVALID/);
    expect(await client.enclaveDestroy(id)).toBe(2);
  });

  it('no memory-encryption launch on linux: SEV/CSV/MKTME have no hardware path (README platform table)', async () => {
    expect(() => client.enclaveLaunch()).toThrow('enclave launch: not available through /dev/hyperenclave (the bare-metal hypervisor does not run enclave VMs yet)');
  });

  it('a 1.0 driver is told apart: buffer calls refused with the fix, buffer-free calls still work', async () => {
    const device = join(dir, 'hyperenclave');
    const old = await LinuxHypervisorClient.open(device, driverBridge(core, 0x0001_0000, { bufArgs: [] }));
    await expect(old.enclaveCreate({ size: 0x4000n, base: 0x4000_0000n, ssaFrameSize: 1, attributes: 4n, xfrm: 3n })).rejects.toThrow(
      'ENCLAVE_CREATE: the driver speaks ioctl ABI 1.0, buffer hypercalls need 1.1 (load the current hyperenclave.ko)',
    );
    expect(await old.version()).toBe(0x0001_0001); // the core's hypercall ABI (1.1), through the old driver's buffer-free path
    old.close();
    await expect(LinuxHypervisorClient.open(device, driverBridge(core, 0x0002_0000, { bufArgs: [] }))).rejects.toThrow(/driver speaks ioctl ABI 2\.0, this tool 1\.\d/);
  });
});
