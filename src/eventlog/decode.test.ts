import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeEvent, devicePathToText, parseEventLog, type DecodedEvent } from './index.js';

const DIR = join(import.meta.dirname, '../../test/fixtures/eventlog');
const load = (f: string) => parseEventLog(readFileSync(join(DIR, f)));

function devicePathsOf(f: string): string[] {
  const log = load(f);
  const out: string[] = [];
  for (const ev of log.events) {
    const d = decodeEvent(ev, log) as (DecodedEvent & { devicePath?: string; loadOption?: { devicePath: string } }) | undefined;
    if (d?.devicePath !== undefined) out.push(d.devicePath);
    if (d?.loadOption) out.push(d.loadOption.devicePath);
  }
  return out;
}

describe('device paths', () => {
  const expected = JSON.parse(readFileSync(join(DIR, 'tpm2-tools-devicepaths.json'), 'utf8')) as { paths: Record<string, string[]> };
  for (const [f, paths] of Object.entries(expected.paths)) {
    it(`${f}: same text as tpm2-tools' pretty output (efivar)`, () => {
      // tpm2_eventlog prints paths of image loads and of some load options; ours is a superset, in the same order.
      const ours = devicePathsOf(f);
      let k = 0;
      for (const p of paths) {
        while (k < ours.length && ours[k] !== p) k++;
        expect(k < ours.length, `${p} not found in order in ${JSON.stringify(ours)}`).toBe(true);
        k++;
      }
    });
  }

  it('formats common nodes and rejects a node that does not fit', () => {
    const node = (type: number, sub: number, body: Buffer): Buffer => {
      const h = Buffer.from([type, sub, 0, 0]);
      h.writeUInt16LE(4 + body.length, 2);
      return Buffer.concat([h, body]);
    };
    const end = Buffer.from([0x7f, 0xff, 4, 0]);
    const acpi = Buffer.alloc(8);
    acpi.writeUInt32LE(0x0a0341d0, 0);
    const uri = node(3, 24, Buffer.from('http://boot.example/hv.efi'));
    const file = node(4, 4, Buffer.from('\\EFI\\hyperenclave.efi\0', 'utf16le'));
    expect(devicePathToText(Buffer.concat([node(2, 1, acpi), node(1, 1, Buffer.from([0, 2])), uri, file, end]))).toBe('PciRoot(0x0)/Pci(0x2,0x0)/Uri(http://boot.example/hv.efi)/\\EFI\\hyperenclave.efi');
    const nvme = Buffer.alloc(12);
    nvme.writeUInt32LE(1, 0);
    expect(devicePathToText(Buffer.concat([node(3, 23, nvme), end]))).toMatch(/^NVMe\(0x1,00-00-00-00-00-00-00-00\)$/);
    expect(devicePathToText(Buffer.concat([node(9, 9, Buffer.from([1, 2])), end]))).toBe('Path(9,9,0102)');
    expect(() => devicePathToText(Buffer.from([1, 1, 0x40, 0]))).toThrow(/node length 64 does not fit/);
    expect(() => devicePathToText(Buffer.from([1, 1, 2, 0]))).toThrow(/node length 2/);
  });
});

