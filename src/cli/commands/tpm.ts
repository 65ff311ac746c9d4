import type { Command } from 'commander';
import { locked } from '../locked.js';
import { emit, table, UsageError } from '../output.js';

/** What the actions need, loaded when one runs (not for --help or other commands). */
const lib = async () => ({ ...(await import('../context.js')), ...(await import('../tpm-access.js')), ...(await import('../../tpm/alg.js')) });

function parsePcrList(s: string | undefined, max = 24): number[] | undefined {
  if (!s) return undefined;
  const out = new Set<number>();
  for (const part of s.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new UsageError(`--pcrs: expected a list like 0,1,7 or 0-7, got "${s}"`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (a > b || b >= max) throw new UsageError(`--pcrs: PCR index ${b} out of range 0..${max - 1}`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

export function registerTpm(program: Command): void {
  const tpmCmd = program
    .command('tpm')
    .description('the TPM itself')
    .addHelpText('after', '\nExample:\n  hyperenclave tpm info --json');
  tpmCmd
    .command('info')
    .description('manufacturer, firmware, PCR banks and algorithms')
    .addHelpText('after', '\nExample:\n  hyperenclave tpm info --tcti swtpm:host=127.0.0.1,port=2321')
    .action(async (_o, cmd: Command) => {
      const { context, withTpm } = await lib();
      const { opts, platform } = context(cmd);
      const info = await withTpm(platform, opts.tcti, (t) => t.getTpmInfo());
      const { properties: _p, ...rest } = info;
      emit(opts, { schema: 'hyperenclave/tpm-info', version: 1, ...rest }, () =>
        [
          `manufacturer: ${info.manufacturer} (${info.vendorString})`,
          `family ${info.family}, level ${info.level}, revision ${info.revision}, ${info.year} day ${info.dayOfYear}`,
          `firmware: ${info.firmwareVersion}`,
          `PCR banks: ${info.banks.map((b) => `${b.name}${b.pcrs.length ? '' : ' (inactive)'}`).join(', ')}`,
          `algorithms: ${info.algorithms.join(' ')}`,
        ].join('\n'),
      );
    });

  const pcr = program
    .command('pcr')
    .description('read and extend PCRs')
    .addHelpText('after', '\nExample:\n  hyperenclave pcr read --bank sha256 --pcrs 0-7,12\n  hyperenclave pcr extend 16 --data "hello"');
  pcr
    .command('read')
    .description('PCR values of every active bank (or --bank)')
    .option('--bank <alg...>', 'only these banks (sha1, sha256, sha384, sha512, sm3_256)')
    .option('--pcrs <list>', 'only these PCRs, e.g. 0-7,12')
    .addHelpText('after', '\nExample:\n  hyperenclave pcr read --bank sha256 --pcrs 0-7,12 --json')
    .action(async (o: { bank?: string[]; pcrs?: string }, cmd: Command) => {
      const { context, withTpm, bankId, hashAlgById } = await lib();
      const { opts, platform } = context(cmd);
      const pcrs = parsePcrList(o.pcrs);
      const bankIds = o.bank?.map(bankId); // a bad --bank is refused before the TPM is opened
      const banks = await withTpm(platform, opts.tcti, async (t) => {
        const all = await t.pcrReadAll(bankIds);
        return pcrs ? all.map((b) => ({ hash: b.hash, values: new Map([...b.values].filter(([i]) => pcrs.includes(i))) })) : all;
      });
      const doc: Record<string, Record<string, string>> = {};
      for (const b of banks) doc[hashAlgById(b.hash)!.name] = Object.fromEntries([...b.values].map(([i, v]) => [String(i), v.toString('hex')]));
      emit(opts, { schema: 'hyperenclave/pcrs', version: 1, banks: doc }, () =>
        banks.map((b) => `${hashAlgById(b.hash)!.name}:\n` + [...b.values].map(([i, v]) => `  ${String(i).padStart(2)}: ${v.toString('hex')}`).join('\n')).join('\n'),
      );
    });
  pcr
    .command('extend')
    .description('extend a PCR in every active bank with the digest of --data, or with given digests')
    .argument('<pcr>', 'PCR index')
    .option('--data <string>', 'hash this string with each bank\'s algorithm')
    .option('--digest <alg=hex...>', 'explicit digests, e.g. sha256=ab12…')
    .addHelpText('after', '\nExample:\n  hyperenclave pcr extend 16 --data "hello"')
    .action(locked('pcr extend', async (pcrArg: string, o: { data?: string; digest?: string[] }, cmd: Command) => {
      const { context, withTpm, hashAlgById, hashAlgByName } = await lib();
      const { createHash } = await import('node:crypto');
      const { opts, platform } = context(cmd);
      const index = Number(pcrArg);
      if (!Number.isInteger(index) || index < 0 || index > 23) throw new UsageError(`PCR index: expected 0..23, got "${pcrArg}"`);
      if (!o.data === !o.digest) throw new UsageError('pcr extend: give exactly one of --data or --digest');
      // Given digests are checked before the TPM is opened.
      const given = o.digest?.map((d) => {
        const m = /^([a-z0-9_]+)=([0-9a-fA-F]+)$/.exec(d);
        const alg = m && hashAlgByName(m[1]!);
        if (!m || !alg) throw new UsageError(`--digest: expected alg=hex, got "${d}"`);
        const digest = Buffer.from(m[2]!, 'hex');
        if (digest.length !== alg.size) throw new UsageError(`--digest ${alg.name}: ${digest.length} bytes, expected ${alg.size}`);
        return { hashAlg: alg.id, digest };
      });
      const result = await withTpm(platform, opts.tcti, async (t) => {
        let digests;
        if (given) {
          digests = given;
        } else {
          const active = (await t.getPcrBanks()).filter((b) => b.pcrs.length).map((b) => hashAlgById(b.hash)).filter((a) => a !== undefined);
          digests = active.map((a) => ({ hashAlg: a.id, digest: createHash(a.nodeName).update(o.data!).digest() }));
        }
        await t.pcrExtend(index, digests);
        const after = await t.pcrRead(digests.map((d) => ({ hash: d.hashAlg, pcrs: [index] })));
        return after.banks.map((b) => ({ bank: hashAlgById(b.hash)!.name, value: b.values.get(index)!.toString('hex') }));
      });
      emit(opts, { schema: 'hyperenclave/pcr-extend', version: 1, pcr: index, values: result }, () =>
        table(['bank', `PCR ${index} now`], result.map((r) => [r.bank, r.value])),
      );
    }));
}
