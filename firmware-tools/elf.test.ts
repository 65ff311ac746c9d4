import { describe, expect, it } from 'vitest';
import { HyperEnclaveError, EXIT } from '../src/errors.js';
import { ElfError, MAX_FLAT_SPAN, PT_LOAD, PT_NOTE, findBuildId, flatLoadImage, parseElf64 } from './elf.js';
import { buildImage } from './image.js';
import { FUZZ_ITERATIONS, FUZZ_SEED, mutateBytes, rng } from '../test/helpers/fuzz.js';

/** A small x86-64 ELF64 written field by field from the ELF spec: one PT_LOAD and a GNU build-id note. */
function elf(segments: { type: number; offset: number; vaddr: bigint; filesz: number; memsz: number }[], body: Buffer, entry = 0x100000n): Buffer {
  const ph = 64;
  const head = Buffer.alloc(ph + segments.length * 56);
  head.writeUInt32BE(0x7f454c46, 0);
  head[4] = 2; // ELFCLASS64
  head[5] = 1; // little-endian
  head[6] = 1; // EV_CURRENT
  head.writeUInt16LE(2, 16); // ET_EXEC
  head.writeUInt16LE(62, 18); // EM_X86_64
  head.writeUInt32LE(1, 20);
  head.writeBigUInt64LE(entry, 24);
  head.writeBigUInt64LE(BigInt(ph), 32);
  head.writeUInt16LE(64, 52);
  head.writeUInt16LE(56, 54);
  head.writeUInt16LE(segments.length, 56);
  segments.forEach((s, i) => {
    const at = ph + i * 56;
    head.writeUInt32LE(s.type, at);
    head.writeUInt32LE(5, at + 4);
    head.writeBigUInt64LE(BigInt(s.offset), at + 8);
    head.writeBigUInt64LE(s.vaddr, at + 16);
    head.writeBigUInt64LE(s.vaddr, at + 24);
    head.writeBigUInt64LE(BigInt(s.filesz), at + 32);
    head.writeBigUInt64LE(BigInt(s.memsz), at + 40);
  });
  const out = Buffer.alloc(Math.max(0x1200, head.length));
  head.copy(out, 0);
  body.copy(out, 0x1000);
  return out;
}

const BUILD_ID = Buffer.from('0123456789abcdef0123456789abcdef01234567', 'hex');
function note(namesz = 4, name = 'GNU\0', desc = BUILD_ID): Buffer {
  const n = Buffer.alloc(12 + 4 + desc.length);
  n.writeUInt32LE(namesz, 0);
  n.writeUInt32LE(desc.length, 4);
  n.writeUInt32LE(3, 8); // NT_GNU_BUILD_ID
  n.write(name, 12, 'latin1');
  desc.copy(n, 16);
  return n;
}
const code = Buffer.alloc(0x100, 0x90);
const seed = elf(
  [
    { type: PT_LOAD, offset: 0x1000, vaddr: 0x100000n, filesz: 0x100, memsz: 0x2000 },
    { type: PT_NOTE, offset: 0x1100, vaddr: 0x100100n, filesz: 36, memsz: 36 },
  ],
  Buffer.concat([code, note()]),
);

describe('firmware-tools ELF reader', () => {
  it('reads the hand-made ELF: build id from the note, one flat image', () => {
    const e = parseElf64(seed);
    expect(e.buildId?.equals(BUILD_ID)).toBe(true);
    const flat = flatLoadImage(e, seed);
    expect(flat.loadAddress).toBe(0x100000n);
    expect(flat.loadSize).toBe(0x2000);
  });

  it('a PT_NOTE namesz ≥ 0x7FFFFFFD does not round to a negative size (no build id, no exception)', () => {
    for (const namesz of [0x7ffffffd, 0x7fffffff, 0x80000000, 0xffffffff]) expect(findBuildId(note(namesz))).toBeUndefined();
    const bad = elf(
      [
        { type: PT_LOAD, offset: 0x1000, vaddr: 0x100000n, filesz: 0x100, memsz: 0x100 },
        { type: PT_NOTE, offset: 0x1100, vaddr: 0x100100n, filesz: 36, memsz: 36 },
      ],
      Buffer.concat([code, note(0x7ffffffd)]),
    );
    expect(() => buildImage(bad, { arch: 'amd-svm' })).not.toThrow();
  });

  it('a PT_LOAD at 0x40000001 is refused by the image limit before anything is allocated', () => {
    const far = elf(
      [
        { type: PT_LOAD, offset: 0x1000, vaddr: 0x100000n, filesz: 0x100, memsz: 0x100 },
        { type: PT_LOAD, offset: 0x1000, vaddr: 0x100000n + 0x40000001n, filesz: 0x100, memsz: 0x100 },
      ],
      code,
    );
    expect(() => buildImage(far, { arch: 'amd-svm' })).toThrow(ElfError);
    expect(() => buildImage(far, { arch: 'amd-svm' })).toThrow(new RegExp(`more than the image limit of 0x${MAX_FLAT_SPAN.toString(16)}`));
  });

  it(`fuzz (seed ${FUZZ_SEED}, ${FUZZ_ITERATIONS} inputs): a mutated ELF builds or is refused with a named error, never exit 1`, () => {
    const r = rng(FUZZ_SEED);
    for (let i = 0; i < FUZZ_ITERATIONS; i++) {
      const input = mutateBytes(seed, r);
      try {
        const c = buildImage(input, { arch: 'amd-svm' });
        expect(c.length).toBeLessThanOrEqual(MAX_FLAT_SPAN + 0x10000);
      } catch (e) {
        if (!(e instanceof HyperEnclaveError) || e.exitCode === EXIT.INTERNAL) throw new Error(`input #${i} (${input.toString('hex').slice(0, 200)}…): ${(e as Error).stack}`);
        expect(e.message).not.toMatch(/\n/);
      }
    }
  });
});
