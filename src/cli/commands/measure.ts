import type { Command } from 'commander';
import { locked } from '../locked.js';
import { emit, table } from '../output.js';
import { withProgress } from '../progress.js';
import { runtimeLogPath } from '../../platform/logs.js';
import { readFileSync } from 'node:fs';
import { DEFAULT_POLICY_NAME } from '../../measure/policy.js';
import { readTextFile } from '../../platform/bounded-read.js';

export function registerMeasure(program: Command): void {
  program
    .command('measure')
    .description('verify the hypervisor image container, extend the configured PCRs and append the runtime log')
    .argument('[image]', 'image container (default: config "image")')
    .option('--policy <name|file>', `PCR policy: built-in name (${DEFAULT_POLICY_NAME}, hyperenclave-sm3) or a file`)
    .option('--signer <pem>', 'public key the image signature must verify with')
    .addHelpText('after', '\nExample:\n  hyperenclave measure /lib/firmware/hyperenclave/hyperenclave.img --policy sha256-sha384 --json')
    .action(locked('measure', async (image: string | undefined, o: { policy?: string; signer?: string }, cmd: Command) => {
      const { context } = await import('../context.js');
      const { withTpm } = await import('../tpm-access.js');
      const { withJournaledRuntimeLog } = await import('../../measure/journal.js');
      const { readTextFile } = await import('../../platform/bounded-read.js');
      const { loadPolicy, measureImage } = await import('../../measure/index.js');
      const { measureTpmFor } = await import('../../measure/tpm-adapter.js');
      const { opts, platform, config: cfg } = context(cmd);
      const imagePath = image ?? cfg.image ?? '/lib/firmware/hyperenclave/hyperenclave.img';
      const policy = loadPolicy(o.policy ?? cfg.pcrPolicy ?? DEFAULT_POLICY_NAME);
      const signer = o.signer ?? cfg.imageSigner;
      const result = await withTpm(platform, opts.tcti, async (t) => {
        const tpm = measureTpmFor(t);
        const banks = await tpm.activeBanks();
        const trustedKeys = signer ? [readTextFile(signer, { what: '--signer', kind: 'key' })] : undefined;
        // Under the state directory's lock, with the write-ahead journal: `measure` extends every
        // time it runs (it is the explicit command), but a killed run never leaves the log behind the TPM.
        return withJournaledRuntimeLog({ stateDir: platform.stateDir, tpm, banks, what: 'measure' }, async ({ log, journal }) => {
          return withProgress(opts, { label: `measure ${imagePath}`, unit: 'bytes' }, (onProgress) =>
            measureImage({
              tpm,
              log,
              journal,
              // The explicit command measures every time it runs, even if boot already did.
              resume: false,
              policy,
              image: imagePath,
              verify: { ...(trustedKeys ? { trustedKeys } : {}), ...(onProgress ? { onProgress } : {}) },
            }),
          );
        });
      });
      emit(opts, result as never, () =>
        [
          `measured ${imagePath}: image ${result.image.id.slice(0, 16)}… (${result.image.arch}, ${result.image.imageLength} bytes), policy ${result.policy}`,
          table(['pcr', 'event', 'measure', 'banks'], result.events.map((e) => [String(e.pcr), e.type, e.measure, Object.keys(e.digests).join(',')])),
          `runtime log: ${runtimeLogPath(platform.stateDir)}`,
        ].join('\n'),
      );
    }));
}
