/**
 * Boot checks on a real OVMF + systemd-stub 252 log (test/fixtures/uefi, origin in its README),
 * with the PCR values the guest read from its TPM as the "quoted" values and the UKI reference
 * values `firmware uki-reference` computed from the booted UKI file.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeEventLog } from '../eventlog/index.js';
import { bootChecks, loadUkiReference, type BootCheckInput } from './boot-checks.js';
import { replayEventLogs } from './eventlog-check.js';

const FIX = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'uefi');
const log = readFileSync(join(FIX, 'ovmf-uki.binary_bios_measurements'));
const pcrJson = JSON.parse(readFileSync(join(FIX, 'ovmf-uki.pcrs.json'), 'utf8')) as Record<string, Record<string, string>>;
const uki = loadUkiReference(join(FIX, 'ovmf-uki.uki-reference.json'));
const other = loadUkiReference(join(FIX, 'ovmf-uki.cmdline-changed.uki-reference.json'));
const HV = Buffer.alloc(32, 0x5a);

function quotedOf(pcrs: number[], banks = ['sha256', 'sha384']): Map<string, Map<number, Buffer>> {
  return new Map(banks.map((b) => [b, new Map(pcrs.map((i) => [i, Buffer.from(pcrJson[b]![String(i)]!, 'hex')]))]));
}
const runtime = writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 12, type: 'EV_IPL', data: Buffer.from('hyperenclave image'), digests: { sha256: HV } }] });
const base = (over: Partial<BootCheckInput> = {}): BootCheckInput => ({
  firmwareLog: log,
  runtimeLog: runtime,
  quoted: quotedOf([0, 1, 2, 3, 4, 5, 6, 7, 9, 11]),
  firmwareReplayOk: true,
  ukis: [uki],
  hypervisorPcr: 12,
  hakPcr: 13,
  hypervisorDigests: { sha256: [HV.toString('hex')] },
  ...over,
});
const byName = (r: ReturnType<typeof bootChecks>) => Object.fromEntries(r.map((c) => [c.name, c]));

describe('boot checks on an OVMF + systemd-stub log', () => {
  it('the recorded log replays to the PCRs the guest read (0-7, 9, 11), so its events are vouched for', () => {
    const r = replayEventLogs({ firmware: log }, quotedOf([0, 1, 2, 3, 4, 5, 6, 7, 9, 11], ['sha1', 'sha256', 'sha384']) as never);
    expect(r.perLog.firmware?.ok, r.perLog.firmware?.reason).toBe(true);
  });

  it('affirm the booted UKI: application, sections, hypervisor after ExitBootServices', () => {
    const r = byName(bootChecks(base()));
    expect(r['boot.application']?.status, r['boot.application']?.reason).toBe('pass');
    expect(r['boot.application']!.reason).toMatch(/event #32 .*BOOTX64.EFI.*; 1 later application\(s\) are its kernel/);
    expect(r['boot.uki-sections']?.status, r['boot.uki-sections']?.reason).toBe('pass');
    expect(r['boot.uki-sections']!.reason).toMatch(/8 systemd-stub events are .linux, .osrel, .cmdline, .initrd/);
    expect(r['boot.uki-sections']!.reason).toMatch(/PCR 9: the kernel received the UKI's command line and initrd$/);
    expect(r['boot.hypervisor-follows']?.status, r['boot.hypervisor-follows']?.reason).toBe('pass');
  });

  it('a UKI whose command line differs by one character: both checks name the event and the digests', () => {
    const r = byName(bootChecks(base({ ukis: [other] })));
    expect(r['boot.application']?.status).toBe('fail');
    expect(r['boot.application']!.reason).toContain(`event #32 (PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION`);
    expect(r['boot.application']!.reason).toContain(`sha256 digest ${uki.bootApplication.sha256} is not an allowed UKI (expected ${other.bootApplication.sha256}`);
    expect(r['boot.uki-sections']?.status).toBe('fail');
    const ev38 = other.events[5]!;
    expect(ev38.section).toBe('.cmdline');
    expect(r['boot.uki-sections']!.reason).toBe(`event #38 (PCR 11 EV_IPL ".cmdline") = .cmdline contents: sha256 expected ${ev38.digests.sha256}, actual ${uki.events[5]!.digests.sha256}`);
    expect(r['boot.uki-sections']!.details?.join('\n')).toMatch(/quoted sha256 PCR 11 .* is not the value predicted/);
    // either UKI allowed: the booted one is chosen
    expect(bootChecks(base({ ukis: [other, uki] })).every((c) => c.status === 'pass')).toBe(true);
  });

  it('PCR 11 or PCR 4 not quoted: the events are not vouched for', () => {
    const r = byName(bootChecks(base({ quoted: quotedOf([0, 1, 2, 3, 4, 5, 6, 7]) })));
    expect(r['boot.uki-sections']?.status).toBe('fail');
    expect(r['boot.uki-sections']!.reason).toMatch(/PCR 11 is not quoted/);
    const r2 = byName(bootChecks(base({ quoted: quotedOf([0, 11]) })));
    expect(r2['boot.application']!.reason).toMatch(/PCR 4 is not quoted/);
  });

  it('a log that does not replay, or no log at all, fails every boot check', () => {
    for (const over of [{ firmwareReplayOk: false }, { firmwareLog: undefined }, { firmwareLog: log.subarray(0, 30) }] as Partial<BootCheckInput>[]) {
      const r = bootChecks(base(over));
      expect(r.map((c) => c.status)).toEqual(['fail', 'fail', 'fail']);
    }
    expect(bootChecks(base({ ukis: [] }))).toEqual([]);
  });

  it('the hypervisor must follow: runtime log present and its first PCR 12 event is the reference image', () => {
    expect(byName(bootChecks(base({ runtimeLog: undefined })))['boot.hypervisor-follows']!.reason).toMatch(/no runtime log/);
    const wrong = writeEventLog({ specId: { banks: ['sha256'] }, events: [{ pcr: 12, type: 'EV_IPL', data: Buffer.from('x'), digests: { sha256: Buffer.alloc(32, 1) } }] });
    expect(byName(bootChecks(base({ runtimeLog: wrong })))['boot.hypervisor-follows']!.reason).toMatch(/first event in PCR 12 is not the reference hypervisor image/);
  });
  it('boot-time events in the hypervisor PCR (stub overrides/credentials) are refused unless the policy accepts them', () => {
    // the recorded log with PCR 9's first event moved to PCR 12 (a stand-in for a stub PCR 12 event)
    const moved = Buffer.from(log);
    const idx = moved.indexOf(Buffer.from('LOADED_IMAGE::LoadOptions'));
    // TCG_PCR_EVENT2 starts with pcrIndex (u32); find the record start by scanning back for PCR 9 + EV_EVENT_TAG
    let at = idx;
    while (at > 0 && !(moved.readUInt32LE(at) === 9 && moved.readUInt32LE(at + 4) === 6)) at--;
    moved.writeUInt32LE(12, at);
    const r = byName(bootChecks(base({ firmwareLog: moved })));
    expect(r['boot.hypervisor-follows']?.status).toBe('fail');
    expect(r['boot.hypervisor-follows']!.reason).toMatch(/^event #42 \(PCR 12 EV_EVENT_TAG.*boot-time event in PCR 12/);
    expect(byName(bootChecks(base({ firmwareLog: moved, allowStubPcrEvents: true })))['boot.hypervisor-follows']?.status).toBe('pass');
  });
  it('PCR 9 predicted from the UKI equals what the guest\'s TPM holds (the kernel EFI stub\'s events), every bank', () => {
    for (const b of ['sha1', 'sha256', 'sha384']) expect(uki.pcr9?.pcrs[b], b).toBe(pcrJson[b]!['9']);
    // the one-character command line changes the LoadOptions event, not the initrd one
    expect(other.pcr9!.events[0]!.digests.sha256).not.toBe(uki.pcr9!.events[0]!.digests.sha256);
    expect(other.pcr9!.events[1]!.digests.sha256).toBe(uki.pcr9!.events[1]!.digests.sha256);
    // a reference whose PCR 11 matches but whose PCR 9 does not: named by event
    const bent = { ...uki, pcr9: { ...uki.pcr9!, events: [other.pcr9!.events[0]!, uki.pcr9!.events[1]!] } };
    const r = byName(bootChecks(base({ ukis: [bent] })));
    expect(r['boot.uki-sections']!.reason).toBe(`event #42 (PCR 9 EV_EVENT_TAG "LOADED_IMAGE::LoadOptions") = kernel EFI stub "LOADED_IMAGE::LoadOptions": sha256 expected ${other.pcr9!.events[0]!.digests.sha256}, actual ${uki.pcr9!.events[0]!.digests.sha256}`);
  });
});
