#!/usr/bin/env node
// Reads the serial console of a system-tier boot (test/system/init.sh writes "@@HE:" lines),
// replays the exported SeaBIOS event log with tpm2_eventlog (an independent peer) against the PCRs
// the guest read from its TPM, checks the hypervisor measurement, prints a summary and exits
// 0 (all checks passed) or 1.
// The guest's CLI runs (@@HE:CLI lines and cli-NAME blobs) are checked here: exit codes, --json
// documents against schemas/, boot idempotence, the remote verifier's verdict, and the exported
// evidence verified again outside the guest with `hyperenclave verify` against firmware-tools'
// reference values.
// Every check named in test/system/expected-checks.txt (or --expected FILE) must report: one that
// did not (a crashed probe, a guest that died early) is a failure, and so is a passing check the
// list does not name. --partial 1 (run.sh --no-image) lists the unreported ones as NOT RUN instead.
//   judge.mjs CONSOLE OUTDIR --timed-out 0|1 --pcr N [--image CONTAINER] [--verifier-dir DIR]
//             [--expected FILE] [--partial 0|1]
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, renameSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

const [consolePath, outDir, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
const pcrIndex = Number(opt.pcr ?? 12);
mkdirSync(outDir, { recursive: true });

const writeAtomic = (path, data) => {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, data);
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
};

const lines = readFileSync(consolePath, 'utf8').split('\n');
const checks = []; // { name, ok, detail, source }
const pcrs = {}; // tag -> bank -> index -> hex
const blobs = {};
const clis = {}; // name -> { rc, secs, args }
const stderrs = {};
const trustLines = {}; // tag -> hectl trust-init output
let hakLine = null; // { status, key (hex), pcr }
let booted = null;
let done = false;
let inBlob = null;
let afterDone = [];
for (const line of lines) {
  if (done) afterDone.push(line);
  const at = line.indexOf('@@HE:');
  if (inBlob) {
    if (at >= 0 && line.slice(at).startsWith(`@@HE:B64 END ${inBlob.name}`)) {
      blobs[inBlob.name] = Buffer.from(inBlob.parts.join(''), 'base64');
      inBlob = null;
      continue;
    }
    // The hypervisor writes to the same serial port ("[hv] …"): only base64 lines belong to the blob.
    if (/^[A-Za-z0-9+/=]+$/.test(line.trim())) {
      inBlob.parts.push(line.trim());
      continue;
    }
  }
  if (at < 0) continue;
  const m = line.slice(at + 5);
  const [kind, ...f] = m.split(' ');
  if (kind === 'BOOTED') booted = f.join(' ');
  else if (kind === 'DONE') done = true;
  else if (kind === 'CHECK') checks.push({ name: f[0], ok: f[1] === 'PASS', detail: f.slice(2).join(' '), source: 'guest' });
  else if (kind === 'B64' && f[0] === 'BEGIN') inBlob = { name: f[1], parts: [] };
  else if (kind === 'PCR') ((pcrs[f[0]] ??= {})[f[1]] ??= {})[f[2]] = f[3].toLowerCase();
  else if (kind === 'CLI') {
    const kv = Object.fromEntries(f.slice(1, 3).map((x) => x.split('=')));
    clis[f[0]] = { rc: Number(kv.rc), secs: Number(kv.secs), args: f.slice(3).join(' ').replace(/^args=/, '') };
  } else if (kind === 'STDERR') (stderrs[f[0]] ??= []).push(f.slice(1).join(' '));
  else if (kind === 'HAK') hakLine = { status: f[0], key: f[1], pcr: Number(f[2]) };
  else if (kind === 'TRUST') trustLines[f[0]] = f.slice(1).join(' ');
}
const host = (name, ok, detail) => checks.push({ name, ok, detail, source: 'host' });
// The second boot with many CPUs (run.sh 5b): its guest reports cpus-many; the hypervisor's own
// lines must show every one of them running as a guest and handed back.
if (opt['many-console'] && existsSync(opt['many-console'])) {
  const want = Number(opt['many-cpus'] ?? 12);
  // [hv] lines are written synchronously and may land inside a guest line: take them out first
  const hvl = [];
  const ml = readFileSync(opt['many-console'], 'utf8')
    .replace(/\[hv\] [^\n]*\n/g, (x) => {
      hvl.push(x);
      return '';
    })
    .split('\n')
    .concat(hvl);
  const guest = new Set();
  const back = new Set();
  let mc = null;
  for (const l of ml) {
    let mm;
    if ((mm = /\[hv\] cpu(\d+): running as guest/.exec(l))) guest.add(Number(mm[1]));
    if ((mm = /\[hv\] cpu(\d+): handed back to Linux/.exec(l))) back.add(Number(mm[1]));
    const at = l.indexOf('@@HE:CHECK cpus-many ');
    if (at >= 0) {
      const f = l.slice(at + 11).split(' ');
      mc = { ok: f[1] === 'PASS', detail: f.slice(2).join(' ') };
    }
  }
  if (mc) host('cpus-many', mc.ok && guest.size === want && back.size === want, `${mc.detail}; [hv]: ${guest.size} of ${want} CPUs ran as guests, ${back.size} handed back`);
}

