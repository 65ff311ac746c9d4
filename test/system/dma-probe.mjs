// Runs inside the system-tier guest right after `hyperenclave boot` (before any other enclave, so
// the hypervisor hands out EPC pages from the start of the EPC): the demoted Linux, as root, points
// QEMU's edu device (a bus master it fully controls, driven by /bin/edu-dma) at ordinary RAM, at
// the hypervisor image and at a live enclave's EPC pages. Prints "@@HE:CHECK" lines for judge.mjs:
//   iommu-enabled    STATUS (driver ioctl and `hectl status`) says the hypervisor owns the IOMMU
//   dma-allowed      RAM -> device -> RAM round trip is exact while protected
//   dma-blocked-hv   reads of the hypervisor image and of every page of a live enclave never
//                    bring their bytes in; each is a fault the hypervisor counts in STATUS
//   dma-write-blocked  writes of zeros over every page of that enclave change nothing the enclave
//                    computes with: its ECALLs answer the same afterwards (SHA-256 test vector)
//   net-after-iommu  the verifier on the host answers over e1000 (its rings are DMA)
//   node dma-probe.mjs PACKAGE_DIR MANIFEST RESERVED_BASE IMAGE_CONTAINER VERIFIER_URL
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const [pkg, manifestPath, baseArg, imageFile, verifierUrl] = process.argv.slice(2);
const base = BigInt(baseArg);
const { LinuxHypervisorClient } = await import(`${pkg}/dist/src/hypervisor/linux-client.js`);
const { loadManifest } = await import(`${pkg}/dist/src/enclave/manifest.js`);
const { createEnclave } = await import(`${pkg}/dist/src/enclave/lifecycle.js`);
const { HEIMG } = await import(`${pkg}/dist/src/measure/image-abi.generated.js`);

const check = (name, ok, detail) => console.log(`@@HE:CHECK ${name} ${ok ? 'PASS' : 'FAIL'} ${detail}`);
const edu = (...args) => execFileSync('/bin/edu-dma', args, { encoding: 'utf8' }).trim();
const hex = (v) => '0x' + v.toString(16);
const blocked = (h) => /^(00)+$/.test(h) || /^(a5)+$/.test(h); // zeros (aborted read) or the marker
const client = await LinuxHypervisorClient.open();
const hv = async () => (await client.status()).hv;

// ---- iommu-enabled ----
const s0 = await hv();
const hectl = execFileSync('/bin/hectl', ['status'], { encoding: 'utf8' }).trim();
check('iommu-enabled', !!s0 && s0.enabled && s0.dma.protected && s0.dma.iommuBase !== 0n && / dma=on /.test(hectl),
  s0 ? `STATUS: DMA protection ${s0.dma.protected ? 'on' : 'OFF'}, IOMMU at ${hex(s0.dma.iommuBase)}, ${s0.dma.faults} faults; hectl: ${hectl.replace(/.* (dma=\S+ dma\.faults=\S+ iommu=\S+).*/, '$1')}` : 'no hypervisor STATUS (not enabled)');

// ---- dma-allowed ----
let self = '';
try {
  self = edu('selftest');
} catch (e) {
  self = `edu-dma failed: ${e.stderr || e.message}`;
}
const s1 = await hv();
check('dma-allowed', self.startsWith('ok 4096 bytes') && s1.dma.faults === s0.dma.faults,
  `${self}; DMA faults ${s0.dma.faults} -> ${s1.dma.faults} (none expected)`);

// ---- dma-blocked-hv and dma-write-blocked ----
const img = readFileSync(imageFile);
const imageHead = img.subarray(HEIMG.HEADER_SIZE, HEIMG.HEADER_SIZE + 64).toString('hex'); // the image follows the HEIMG header and loads at the reservation base
const e = await createEnclave(client, loadManifest(manifestPath));
const tcs = e.plan.tcs[0];
try {
  const st = await hv();
  const epcBase = st.reservedBase + st.hypervisorBytes;
  const pages = st.epcPagesUsed; // this enclave's pages only (nothing else is alive), handed out from the EPC's start
  const sha = async () => {
    const r = await client.enclaveRun(e.id, [{ fn: 2, tcs, input: Buffer.from('abc') }, { fn: 0, tcs, input: Buffer.from('still here') }]);
    return r.map((x, i) => (x.ok ? x.output.toString(i === 1 ? 'utf8' : 'hex') : `ERROR ${x.error ?? JSON.stringify(x)}`)).join(' ');
  };
  const want = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad still here'; // FIPS 180-2 SHA-256("abc")
  const before = await sha();

  // STATUS after every DMA: the hypervisor drains the IOMMU's faults at each hypercall (under
  // QEMU 7.2, whose IOMMU logs no events, it can tell at most one fault per hypercall)
  const f0 = (await hv()).dma.faults;
  const hvRead = edu('read', hex(base), '64');
  const fHv = (await hv()).dma.faults;
  const epcReads = [];
  for (let k = 0n; k < BigInt(pages); k++) {
    epcReads.push(edu('read', hex(epcBase + k * 4096n), '64'));
    await hv();
  }
  const f1 = (await hv()).dma.faults;
  const leaked = epcReads.filter((h) => !blocked(h)).length;
  check('dma-blocked-hv',
    hvRead !== imageHead && blocked(hvRead) && leaked === 0 && pages > 0 && fHv - f0 >= 1 && f1 - fHv >= pages,
    `hypervisor image at ${hex(base)}: device got ${hvRead.slice(0, 16)}… (the image there starts ${imageHead.slice(0, 16)}…), DMA faults ${f0} -> ${fHv}; ${pages} EPC pages of enclave ${e.id} from ${hex(epcBase)}: ${leaked} read(s) brought data in; DMA faults ${f0} -> ${f1} (${1 + pages} reads aimed at protected memory)`);

  for (let k = 0n; k < BigInt(pages); k++) {
    edu('write', hex(epcBase + k * 4096n), '4096', '0');
    await hv();
  }
  const f2 = (await hv()).dma.faults;
  const after = await sha();
  check('dma-write-blocked', before === want && after === want && f2 - f1 >= pages,
    `${pages} DMA writes of 4096 zero bytes over enclave ${e.id}'s EPC pages: the enclave's ECALLs (SHA-256 "abc", echo) gave "${before.slice(0, 16)}…" before and "${after.slice(0, 16)}…${after.slice(-10)}" after; DMA faults ${f1} -> ${f2}`);
} finally {
  await client.enclaveDestroy(e.id);
}

// ---- net-after-iommu ----
try {
  const r = await fetch(verifierUrl + '/', { signal: AbortSignal.timeout(60_000) });
  check('net-after-iommu', true, `GET ${verifierUrl}/ over e1000 with the IOMMU translating: HTTP ${r.status} from the verifier on the host`);
} catch (err) {
  check('net-after-iommu', false, `GET ${verifierUrl}/ failed: ${err.message}`);
}
client.close();
