import type { Command } from 'commander';
import { emit, UsageError } from '../output.js';

/** `hyperenclave kv put|get|delete|list --store DIR`: thin; the store is src/kv/store.ts. */

const lib = async () => ({ ...(await import('../context.js')), ...(await import('../../kv/store.js')), ...(await import('../../fs/bounded-read.js')) });

interface KvOpts {
  store?: string;
  signer?: string;
}

function storeOf(o: KvOpts): string {
  if (!o.store) throw new UsageError('kv: --store <dir> is required');
  return o.store;
}

export function registerKv(program: Command): void {
  const kv = program
    .command('kv')
    .description('a sealed key-value store in an enclave: values sealed to the enclave (EGETKEY, AES-GCM), kept as blobs in --store')
    .addHelpText('after', '\nExample:\n  hyperenclave kv put greeting hello --store /var/lib/kv && hyperenclave kv get greeting --store /var/lib/kv');
  const common = (c: Command) => c.option('--store <dir>', 'directory of the sealed blobs (created on first use)').option('--signer <key>', 'RSA-3072 e=3 PEM key signing the enclave (default: <store>/signer.pem, made on first use)');

  common(
    kv
      .command('put')
      .description('store a value (acknowledged once the sealed blob is durable on the host)')
      .argument('<key>', 'key: 1..64 bytes of UTF-8')
      .argument('[value]', 'the value as text (or --file)')
      .option('--file <path>', 'read the value from this file (at most 3072 bytes)')
      .addHelpText('after', '\nExample:\n  hyperenclave kv put db-password s3cret --store ./kv'),
  ).action(async (key: string, value: string | undefined, o: KvOpts & { file?: string }, cmd: Command) => {
    const { context, kvPut, readFileBounded } = await lib();
    const { opts, platform } = context(cmd);
    if ((value === undefined) === (o.file === undefined)) throw new UsageError('kv put: give the value as an argument or with --file, not both');
    const data = o.file !== undefined ? readFileBounded(o.file, { what: "kv put --file", maxBytes: 3072 }) : Buffer.from(value!, 'utf8');
    const store = storeOf(o);
    const v = await kvPut(platform, store, key, data, o.signer ? { signer: o.signer } : {});
    emit(opts, { schema: 'hyperenclave/kv', version: 1, op: 'put', store, key, written: v.toString() }, () => `${key}: version ${v} written`);
  });

  common(
    kv
      .command('get')
      .description('print a value (refused if its blob is torn, swapped or rolled back)')
      .argument('<key>', 'key')
      .addHelpText('after', '\nExample:\n  hyperenclave kv get db-password --store ./kv'),
  ).action(async (key: string, o: KvOpts, cmd: Command) => {
    const { context, kvGet } = await lib();
    const { opts, platform } = context(cmd);
    const store = storeOf(o);
    const v = await kvGet(platform, store, key, o.signer ? { signer: o.signer } : {});
    if (opts.json) emit(opts, { schema: 'hyperenclave/kv', version: 1, op: 'get', store, key, value: v.toString('hex') }, () => '');
    else process.stdout.write(v);
  });

  common(
    kv
      .command('delete')
      .description('remove a key (its blob is deleted durably)')
      .argument('<key>', 'key')
      .addHelpText('after', '\nExample:\n  hyperenclave kv delete db-password --store ./kv'),
  ).action(async (key: string, o: KvOpts, cmd: Command) => {
    const { context, kvDelete } = await lib();
    const { opts, platform } = context(cmd);
    const store = storeOf(o);
    const existed = await kvDelete(platform, store, key, o.signer ? { signer: o.signer } : {});
    emit(opts, { schema: 'hyperenclave/kv', version: 1, op: 'delete', store, key, existed }, () => (existed ? `${key}: deleted` : `${key}: was not there`));
  });

  common(
    kv
      .command('list')
      .description('the keys (read from the sealed blobs; the host only sees their ids)')
      .addHelpText('after', '\nExample:\n  hyperenclave kv list --store ./kv --json'),
  ).action(async (o: KvOpts, cmd: Command) => {
    const { context, kvList } = await lib();
    const { opts, platform } = context(cmd);
    const store = storeOf(o);
    const keys = await kvList(platform, store, o.signer ? { signer: o.signer } : {});
    emit(opts, { schema: 'hyperenclave/kv', version: 1, op: 'list', store, keys }, () => keys.join('\n'));
  });
}
