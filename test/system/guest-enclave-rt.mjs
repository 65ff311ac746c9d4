// Runs inside the system-tier guest (on the installed package) against the bare-metal image: the
// probe payload (hypervisor/enclaves/probe, 4 TCSs, EDMM opt-in) exercises what an enclave runtime
// needs beyond ECALLs, each next to the bad input that must be refused. Prints "@@HE:CHECK" lines
// for test/system/judge.mjs. Expected values are written here (the probe's documented outputs),
// never computed by the code under test.
//   node guest-enclave-rt.mjs PACKAGE_DIR PROBE_MANIFEST RESERVED_BASE RESERVED_SIZE
//   node guest-enclave-rt.mjs --ecall PACKAGE_DIR ID TCS FN ROUNDS   (child: one ECALL, input u64 ROUNDS, after "go" on stdin)
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const words = (b) => Array.from({ length: Math.floor(b.length / 8) }, (_, i) => b.readBigUInt64LE(i * 8));
const u64 = (...v) => {
  const b = Buffer.alloc(8 * v.length);
  v.forEach((x, i) => b.writeBigUInt64LE(BigInt(x), i * 8));
  return b;
};

if (process.argv[2] === '--ecall') {
  // one ECALL from its own process (its own CPU, by taskset): ready, wait for "go", call, report
  const [pkg, id, tcs, fn, rounds] = process.argv.slice(3);
  const { LinuxHypervisorClient } = await import(`${pkg}/dist/src/hypervisor/linux-client.js`);
  const client = await LinuxHypervisorClient.open();
  const rl = createInterface({ input: process.stdin });
  console.log('ready');
  await new Promise((r) => rl.once('line', r));
  const [res] = await client.enclaveRun(Number(id), [{ fn: Number(fn), tcs: BigInt(tcs), input: u64(rounds ?? 0) }]);
  const cpu = (await import('node:fs')).readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[36];
  console.log(JSON.stringify({ ok: res.ok, error: res.error, words: res.ok ? words(res.output).map(String) : [], cpu, micros: Math.round(res.micros) }));
  rl.close();
  client.close();
  process.exit(0);
}

const [pkg, manifestPath, baseArg, sizeArg] = process.argv.slice(2);
const base = BigInt(baseArg);
const size = BigInt(sizeArg);
const { HC, decodeHeHypercall, encodeHeHypercall, statusName } = await import(`${pkg}/dist/src/hypervisor/abi.js`);
const { LinuxHypervisorClient, loadDeviceBridge } = await import(`${pkg}/dist/src/hypervisor/linux-client.js`);
const { loadManifest } = await import(`${pkg}/dist/src/enclave/manifest.js`);
const { createEnclave } = await import(`${pkg}/dist/src/enclave/lifecycle.js`);

const check = (name, ok, detail) => console.log(`@@HE:CHECK ${name} ${ok ? 'PASS' : 'FAIL'} ${detail}`);
const client = await LinuxHypervisorClient.open();
const io = await loadDeviceBridge();
const fd = io.open('/dev/hyperenclave', 'rw');
const rawCall = (nr, regs) => {
  const r = decodeHeHypercall(io.hypercall(fd, encodeHeHypercall(nr, regs), null));
  return { status: statusName(Number(r.rax)), rdi: r.rdi };
};
/** A hypercall whose RCX is a staged page (`page`, read back after the call); no driver resume budget. */
const staged = (nr, regs, page = Buffer.alloc(4096)) => {
  const r = decodeHeHypercall(io.hypercall(fd, encodeHeHypercall(nr, regs, { pointer: 0n, length: 4096, arg: 0x100 | 0b1000 }), page));
  return { status: statusName(Number(r.rax)), rdi: r.rdi };
};
const manifest = loadManifest(manifestPath);
const show = (r) => (r ? (r.ok ? `[${words(r.output).map((w) => '0x' + w.toString(16)).join(' ')}]` : r.error) : 'no result');

