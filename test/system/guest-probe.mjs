// Runs inside the system-tier guest (on the installed package): a demoted Linux that forges
// hypercall registers: REPORT and GET_KEY for a live enclave (refused: enclave-only leaves), the
// HAK public key (printed for judge.mjs), and ENCLAVE_CALL. The output page of an ECALL is a raw physical address in RCX; the
// hypervisor must refuse one inside its own memory or the EPC (HOST_ACCESS_DENIED), and still
// serve the same call with an honest page. Prints "@@HE:CHECK" lines for test/system/judge.mjs.
//   node guest-probe.mjs PACKAGE_DIR MANIFEST SPIN_MANIFEST RESERVED_BASE RESERVED_SIZE
const [pkg, manifestPath, spinManifestPath, baseArg, sizeArg] = process.argv.slice(2);
const base = BigInt(baseArg);
const size = BigInt(sizeArg);
const { HC, HE_BUF_ARG_MASK, decodeHeHypercall, encodeHeHypercall, statusName } = await import(`${pkg}/dist/src/hypervisor/abi.js`);
const { LinuxHypervisorClient, loadDeviceBridge } = await import(`${pkg}/dist/src/hypervisor/linux-client.js`);
const { loadManifest } = await import(`${pkg}/dist/src/enclave/manifest.js`);
const { createEnclave } = await import(`${pkg}/dist/src/enclave/lifecycle.js`);

const check = (name, ok, detail) => console.log(`@@HE:CHECK ${name} ${ok ? 'PASS' : 'FAIL'} ${detail}`);
const client = await LinuxHypervisorClient.open();
const io = await loadDeviceBridge();
const fd = io.open('/dev/hyperenclave', 'rw');
const tcsOf = (en) => en.plan.tcs[0];
/** ENCLAVE_CALL with raw registers; `staged`: RCX is a kernel page the driver stages (honest). */
const raw = (id, tcs, fn, page, r8 = 0n, staged = false) => {
  const arg = encodeHeHypercall(HC.ENCLAVE_CALL, [BigInt(id), tcs, BigInt(fn), staged ? 0n : page, r8], staged ? { pointer: 0n, length: 4096, arg: HE_BUF_ARG_MASK | 0b1000 } : undefined);
  const r = io.hypercall(fd, arg, staged ? Buffer.alloc(4096) : null);
  return statusName(Number(decodeHeHypercall(r).rax));
};

/** Any hypercall with raw registers; `bufMask` marks the arguments that are offsets into `page`. */
const rawCall = (nr, regs, bufMask = 0, page = undefined) => {
  const arg = encodeHeHypercall(nr, regs, page ? { pointer: 0n, length: page.length, arg: HE_BUF_ARG_MASK | bufMask } : undefined);
  const r = decodeHeHypercall(io.hypercall(fd, arg, page ?? null));
  return { status: statusName(Number(r.rax)), rdi: r.rdi };
};

const e = await createEnclave(client, loadManifest(manifestPath));
const tcs = tcsOf(e);
try {
  // The demoted host (root) asks for a live enclave's REPORT and SEAL key with raw hypercalls:
  // both leaves are served only to the enclave itself (ENCLAVE_ONLY), and nothing is written back.
  {
    const page = Buffer.alloc(4096);
    page.fill(0x5a, 512, 576); // REPORTDATA
    const rep = rawCall(HC.REPORT, [BigInt(e.id), 0n, 512n, 1024n], 0b1110, page); // RSI = TARGETINFO, RDX = REPORTDATA, RCX = out
    const repOut = page.subarray(1024, 1024 + 432);
    check('host-report-refused', rep.status === 'ENCLAVE_ONLY' && repOut.every((b) => b === 0),
      `REPORT (0x20) for enclave ${e.id} from the host: ${rep.status}; output page ${repOut.every((b) => b === 0) ? 'untouched' : 'WRITTEN'}`);
    const kpage = Buffer.alloc(4096);
    kpage.writeUInt16LE(4, 0); // KEYNAME = SEAL
    kpage.writeUInt16LE(1, 2); // KEYPOLICY = MRENCLAVE
    const key = rawCall(HC.GET_KEY, [BigInt(e.id), 0n, 512n], 0b0110, kpage); // RSI = KEYREQUEST, RDX = out
    const keyOut = kpage.subarray(512, 528);
    check('host-getkey-refused', key.status === 'ENCLAVE_ONLY' && keyOut.every((b) => b === 0),
      `GET_KEY (0x22, SEAL, MRENCLAVE policy) for enclave ${e.id} from the host: ${key.status}; output ${keyOut.every((b) => b === 0) ? 'untouched' : 'WRITTEN'}`);
    // The hypervisor's attestation key as it reports it (judge.mjs recomputes the HAK PCR from it).
    const hpage = Buffer.alloc(4096);
    const hak = rawCall(HC.HAK_PUBLIC, [0n], 0b0001, hpage);
    console.log(`@@HE:HAK ${hak.status} ${hpage.subarray(0, 32).toString('hex')} ${hak.rdi}`);
  }
  const results = [
    ['hypervisor image', base],
    ['EPC', base + size / 2n],
    ['misaligned', 0x1000_0010n],
  ].map(([what, page]) => [what, raw(e.id, tcs, 4, page)]);
  const refusedAll = results.every(([, st]) => st === 'HOST_ACCESS_DENIED' || st === 'INVALID_ARGUMENT');
  const honest = await client.enclaveRun(e.id, [{ fn: 0, tcs, input: Buffer.from('still served') }]);
  const served = honest[0]?.ok && honest[0].output.toString() === 'still served';
  check('ecall-buffer-checked', refusedAll && served, `${results.map(([w, st]) => `${w}: ${st}`).join(', ')}; the same ECALL with an honest page: ${served ? 'answered' : JSON.stringify(honest[0])}`);
} finally {
  await client.enclaveDestroy(e.id);
}

// A resume names its output page again: an interrupted spin resumed with the hypervisor's page.
const spin = await createEnclave(client, loadManifest(spinManifestPath));
const stcs = tcsOf(spin);
try {
  let first = raw(spin.id, stcs, 2, 0n, 0n, true);
  for (let i = 0; i < 50 && first !== 'ENCLAVE_INTERRUPTED'; i++) first = raw(spin.id, stcs, 2, 0n, 0n, true);
  const forged = raw(spin.id, stcs, 2, base);
  const aborted = raw(spin.id, stcs, 2, 0n, 0xffff_ffff_ffff_ffffn, true);
  check('ecall-resume-checked', first === 'ENCLAVE_INTERRUPTED' && forged === 'HOST_ACCESS_DENIED' && aborted === 'ENCLAVE_FAULT', `spin: ${first}; resume naming the hypervisor image: ${forged}; abort: ${aborted}`);
} finally {
  await client.enclaveDestroy(spin.id);
  io.close(fd);
  client.close();
}
