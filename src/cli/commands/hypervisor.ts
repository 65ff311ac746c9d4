import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { locked } from '../locked.js';
import { emit, UsageError } from '../output.js';
import { withProgress } from '../progress.js';
import { log } from '../../log.js';
import { BACKEND_KINDS, type BackendKind } from '../../enclave/backends/types.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTextFile } from '../../platform/bounded-read.js';

/** What the actions need, loaded when one runs (not for --help or other commands). */
const lib = async () => ({ ...(await import('../context.js')), ...(await import('../../hypervisor/index.js')) });
const enclaves = () => import('../../enclave/index.js');

function backendOpt(v: string | undefined): BackendKind | undefined {
  if (v === undefined) return undefined;
  if (!(BACKEND_KINDS as readonly string[]).includes(v)) throw new UsageError(`--backend: one of ${BACKEND_KINDS.join(', ')}, got "${v}"`);
  return v as BackendKind;
}

export function registerHypervisor(program: Command): void {
  program
    .command('boot')
    .description('the boot flow: platform check → verify image → measure (+DRTM) → load → enable; idempotent per boot')
    .option('--image <file>', 'image container (default: config "image")')
    .option('--drtm <launch-env>', 'perform the (emulated) dynamic launch with this launch environment blob')
    .addHelpText('after', '\nExample:\n  hyperenclave boot --image /lib/firmware/hyperenclave/hyperenclave.img')
    .action(async (o: { image?: string; drtm?: string }, cmd: Command) => {
      const { context } = await lib();
      const { runBoot } = await import('../../boot/flow.js');
      const { bootStepsFor } = await import('../../boot/steps.js');
      const { loadPolicy, DEFAULT_POLICY_NAME } = await import('../../measure/policy.js');
      const { readLaunchEnvironmentFile } = await import('../../txt/launch-env.js');
      const { opts, platform, config: cfg } = context(cmd);
      const imagePath = o.image ?? cfg.image ?? '/lib/firmware/hyperenclave/hyperenclave.img';
      const policy = loadPolicy(cfg.pcrPolicy ?? DEFAULT_POLICY_NAME);
      const r = await runBoot(
        platform.stateDir,
        bootStepsFor(platform, {
          imagePath,
          policy,
          ...(cfg.imageSigner ? { trustedKeys: [readTextFile(cfg.imageSigner, { what: 'config imageSigner', kind: 'key' })] } : {}),
          ...(o.drtm ? { launchEnvironment: readLaunchEnvironmentFile(o.drtm) } : {}),
          ...(opts.tcti ? { tcti: opts.tcti } : {}),
        }),
        log(),
      );
      emit(opts, { schema: 'hyperenclave/boot', version: 1, alreadyEnabled: r.alreadyEnabled, state: r.state as unknown as Record<string, unknown> }, () =>
        r.alreadyEnabled
          ? 'hypervisor already enabled in this boot: nothing done'
          : [`booted: ${r.state.steps.map((s) => `${s.name} ${s.status}`).join(', ')}`, `image ${r.state.image?.id.slice(0, 16)}…, ${platform.kind === 'emulated' ? 'enabled in the emulated service (nothing is demoted)' : 'host demoted'}`].join('\n'),
      );
    });

  program
    .command('enable')
    .description('load the image (if not loaded) and demote the host')
    .option('--image <file>', 'image container to load first')
    .addHelpText('after', '\nExample:\n  hyperenclave enable --image /lib/firmware/hyperenclave/hyperenclave.img')
    .action(locked('enable', async (o: { image?: string }, cmd: Command) => {
      const { context, enableHypervisor, statusToJson, formatStatus } = await lib();
      const { verifyContainerFile } = await import('../../measure/container.js');
      const { opts, platform } = context(cmd);
      let image;
      if (o.image) {
        const v = await verifyContainerFile(o.image, { banks: ['sha256'] });
        image = { path: o.image, sha256: v.header.imageSha256.toString('hex') };
      }
      const s = await enableHypervisor(platform, image ? { image } : {});
      emit(opts, statusToJson(s) as never, () => formatStatus(s).join('\n'));
    }));
  program
    .command('disable')
    .description('hand the CPUs back to Linux (refused while enclaves exist)')
    .addHelpText('after', '\nExample:\n  hyperenclave enclave list && hyperenclave disable')
    .action(locked('disable', async (_o, cmd: Command) => {
      const { context, statusToJson, formatStatus } = await lib();
      const { disableAndRecord } = await import('../../boot/steps.js');
      const { opts, platform } = context(cmd);
      const s = await disableAndRecord(platform);
      emit(opts, statusToJson(s) as never, () => formatStatus(s).join('\n'));
    }));
  program
    .command('status')
    .description('platform, loaded image, demotion, EPC, enclaves, key slots, host faults')
    .addHelpText('after', '\nExample:\n  hyperenclave status --json')
    .action(async (_o, cmd: Command) => {
      const { context, hypervisorStatus, statusToJson, formatStatus } = await lib();
      const { opts, platform } = context(cmd);
      const s = await hypervisorStatus(platform);
      // What the last `hyperenclave boot` (the boot unit) did, and whether that was in this boot.
      const { formatLastBoot, lastBootRecord } = await import('../../boot/flow.js');
      const boot = await lastBootRecord(platform.stateDir, () => platform.bootId());
      emit(opts, { ...statusToJson(s), ...(boot ? { lastBoot: boot } : {}) } as never, () => [...formatStatus(s), ...(boot ? [formatLastBoot(boot)] : [])].join('\n'));
    });

  const enc = program
    .command('enclave')
    .description('enclave VMs: create, run, list, destroy')
    .addHelpText('after', '\nExample:\n  hyperenclave enclave run crypto.manifest.json --backend sev --ecall 2=abc\n  hyperenclave enclave create crypto.manifest.json --backend csv && hyperenclave enclave list');
  enc
    .command('run')
    .description('create → init → ECALLs on KVM → report → destroy, with a memory-encryption backend')
    .argument('<manifest>', 'enclave manifest (schemas/enclave-manifest.schema.json)')
    .option('--backend <kind>', `one of ${BACKEND_KINDS.join(', ')}`)
    .option('--ecall <spec...>', 'FN, FN:HEX or FN=TEXT; FN@THREAD… enters through that TCS (0 = the first)')
    .addHelpText('after', '\nExample:\n  hyperenclave enclave run test/fixtures/enclave/crypto.manifest.json --backend sev --ecall 1=hello')
    .action(async (manifest: string, o: { backend?: string; ecall?: string[] }, cmd: Command) => {
      const { context } = await lib();
      const { parseEcallSpec, runEnclaveFromManifest } = await enclaves();
      const { opts, platform } = context(cmd);
      const backend = backendOpt(o.backend);
      const ecalls = o.ecall?.map(parseEcallSpec);
      const r = await withProgress(opts, { label: `add pages ${manifest}`, unit: 'bytes' }, (onProgress) =>
        runEnclaveFromManifest(platform, manifest, { ...(backend ? { backend } : {}), ...(ecalls ? { ecalls } : {}), ...(onProgress ? { onProgress } : {}) }),
      );
      emit(opts, r as never, () =>
        [
          `enclave ${r.name}: MRENCLAVE ${r.mrenclave}`,
          `  MRSIGNER ${r.mrsigner}, backend ${r.backend}, key slot ${r.keySlot ?? '-'}, launch ${r.launch?.measurement ?? '-'}`,
          ...r.ecalls.map((e) => `  ECALL ${e.fn}: ${e.ok ? `ok ${e.output}` : `FAILED ${e.error}`} (${e.micros} µs)`),
          `  EPC returned ${r.epcReturned ?? '-'} (enclave evidence: hyperenclave attest --enclave)`,
        ].join('\n'),
      );
      if (r.ecalls.some((e) => !e.ok)) process.exitCode = 1;
    });
  enc
    .command('create')
    .description('create and initialize an enclave that stays alive')
    .argument('<manifest>', 'enclave manifest (schemas/enclave-manifest.schema.json)')
    .option('--backend <kind>', `one of ${BACKEND_KINDS.join(', ')}`)
    .addHelpText('after', '\nExample:\n  hyperenclave enclave create test/fixtures/enclave/crypto.manifest.json --backend mktme --json')
    .action(async (manifest: string, o: { backend?: string }, cmd: Command) => {
      const { context } = await lib();
      const { createEnclaveFromManifest } = await enclaves();
      const { opts, platform } = context(cmd);
      const backend = backendOpt(o.backend);
      const s = await withProgress(opts, { label: `add pages ${manifest}`, unit: 'bytes' }, (onProgress) =>
        createEnclaveFromManifest(platform, manifest, { ...(backend ? { backend } : {}), ...(onProgress ? { onProgress } : {}) }),
      );
      emit(opts, { schema: 'hyperenclave/enclave', version: 1, ...(s as unknown as Record<string, unknown>) }, () => `enclave ${JSON.stringify(s)}`);
    });
  enc
    .command('list')
    .description('enclaves alive in the hypervisor')
    .addHelpText('after', '\nExample:\n  hyperenclave enclave list --json')
    .action(async (_o, cmd: Command) => {
      const { context } = await lib();
      const { listEnclaves } = await enclaves();
      const { opts, platform } = context(cmd);
      const l = await listEnclaves(platform);
      emit(opts, { schema: 'hyperenclave/enclave-list', version: 1, enclaves: l as unknown as Record<string, unknown>[] }, () => (l.length ? l.map((e) => JSON.stringify(e)).join('\n') : 'no enclaves'));
    });
  enc
    .command('destroy')
    .description('destroy an enclave, returning its EPC pages')
    .argument('<id>', 'enclave id (from enclave list)')
    .addHelpText('after', '\nExample:\n  hyperenclave enclave destroy 1')
    .action(async (id: string, _o, cmd: Command) => {
      const { context } = await lib();
      const { destroyEnclaveById } = await enclaves();
      const { opts, platform } = context(cmd);
      const n = Number(id);
      if (!Number.isInteger(n) || n <= 0) throw new UsageError(`enclave destroy: id must be a positive integer, got "${id}"`);
      const pages = await destroyEnclaveById(platform, n);
      emit(opts, { schema: 'hyperenclave/enclave-destroy', version: 1, id: n, epcReturned: pages }, () => `enclave ${n} destroyed, ${pages} EPC pages returned`);
    });

  program
    .command('demo')
    .description('the whole story on the emulated platform, in a private state directory')
    .option('--backend <kind>', `one backend (${BACKEND_KINDS.join(', ')}); default all`)
    .option('--keep', 'leave the emulated TPM and hypervisor running afterwards')
    .addHelpText('after', '\nExample:\n  hyperenclave demo --backend sev')
    .action(async (o: { backend?: string; keep?: boolean }, cmd: Command) => {
      const { context } = await lib();
      const { runDemo } = await import('../../demo/demo.js');
      const { opts } = context(cmd);
      const b = backendOpt(o.backend);
      const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'hyperenclave-demo-'));
      const summary = await runDemo({
        stateDir,
        backends: b ? [b] : ['none', 'sev', 'csv', 'mktme'],
        cleanup: !o.keep,
        say: opts.json ? () => undefined : (l) => process.stdout.write(l + '\n'),
      });
      if (opts.json) emit(opts, summary as never, () => '');
      else process.stdout.write(`\nstate and artifacts: ${stateDir}\n`);
      if (summary.result.status !== 'affirming') process.exitCode = 4;
    });
}