if (opt['timed-out'] === '1') host('no-timeout', false, 'QEMU was killed at the time limit');
host('booted', booted !== null, booted ?? 'the init script never started');
host('scenario-finished', done, done ? 'init reached the end' : 'no @@HE:DONE (guest hung, panicked or timed out)');

// Powered off while enabled: the reboot notifier must hand every CPU back before power-off.
if (lines.some((l) => l.includes('@@HE:POWEROFF-ENABLED'))) {
  const handed = afterDone.filter((l) => /\[hv\] cpu\d+: handed back to Linux/.test(l)).length;
  const released = afterDone.some((l) => l.includes('DISABLE: host tables released'));
  const want = Number(booted?.match(/cpus=(\d+)/)?.[1] ?? 0);
  host('shutdown-disable', handed === want && released, `${handed} of ${want} CPUs handed back at power-off${released ? ', host tables released' : ''}`);
}

// The host's own descriptor tables and leave address space: inside the reservation, not Linux's.
{
  const launches = lines.map((l) => /\[hv\] cpu(\d+): VMRUN .* host GDT (0x[0-9a-f]+) IDT (0x[0-9a-f]+), leave CR3 (0x[0-9a-f]+)/.exec(l)).filter(Boolean);
  const base = Number(opt['reserved-base'] ?? 0x3c000000);
  const size = Number(opt['reserved-size'] ?? 0x2000000);
  const inside = (x) => Number(x) >= base && Number(x) < base + size;
  const ok = launches.length >= cpusBootedEarly() && launches.every((m) => inside(m[2]) && inside(m[3]) && inside(m[4]));
  host('host-tables-private', ok, `${launches.length} launches; host GDT/IDT and the leave page tables ${ok ? 'lie in the reservation (protected from Linux by nested paging)' : `not all in the reservation: ${launches.map((m) => m.slice(2).join('/')).join(', ')}`}`);
}
function cpusBootedEarly() {
  return Number(booted?.match(/cpus=(\d+)/)?.[1] ?? 1);
}

