import { withKvStore } from '../../src/kv/store.js';

/**
 * A host process doing puts for test/cli/kv-kill.test.ts (which SIGKILLs it):
 * `node kv-writer.js STATE STORE PREFIX COUNT`: one store enclave, then PREFIX-0 … PREFIX-(COUNT-1)
 * put in order, each with kvValue(PREFIX, i); "ack i" is written to stdout (a pipe: synchronous
 * on Linux) only after the put returned, i.e. after the enclave acknowledged it.
 */
export function kvValue(prefix: string, i: number): Buffer {
  return Buffer.from(`${prefix}:${i}:`.padEnd(16 + (i % 5) * 40, String.fromCharCode(97 + (i % 26))));
}

async function main(): Promise<void> {
  const [state, store, prefix, count] = process.argv.slice(2);
  await withKvStore({ hypervisorTransport: { via: 'service', stateDir: state! }, stateDir: state! }, store!, async (kv) => {
    process.stdout.write('ready\n');
    for (let i = 0; i < Number(count); i++) {
      await kv.put(`${prefix}-${i}`, kvValue(prefix!, i));
      process.stdout.write(`ack ${i}\n`);
    }
  });
}

if (process.argv[1]?.endsWith('kv-writer.js')) {
  main().catch((e: Error) => {
    process.stderr.write(`kv-writer: ${e.message}\n`);
    process.exit(1);
  });
}