describe('decoded payloads of real logs', () => {
  it('UEFI variables: SecureBoot, BootOrder, Boot#### load options, db signature lists, authority certificates', () => {
    const log = load('tpm2-tools-event-bootorder.bin');
    const all = log.events.map((e) => decodeEvent(e, log)).filter(Boolean) as (DecodedEvent & Record<string, unknown>)[];
    const vars = all.filter((d) => d.kind === 'UefiVariable');
    expect(vars.find((d) => d.unicodeName === 'SecureBoot')).toMatchObject({ vendor: 'EFI_GLOBAL_VARIABLE', variableGuid: '8be4df61-93ca-11d2-aa0d-00e098032b8c' });
    const order = vars.find((d) => d.unicodeName === 'BootOrder');
    expect(order?.bootOrder).toEqual(expect.arrayContaining([expect.stringMatching(/^Boot[0-9A-F]{4}$/)]));
    const boot = vars.find((d) => /^Boot[0-9A-F]{4}$/.test(String(d.unicodeName)));
    expect(boot?.loadOption).toMatchObject({ description: expect.any(String), devicePath: expect.any(String) });
    const gce = load('tpm2-tools-event-gce-ubuntu-2104-log.bin');
    const gceVars = gce.events.map((e) => decodeEvent(e, gce) as DecodedEvent & Record<string, unknown>);
    const db = gceVars.find((d) => d?.unicodeName === 'db');
    expect(db?.signatureLists).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'EFI_CERT_X509', entries: [expect.objectContaining({ subject: expect.stringMatching(/CN=/) })] })]));
    expect(gceVars.find((d) => d?.unicodeName === 'SbatLevel')).toMatchObject({ text: expect.stringMatching(/^sbat,1,/) });
    const debian = load('go-tpm-tools-debian-10.bin');
    const auth = debian.events.filter((e) => e.typeName === 'EV_EFI_VARIABLE_AUTHORITY').map((e) => decodeEvent(e, debian) as DecodedEvent & Record<string, unknown>);
    expect(auth.find((d) => d.unicodeName === 'Shim')).toMatchObject({ subject: 'CN=Debian Secure Boot CA' });
  });

  it('Spec ID event, StartupLocality, SP800-155, separators, firmware blobs, GPT, strings', () => {
    const glinux = load('go-tpm-tools-glinux-alex.bin');
    expect(decodeEvent(glinux.events[0]!, glinux)).toMatchObject({ kind: 'SpecIdEvent', signature: 'Spec ID Event03', specVersion: '2.0', algorithms: [{ algorithm: 'sha1', digestSize: 20 }, { algorithm: 'sha256', digestSize: 32 }] });
    expect(decodeEvent(glinux.events[1]!, glinux)).toEqual({ kind: 'StartupLocality', locality: 3 });
    expect(decodeEvent(glinux.events[2]!, glinux)).toEqual({ kind: 'String', text: 'FIT Type 0x02 Measured S-CRTM' });
    const sp = load('go-tpm-tools-eventlogwithsp800155.bin');
    expect(decodeEvent(sp.events[1]!, sp)).toMatchObject({ kind: 'NoAction', signature: 'SP800-155 Event3' });
    expect(decodeEvent(sp.events[3]!, sp)).toEqual({ kind: 'String', text: 'GCE Virtual Firmware v2' });
    const seps = sp.events.filter((e) => e.typeName === 'EV_SEPARATOR').map((e) => decodeEvent(e, sp));
    expect(seps[0]).toEqual({ kind: 'Separator', value: '0x0', error: false });
    const gce = load('tpm2-tools-event-gce-ubuntu-2104-log.bin');
    const gpt = gce.events.filter((e) => e.typeName === 'EV_EFI_GPT_EVENT').map((e) => decodeEvent(e, gce) as DecodedEvent & { partitions: { type: string }[] });
    expect(gpt).toHaveLength(1);
    expect(gpt[0]!.partitions.map((p) => p.type)).toContain('EFI System Partition');
    const bo = load('tpm2-tools-event-bootorder.bin');
    expect(decodeEvent(bo.events[2]!, bo)).toEqual({ kind: 'FirmwareBlob', base: '0x820000', length: '0xe0000' });
  });
});

describe('an OVMF + systemd-stub 252 log (test/fixtures/uefi, origin in its README)', () => {
  const log = parseEventLog(readFileSync(join(import.meta.dirname, '../../test/fixtures/uefi/ovmf-uki.binary_bios_measurements')));
  const dec = (i: number) => decodeEvent(log.events[i]!, log) as DecodedEvent & Record<string, unknown>;
  it('decodes what OVMF writes: variables, load options, GPT, applications with device paths, actions', () => {
    expect(log.events).toHaveLength(46);
    expect(dec(4)).toMatchObject({ kind: 'UefiVariable', unicodeName: 'SecureBoot', vendor: 'EFI_GLOBAL_VARIABLE', value: 0 });
    expect(dec(11)).toMatchObject({ kind: 'UefiVariable', unicodeName: 'BootOrder' });
    expect(dec(14)).toMatchObject({ unicodeName: 'Boot0002', loadOption: { description: 'UEFI Misc Device', devicePath: 'PciRoot(0x0)/Pci(0x3,0x0)' } });
    expect(dec(21)).toEqual({ kind: 'String', text: 'Calling EFI Application from Boot Option' });
    expect(dec(31)).toMatchObject({ kind: 'UefiGpt', partitions: [{ number: 1, type: 'EFI System Partition', name: 'ESP', startingLba: 2048 }] });
    expect(dec(32)).toMatchObject({ kind: 'UefiImageLoad', devicePath: 'PciRoot(0x0)/Pci(0x3,0x0)/HD(1,GPT,f3430646-1a78-9943-b3a5-1bae6f7edfcd,0x800,0x17000)/\\EFI\\BOOT\\BOOTX64.EFI' });
    expect(dec(41)).toMatchObject({ kind: 'UefiImageLoad', devicePath: 'VenMedia(55c5d1f8-04cd-46b5-8a20-e56cbb3052d0)' });
    expect(dec(44)).toEqual({ kind: 'String', text: 'Exit Boot Services Invocation' });
  });
  it('names systemd-stub sections (EV_IPL, PCR 11) and the Linux EFI stub tags (PCR 9)', () => {
    expect(log.events.filter((e) => e.pcr === 11).map((e) => (decodeEvent(e, log) as { text?: string }).text)).toEqual(['.linux', '.linux', '.osrel', '.osrel', '.cmdline', '.cmdline', '.initrd', '.initrd']);
    expect(dec(42)).toMatchObject({ kind: 'TaggedEvent', id: '0x8f3b22ed', tag: expect.stringMatching(/^LOAD_OPTIONS_EVENT_TAG_ID/), text: 'LOADED_IMAGE::LoadOptions' });
    expect(dec(43)).toMatchObject({ kind: 'TaggedEvent', id: '0x8f3b22ec', tag: expect.stringMatching(/^INITRD_EVENT_TAG_ID/), text: 'Linux initrd' });
  });
});