const e = await createEnclave(client, manifest);
const tcs = e.plan.tcs;
try {
  // at most this many pause rounds waiting for the other thread (bounded: never a timed wait)
  const BARRIER_ROUNDS = 10_000_000;
  // ---- threads-concurrent: ECALL 8 (barrier) from two processes on CPUs 0 and 1 at once. The
  // enclave counts the threads inside (an atomic in enclave memory) and each returns only after
  // seeing two inside at the same time (bounded spin): [thread index, saw another inside, peak].
  const child = (cpu, t) => {
    const p = spawn('taskset', ['-c', String(cpu), process.execPath, new URL(import.meta.url).pathname, '--ecall', pkg, String(e.id), String(t), '8', String(BARRIER_ROUNDS)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: p.stdout });
    const got = [];
    const ready = new Promise((r) => lines.on('line', (l) => (l === 'ready' ? r() : got.push(l))));
    const done = new Promise((r) => p.on('exit', (code) => r({ code, out: got.join('\n') })));
    return { p, ready, done };
  };
  const a = child(0, tcs[0]);
  const b = child(1, tcs[1]);
  await Promise.all([a.ready, b.ready]);
  a.p.stdin.write('go\n');
  b.p.stdin.write('go\n');
  const [ra, rb] = await Promise.all([a.done, b.done]);
  const parse = (r) => {
    try {
      return JSON.parse(r.out);
    } catch {
      return { ok: false, error: `exit ${r.code}: ${r.out}`, words: [] };
    }
  };
  const [pa, pb] = [parse(ra), parse(rb)];
  const both = pa.ok && pb.ok && pa.words[1] === '1' && pb.words[1] === '1' && Number(pa.words[2]) >= 2 && Number(pb.words[2]) >= 2;
  const distinct = pa.words[0] !== pb.words[0];
  const cpus = pa.cpu !== pb.cpu;
  check('threads-concurrent', both && distinct && cpus,
    `barrier ECALL on TCS 0x${tcs[0].toString(16)} from cpu${pa.cpu}: thread ${pa.words[0]} saw another inside=${pa.words[1]} peak=${pa.words[2]} (${pa.micros} µs${pa.error ? ', ' + pa.error : ''}); on TCS 0x${tcs[1].toString(16)} from cpu${pb.cpu}: thread ${pb.words[0]} saw=${pb.words[1]} peak=${pb.words[2]} (${pb.micros} µs${pb.error ? ', ' + pb.error : ''})`);
  await client.enclaveRun(e.id, [{ fn: 9, tcs: tcs[0] }]); // barrier reset
  // the same TCS twice at once is refused: a thread parked in an OCALL holds its TCS
  {
    const page = Buffer.alloc(4096);
    page.write('abc');
    let first = staged(HC.ENCLAVE_CALL, [BigInt(e.id), tcs[2], 14n, 0n, 3n], page);
    let st = first.status;
    for (let i = 0; i < 50 && st === 'ENCLAVE_INTERRUPTED'; i++) st = staged(HC.ENCLAVE_CALL, [BigInt(e.id), tcs[2], 14n, 0n, 0n]).status;
    const busy = staged(HC.ENCLAVE_CALL, [BigInt(e.id), tcs[2], 0n, 0n, 0n]).status;
    const other = await client.enclaveRun(e.id, [{ fn: 0, tcs: tcs[3] }]);
    // answer the parked OCALL with a failure: the probe's ECALL 14 then returns error 0x107
    let ret = staged(HC.ENCLAVE_OCALL_RETURN, [BigInt(e.id), tcs[2], 0x8000_0007n, 0n]);
    for (let i = 0; i < 50 && ret.status === 'ENCLAVE_INTERRUPTED'; i++) ret = staged(HC.ENCLAVE_CALL, [BigInt(e.id), tcs[2], 14n, 0n, 0n]);
    const rs = ret.status;
    const rdi = ret.rdi;
    check('threads-tcs-busy-refused', st === 'ENCLAVE_OCALL' && busy === 'TCS_BUSY' && other[0]?.ok && words(other[0].output)[0] === 3n && rs === 'SUCCESS' && rdi === 0x8000_0107n,
      `TCS 2 parked in an OCALL (${st}); a second ECALL on it: ${busy}; TCS 3 meanwhile: thread ${other[0]?.ok ? words(other[0].output)[0] : other[0]?.error}; the OCALL answered with a failure: ${rs}, ECALL status 0x${rdi.toString(16)}`);
  }

  // ---- exception-handled: #UD and #DE inside the enclave go to its own handler (AEX into the SSA,
  // handler entry, ERESUME of the edited frame); execution continues after the faulting instruction.
  const [ud, de] = await client.enclaveRun(e.id, [{ fn: 1, tcs: tcs[0] }, { fn: 2, tcs: tcs[0] }]);
  const udw = ud?.ok ? words(ud.output) : [];
  const dew = de?.ok ? words(de.output) : [];
  check('exception-handled', udw[0] === 0x600dn && udw[1] === 1n && udw[2] === 6n && udw[3] === 1n && dew[0] === 0xdeden && dew[1] === 1n && dew[2] === 0n,
    `ud2: resumed after it with 0x${udw[0]?.toString(16)}, handler ran ${udw[1]} time(s) for vector ${udw[2]} at CSSA ${udw[3]} (${ud?.error ?? 'ok'}); div by 0: the handler set RAX 0x${dew[0]?.toString(16)}, vector ${dew[2]} (${de?.error ?? 'ok'})`);
  // a handler that forges its SSA frame (RIP outside ELRANGE): ERESUME refuses it, the thread ends
  let forged;
  try {
    forged = (await client.enclaveRun(e.id, [{ fn: 6, tcs: tcs[3] }]))[0];
  } catch (err) {
    forged = { ok: false, error: String(err.message) };
  }
  const after = await client.enclaveRun(e.id, [{ fn: 0, tcs: tcs[0] }]);
  check('ssa-forged-refused', !forged.ok && /SSA_INVALID/.test(forged.error ?? '') && after[0]?.ok,
    `handler set the saved RIP to 0x1000 and resumed: ${forged.error}; TCS 0 afterwards: ${after[0]?.ok ? 'still answers' : after[0]?.error}`);

  // ---- heap-grown: heap_grow(2) at run time (OCALL 0xFFFF_FF00 → ENCLAVE_AUGMENT by this client,
  // EACCEPT by the enclave), pages zeroed, written and summed: Σ 3i for i < 1024 = 1571328.
  const [h] = await client.enclaveRun(e.id, [{ fn: 4, tcs: tcs[0], input: u64(2) }]);
  const hw = h?.ok ? words(h.output) : [];
  const heapStart = BigInt(JSON.parse((await import('node:fs')).readFileSync(manifest.payload.layout, 'utf8')).heapOffset);
  // a write to a page still PENDING (augmented, not accepted) is a #PF the handler takes: it
  // EACCEPTs and the write is retried
  const [pend] = await client.enclaveRun(e.id, [{ fn: 3, tcs: tcs[0] }]);
  const pw = pend?.ok ? words(pend.output) : [];
  check('heap-grown', hw[1] === 1571328n && hw[0] >= heapStart && pw[0] === 0x5a5an && pw[1] === 1n && pw[2] === 14n && pw[3] === pw[4] + 8n,
    `heap_grow(2) gave pages at offset 0x${hw[0]?.toString(16)} (heap reserve from 0x${heapStart.toString(16)}), zeroed, sum ${hw[1]} (${h?.error ?? 'ok'}); a write to a PENDING page: #PF ${pw[2]} at 0x${pw[3]?.toString(16)} handled by EACCEPT, value read back 0x${pw[0]?.toString(16)} (${pend?.error ?? 'ok'})`);
  // EACCEPT of a page that is not pending/modified is PAGE_STATE (and the page stays writable: the
  // probe's write of 1 lands); after the host's RESTRICT to R the same EACCEPT succeeds, the page
  // reads 1 and a write is a #PF
  const [prep] = await client.enclaveRun(e.id, [{ fn: 10, tcs: tcs[0] }]);
  const p0 = prep?.ok ? words(prep.output)[0] : 0n;
  const [early] = await client.enclaveRun(e.id, [{ fn: 11, tcs: tcs[0], input: u64(p0) }]);
  const ew = early?.ok ? words(early.output) : [];
  const restricted = rawCall(HC.ENCLAVE_RESTRICT, [BigInt(e.id), p0, 1n, 1n]).status;
  const [late] = await client.enclaveRun(e.id, [{ fn: 11, tcs: tcs[0], input: u64(p0) }]);
  const lw = late?.ok ? words(late.output) : [];
  const augBad = rawCall(HC.ENCLAVE_AUGMENT, [BigInt(e.id), 0n, 1n]).status;
  check('eaccept-not-pending-refused', ew[0] === 42n && ew[2] === 0n && restricted === 'SUCCESS' && lw[0] === 0n && lw[1] === 1n && lw[2] === 1n && lw[3] === 14n && augBad === 'PAGE_OVERLAP',
    `EACCEPT(restricted R) of an accepted RW page at 0x${p0.toString(16)}: status ${ew[0]} (42 = PAGE_STATE), a write then faulted ${ew[2]} time(s); host RESTRICT to R: ${restricted}; the same EACCEPT now: ${lw[0]}, read 0x${lw[1]?.toString(16)}, the write faulted ${lw[2]} time(s) with vector ${lw[3]}; AUGMENT over the TCS page: ${augBad}`);
} finally {
  await client.enclaveDestroy(e.id);
}

// ---- shared regions: ENCLAVE_SHARED_ADD (before EINIT) refuses pages the host may not touch
{
  const id = await client.enclaveCreate({ size: 0x10000n, base: 0x4000_0000n, ssaFrameSize: 1, miscSelect: 0, attributes: 4n, xfrm: 3n });
  try {
    const hv = rawCall(HC.ENCLAVE_SHARED_ADD, [BigInt(id), base, 1n]).status;
    const epc = rawCall(HC.ENCLAVE_SHARED_ADD, [BigInt(id), base + size / 2n, 2n]).status;
    const straddle = rawCall(HC.ENCLAVE_SHARED_ADD, [BigInt(id), base - 0x1000n, 2n]).status;
    check('shared-region-checked', hv === 'HOST_ACCESS_DENIED' && epc === 'HOST_ACCESS_DENIED' && straddle === 'HOST_ACCESS_DENIED',
      `ENCLAVE_SHARED_ADD of the hypervisor image: ${hv}; of 2 EPC pages: ${epc}; of 2 pages straddling into the reservation: ${straddle}`);
  } finally {
    await client.enclaveDestroy(id);
  }
}
io.close(fd);
client.close();
