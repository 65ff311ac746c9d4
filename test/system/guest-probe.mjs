// Runs inside the system-tier guest (on the installed package): a demoted Linux that forges
// hypercall registers: REPORT and GET_KEY for a live enclave (refused: enclave-only leaves), the
// HAK public key (printed for judge.mjs), and ENCLAVE_CALL. The output page of an ECALL is a raw physical address in RCX; the
// hypervisor must refuse one inside its own memory or the EPC (HOST_ACCESS_DENIED), and still
// serve the same call with an honest page. Prints "@@HE:CHECK" lines for test/system/judge.mjs.
//   node guest-probe.mjs PACKAGE_DIR MANIFEST SPIN_MANIFEST RESERVED_BASE RESERVED_SIZE
const [pkg, manifestPath, spinManifestPath, baseArg, sizeArg] = process.argv.slice(2);
const base = BigInt(baseArg);
const size = BigInt(sizeArg);
const { HC, HE_BUF_ARG_MASK, HE_RESUME_BUDGET_SHIFT, decodeHeHypercall, encodeHeHypercall, statusName } = await import(`${pkg}/dist/src/hypervisor/abi.js`);
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
}

// ioctl ABI 1.4: the driver resumes an interrupted ECALL itself within the budget in buf_arg
// bits 31:16 (one ioctl, R8 out = resumes it made); a budget on any other call is refused.
{
  const sp = await createEnclave(client, loadManifest(spinManifestPath));
  const t = tcsOf(sp);
  try {
    const budgeted = (nr, regs, ms) => {
      const arg = encodeHeHypercall(nr, regs, { pointer: 0n, length: 4096, arg: (HE_BUF_ARG_MASK | 0b1000 | (ms << HE_RESUME_BUDGET_SHIFT)) >>> 0 });
      return decodeHeHypercall(io.hypercall(fd, arg, Buffer.alloc(4096)));
    };
    const r = budgeted(HC.ENCLAVE_CALL, [BigInt(sp.id), t, 2n, 0n, 0n], 300);
    let refused;
    try {
      budgeted(HC.VERSION, [0n, 0n, 0n, 0n, 0n], 300);
      refused = 'accepted';
    } catch (err) {
      refused = /EINVAL|Invalid argument/.test(String(err.message)) ? 'EINVAL' : String(err.message);
    }
    const aborted = raw(sp.id, t, 2, 0n, 0xffff_ffff_ffff_ffffn, true);
    check('driver-resume-loop', statusName(Number(r.rax)) === 'ENCLAVE_INTERRUPTED' && r.r8 >= 1n && refused === 'EINVAL' && aborted === 'ENCLAVE_FAULT',
      `a spinning ECALL with a 300 ms budget: one ioctl returned ${statusName(Number(r.rax))} after ${r.r8} resumes inside the driver; VERSION with a budget: ${refused}; abort: ${aborted}`);
  } finally {
    await client.enclaveDestroy(sp.id);
  }
}

