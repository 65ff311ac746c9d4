import type { Command } from 'commander';
import { context } from '../context.js';
import { emit, table } from '../output.js';
import { platformReport } from '../../platform/report.js';
import { CPU_VENDOR_OVERRIDE_ENV, cpuVendorOverride } from '../../platform/cpu.js';

export function registerPlatform(program: Command): void {
  program
    .command('platform')
    .description('what this machine can do: virtualization, TPM, IOMMU, SEV/CSV/MKTME, and the fix for what is missing')
    .addHelpText('after', '\nExample:\n  hyperenclave --platform linux platform --json')
    .action((_o, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const r = platformReport(platform);
      emit(opts, r as unknown as { schema: string; version: number }, () =>
        [
          `platform: ${r.platform}${r.platform === 'emulated' ? ' (software models: proves nothing about hardware)' : ''}`,
          `cpu: ${r.cpu.vendor} ${r.cpu.model}, ${r.cpu.cpus} CPU(s)${cpuVendorOverride() ? ` (vendor forced by ${CPU_VENDOR_OVERRIDE_ENV}, a test setting)` : ''}`,
          '',
          table(
            ['feature', 'status', 'detail'],
            r.features.map((f) => [f.name, f.available ? 'yes' : 'MISSING', f.detail + (f.fix ? ` -> fix: ${f.fix}` : '')]),
          ),
        ].join('\n'),
      );
    });
}