// Replay the firmware log with tpm2_eventlog and compare with the PCRs read in the guest.
const bios = blobs['bios-eventlog'];
if (bios) {
  const logPath = join(outDir, 'binary_bios_measurements');
  writeAtomic(logPath, bios);
  try {
    const yaml = execFileSync('tpm2_eventlog', [logPath], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    writeAtomic(join(outDir, 'eventlog.yaml'), yaml);
    const replayed = {};
    let bank = null;
    let inPcrs = false;
    for (const l of yaml.split('\n')) {
      if (/^pcrs:/.test(l)) { inPcrs = true; continue; }
      if (!inPcrs) continue;
      const b = l.match(/^\s{2}(\w+):\s*$/);
      if (b) { bank = b[1]; replayed[bank] = {}; continue; }
      const p = l.match(/^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)/);
      if (p && bank) replayed[bank][p[1]] = p[2].toLowerCase();
    }
    const events = (yaml.match(/^- EventNum:/gm) ?? []).length;
    for (const b of ['sha1', 'sha256']) {
      const guest = pcrs.boot?.[b];
      if (!guest || !replayed[b]) { host(`replay-${b}`, false, `missing ${!guest ? 'guest PCRs' : 'replayed bank'}`); continue; }
      const bad = ['0', '1', '2', '3', '4', '5', '6', '7'].filter((i) => (replayed[b][i] ?? '0'.repeat(guest[i]?.length ?? 0)) !== guest[i]);
      host(`replay-${b}`, bad.length === 0, bad.length ? `PCR ${bad.join(',')} differ from the log (${events} events)` : `PCRs 0-7 equal the replay of ${events} SeaBIOS events`);
    }
  } catch (e) {
    host('replay', false, `tpm2_eventlog failed: ${String(e.stderr ?? e.message).split('\n')[0]}`);
  }
}

// The guest's CLI runs: exit code, and every --json document valid against its schema.
const { compileSchema } = await import(join(ROOT, 'dist', 'src', 'schemas.js'));
const docs = {};
// runs whose ECALLs are meant to fail: the CLI exits 1 and still reports every ECALL
const EXPECT_EXIT_1 = new Set(['enclave-run-fault', 'enclave-run-spin', 'unseal-other']);
for (const [name, r] of Object.entries(clis)) {
  const why = stderrs[name]?.[0] ? `: ${stderrs[name][0]}` : '';
  const wantRc = EXPECT_EXIT_1.has(name) ? 1 : 0;
  if (r.rc !== wantRc) { host(`cli-${name}`, false, `hyperenclave ${r.args} exit ${r.rc} (expected ${wantRc})${why}`); continue; }
  const text = blobs[`cli-${name}`]?.toString('utf8') ?? '';
  if (!r.args.includes('--json')) { host(`cli-${name}`, true, `exit 0 in ${r.secs} s`); continue; }
  let doc;
  try { doc = JSON.parse(text); } catch { host(`cli-${name}`, false, `--json output is not JSON: ${text.slice(0, 80)}`); continue; }
  docs[name] = doc;
  const schemaFile = typeof doc?.schema === 'string' ? `${doc.schema.replace(/^hyperenclave\//, '')}.schema.json` : null;
  const bad = schemaFile && existsSync(join(ROOT, 'schemas', schemaFile)) ? compileSchema(schemaFile)(doc) : `no schema for "${doc?.schema}"`;
  host(`cli-${name}`, !bad, bad ? `--json output: ${bad}` : `exit ${r.rc} in ${r.secs} s, output valid against ${schemaFile}`);
}
const cpusBooted = Number(booted?.match(/cpus=(\d+)/)?.[1] ?? 0);
if (docs.boot) host('boot-enabled', docs.boot.state?.phase === 'enabled' && docs.boot.alreadyEnabled === false, `phase ${docs.boot.state?.phase}, steps ${(docs.boot.state?.steps ?? []).map((x) => `${x.name}:${x.status}`).join(' ')}`);
if (docs['boot-again']) {
  const same = Object.keys(pcrs.measured ?? {}).every((b) => pcrs['boot-again']?.[b]?.[pcrIndex] === pcrs.measured[b][pcrIndex]);
  host('boot-idempotent', docs['boot-again'].alreadyEnabled === true && same, `second boot: alreadyEnabled=${docs['boot-again'].alreadyEnabled}, PCR${pcrIndex} ${same ? 'unchanged in every bank' : 'CHANGED'}`);
}
if (docs.status) host('status-enabled', docs.status.enabled === true && docs.status.cpus === cpusBooted && docs.status.platform === 'linux', `platform ${docs.status.platform}, enabled ${docs.status.enabled}, ${docs.status.cpus} of ${cpusBooted} CPUs demoted`);
if (docs['enclave-create']) {
  const e = docs['enclave-create'];
  const listed = docs['enclave-list']?.enclaves?.find((x) => x.id === e.id);
  host('enclave-created', e.state === 'initialized' && !!listed && listed.mrenclave === e.mrenclave, `enclave ${e.id} ${e.state}, MRENCLAVE ${String(e.mrenclave).slice(0, 16)}… (computed by the CLI and by the hypervisor), ${e.epcPages} EPC pages, listed ${!!listed}`);
  const d = docs['enclave-destroy'];
  if (d) host('enclave-destroyed', d.epcPages === e.epcPages || d.epcReturned === e.epcPages, `destroy returned ${d.epcPages ?? d.epcReturned} of ${e.epcPages} EPC pages`);
}

