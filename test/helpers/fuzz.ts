/**
 * Seeded mutation fuzzing for the test suite: a fixed seed in CI (HE_FUZZ_SEED, default 20),
 * HE_FUZZ_ITERATIONS per reader (default 1500; `make fuzz` runs many more with a fresh seed and
 * prints it, so a failure can be replayed with the same HE_FUZZ_SEED).
 */

export const FUZZ_SEED = Number(process.env.HE_FUZZ_SEED ?? 20);
export const FUZZ_ITERATIONS = Number(process.env.HE_FUZZ_ITERATIONS ?? 1500);

/** mulberry32: a small, fast, seedable PRNG (not for secrets). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7ffffffd, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

/** Byte-level mutations of a seed input: flips, interesting 32-bit values, inserts, deletes, truncations, splices. */
export function mutateBytes(seed: Buffer, r: () => number): Buffer {
  const pick = (n: number) => Math.floor(r() * n);
  let b = Buffer.from(seed);
  const rounds = 1 + pick(4);
  for (let k = 0; k < rounds; k++) {
    const op = pick(8);
    if (op === 0 && b.length) b[pick(b.length)] ^= 1 << pick(8);
    else if (op === 1 && b.length) b[pick(b.length)] = pick(256);
    else if (op === 2 && b.length >= 4) b.writeUInt32LE(INTERESTING32[pick(INTERESTING32.length)]!, pick(b.length - 3));
    else if (op === 3) b = b.subarray(0, pick(b.length + 1));
    else if (op === 4) {
      const at = pick(b.length + 1);
      const ins = Buffer.alloc(1 + pick(16), pick(256));
      b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
    } else if (op === 5 && b.length) {
      const at = pick(b.length);
      b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + pick(16))]);
    } else if (op === 6 && b.length) {
      const from = pick(b.length);
      const len = pick(Math.min(64, b.length - from)) + 1;
      const at = pick(b.length + 1);
      b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + len), b.subarray(at)]);
    } else if (op === 7 && b.length >= 8) b.writeBigUInt64LE(BigInt(INTERESTING32[pick(INTERESTING32.length)]!) << BigInt(pick(33)), pick(b.length - 7));
  }
  return b;
}

const STRINGS = ['', ' ', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', '-----BEGIN', '..', '/', '/dev/zero', '__proto__', 'constructor', 'a'.repeat(5000), '0x', 'zz', '\u0000', 'sha256', '12', '-1'];
const NUMBERS = [0, -1, 1, 1.5, 2 ** 31, 2 ** 53, -(2 ** 53), 1e308, 255, 65536, Number.MAX_SAFE_INTEGER + 2];

function randomValue(r: () => number, depth = 0): unknown {
  const pick = (n: number) => Math.floor(r() * n);
  switch (pick(depth > 2 ? 5 : 7)) {
    case 0:
      return STRINGS[pick(STRINGS.length)];
    case 1:
      return NUMBERS[pick(NUMBERS.length)];
    case 2:
      return r() < 0.5;
    case 3:
      return null;
    case 4:
      return Buffer.from(Array.from({ length: pick(40) }, () => pick(256))).toString(pick(2) ? 'hex' : 'base64');
    case 5:
      return Array.from({ length: pick(4) }, () => randomValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = 0; i < pick(4); i++) Object.defineProperty(o, pick(3) ? `k${pick(5)}` : '__proto__', { value: randomValue(r, depth + 1), enumerable: true, configurable: true, writable: true });
      return o;
    }
  }
}

/** Structure-aware JSON mutation: replace, delete or add fields at random paths, then sometimes byte-mutate the text. */
export function mutateJson(doc: unknown, r: () => number): string {
  const pick = (n: number) => Math.floor(r() * n);
  const copy = JSON.parse(JSON.stringify(doc)) as unknown;
  const containers: (Record<string, unknown> | unknown[])[] = [];
  const walk = (v: unknown) => {
    if (v && typeof v === 'object') {
      containers.push(v as Record<string, unknown>);
      for (const x of Object.values(v as Record<string, unknown>)) walk(x);
    }
  };
  walk(copy);
  const edits = 1 + pick(3);
  for (let i = 0; i < edits && containers.length; i++) {
    const c = containers[pick(containers.length)]!;
    const keys = Object.keys(c);
    const op = pick(3);
    if (op === 0 && keys.length) Object.defineProperty(c, keys[pick(keys.length)]!, { value: randomValue(r), enumerable: true, configurable: true, writable: true });
    else if (op === 1 && keys.length) {
      if (Array.isArray(c)) c.splice(pick(c.length), 1);
      else delete (c as Record<string, unknown>)[keys[pick(keys.length)]!];
    } else if (Array.isArray(c)) c.push(randomValue(r));
    else (c as Record<string, unknown>)[`x${pick(3)}`] = randomValue(r);
  }
  const text = JSON.stringify(copy);
  return pick(5) === 0 ? mutateBytes(Buffer.from(text), r).toString('latin1') : text;
}
