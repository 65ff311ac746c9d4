// Runs inside the system-tier guest (on the installed package): a demoted Linux that forges
// ENCLAVE_CALL registers. The output page of an ECALL is a raw physical address in RCX; the
// hypervisor must refuse one inside its own memory or the EPC (HOST_ACCESS_DENIED), and still
// serve the same call with an honest page. Prints "@@HE:CHECK" lines for test/system/judge.mjs.
//   node guest-probe.mjs PACKAGE_DIR MANIFEST RESERVED_BASE RESERVED_SIZE
const [pkg, manifestPath, baseArg, sizeArg] = process.argv.slice(2);
const base = BigInt(baseArg);
const size = BigInt(sizeArg);
const { HC, HE_IOC, decodeHeHypercall, encodeHeHypercall, statusName } = await import(`${pkg}/dist/src/hypervisor/abi.js`);
const { LinuxHypervisorClient, loadIoctlBridge } = await import(`${pkg}/dist/src/hypervisor/linux-client.js`);
const { loadManifest } = await import(`${pkg}/dist/src/enclave/manifest.js`);
const { createEnclave } = await import(`${pkg}/dist/src/enclave/lifecycle.js`);

const check = (name, ok, detail) => console.log(`@@HE:CHECK ${name} ${ok ? 'PASS' : 'FAIL'} ${detail}`);
const client = await LinuxHypervisorClient.open();
const io = await loadIoctlBridge();
const fd = io.open('/dev/hyperenclave', 'rw');
const e = await createEnclave(client, loadManifest(manifestPath));
const tcs = e.plan.pages.find((p) => ((p.flags >> 8) & 0xff) === 1).offset;
const raw = (page) => {
  const arg = encodeHeHypercall(HC.ENCLAVE_CALL, [BigInt(e.id), tcs, 4n, page, 0n]);
  io.ioctl(fd, HE_IOC.HYPERCALL, arg);
  return statusName(Number(decodeHeHypercall(arg).rax));
};
try {
  const results = [
    ['hypervisor image', base],
    ['EPC', base + size / 2n],
    ['misaligned', 0x1000_0010n],
  ].map(([what, page]) => [what, raw(page)]);
  const refusedAll = results.every(([, st]) => st === 'HOST_ACCESS_DENIED' || st === 'INVALID_ARGUMENT');
  const honest = await client.enclaveRun(e.id, [{ fn: 0, tcs, input: Buffer.from('still served') }]);
  const served = honest[0]?.ok && honest[0].output.toString() === 'still served';
  check('ecall-buffer-checked', refusedAll && served, `${results.map(([w, st]) => `${w}: ${st}`).join(', ')}; the same ECALL with an honest page: ${served ? 'answered' : JSON.stringify(honest[0])}`);
} finally {
  await client.enclaveDestroy(e.id);
  io.close(fd);
  client.close();
}
