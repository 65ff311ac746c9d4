import type { Command } from 'commander';
import { locked } from '../locked.js';
import { emit } from '../output.js';
import { HyperEnclaveError, EXIT } from '../../errors.js';

const daemon = () => import('../../platform/emulated/tpm-daemon.js');

export function registerEmulator(program: Command): void {
  const emu = program
    .command('emulator')
    .description('the emulated platform\'s long-lived parts (its TPM); "stop" is a power-off')
    .addHelpText('after', '\nExample:\n  hyperenclave emulator start --state-dir /tmp/he && hyperenclave emulator stop --state-dir /tmp/he');

  const requireEmulated = async (cmd: Command) => {
    const { context } = await import('../context.js');
    const ctx = context(cmd);
    if (!ctx.platform.emulator) throw new HyperEnclaveError('emulator: the selected platform is linux, not emulated', EXIT.UNSUPPORTED);
    return ctx;
  };

  emu
    .command('start')
    .description('start the emulated TPM (manufactured with EK certificates on first start)')
    .addHelpText('after', '\nExample:\n  hyperenclave --state-dir /tmp/he emulator start --json')
    .action(locked('emulator start', async (_o, cmd: Command) => {
      const { opts, platform } = await requireEmulated(cmd);
      const { ensureEmulatedTpm } = await daemon();
      const info = await ensureEmulatedTpm(platform.stateDir);
      emit(opts, { schema: 'hyperenclave/emulator', version: 1, running: true, ...info }, () => `emulated TPM running (pid ${info.pid}), tcti ${info.tcti}`);
    }));
  emu
    .command('stop')
    .description('stop the emulated hypervisor service and TPM (a power-off)')
    .addHelpText('after', '\nExample:\n  hyperenclave --state-dir /tmp/he emulator stop')
    .action(locked('emulator stop', async (_o, cmd: Command) => {
      const { opts, platform } = await requireEmulated(cmd);
      const { stopHypervisor } = await import('../../hypervisor/index.js');
      const { stopEmulatedTpm } = await daemon();
      await stopHypervisor(platform);
      const stopped = await stopEmulatedTpm(platform.stateDir);
      emit(opts, { schema: 'hyperenclave/emulator', version: 1, running: false, stopped }, () => (stopped ? 'emulated TPM stopped' : 'emulated TPM was not running'));
    }));
  emu
    .command('status')
    .description('whether the emulated TPM runs')
    .addHelpText('after', '\nExample:\n  hyperenclave --state-dir /tmp/he emulator status --json')
    .action(async (_o, cmd: Command) => {
      const { opts, platform } = await requireEmulated(cmd);
      const { emulatedTpmRecord } = await daemon();
      const rec = emulatedTpmRecord(platform.stateDir);
      let running = false;
      if (rec) {
        try {
          process.kill(rec.pid, 0);
          running = true;
        } catch {
          running = false;
        }
      }
      emit(opts, { schema: 'hyperenclave/emulator', version: 1, running, ...(rec ?? {}) }, () => (running ? `emulated TPM running (pid ${rec!.pid}), tcti ${rec!.tcti}` : 'emulated TPM not running'));
    });
}
