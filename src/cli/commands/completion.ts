import type { Command } from 'commander';
import { UsageError } from '../output.js';

export function registerCompletion(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script (bash, zsh or fish)')
    .argument('<shell>', 'bash, zsh or fish')
    .addHelpText('after', '\nExample:\n  hyperenclave completion bash > /etc/bash_completion.d/hyperenclave')
    .action(async (shell: string) => {
      const { bashCompletion, zshCompletion, fishCompletion } = await import('../completion.js');
      if (shell === 'bash') process.stdout.write(bashCompletion(program));
      else if (shell === 'zsh') process.stdout.write(zshCompletion(program));
      else if (shell === 'fish') process.stdout.write(fishCompletion(program));
      else throw new UsageError(`completion: unknown shell "${shell}" (bash, zsh or fish)`);
    });
}
