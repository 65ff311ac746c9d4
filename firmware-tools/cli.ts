import { Command } from 'commander';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ImageArch, VerifiedImage } from '../src/measure/container.js';
import { loadPolicy } from '../src/measure/policy.js';
import { writeFileAtomic } from '../src/platform/state.js';
import { EXIT, HyperEnclaveError } from '../src/errors.js';
import { type HashAlgName, hashAlgByName } from '../src/tpm/alg.js';
import type { parseInitialValues } from './reference.js';

// The container, signing and reference code is loaded by the command that runs (not for --help).
const containerLib = () => import('../src/measure/container.js');
import { readFileBounded, readTextFile } from '../src/platform/bounded-read.js';

/**
 * `firmware build|sign|inspect|reference|uki-reference|launch-env`: the image container and reference values.
 * registerImageCommands(fw) adds them under the CLI's `firmware` command; this file also runs alone:
 * `node dist/firmware-tools/cli.js build hypervisor.elf -o hv.heimg --arch intel-vmx --key key.pem`.
 */

class FirmwareUsageError extends HyperEnclaveError {
  constructor(message: string) {
    super(message, EXIT.USAGE);
  }
}

const ARCHES: ImageArch[] = ['intel-vmx', 'amd-svm', 'hygon'];

function arch(v: string): ImageArch {
  if (!ARCHES.includes(v as ImageArch)) throw new FirmwareUsageError(`--arch: expected one of ${ARCHES.join(', ')}, got "${v}"`);
  return v as ImageArch;
}
function size(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new FirmwareUsageError(`${name}: expected a byte count (decimal or 0x hex), got "${v}"`);
  return n;
}
function big(name: string, v: string | undefined): bigint | undefined {
  if (v === undefined) return undefined;
  try {
    const n = BigInt(v);
    if (n < 0n || n >= 1n << 64n) throw new Error();
    return n;
  } catch {
    throw new FirmwareUsageError(`${name}: expected a 64-bit number (decimal or 0x hex), got "${v}"`);
  }
}
function banks(v: string | undefined): HashAlgName[] | undefined {
  if (!v) return undefined;
  return v.split(',').map((b) => {
    const a = hashAlgByName(b.trim());
    if (!a) throw new FirmwareUsageError(`--banks: unknown bank "${b}" (sha1, sha256, sha384, sha512, sm3_256)`);
    return a.name;
  });
}

/** --initial is an option value: a bad one is a usage error. */
function initialValues(v: string, parse: typeof parseInitialValues): ReturnType<typeof parseInitialValues> {
  try {
    return parse(v);
  } catch (e) {
    throw new FirmwareUsageError(`--initial: ${(e as Error).message}`);
  }
}

function imageInfo(path: string, v: VerifiedImage, headerToJson: (h: VerifiedImage['header']) => unknown) {
  return {
    schema: 'hyperenclave/image-info' as const,
    version: 1 as const,
    path,
    id: v.id,
    containerLength: v.containerLength,
    header: headerToJson(v.header),
    signer: v.signer ? { alg: v.signer.alg, keyId: v.signer.keyId.toString('hex') } : null,
    digests: Object.fromEntries(Object.entries(v.imageDigests).map(([k, d]) => [k, d!.toString('hex')])),
  };
}

function humanInfo(doc: ReturnType<typeof imageInfo>): string {
  const h = doc.header as Record<string, unknown>;
  return [
    `${doc.path}: HEIMG v${h.formatVersion}, ${h.arch}, ${h.kind} image of ${h.imageLength} bytes (load size ${h.loadSize}, entry +0x${Number(h.entryOffset).toString(16)} at ${h.loadAddress})`,
    `  build id ${h.buildId || '-'}, features ${h.featureMask}, core ${h.coreSize}, per-CPU ${h.perCpuSize}`,
    `  signer: ${doc.signer ? `${doc.signer.alg} key ${doc.signer.keyId}` : 'unsigned'}`,
    ...Object.entries(doc.digests).map(([k, d]) => `  ${k}: ${d}`),
    `  id ${doc.id}`,
  ].join('\n');
}

