import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { emit, UsageError } from '../output.js';
import { progressFor } from '../progress.js';
import { registerImageCommands } from '../../../firmware-tools/cli.js';
import { readTextFile } from '../../fs/bounded-read.js';

function intOpt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name}: expected a positive integer, got "${v}"`);
  return n;
}

export function registerFirmware(program: Command): Command {
  const fw = program
    .command('firmware')
    .description('offline tools: image container, reference values, memory planning')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware build hypervisor.elf -o hv.heimg --arch intel-vmx --key signer.pem\n  hyperenclave firmware reference hv.heimg -o reference-values.json');
  registerImageCommands(fw, undefined, (cmd, label) => progressFor(cmd.optsWithGlobals(), { label, unit: 'bytes' }));
  fw.command('memmap')
    .description('plan the memory reservation (hypervisor + EPC) and print the memmap= kernel argument')
    .option('--hypervisor-mib <n>', 'memory for the hypervisor itself', '64')
    .option('--epc-mib <n>', 'enclave page cache', '192')
    .option('--keep-mib <n>', 'RAM that must stay with Linux', '1024')
    .option('--base <hex>', 'use this physical base instead of choosing one')
    .option('--map <file>', 'memory map as "START END TYPE" lines or dmesg e820 lines (default /sys/firmware/memmap)')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware memmap --hypervisor-mib 64 --epc-mib 448')
    .action(async (o: { hypervisorMib: string; epcMib: string; keepMib: string; base?: string; map?: string }, cmd: Command) => {
      const { parseMemmapText, planReservation, readFirmwareMemmap } = await import('../../../firmware-tools/memmap.js');
      const g = cmd.optsWithGlobals<{ json?: boolean }>();
      // Options first: a usage error does not depend on the memory map being readable.
      if (o.base !== undefined && !/^0x[0-9a-f]+$/i.test(o.base)) throw new UsageError(`--base: expected a hex address like 0x100000000, got "${o.base}"`);
      const sizes = { hypervisorMiB: intOpt('--hypervisor-mib', o.hypervisorMib), epcMiB: intOpt('--epc-mib', o.epcMib), keepForLinuxMiB: intOpt('--keep-mib', o.keepMib) };
      const map = o.map ? parseMemmapText(readTextFile(o.map, { what: '--map', kind: 'document' }), o.map) : readFirmwareMemmap();
      const plan = planReservation(map, { ...sizes, ...(o.base ? { base: BigInt(o.base) } : {}) });
      const hex = (n: bigint) => `0x${n.toString(16)}`;
      emit(
        g,
        {
          schema: 'hyperenclave/memmap-plan',
          version: 1,
          base: hex(plan.base),
          size: hex(plan.size),
          hypervisorBytes: hex(plan.hypervisorBytes),
          epcBytes: hex(plan.epcBytes),
          memmapArg: plan.memmapArg,
          grubLine: plan.grubLine,
        },
        () =>
          [
            `reserve ${plan.size / 1048576n} MiB at ${hex(plan.base)} (hypervisor ${plan.hypervisorBytes / 1048576n} MiB, EPC ${plan.epcBytes / 1048576n} MiB)`,
            `kernel command line:  ${plan.memmapArg}`,
            `/etc/default/grub:    ${plan.grubLine}`,
            'then: update-grub && reboot',
          ].join('\n'),
      );
    });
  return fw;
}
