#!/usr/bin/env node
// Judges the serial console of a Bochs VMX-tier boot (test/system-vmx/init.sh writes "@@HE:"
// lines, the hypervisor "[hv]" lines). Prints one PASS/FAIL line per check and exits 0 when every
// check passed, 1 otherwise. Every name in --expected must report; a reported check the list does
// not name fails too. Host-side checks:
// - booted: the guest reached init (with the CPU count asked for);
// - vmx-launch also needs one "[hv] cpuN: running as guest (VMX non-root)" line per CPU;
// - vmx-ecall: the ECALL's output equals SHA-256("abc") computed here by Node's crypto (FIPS
//   180-2's vector), not by anything in the guest;
// - vmx-disable also needs one "[hv] cpuN: handed back to Linux ... (VMXOFF)" line per CPU.
//   judge.mjs CONSOLE --timed-out 0|1 --cpus N --expected FILE [--bochs-seconds S] [--bochs-cpu S] [--bochs-ticks T]
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [consolePath, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
if (!consolePath || !opt.expected) {
  console.error('usage: judge.mjs CONSOLE --timed-out 0|1 --cpus N --expected FILE');
  process.exit(2);
}
const ncpu = Number(opt.cpus ?? 2);
// The hypervisor writes whole "[hv] ...\n" lines to COM1 synchronously, while Linux's own
// console output drains later: an [hv] line can land inside a guest line. Taking every [hv] line
// out first restores the guest's lines.
const hvLines = [];
const lines = readFileSync(consolePath, 'utf8')
  .replace(/\[hv\] [^\n]*\n/g, (m) => {
    hvLines.push(m.trim());
    return '';
  })
  .split('\n');
const checks = new Map(); // name -> { ok, detail }
const put = (name, ok, detail) => checks.set(name, { ok, detail });
let booted = null;
let done = null;
let ecall = null;
const running = new Set();
const handed = new Set();
const hv = [];
for (const line of lines) {
  const at = line.indexOf('@@HE:');
  const l = at >= 0 ? line.slice(at) : line;
  let m;
  if ((m = /^@@HE:BOOTED (.*)$/.exec(l))) booted = m[1];
  else if ((m = /^@@HE:DONE(.*)$/.exec(l))) done = m[1].trim();
  else if ((m = /^@@HE:CHECK (\S+) (PASS|FAIL) ?(.*)$/.exec(l))) put(m[1], m[2] === 'PASS', m[3]);
  else if ((m = /^@@HE:ECALL rc=(\d+) (.*)$/.exec(l))) ecall = { rc: Number(m[1]), text: m[2] };
}
for (const t of hvLines) {
  let m;
  hv.push(t);
  if ((m = /^\[hv\] cpu(\d+): running as guest \(VMX non-root\)/.exec(t))) running.add(Number(m[1]));
  if ((m = /^\[hv\] cpu(\d+): handed back to Linux after \d+ exits \(VMXOFF\)/.exec(t))) handed.add(Number(m[1]));
}
const cpusBooted = booted && /cpus=(\d+)/.exec(booted);
put('booted', !!booted && Number(cpusBooted?.[1]) === ncpu, booted ? `${booted} (asked for ${ncpu})` : 'the guest never reached init');
const launch = checks.get('vmx-launch');
if (launch) {
  const all = [...Array(ncpu).keys()].every((c) => running.has(c));
  put('vmx-launch', launch.ok && all, `${launch.detail}; [hv] VMX non-root on CPUs ${[...running].sort().join(',') || 'none'} of ${ncpu}`);
}
const dis = checks.get('vmx-disable');
if (dis) {
  const all = [...Array(ncpu).keys()].every((c) => handed.has(c));
  put('vmx-disable', dis.ok && all, `${dis.detail}; [hv] VMXOFF hand-back on CPUs ${[...handed].sort().join(',') || 'none'} of ${ncpu}`);
}
if (ecall) {
  const want = createHash('sha256').update('abc').digest('hex');
  const got = /output=([0-9a-f]*)/.exec(ecall.text)?.[1];
  put('vmx-ecall', ecall.rc === 0 && got === want && /mrenclave-match=1/.test(ecall.text),
    `ECALL 2 ("abc") output ${got ?? 'none'} ${got === want ? '=' : '!='} SHA-256("abc") from Node crypto; MRENCLAVE from the project's loader ${/mrenclave-match=1/.test(ecall.text) ? 'equals' : 'does not equal'} the hypervisor's`);
}
const expected = readFileSync(opt.expected, 'utf8').split('\n').map((s) => s.replace(/#.*/, '').trim()).filter(Boolean);
let failed = 0;
for (const name of expected) {
  const c = checks.get(name);
  if (!c) {
    console.log(`FAIL ${name}: did not report${opt['timed-out'] === '1' ? ' (the time limit hit)' : done === null ? ' (the guest did not finish)' : ''}`);
    failed++;
  } else {
    console.log(`${c.ok ? 'PASS' : 'FAIL'} ${name}: ${c.detail}`);
    if (!c.ok) failed++;
  }
}
for (const [name, c] of checks) {
  if (!expected.includes(name)) {
    console.log(`FAIL ${name}: reported but not in ${opt.expected} (${c.ok ? 'PASS' : 'FAIL'} ${c.detail})`);
    failed++;
  }
}
const bad = hv.filter((t) => /PANIC|HOST EXCEPTION|unexpected exit|failed|triple fault|halts/.test(t));
for (const t of bad.slice(0, 10)) console.log(`NOTE ${t}`);
console.log(
  `system-vmx: ${expected.length - failed} of ${expected.length} expected checks passed; ` +
    `guest ${done ? `finished (${done})` : 'did not finish'}; Bochs ${opt['bochs-seconds'] ?? '?'} s wall, ${opt['bochs-cpu'] ?? '?'} s CPU, ${opt['bochs-ticks'] ?? '?'} ticks` +
    (opt['timed-out'] === '1' ? '; TIME LIMIT HIT' : ''),
);
process.exit(failed === 0 && opt['timed-out'] !== '1' ? 0 : 1);
