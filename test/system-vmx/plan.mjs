// Writes an enclave "load plan" for hectl's enclave-run (the Bochs VMX tier has no Node in the
// guest): the project's own enclave loader (dist/src/enclave: manifest, payload layout, page plan,
// MRENCLAVE, SIGSTRUCT signed with the manifest's key) computes everything the CLI's
// `enclave create` would send; hectl replays it through the ioctl ABI and checks that the
// hypervisor's MRENCLAVE after EINIT equals the one computed here.
//   node plan.mjs MANIFEST OUT
// Format (little-endian): "HEPLAN1\0" | SECS (64) | MRENCLAVE (32) | SIGSTRUCT (1808) |
// ntcs u32 | npages u32 | ntcs x TCS offset u64 | npages x { offset u64, secinfo flags u64,
// measure u64, data[4096] }
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { resolve } from 'node:path';

const root = resolve(new URL('../..', import.meta.url).pathname);
const [manifestFile, out] = process.argv.slice(2);
if (!manifestFile || !out) {
  console.error('usage: node plan.mjs MANIFEST OUT');
  process.exit(2);
}
const { loadManifest } = await import(`${root}/dist/src/enclave/manifest.js`);
const { loadPayload, planEnclave } = await import(`${root}/dist/src/enclave/layout.js`);
const { computeMrEnclave, buildSigstruct, loadSignerKey } = await import(`${root}/dist/src/enclave/sgx.js`);
const { encodeSecs } = await import(`${root}/dist/src/hypervisor/abi.js`);

const m = loadManifest(manifestFile);
const { image, layout } = loadPayload(m);
const plan = planEnclave(m, image, layout);
const key = loadSignerKey(readFileSync(m.signer.key), `${m.source}: /signer/key`);
const mrenclave = computeMrEnclave(plan.size, plan.ssaFrameSize, plan.pages);
const sigstruct = buildSigstruct(
  { date: m.signer.date, attributes: plan.attributes, xfrm: plan.xfrm, miscSelect: plan.miscSelect, enclaveHash: mrenclave, isvProdId: m.isvProdId, isvSvn: m.isvSvn },
  key,
);
const secs = encodeSecs({ size: plan.size, base: plan.base, ssaFrameSize: plan.ssaFrameSize, miscSelect: plan.miscSelect, attributes: plan.attributes, xfrm: plan.xfrm });
const head = Buffer.alloc(8 + 64 + 32 + sigstruct.length + 8);
let o = head.write('HEPLAN1\0', 0, 'latin1');
o += secs.copy(head, o);
o += mrenclave.copy(head, o);
o += sigstruct.copy(head, o);
head.writeUInt32LE(plan.tcs.length, o);
head.writeUInt32LE(plan.pages.length, o + 4);
const tcs = Buffer.alloc(8 * plan.tcs.length);
plan.tcs.forEach((t, i) => tcs.writeBigUInt64LE(BigInt(t), 8 * i));
const pages = plan.pages.map((p) => {
  const b = Buffer.alloc(24 + 4096);
  b.writeBigUInt64LE(BigInt(p.offset), 0);
  b.writeBigUInt64LE(BigInt(p.flags), 8);
  b.writeBigUInt64LE(p.measured === false ? 0n : 1n, 16);
  Buffer.from(p.data).copy(b, 24);
  return b;
});
writeFileSync(`${out}.tmp`, Buffer.concat([head, tcs, ...pages]));
renameSync(`${out}.tmp`, out);
console.log(`plan ${out}: ${plan.pages.length} pages, ${plan.tcs.length} TCS, MRENCLAVE ${mrenclave.toString('hex')}`);