// ECALLs answered by enclave code the bare-metal hypervisor ran (ENCLAVE_CALL).
const ecallsOf = (doc) => Object.fromEntries((doc?.ecalls ?? []).map((e) => [e.fn, e]));
if (docs['enclave-run-crypto']) {
  const r = docs['enclave-run-crypto'];
  const e = ecallsOf(r);
  const sha = createHash('sha256').update('abc').digest('hex');
  // (no host REPORT any more: REPORT is enclave-only; the enclave's own EREPORT is ecall-sealer's)
  const ok = e[0]?.output === Buffer.from('hello').toString('hex') && e[2]?.output === sha && e[4]?.ok === true && r.epcReturned === r.epcPages;
  host('ecall-crypto', ok, `echo ${e[0]?.ok ? Buffer.from(e[0].output, 'hex').toString() : e[0]?.error}, sha256("abc") ${e[2]?.output === sha ? 'correct' : `wrong (${e[2]?.output ?? e[2]?.error})`}, empty ${e[4]?.ok ? 'ok' : e[4]?.error} (${(e[4]?.micros ?? 0).toFixed(0)} µs round trip), EPC returned ${r.epcReturned}/${r.epcPages}`);
}
if (docs['enclave-run-sealer']) {
  const r = docs['enclave-run-sealer'];
  const e = ecallsOf(r);
  const rep = e[2]?.ok ? Buffer.from(e[2].output, 'hex') : null;
  // REPORT: MRENCLAVE at 64, REPORTDATA at 320 (init.sh passed 63 zero bytes and 0x07)
  const repOk = rep?.length === 432 && rep.subarray(64, 96).toString('hex') === r.mrenclave && rep.subarray(320, 384).equals(Buffer.from('0'.repeat(127) + '7', 'hex'));
  const sealed = e[0]?.ok ? Buffer.from(e[0].output, 'hex') : null;
  const ok = e[3]?.ok && e[3].output.length === 64 && repOk && !!sealed && sealed.length === 'the-launch-codes'.length + 68 && !sealed.includes(Buffer.from('the-launch-codes'));
  host('ecall-sealer', !!ok, `EGETKEY fingerprint ${e[3]?.ok ? e[3].output.slice(0, 16) + '…' : e[3]?.error}, EREPORT by the enclave ${repOk ? 'names its own MRENCLAVE and carries the report data' : `bad (${e[2]?.error ?? 'mismatch'})`}, seal (RDRAND + EGETKEY + AES-GCM) ${sealed ? `${sealed.length} bytes, plaintext absent` : e[0]?.error}`);
}

