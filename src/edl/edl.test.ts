import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EdlError, parseEdl } from './parse.js';
import { decodeParams, decodeResult, encodeParams, statusError } from './runtime.js';
import { EDL_FILES, generate, repoRoot } from './main.js';

const HEAD = 'enclave t buffer 4096;\n';

/** The one-line error parseEdl gives for `src` (it must throw). */
function problem(src: string): string {
  try {
    parseEdl(src, 't.edl');
  } catch (e) {
    expect(e).toBeInstanceOf(EdlError);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m;
  }
  throw new Error(`parsed: ${src}`);
}

describe('EDL parser: malformed definitions give one line with FILE:LINE:COLUMN', () => {
  it.each([
    ['enclave t buffer 4096\necall 0 f();', 't.edl:2:1: expected ";", found "ecall"'],
    [HEAD + 'ecall 0 f(a: u16);', 't.edl:2:14: unknown type "u16"'],
    [HEAD + 'ecall 0 f(a: bytes[]);', 't.edl:2:20: expected bytes bound (an integer), found "]"'],
    [HEAD + 'ecall 0 f(a: bytes[0]);', 't.edl:2:20: bytes bound 0: out of range 1..4096'],
    [HEAD + 'ecall 0 f(a: bytes[5000]);', 't.edl:2:20: bytes bound 5000: out of range 1..4096'],
    [HEAD + 'ecall 0 f(a: bytes[3000], b: bytes[3000]);', 't.edl:2:41: ecall "f": parameters encode to up to 6008 bytes, more than the buffer (4096)'],
    [HEAD + 'ecall 0 f() -> list<string[64], 100>;', 't.edl:2:37: ecall "f": result encodes to up to 6804 bytes'],
    [HEAD + 'ecall 0 f(a: list<u32, 3>);', 't.edl:2:19: list elements must be bytes[N] or string[N], found u32'],
    [HEAD + 'ecall 0 f(a: list<list<bytes[1], 1>, 3>);', 't.edl:2:19: a list cannot hold lists'],
    [HEAD + 'ecall 0 f();\necall 0 g();', 't.edl:3:7: ecall index 0 already used by "f"'],
    [HEAD + 'ecall 256 f();', 't.edl:2:7: ecall index 256: out of range 0..255'],
    [HEAD + 'ocall 4294967040 f();', 't.edl:2:7: ocall index 4294967040: out of range'],
    [HEAD + 'ecall 0 f();\nocall 0 f();', 't.edl:3:9: "f" already declared (t.edl:2:9)'],
    [HEAD + 'ecall 0 f(a: u32, a: u64);', 't.edl:2:19: parameter "a" repeated'],
    [HEAD + 'ecall 0 f(type: u32);', 't.edl:2:11: parameter name "type": a reserved word'],
    [HEAD + 'ecall 0 Get();', 't.edl:2:9: ecall name "Get": must be lower snake_case'],
    [HEAD + 'ecall 0 f() -> u32', 't.edl:2:19: expected ";", found end of file'],
    [HEAD + 'ecall 0 f(a: u32) # x;', 't.edl:2:19: unexpected character "#"'],
    [HEAD + 'error e = 0x10;\necall 0 f();', 't.edl:2:11: error code 0x10: out of range 256..16383'],
    [HEAD + 'error e = 0x100;\nerror g = 0x100;\necall 0 f();', 't.edl:3:11: error code 256 already used'],
    [HEAD, 't.edl:2:1: no ecall declared'],
    ['ecall 0 f();', 't.edl:1:1: expected "enclave", found "ecall"'],
  ])('%j', (src, want) => {
    expect(problem(src)).toContain(want);
  });

  it('parses the kvstore interface', () => {
    const f = parseEdl(readFileSync(join(repoRoot, EDL_FILES[0].edl), 'utf8'));
    expect(f.ecalls.map((c) => `${c.index}:${c.name}`)).toEqual(['0:put', '1:get', '2:remove', '3:list', '5:stats', '4:echo_rounds']);
    expect(f.ocalls.map((c) => c.name)).toEqual(['blob_write', 'blob_read', 'blob_delete', 'blob_list', 'echo']);
  });
});

describe('generated stubs are the committed ones', () => {
  it.each(EDL_FILES.map((e) => [e.edl, e] as const))('%s', (_n, e) => {
    for (const [path, text] of generate(repoRoot, e)) {
      const committed = readFileSync(join(repoRoot, path), 'utf8');
      expect(committed === text, `${path} is stale: run npm run edl:gen and commit it`).toBe(true);
    }
  });
});

