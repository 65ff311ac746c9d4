import { Command } from 'commander';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { compileSchema } from '../src/schemas.js';
import { registerImageCommands } from './cli.js';

const fx = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'measure');
const dir = mkdtempSync(join(tmpdir(), 'fw-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(...args: string[]): Promise<Record<string, unknown> & { schema: string }> {
  const docs: (Record<string, unknown> & { schema: string })[] = [];
  const program = new Command('hyperenclave').option('--json').exitOverride();
  registerImageCommands(program.command('firmware'), (_o, doc) => void docs.push(doc as Record<string, unknown> & { schema: string }));
  await program.parseAsync(['node', 'hyperenclave', '--json', 'firmware', ...args]);
  expect(docs).toHaveLength(1);
  const doc = docs[0]!;
  expect(compileSchema(`${doc.schema.replace('hyperenclave/', '')}.schema.json`)(doc)).toBeUndefined();
  return doc;
}

describe('firmware build | sign | inspect | launch-env | reference', () => {
  it('end to end, every --json document valid against its schema', async () => {
    const img = join(dir, 'hv.heimg');
    const built = await run('build', join(fx, 'tiny.elf'), '-o', img, '--arch', 'hygon', '--per-cpu-size', '0x2000', '--feature-mask', '0x11');
    expect(built).toMatchObject({ signer: null, header: { arch: 'hygon', perCpuSize: 0x2000, featureMask: '0x11', buildId: '79462a8331b53a0387398dd6b25c60b3b96da256' } });
    const signed = await run('sign', img, '--key', join(fx, 'sm2.pem'));
    expect(signed).toMatchObject({ signer: { alg: 'sm2-sm3' } });
    const inspected = await run('inspect', img, '--arch', 'hygon', '--trusted-key', join(fx, 'sm2.pem'), '--banks', 'sm3_256,sha256');
    expect(Object.keys(inspected.digests as object).sort()).toEqual(['sha256', 'sm3_256']);
    await expect(run('inspect', img, '--arch', 'intel-vmx')).rejects.toThrow('image: built for hygon (arch at offset 0xc), this platform is intel-vmx');
    await expect(run('inspect', img, '--trusted-key', join(fx, 'p256.pem'))).rejects.toThrow(/which is not one of the 1 trusted keys/);
    const le = join(dir, 'le.bin');
    await run('launch-env', '-o', le, '--arch', 'hygon', '--name', 'sinit-analogue', '--env-version', '2');
    const refPath = join(dir, 'ref.json');
    const ref = await run('reference', img, '--launch-env', le, '--banks', 'sha256,sm3_256', '-o', refPath);
    expect(Object.keys(ref.pcrs as object)).toEqual(['sha256', 'sm3_256']);
    expect(JSON.parse(readFileSync(refPath, 'utf8'))).toEqual(ref);
    await expect(run('build', join(fx, 'tiny.elf'), '-o', img, '--arch', 'arm')).rejects.toThrow('--arch: expected one of intel-vmx, amd-svm, hygon, got "arm"');
  });
});