// OCALLs on the bare-metal path (misbehave ECALL 10: input = u32 LE OCALL index + the OCALL's
// input; output = the host's answer). Expected values are written here, not computed by the CLI.
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
/** ENCLAVE_CALL / ENCLAVE_OCALL_RETURN with a staged page holding `data`; no driver resume budget. */
const rawPage = (nr, regs, data = Buffer.alloc(0)) => {
  const page = Buffer.alloc(4096);
  data.copy(page);
  const arg = encodeHeHypercall(nr, regs, { pointer: 0n, length: 4096, arg: HE_BUF_ARG_MASK | 0b1000 });
  const r = decodeHeHypercall(io.hypercall(fd, arg, page));
  return { status: statusName(Number(r.rax)), rdi: r.rdi, rsi: r.rsi, page };
};
const oc = await createEnclave(client, loadManifest(spinManifestPath));
const otcs = tcsOf(oc);
try {
  const msg = Buffer.from('ocall from inside the enclave');
  const seen = [];
  const ocalls = { 5: (b) => { seen.push(Buffer.from(b)); return Buffer.concat([Buffer.from('host:'), Buffer.from(b).reverse()]); } };
  const [r] = await client.enclaveRun(oc.id, [{ fn: 10, tcs: otcs, input: Buffer.concat([u32(5), msg]) }], { ocalls });
  const want = 'host:evalcne eht edisni morf llaco';
  const good = r?.ok && r.output.toString() === want && seen.length === 1 && seen[0].equals(msg) && r.ocalls === 1;
  check('ocall-bare-metal', good, `ECALL 10 made OCALL 5 with ${seen[0]?.length ?? 0} bytes ("${seen[0]?.toString() ?? ''}"), the host answered, the enclave returned "${r?.output.toString() ?? ''}" (${r?.ocalls ?? 0} OCALL, ${r?.micros?.toFixed(0)} µs${r?.error ? `, ${r.error}` : ''})`);
  const [bad] = await client.enclaveRun(oc.id, [{ fn: 10, tcs: otcs, input: Buffer.concat([u32(99), Buffer.from('x')]) }], { ocalls });
  check('ocall-bad-index-refused', bad && !bad.ok && bad.ret === 0x8000_0007n && seen.length === 1,
    `OCALL 99 (not in the table): the enclave got error 7 and its ECALL returned 0x${bad?.ret?.toString(16)}; handler calls ${seen.length}`);
  // raw registers: the thread parks in its OCALL; a nested ECALL into that TCS, an oversize answer
  // and an answer page in the hypervisor's memory are refused; an honest answer resumes it
  let first = rawPage(HC.ENCLAVE_CALL, [BigInt(oc.id), otcs, 10n, 0n, 7n], Buffer.concat([u32(6), Buffer.from('abc')]));
  for (let i = 0; i < 50 && first.status === 'ENCLAVE_INTERRUPTED'; i++) first = rawPage(HC.ENCLAVE_CALL, [BigInt(oc.id), otcs, 10n, 0n, 0n]);
  const parked = first.status === 'ENCLAVE_OCALL' && first.rdi === 6n && first.rsi === 3n && first.page.subarray(0, 3).toString() === 'abc';
  const nested = rawPage(HC.ENCLAVE_CALL, [BigInt(oc.id), otcs, 0n, 0n, 0n]).status;
  const oversize = rawPage(HC.ENCLAVE_OCALL_RETURN, [BigInt(oc.id), otcs, 5000n, 0n], Buffer.from('xyz')).status;
  const argR = encodeHeHypercall(HC.ENCLAVE_OCALL_RETURN, [BigInt(oc.id), otcs, 3n, base]);
  const forgedPage = statusName(Number(decodeHeHypercall(io.hypercall(fd, argR, null)).rax));
  let ret = rawPage(HC.ENCLAVE_OCALL_RETURN, [BigInt(oc.id), otcs, 3n, 0n], Buffer.from('xyz'));
  for (let i = 0; i < 50 && ret.status === 'ENCLAVE_INTERRUPTED'; i++) ret = rawPage(HC.ENCLAVE_CALL, [BigInt(oc.id), otcs, 10n, 0n, 0n]);
  const resumed = ret.status === 'SUCCESS' && ret.rdi === 3n && ret.page.subarray(0, 3).toString() === 'xyz';
  const stray = rawPage(HC.ENCLAVE_OCALL_RETURN, [BigInt(oc.id), otcs, 0n, 0n]).status;
  check('ocall-return-checked', parked && nested === 'TCS_BUSY' && oversize === 'INVALID_ARGUMENT' && forgedPage === 'HOST_ACCESS_DENIED' && resumed && stray === 'TCS_NOT_ENTERED',
    `ECALL 10: ${first.status} (index ${first.rdi}, ${first.rsi} bytes "${first.page.subarray(0, Number(first.rsi < 64n ? first.rsi : 0n)).toString()}"); nested ECALL into that TCS: ${nested}; answer of 5000 bytes: ${oversize}; answer page in the hypervisor image: ${forgedPage}; honest answer: ${ret.status} with ${ret.rdi} bytes "${ret.page.subarray(0, 3).toString()}"; OCALL_RETURN with no OCALL pending: ${stray}`);
} catch (err) {
  console.log(`@@HE:INFO probe OCALL checks stopped: ${err.stack ?? err}`);
} finally {
  // a thread left parked in an OCALL would keep the enclave (and DISABLE) busy: end it first
  rawPage(HC.ENCLAVE_OCALL_RETURN, [BigInt(oc.id), otcs, 0xffff_ffff_ffff_ffffn, 0n]);
  await client.enclaveDestroy(oc.id);
  io.close(fd);
  client.close();
}