describe('host codec: bounds and named errors', () => {
  const params = [
    { name: 'n', type: { kind: 'u32' as const } },
    { name: 'flag', type: { kind: 'bool' as const } },
    { name: 'key', type: { kind: 'string' as const, max: 8 } },
    { name: 'ids', type: { kind: 'list' as const, elem: { kind: 'bytes' as const, max: 2 }, max: 2 } },
  ];
  // Layout written out by hand from docs/edl.md (not by the encoder under test).
  const good = Buffer.from('07000000' + '01' + '02000000' + '6869' + '02000000' + '01000000aa' + '02000000bbcc', 'hex');

  it('round trip against the hand-written encoding', () => {
    expect(encodeParams(params, [7, true, 'hi', [Buffer.from([0xaa]), Buffer.from([0xbb, 0xcc])]], 'f')).toEqual(good);
    expect(decodeParams(params, good, 'OCALL f')).toEqual([7, true, 'hi', [Buffer.from([0xaa]), Buffer.from([0xbb, 0xcc])]]);
  });

  const bad = (hex: string) => () => decodeParams(params, Buffer.from(hex, 'hex'), 'OCALL f');
  it.each([
    ['07000000', 'OCALL f field "flag": truncated (needs 1 bytes at offset 4, 0 left)'],
    ['0700000002', 'OCALL f field "flag": not a bool (0 or 1) (byte 2 at offset 4)'],
    ['0700000001' + '09000000', 'OCALL f field "key": longer than its bound (length 9 at offset 5, bound 8)'],
    ['0700000001' + 'ffffffff', 'OCALL f field "key": longer than its bound (length 4294967295'],
    ['0700000001' + '02000000' + 'ff', 'OCALL f field "key": truncated'],
    ['0700000001' + '02000000' + 'c328', 'OCALL f field "key": not UTF-8'],
    ['0700000001' + '00000000' + '03000000', 'OCALL f field "ids": longer than its bound (count 3'],
    ['0700000001' + '00000000' + '01000000' + '03000000aabbcc', 'OCALL f field "ids[0]": longer than its bound'],
    ['0700000001' + '00000000' + '00000000' + '00', 'OCALL f: trailing bytes after the last field (1 bytes at offset 13)'],
  ])('%s', (hex, want) => {
    expect(bad(hex)).toThrowError(want);
    try {
      bad(hex)();
    } catch (e) {
      expect((e as EdlError).code).toBe('ERR_EDL_DECODE');
    }
  });

  it('refuses to encode over a bound or a wrong type', () => {
    expect(() => encodeParams(params, [7, true, 'ninechars', []], 'ECALL f')).toThrowError('ECALL f parameter "key": 9 bytes, more than its bound 8');
    expect(() => encodeParams(params, [-1, true, '', []], 'ECALL f')).toThrowError('ECALL f parameter "n": expected u32, got -1');
    expect(() => encodeParams(params, [1, true, '\ud800', []], 'ECALL f')).toThrowError('lone surrogate');
    expect(() => decodeResult({ kind: 'u64' }, Buffer.alloc(7), 'ECALL g output')).toThrowError('ECALL g output field "result": truncated');
  });

  it('names the enclave side decode errors by field and the interface errors by name', () => {
    const e1 = statusError(0x8000_0000 | (0x40 << 24) | (2 << 16) | 1, 'ECALL put', {}, ['key', 'value'], {});
    expect(e1.message).toBe('ECALL put: the enclave refused its input: field "value" longer than its bound');
    expect(e1.code).toBe('ERR_EDL_DECODE');
    const e2 = statusError(0x8000_0000 | (0x41 << 24) | (5 << 16) | (1 << 8) | 254, 'ECALL get', {}, ['key'], { 1: { name: 'blob_read', fields: ['id'] } });
    expect(e2.message).toBe('ECALL get: the enclave refused the host\'s answer to OCALL blob_read: trailing bytes after the last field');
    const e3 = statusError(0x8000_0101, 'ECALL get', { torn_blob: 0x101 }, ['key'], {}, () => 4);
    expect([e3.message, e3.code, e3.exitCode]).toEqual(['ECALL get: torn blob', 'ERR_TORN_BLOB', 4]);
    expect(statusError(0x8000_0007, 'ECALL get', {}, [], {}).code).toBe('ERR_ENCLAVE_OCALL');
  });
});