if (docs['enclave-run-fault']) {
  const r = docs['enclave-run-fault'];
  const [a, b, c] = r.ecalls ?? [];
  const logged = lines.some((l) => /\[hv\] cpu\d+: enclave \d+ TCS 0x0: (exception #PF|nested page fault)/.test(l));
  host('ecall-fault-contained', a?.ok === true && Buffer.from(a.output, 'hex').toString() === 'alive' && b?.ok === false && /faulted/.test(b.error ?? '') && c === undefined && r.destroyed === true && logged,
    `alive → ${a?.ok ? 'ok' : a?.error}; null write → ${b?.error}; later ECALLs not attempted: ${c === undefined}; hypervisor logged the fault: ${logged}; enclave destroyed: ${r.destroyed}`);
}
if (docs['enclave-run-spin']) {
  const r = docs['enclave-run-spin'];
  const a = r.ecalls?.[0];
  const logged = lines.some((l) => /interrupted ECALL aborted by the caller/.test(l));
  host('ecall-runaway-aborted', a?.ok === false && /aborted/.test(a.error ?? '') && r.destroyed === true && logged,
    `spin → ${a?.error} after ${((a?.micros ?? 0) / 1e6).toFixed(1)} s; resumed across interrupts and aborted: ${logged}; enclave destroyed: ${r.destroyed}`);
}

// The measurement: driver (image) + CLI (header, signer) into PCR N equals firmware-tools' prediction.
const refPath = opt['verifier-dir'] ? join(opt['verifier-dir'], 'reference-values.json') : null;
const ref = refPath && existsSync(refPath) ? JSON.parse(readFileSync(refPath, 'utf8')) : null;
if (ref && pcrs.measured) {
  for (const bank of Object.keys(pcrs.measured)) {
    const want = ref.pcrs?.[bank]?.[String(pcrIndex)];
    const got = pcrs.measured[bank][pcrIndex];
    if (!want || !got) continue;
    host(`measured-${bank}`, want === got, want === got ? `PCR${pcrIndex} = firmware reference prediction ${got.slice(0, 16)}…` : `PCR${pcrIndex} is ${got}, firmware reference predicts ${want}`);
  }
}
// The event the hypervisor extends into its PCR at DISABLE (hypervisor/core/src/trust.rs
// EXIT_EVENT, mirrored in abi.ts): the cap that keeps the sealed root from unsealing once the host
// has every locality.
const { HYPERVISOR_EXIT_EVENT, HAK_EVENT_PREFIX } = await import(join(ROOT, 'dist', 'src', 'hypervisor', 'abi.js'));
const EXIT_EVENT = Buffer.from(HYPERVISOR_EXIT_EVENT, 'ascii');
if (opt.image && pcrs.reloaded) {
  // second round (disable, rmmod, insmod, hectl load): the hypervisor capped PCR N with the exit
  // event at disable, then the driver alone extends H(image) once more
  const c = readFileSync(opt.image);
  const image = c.subarray(0x100, 0x100 + Number(c.readBigUInt64LE(0x40)));
  for (const bank of Object.keys(pcrs.reloaded)) {
    const before = pcrs['boot-again']?.[bank]?.[pcrIndex] ?? pcrs.measured?.[bank]?.[pcrIndex];
    const again = pcrs.reloaded[bank][pcrIndex];
    if (!before || !again) continue;
    const h = (x) => createHash(bank).update(x).digest();
    const capped = h(Buffer.concat([Buffer.from(before, 'hex'), h(EXIT_EVENT)]));
    const want2 = h(Buffer.concat([capped, h(image)])).toString('hex');
    host(`remeasured-${bank}`, want2 === again, want2 === again ? `disable capped PCR${pcrIndex} with the exit event, the second load extended it by H(image) again` : `PCR${pcrIndex} is ${again}, expected ${want2} (cap, then H(image))`);
  }
}

// The hypervisor's own TPM transport (TIS locality 2, image/src/tis.rs): at every enable it reads
// the measurement PCR itself; the last enable (hectl load + enable) must have read exactly what
// the guest read through Linux's driver (locality 0) right before it.
{
  const selfTests = lines.map((l) => /\[hv\] TPM: locality 2 at 0x[0-9a-f]+: GetRandom gave (\d+) bytes, PCR(\d+) sha256 ([0-9a-f]{64})/.exec(l)).filter(Boolean);
  const failed = lines.find((l) => /\[hv\] TPM: locality 2 self-test failed/.test(l));
  const last = selfTests.at(-1);
  const want = (pcrs['other-loaded'] ?? pcrs.reloaded)?.sha256?.[pcrIndex];
  if (selfTests.length || failed) host('tpm-hv-transport', !failed && !!last && last[1] === '16' && Number(last[2]) === pcrIndex && last[3] === want,
    failed ? failed.replace(/.*\[hv\] /, '') : last ? `${selfTests.length} enables: the hypervisor's TIS transport at locality 2 got ${last[1]} random bytes and read PCR${last[2]} = ${last[3].slice(0, 16)}…, ${last[3] === want ? 'equal to' : `NOT equal to ${want}`} what Linux read at locality 0` : 'no self-test line from the hypervisor');
}

// Remote attestation: the verdict the host's verifier gave the guest, then the same evidence
// verified again here, offline, with the CLI.
if (docs.attest) {
  const v = docs.attest.verdict ?? docs.attest;
  host('attest-remote', v.status === 'affirming', `verifier on the host answered ${v.status}${v.firstFailure ? ` (${v.firstFailure})` : ''}`);
}
const ev = blobs.evidence;
if (ev && opt['verifier-dir']) {
  const r = verifyOutside('evidence', ev);
  host('verify-outside', r.rc === 0 && r.status === 'affirming', `hyperenclave verify (exit ${r.rc}): ${r.status ?? r.stderr.split('\n')[0]}${r.fails.length ? `; failed: ${r.fails.join(', ')}` : ''}`);
}

// The HAK bound in its PCR: the PCR the guest read after boot equals, in every bank, the replay of
// exactly one event whose data names the key the hypervisor reports (HAK_PUBLIC), recomputed here
// with Node's hashes; the runtime log carries that event.
const hakPcr = Number(opt['hak-pcr'] ?? 13);
{
  const got = pcrs.measured ?? {};
  const banks = Object.keys(got).filter((b) => got[b][hakPcr] !== undefined);
  let detail;
  let ok = false;
  if (!hakLine) detail = null; // did not run: expected-checks.txt reports it
  else if (hakLine.status !== 'SUCCESS' || !/^[0-9a-f]{64}$/.test(hakLine.key)) detail = `HAK_PUBLIC: ${hakLine.status}`;
  else {
    const eventData = Buffer.from(`${HAK_EVENT_PREFIX}${hakLine.key}`, 'ascii');
    const bad = banks.filter((b) => {
      const h = (x) => createHash(b).update(x).digest();
      const want = h(Buffer.concat([Buffer.alloc(h(Buffer.alloc(0)).length), h(eventData)])).toString('hex');
      return got[b][hakPcr] !== want;
    });
    const logged = blobs['runtime-log']?.includes(eventData) ?? false;
    ok = hakLine.pcr === hakPcr && banks.length >= 2 && bad.length === 0 && logged;
    detail = `HAK ${hakLine.key.slice(0, 16)}… (HAK_PUBLIC names PCR ${hakLine.pcr}); PCR${hakPcr} in ${banks.join('/')} ${bad.length ? `differs from one-event replay in ${bad.join(',')}` : 'equals the replay of the one event "hyperenclave-hak:ed25519:<key>"'}; runtime log ${logged ? 'carries' : 'LACKS'} the event`;
  }
  if (detail !== null) host('hak-bound', ok, detail);
}

/** Verifies an evidence file outside the guest with the CLI, against the run's policy, on a copy of
 * the verifier state without its replay record (the service already accepted this very quote). */
function verifyOutside(name, evBuf) {
  const evPath = join(outDir, `${name}.json`);
  writeAtomic(evPath, evBuf);
  const nonce = JSON.parse(evBuf.toString('utf8')).nonce;
  const state = join(outDir, `${name}-state`);
  rmSync(state, { recursive: true, force: true });
  cpSync(join(opt['verifier-dir'], 'state'), state, { recursive: true });
  for (const f of readdirSync(state, { recursive: true })) if (/clock/i.test(String(f))) rmSync(join(state, String(f)), { recursive: true, force: true });
  const r = spawnSync('node', [CLI, '--platform', 'emulated', '--state-dir', state, '--json', 'verify', evPath, '--policy', join(opt['verifier-dir'], 'policy.json'), '--nonce', nonce], { encoding: 'utf8' });
  let res = {};
  try { res = JSON.parse(r.stdout); } catch { /* reported below */ }
  writeAtomic(join(outDir, `${name}-verify-outside.json`), r.stdout ?? '');
  const list = res.checks ?? res.result?.checks ?? [];
  return { rc: r.status, status: res['ear.status'] ?? res.status ?? res.result?.['ear.status'], platformKind: res.platformKind ?? res.result?.platformKind, checks: list, fails: list.filter?.((c) => c.status === 'fail').map((c) => c.name) ?? [], stderr: r.stderr ?? '' };
}

// An enclave quote from `hyperenclave attest --enclave` in the guest: the host's verifier affirmed
// it, and so does `hyperenclave verify` here on the same evidence.
let enclaveOutside = null;
{
  const d = docs['attest-enclave'];
  const v = d?.verdict ?? d;
  const ev = blobs['enclave-evidence'];
  const evDoc = ev ? JSON.parse(ev.toString('utf8')) : null;
  const quoted = evDoc?.enclaves?.filter?.((e) => typeof e.quote === 'string' && Buffer.from(e.quote, 'base64').length === 496).length ?? 0;
  if (ev && opt['verifier-dir']) enclaveOutside = verifyOutside('enclave-evidence', ev);
  const enclaveChecks = (enclaveOutside?.checks ?? []).filter((c) => /^enclave/.test(c.name));
  const ok = v?.status === 'affirming' && quoted >= 1 && enclaveOutside?.rc === 0 && enclaveOutside.status === 'affirming' && enclaveChecks.length > 0 && enclaveChecks.every((c) => c.status === 'pass');
  if (d) host('enclave-attested', ok, `verifier on the host: ${v?.status}${v?.firstFailure ? ` (${v.firstFailure})` : ''}; ${quoted} enclave quote(s) in the evidence; hyperenclave verify outside (exit ${enclaveOutside?.rc}): ${enclaveOutside?.status ?? enclaveOutside?.stderr.split('\n')[0]}${enclaveOutside?.fails.length ? `, failed: ${enclaveOutside.fails.join(', ')}` : ''}; ${enclaveChecks.map((c) => `${c.name}:${c.status}`).join(' ')}`);
}

// The platform kind comes from the EK certificate's CA (the run's swtpm CA), not from the guest's
// --platform (linux, i.e. what a real machine would claim).
{
  const v = docs['attest-enclave']?.verdict ?? docs['attest-enclave'] ?? docs.attest?.verdict ?? docs.attest;
  const remote = v?.result?.platformKind ?? v?.platformKind;
  const outside = enclaveOutside?.platformKind;
  const check = enclaveOutside?.checks?.find?.((c) => c.name === 'platform.kind');
  if (v) host('platform-kind-from-ek', remote === 'emulated' && outside === 'emulated' && check?.status === 'pass',
    `guest ran --platform ${docs.status?.platform ?? '?'}; verifier on the host: ${remote}; outside: ${outside} (${check?.status}: ${check?.reason ?? ''})`);
}

// Sealing across reloads: the enclave sealed "the-launch-codes" before disable/rmmod/insmod/enable;
// after TRUST_INIT unsealed the same root it unseals again with the same seal key. An image that
// differs by one byte cannot unseal the root (TRUST_INIT creates a new one) nor the data.
{
  const before = ecallsOf(docs['enclave-run-sealer']);
  const after = ecallsOf(docs['unseal-reload']);
  const plain = after[1]?.ok ? Buffer.from(after[1].output, 'hex').toString() : null;
  const sameKey = !!before[3]?.ok && after[3]?.output === before[3].output;
  const t = trustLines.reload ?? '';
  if (docs['unseal-reload']) host('seal-survives-reload', plain === 'the-launch-codes' && sameKey && /new blob 0 bytes/.test(t) && /created 0/.test(t),
    `TRUST_INIT after the reload: ${t || 'not run'}; unseal → ${plain !== null ? JSON.stringify(plain) : after[1]?.error ?? 'not run'}; seal-key fingerprint ${sameKey ? 'unchanged' : `changed (${before[3]?.output?.slice(0, 16)} → ${after[3]?.output?.slice(0, 16) ?? after[3]?.error})`}`);
  const other = ecallsOf(docs['unseal-other']);
  const [oldRoot, newRoot] = [trustLines['other-old'] ?? 'not run', trustLines['other-new'] ?? 'not run'];
  const keyDiffers = !!other[3]?.ok && !!before[3]?.ok && other[3].output !== before[3].output;
  // TRUST_SEAL_FAILED (38): the kept root does not unseal under that image's measurement; the
  // data does not open with that image's own root: sealer error 4 = AUTH_FAILED (GCM tag,
  // hypervisor/enclaves/rt err::AUTH_FAILED), not a failed EGETKEY
  if (docs['unseal-other']) host('seal-other-image-refused', /status=38\b/.test(oldRoot) && /created 1/.test(newRoot) && other[1]?.ok === false && /error code 4\b/.test(other[1]?.error ?? '') && keyDiffers,
    `image with one byte changed: TRUST_INIT with the kept root: ${oldRoot}; without: ${newRoot}; unseal → ${other[1] ? (other[1].ok ? 'UNSEALED' : other[1].error) : 'not run'}; seal-key fingerprint ${other[3]?.ok ? (keyDiffers ? 'differs' : 'SAME') : other[3]?.error ?? 'not reached'}`);
}

// The expected checks: each must have reported; nothing may pass unlisted.
const expectedFile = opt.expected ?? join(ROOT, 'test', 'system', 'expected-checks.txt');
const expected = readFileSync(expectedFile, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
const dupes = expected.filter((n, i) => expected.indexOf(n) !== i);
if (dupes.length) host('expected-list', false, `${expectedFile} names ${dupes.join(', ')} more than once`);
const reported = new Set(checks.map((c) => c.name));
const notRun = expected.filter((n) => !reported.has(n));
if (opt.partial !== '1') for (const n of notRun) checks.push({ name: n, ok: false, detail: `did not report (expected by ${expectedFile}): its probe crashed, was skipped or never ran`, source: 'judge' });
for (const c of [...checks]) {
  if (c.ok && !expected.includes(c.name)) checks.push({ name: `unlisted:${c.name}`, ok: false, detail: `check "${c.name}" passed but is not listed in ${expectedFile}: add it there`, source: 'judge' });
}

const summary = { schema: 'hyperenclave/system-tier-result', version: 1, booted, done, checks, pcrs, expected: expected.length, notRun: opt.partial === '1' ? notRun : [] };
writeAtomic(join(outDir, 'result.json'), JSON.stringify(summary, null, 2) + '\n');
let failed = 0;
for (const c of checks) {
  if (!c.ok) failed++;
  console.log(`${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(22)} ${c.detail}`);
}
if (opt.partial === '1') for (const n of notRun) console.log(`NOT RUN  ${n.padEnd(22)} (partial run)`);
const ofExpected = opt.partial === '1' ? `${expected.length - notRun.length} of ${expected.length} expected checks reported (partial run)` : `all ${expected.length} expected checks reported`;
console.log(failed ? `SYSTEM TIER: FAILED (${failed} of ${checks.length} checks)` : `SYSTEM TIER: PASSED (${checks.length} checks; ${ofExpected})`);
process.exit(failed ? 1 : 0);
