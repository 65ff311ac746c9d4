#!/usr/bin/env node
// Reads the serial console of a system-tier boot (test/system/init.sh writes "@@HE:" lines),
// replays the exported SeaBIOS event log with tpm2_eventlog (an independent peer) against the PCRs
// the guest read from its TPM, checks the hypervisor measurement, prints a summary and exits
// 0 (all checks passed) or 1.
//   judge.mjs CONSOLE OUTDIR --timed-out 0|1 --pcr N [--image CONTAINER]
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, renameSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';

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
    } else inBlob.parts.push(line.trim());
    continue;
  }
  if (at < 0) continue;
  const m = line.slice(at + 5);
  const [kind, ...f] = m.split(' ');
  if (kind === 'BOOTED') booted = f.join(' ');
  else if (kind === 'DONE') done = true;
  else if (kind === 'CHECK') checks.push({ name: f[0], ok: f[1] === 'PASS', detail: f.slice(2).join(' '), source: 'guest' });
  else if (kind === 'B64' && f[0] === 'BEGIN') inBlob = { name: f[1], parts: [] };
  else if (kind === 'PCR') ((pcrs[f[0]] ??= {})[f[1]] ??= {})[f[2]] = f[3].toLowerCase();
}
const host = (name, ok, detail) => checks.push({ name, ok, detail, source: 'host' });

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

// The driver's measurement: PCR N = H(PCR_before || H(image)) in every bank the guest showed.
if (opt.image && pcrs.measured) {
  const c = readFileSync(opt.image);
  const len = Number(c.readBigUInt64LE(0x40));
  const image = c.subarray(0x100, 0x100 + len);
  for (const bank of Object.keys(pcrs.measured)) {
    const before = pcrs.boot?.[bank]?.[pcrIndex];
    const after = pcrs.measured[bank][pcrIndex];
    if (!before || !after) continue;
    const digest = createHash(bank).update(image).digest();
    const want = createHash(bank).update(Buffer.concat([Buffer.from(before, 'hex'), digest])).digest('hex');
    const again = pcrs.reloaded?.[bank]?.[pcrIndex];
    if (again) {
      const want2 = createHash(bank).update(Buffer.concat([Buffer.from(after, 'hex'), digest])).digest('hex');
      host(`remeasured-${bank}`, want2 === again, want2 === again ? `second load extended PCR${pcrIndex} again` : `PCR${pcrIndex} is ${again}, expected ${want2}`);
    }
    host(`measured-${bank}`, want === after, want === after ? `PCR${pcrIndex} = extend(H(image)) = ${after.slice(0, 16)}…` : `PCR${pcrIndex} is ${after}, expected ${want}`);
  }
}

const summary = { schema: 'hyperenclave/system-tier-result', version: 1, booted, done, checks, pcrs };
writeAtomic(join(outDir, 'result.json'), JSON.stringify(summary, null, 2) + '\n');
let failed = 0;
for (const c of checks) {
  if (!c.ok) failed++;
  console.log(`${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(22)} ${c.detail}`);
}
console.log(failed ? `SYSTEM TIER: FAILED (${failed} of ${checks.length} checks)` : `SYSTEM TIER: PASSED (${checks.length} checks)`);
process.exit(failed ? 1 : 0);
