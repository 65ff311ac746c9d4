import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { parseMemmapText, planReservation, readFirmwareMemmap } from './memmap.js';
import { pathMissing, skipUnless } from '../test/helpers/require.js';

const QEMU_MAP = `
0x0 0x9fbff System RAM
0x9fc00 0xfffff Reserved
0x100000 0xbfffffff System RAM
0xeec00000 0xfebfffff Reserved
0x100000000 0x63fffffff System RAM
`;

describe('memory reservation planning', () => {
  it('takes the top of the highest RAM range, aligned', () => {
    const p = planReservation(parseMemmapText(QEMU_MAP), { hypervisorMiB: 64, epcMiB: 192 });
    expect(p.size).toBe(256n * 1024n * 1024n);
    expect(p.base).toBe(0x640000000n - 0x10000000n);
    expect(p.memmapArg).toBe('memmap=256M$0x630000000');
    expect(p.grubLine).toContain('memmap=256M\\\\\\$0x630000000');
  });

  it('falls back to a lower range and honours an explicit base', () => {
    const map = parseMemmapText('0x0 0x9fbff System RAM\n0x100000 0x7fffffff System RAM\n0x80000000 0x80ffffff System RAM\n');
    const p = planReservation(map, { hypervisorMiB: 32, epcMiB: 32, keepForLinuxMiB: 256 });
    expect(p.chosenFrom.start).toBe(0x100000n);
    expect(p.base + p.size).toBe(0x80000000n);
    expect(() => planReservation(map, { hypervisorMiB: 32, epcMiB: 32, base: 0x80000000n - 0x100000n, keepForLinuxMiB: 256 })).toThrow(/not inside one System RAM range/);
  });

  it('parses dmesg e820 lines and rejects garbage with the line number', () => {
    const m = parseMemmapText('BIOS-e820: [mem 0x0000000000100000-0x00000000bffdffff] usable\n');
    expect(m[0]!.type).toBe('System RAM');
    expect(() => parseMemmapText('0x0 0x10 System RAM\nhello', 'e820.txt')).toThrow(/^e820\.txt:2: expected/);
  });

  it('refuses a reservation that starves Linux', () => {
    expect(() => planReservation(parseMemmapText('0x100000 0x3fffffff System RAM'), { hypervisorMiB: 64, epcMiB: 512 })).toThrow(/leaves .* MiB .* for Linux/);
  });

  it.skipIf(!!skipUnless('the firmware memory map of this machine', [['firmware-memmap', pathMissing('/sys/firmware/memmap', 'kernel without CONFIG_FIRMWARE_MEMMAP, or a container')]]))('reads this machine\'s firmware memory map', () => {
    const m = readFirmwareMemmap();
    expect(m.some((r) => r.type === 'System RAM')).toBe(true);
  });
});
