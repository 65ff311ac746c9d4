import type { Command } from 'commander';

/**
 * Every command group, in the order `--help` lists them; each lives in its own file and names the
 * top-level commands it registers. A run loads only the group of the command it invokes (all of
 * them for `--help`, `help`, `completion` or an unknown command); test/cli/help.test.ts checks
 * that each group registers exactly the names listed here.
 */
export interface CommandGroup {
  file: string;
  names: readonly string[];
  load(): Promise<(program: Command) => unknown>;
}

export const COMMAND_GROUPS: readonly CommandGroup[] = [
  { file: 'platform', names: ['platform'], load: async () => (await import('./platform.js')).registerPlatform },
  { file: 'tpm', names: ['tpm', 'pcr'], load: async () => (await import('./tpm.js')).registerTpm },
  { file: 'eventlog', names: ['eventlog'], load: async () => (await import('./eventlog.js')).registerEventlog },
  { file: 'hypervisor', names: ['boot', 'enable', 'disable', 'status', 'enclave', 'demo'], load: async () => (await import('./hypervisor.js')).registerHypervisor },
  { file: 'measure', names: ['measure'], load: async () => (await import('./measure.js')).registerMeasure },
  // The fleet commands (verifier hosts, agent) hang under `verifier`: registered with the attest group.
  {
    file: 'attest',
    names: ['ak', 'attest', 'verify', 'verifier', 'agent'],
    load: async () => {
      const { registerAttest } = await import('./attest.js');
      const { registerFleet } = await import('./fleet.js');
      return (program: Command) => {
        registerAttest(program);
        registerFleet(program);
      };
    },
  },
  { file: 'firmware', names: ['firmware'], load: async () => (await import('./firmware.js')).registerFirmware },
  { file: 'kv', names: ['kv'], load: async () => (await import('./kv.js')).registerKv },
  { file: 'emulator', names: ['emulator'], load: async () => (await import('./emulator.js')).registerEmulator },
  // Last: it describes every command registered before it.
  { file: 'completion', names: ['completion'], load: async () => (await import('./completion.js')).registerCompletion },
];

/**
 * The group of the command `args` (process.argv without node and the script) invokes, or
 * undefined when every group is needed. `valueOptions` are the global options that take a value
 * (their value is not the command word).
 */
export function invokedGroup(args: readonly string[], valueOptions: ReadonlySet<string>): CommandGroup | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return undefined;
    if (a.startsWith('-')) {
      if (!a.includes('=') && valueOptions.has(a)) i++;
      continue;
    }
    const group = COMMAND_GROUPS.find((g) => g.names.includes(a));
    return group?.file === 'completion' ? undefined : group;
  }
  return undefined;
}

/** Registers the groups `only` names (every group when undefined), in COMMAND_GROUPS order. */
export async function registerCommands(program: Command, only?: CommandGroup): Promise<void> {
  for (const g of COMMAND_GROUPS) if (!only || g === only) (await g.load())(program);
}