type Emit = (opts: { json?: boolean }, doc: { schema: string; version: number } & Record<string, unknown>, human: () => string) => void;
const defaultEmit: Emit = (opts, doc, human) => process.stdout.write((opts.json ? JSON.stringify(doc, null, 2) : human()) + '\n');

/** A progress line for hashing a large image (the hyperenclave CLI draws one on a terminal). */
export type ImageProgress = (cmd: Command, label: string) => { update(done: number, total: number): void; end(): void } | undefined;

export function registerImageCommands(fw: Command, emit: Emit = defaultEmit, progress: ImageProgress = () => undefined): Command {
  const json = (cmd: Command) => cmd.optsWithGlobals<{ json?: boolean }>();

  fw.command('build')
    .description('build the hypervisor image container from an ELF (or raw image), optionally signed')
    .argument('<input>', 'x86-64 ELF (or raw bytes with --raw)')
    .requiredOption('-o, --output <file>', 'container to write (atomically)')
    .requiredOption('--arch <arch>', `target: ${ARCHES.join(' | ')}`)
    .option('--key <pem>', 'sign with this ECDSA P-256/P-384 or SM2 private key')
    .option('--raw', 'embed the input as is instead of laying out its PT_LOAD segments')
    .option('--entry <offset>', 'entry offset (--raw only)')
    .option('--per-cpu-size <bytes>', 'per-CPU area size')
    .option('--core-size <bytes>', 'core size (default: the load size)')
    .option('--feature-mask <n>', 'feature bits', '0')
    .option('--build-id <hex>', 'build id (default: the ELF build-id note)')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware build target/hypervisor.elf -o hv.heimg --arch amd-svm --key signer.pem')
    .action(async (input: string, o: { output: string; arch: string; key?: string; raw?: boolean; entry?: string; perCpuSize?: string; coreSize?: string; featureMask: string; buildId?: string }, cmd: Command) => {
      if (o.buildId !== undefined && !/^([0-9a-f]{2}){1,32}$/i.test(o.buildId)) throw new FirmwareUsageError(`--build-id: expected 1-32 bytes of hex, got "${o.buildId}"`);
      const { buildImageFile } = await import('./image.js');
      const { verifyContainerFile, headerToJson } = await containerLib();
      buildImageFile(
        input,
        o.output,
        {
          arch: arch(o.arch),
          kind: o.raw ? 'raw' : 'flat',
          ...(o.entry !== undefined ? { entryOffset: size('--entry', o.entry)! } : {}),
          ...(o.perCpuSize !== undefined ? { perCpuSize: size('--per-cpu-size', o.perCpuSize)! } : {}),
          ...(o.coreSize !== undefined ? { coreSize: size('--core-size', o.coreSize)! } : {}),
          featureMask: big('--feature-mask', o.featureMask)!,
          ...(o.buildId ? { buildId: Buffer.from(o.buildId, 'hex') } : {}),
        },
        o.key,
      );
      const line = progress(cmd, `verify ${o.output}`);
      let verified: VerifiedImage;
      try {
        verified = await verifyContainerFile(o.output, { banks: ['sha256', 'sha384'], ...(line ? { onProgress: line.update } : {}) });
      } finally {
        line?.end();
      }
      const doc = imageInfo(o.output, verified, headerToJson);
      emit(json(cmd), doc, () => humanInfo(doc));
    });

  fw.command('sign')
    .description('(re)sign an image container; the image must still match its header digests')
    .argument('<container>')
    .requiredOption('--key <pem>', 'ECDSA P-256/P-384 or SM2 private key')
    .option('-o, --output <file>', 'write here instead of in place')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware sign hv.heimg --key signer.pem -o hv-signed.heimg')
    .action(async (container: string, o: { key: string; output?: string }, cmd: Command) => {
      const out = o.output ?? container;
      const { signImageFile } = await import('./image.js');
      const { verifyContainerFile, headerToJson } = await containerLib();
      signImageFile(container, o.key, out);
      const doc = imageInfo(out, await verifyContainerFile(out, { banks: ['sha256', 'sha384'] }), headerToJson);
      emit(json(cmd), doc, () => humanInfo(doc));
    });

  fw.command('inspect')
    .description('verify an image container (bounds, digests, signature) and show its header')
    .argument('<container>')
    .option('--arch <arch>', 'refuse an image for another platform')
    .option('--trusted-key <pem...>', 'the signer must be one of these keys')
    .option('--require-signature', 'refuse unsigned images')
    .option('--banks <list>', 'digests to show', 'sha256,sha384')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware inspect hv.heimg --arch amd-svm --trusted-key signer.pub.pem --require-signature')
    .action(async (container: string, o: { arch?: string; trustedKey?: string[]; requireSignature?: boolean; banks: string }, cmd: Command) => {
      const { verifyContainerFile, headerToJson } = await containerLib();
      const v = await verifyContainerFile(container, {
        banks: banks(o.banks)!,
        ...(o.arch ? { expectedArch: arch(o.arch) } : {}),
        ...(o.trustedKey ? { trustedKeys: o.trustedKey.map((p) => readTextFile(p, { what: '--trusted-key', kind: 'key' })) } : {}),
        ...(o.requireSignature ? { requireSignature: true } : {}),
      });
      const doc = imageInfo(container, v, headerToJson);
      emit(json(cmd), doc, () => humanInfo(doc));
    });

  fw.command('reference')
    .description('compute reference values (expected PCRs, events, DRTM PCR17/18) from the artifacts alone')
    .argument('<container>')
    .option('--policy <name|file>', 'built-in policy (sha256-sha384, hyperenclave-sm3) or a policy file', 'sha256-sha384')
    .option('--banks <list>', 'banks to compute (default: the policy\'s)')
    .option('--initial <values>', 'starting PCR values, e.g. sha256:12=<hex>,sha384:12=<hex> (default zeros)')
    .option('--launch-env <file>', 'launch environment blob: add the DRTM PCR17/PCR18 predictions')
    .option('-o, --output <file>', 'write the reference-values JSON here (atomically)')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware reference hv.heimg --launch-env le.bin -o reference-values.json')
    .action(async (container: string, o: { policy: string; banks?: string; initial?: string; launchEnv?: string; output?: string }, cmd: Command) => {
      const b = banks(o.banks);
      const { referenceValuesFile, parseInitialValues } = await import('./reference.js');
      const line = progress(cmd, `hash ${container}`);
      let doc;
      try {
        doc = await referenceValuesFile(container, {
          policy: loadPolicy(o.policy),
          ...(b ? { banks: b } : {}),
          ...(o.initial ? { initial: initialValues(o.initial, parseInitialValues) } : {}),
          ...(o.launchEnv ? { launchEnvironmentPath: o.launchEnv } : {}),
          ...(o.output ? { out: o.output } : {}),
          ...(line ? { verify: { onProgress: line.update } } : {}),
        });
      } finally {
        line?.end();
      }
      emit(json(cmd), doc as unknown as { schema: string; version: number } & Record<string, unknown>, () =>
        [
          `image ${doc.image.id as string} (${doc.image.arch as string}), policy ${doc.policy.name}`,
          ...Object.entries(doc.pcrs).flatMap(([bank, m]) => Object.entries(m).map(([i, v]) => `  ${bank}:${i} ${v}`)),
          ...(o.output ? [`written to ${o.output}`] : []),
        ].join('\n'),
      );
    });

  fw.command('uki-reference')
    .description('reference values of a unified kernel image (UKI) from the file alone: the Authenticode digests UEFI logs in PCR 4 for it and its kernel, and the PCR 11 events and value of its systemd-stub sections')
    .argument('<uki>')
    .option('--banks <list>', 'banks to compute', 'sha1,sha256,sha384')
    .option('-o, --output <file>', 'write the uki-reference JSON here (atomically)')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware uki-reference linux.efi -o uki-reference.json   (name it in the verifier policy: boot.ukiReferences)')
    .action(async (uki: string, o: { banks: string; output?: string }, cmd: Command) => {
      const { ukiReferenceFile } = await import('./uki.js');
      const doc = ukiReferenceFile(uki, banks(o.banks)!, o.output);
      emit(json(cmd), doc as unknown as { schema: string; version: number } & Record<string, unknown>, () =>
        [
          `${uki}: UKI of ${doc.uki.size} bytes${doc.uki.stub ? ` (${doc.uki.stub.replace(/#/g, '').trim()})` : ''}, sections ${doc.sections.map((s) => `${s.name} ${s.size}`).join(', ')}`,
          ...Object.entries(doc.bootApplication.digests).map(([b, d]) => `  PCR 4 UKI    ${b}: ${d}`),
          ...Object.entries(doc.kernel.digests).map(([b, d]) => `  PCR 4 kernel ${b}: ${d}`),
          ...Object.entries(doc.pcrs).map(([b, m]) => `  PCR 11       ${b}: ${m['11']}`),
          ...Object.entries(doc.kernelEfiStub?.pcrs ?? {}).map(([b, v]) => `  PCR 9        ${b}: ${v} (kernel EFI stub: command line, initrd)`),
          ...(o.output ? [`written to ${o.output}`] : []),
        ].join('\n'),
      );
    });

  fw.command('launch-env')
    .description('build the emulated platform\'s launch environment blob (the SINIT analogue of the DRTM launch)')
    .requiredOption('-o, --output <file>', 'blob to write (atomically)')
    .requiredOption('--arch <arch>', `platform: ${ARCHES.join(' | ')}`)
    .option('--name <name>', 'name recorded in the blob and the DRTM log', 'hyperenclave-emulated-sinit')
    .option('--env-version <n>', 'version number', '1')
    .option('--payload <file>', 'opaque payload to include (e.g. an ACM-like blob)')
    .addHelpText('after', '\nExample:\n  hyperenclave firmware launch-env -o le.bin --arch intel-vmx')
    .action(async (o: { output: string; arch: string; name: string; envVersion: string; payload?: string }, cmd: Command) => {
      const { buildLaunchEnvironment } = await import('../src/txt/launch-env.js');
      const blob = buildLaunchEnvironment({ name: o.name, version: size('--env-version', o.envVersion)!, arch: arch(o.arch), payload: o.payload ? readFileBounded(o.payload, { what: '--payload', kind: 'log' }) : Buffer.alloc(0) });
      writeFileAtomic(o.output, blob);
      const doc = {
        schema: 'hyperenclave/launch-environment' as const,
        version: 1 as const,
        path: o.output,
        name: o.name,
        envVersion: Number(o.envVersion),
        arch: o.arch,
        length: blob.length,
        digests: { sha256: createHash('sha256').update(blob).digest('hex'), sha384: createHash('sha384').update(blob).digest('hex') },
      };
      emit(json(cmd), doc, () => `${o.output}: launch environment "${o.name}" v${o.envVersion} for ${o.arch}, ${blob.length} bytes, sha256 ${doc.digests.sha256}`);
    });
  return fw;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const program = new Command('firmware-tools').option('--json', 'print JSON').exitOverride();
  registerImageCommands(program);
  program.parseAsync(process.argv).catch((e: unknown) => {
    if (e instanceof HyperEnclaveError) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exit(e.exitCode);
    }
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') process.exit(0);
    if (code?.startsWith('commander.')) process.exit(EXIT.USAGE);
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(EXIT.INTERNAL);
  });
}
