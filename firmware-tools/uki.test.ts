/**
 * UKI reference values against independent peers: systemd-measure (systemd 252, PCR 11 of the
 * sections) and pesign (Authenticode sha1/sha256). The UKI is built here the way run.sh builds
 * the system tier's: objcopy adds the sections to Debian's systemd-boot-efi stub. The kernel in
 * `.linux` is a copy of the stub itself (any PE will do for the digests).
 * The sha384 Authenticode digest has no peer here (pesign does sha1/sha256 only); the system
 * tier's boot-app-digest compares all banks with what OVMF logged.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageError } from '../src/measure/errors.js';
import { authenticodeDigest, parsePe, ukiReference } from './uki.js';

const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const MEASURE = '/usr/lib/systemd/systemd-measure';
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const missing = !existsSync(STUB) ? `${STUB} (apt install systemd-boot-efi)` : !existsSync(MEASURE) ? `${MEASURE} (systemd)` : !has('objcopy') ? 'objcopy (binutils)' : undefined;

describe.skipIf(!!missing)('UKI reference values', () => {
  let dir = '';
  let uki = Buffer.alloc(0);
  const files: Record<string, string> = {};
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'uki-test-'));
    files.linux = join(dir, 'vmlinuz');
    writeFileSync(files.linux, readFileSync(STUB));
    files.osrel = join(dir, 'os-release');
    writeFileSync(files.osrel, 'ID=test\nNAME="UKI test"\n');
    files.cmdline = join(dir, 'cmdline');
    writeFileSync(files.cmdline, 'console=ttyS0 panic=-1');
    files.initrd = join(dir, 'initrd');
    writeFileSync(files.initrd, randomBytes(70_001));
    execFileSync('objcopy', [
      '--add-section', `.osrel=${files.osrel}`, '--change-section-vma', '.osrel=0x20000',
      '--add-section', `.cmdline=${files.cmdline}`, '--change-section-vma', '.cmdline=0x30000',
      '--add-section', `.linux=${files.linux}`, '--change-section-vma', '.linux=0x2000000',
      '--add-section', `.initrd=${files.initrd}`, '--change-section-vma', '.initrd=0x3000000',
      STUB, join(dir, 'uki.efi'),
    ]);
    uki = readFileSync(join(dir, 'uki.efi'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('predicts PCR 11 as systemd-measure does, every bank', () => {
    const doc = ukiReference(uki, ['sha1', 'sha256', 'sha384']);
    expect(doc.sections.map((s) => s.name)).toEqual(['.linux', '.osrel', '.cmdline', '.initrd']);
    expect(doc.events).toHaveLength(8);
    const out = execFileSync(MEASURE, ['calculate', `--linux=${files.linux}`, `--osrel=${files.osrel}`, `--cmdline=${files.cmdline}`, `--initrd=${files.initrd}`, '--bank=sha1', '--bank=sha256', '--bank=sha384', '--json=short'], { encoding: 'utf8' });
    const peer = JSON.parse(out) as Record<string, { phase: string; pcr: number; hash: string }[]>;
    for (const bank of ['sha1', 'sha256', 'sha384'] as const) {
      // systemd-measure 252 reports PCR 11 after the first systemd-pcrphase event ("enter-initrd").
      const enter = peer[bank]!.find((p) => p.phase === 'enter-initrd')!;
      const ours = Buffer.from(doc.pcrs[bank]!['11']!, 'hex');
      const next = createHash(bank).update(Buffer.concat([ours, createHash(bank).update('enter-initrd').digest()])).digest('hex');
      expect(next, bank).toBe(enter.hash);
    }
    // one character of the command line changes the .cmdline event and PCR 11
    const other = readFileSync(join(dir, 'uki.efi'));
    const idx = other.indexOf('panic=-1');
    other.write('panic=-2', idx, 'latin1');
    const changed = ukiReference(other, ['sha256']);
    expect(changed.pcrs.sha256!['11']).not.toBe(doc.pcrs.sha256!['11']);
    expect(changed.events.filter((e, i) => e.digests.sha256 !== doc.events[i]!.digests.sha256).map((e) => `${e.section}:${e.what}`)).toEqual(['.cmdline:contents']);
  });

  it.skipIf(!has('pesign'))('Authenticode digests of the UKI and its kernel equal pesign -h (sha1, sha256)', () => {
    const doc = ukiReference(uki, ['sha1', 'sha256']);
    for (const [file, want] of [[join(dir, 'uki.efi'), doc.bootApplication.digests], [files.linux, doc.kernel.digests]] as const) {
      for (const bank of ['sha1', 'sha256']) {
        const out = execFileSync('pesign', ['-i', file, '-h', '-d', bank], { encoding: 'utf8' });
        expect(out.trim(), `${file} ${bank}`).toBe(`hash: ${want[bank]}`);
      }
    }
  });

  it('refuses a malformed PE with the field and offset', () => {
    expect(() => parsePe(Buffer.from('not a PE file at all, just text padding to sixty-four bytes.....'))).toThrow(/no "MZ" signature at offset 0/);
    const cut = uki.subarray(0, 0x800);
    expect(() => ukiReference(cut, ['sha256'], 'cut.efi')).toThrow(ImageError);
    expect(() => ukiReference(cut, ['sha256'], 'cut.efi')).toThrow(/cut.efi: section \d+ "\.\w+" \(header at offset 0x[0-9a-f]+\): raw data .* lies beyond the end of the file/);
    const bent = Buffer.from(uki);
    bent.writeUInt32LE(0x10000000, 0x3c);
    expect(() => parsePe(bent, 'bent.efi')).toThrow(/bent.efi: PE header at offset 0x10000000 lies beyond the end of the file/);
    // the stub alone is a PE but not a UKI
    expect(() => ukiReference(readFileSync(STUB), ['sha256'], 'stub.efi')).toThrow(/stub.efi: no .linux section/);
  });

  it('Authenticode leaves out CheckSum and the certificate table entry', () => {
    const pe = parsePe(uki);
    const a = authenticodeDigest(uki, 'sha256');
    const b = Buffer.from(uki);
    b.writeUInt32LE(0xdeadbeef, pe.checksumOffset);
    expect(authenticodeDigest(b, 'sha256')).toEqual(a);
    b[pe.sizeOfHeaders + 1] ^= 1; // inside the first section
    expect(authenticodeDigest(b, 'sha256')).not.toEqual(a);
  });
});

describe('ukiReferenceFile input', () => {
  it('names the UKI in a one-line error when it is missing or a directory, and writes nothing', async () => {
    const { ukiReferenceFile } = await import('./uki.js');
    const dir = mkdtempSync(join(tmpdir(), 'uki-input-'));
    try {
      const out = join(dir, 'ref.json');
      expect(() => ukiReferenceFile(join(dir, 'absent.efi'), ['sha256'], out)).toThrow(/^UKI .*absent\.efi: not found$/);
      expect(() => ukiReferenceFile(dir, ['sha256'], out)).toThrow(/^UKI .*: /);
      expect(existsSync(out)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
