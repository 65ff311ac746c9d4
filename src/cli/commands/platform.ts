import type { Command } from 'commander';
import { emit, table } from '../output.js';

export function registerPlatform(program: Command): void {
  program
    .command('platform')
    .description('what this machine can do: virtualization, TPM, IOMMU, SEV/CSV/MKTME, and the fix for what is missing')
    .addHelpText('after', '\nExample:\n  hyperenclave --platform linux platform --json')
    .action(async (_o, cmd: Command) => {
      const { context } = await import('../context.js');
      const { platformReport } = await import('../../platform/report.js');
      const { CPU_VENDOR_OVERRIDE_ENV, cpuVendorOverride } = await import('../../platform/cpu.js');
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
