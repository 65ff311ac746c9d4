import { EXIT, HyperEnclaveError } from '../errors.js';

/**
 * The enclave interface definition language (EDL), our analogue of SGX's EDL: one file per
 * enclave declares its ECALLs and OCALLs with typed, bounded parameters. Grammar and encoding:
 * docs/edl.md. Every problem is one line naming FILE:LINE:COLUMN.
 */

export class EdlError extends HyperEnclaveError {
  readonly code: string;
  constructor(message: string, code = 'ERR_EDL', exitCode: number = EXIT.BAD_INPUT) {
    super(message, exitCode);
    this.code = code;
  }
}

export type EdlType =
  | { kind: 'u32' }
  | { kind: 'u64' }
  | { kind: 'bool' }
  | EdlBuf
  | { kind: 'list'; elem: EdlBuf; max: number };

export type EdlBuf = { kind: 'bytes'; max: number } | { kind: 'string'; max: number };

export interface EdlParam {
  name: string;
  type: EdlType;
}

export interface EdlCall {
  dir: 'ecall' | 'ocall';
  index: number;
  name: string;
  params: EdlParam[];
  /** null: returns nothing. */
  ret: EdlType | null;
  line: number;
}

export interface EdlError_ {
  name: string;
  code: number;
}

export interface EdlFile {
  enclave: string;
  /** The shared buffer every encoded input and output must fit in (bytes). */
  buffer: number;
  ecalls: EdlCall[];
  ocalls: EdlCall[];
  errors: EdlError_[];
}

/** Largest ECALL index (rt's table is indexed by one byte) and the first OCALL index rt reserves. */
export const MAX_ECALL_INDEX = 255;
export const RESERVED_OCALL_FROM = 0xffff_ff00;
/** Error codes an interface may declare (below: rt's codes; above: the stubs' decode errors). */
export const USER_ERROR_MIN = 0x100;
export const USER_ERROR_MAX = 0x3fff;

const RESERVED = new Set(
  (
    'as async await break const continue crate dyn else enum extern false fn for if impl in let loop match mod move mut pub ref return self static struct super trait true type unsafe use where while ' +
    'abstract become box do final macro override priv typeof unsized virtual yield try ' +
    'case catch class debugger default delete export extends finally function import instanceof new null switch this throw var void with implements interface package private protected public arguments eval ' +
    'input out ret dec enc ocalls call dispatch'
  ).split(' '),
);

interface Tok {
  t: 'id' | 'int' | 'sym' | 'eof';
  v: string;
  line: number;
  col: number;
}

function lex(src: string, file: string): Tok[] {
  const toks: Tok[] = [];
  let line = 1;
  let col = 1;
  let i = 0;
  const adv = (n: number) => {
    for (let k = 0; k < n; k++) {
      if (src[i] === '\n') {
        line++;
        col = 1;
      } else col++;
      i++;
    }
  };
  while (i < src.length) {
    const c = src[i]!;
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
      adv(1);
      continue;
    }
    if (c === '/' && src[i + 1] === '/') {
      while (i < src.length && src[i] !== '\n') adv(1);
      continue;
    }
    const rest = src.slice(i);
    let m: RegExpExecArray | null;
    if ((m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest))) {
      toks.push({ t: 'id', v: m[0], line, col });
      adv(m[0].length);
    } else if ((m = /^(0x[0-9a-fA-F]+|[0-9]+)/.exec(rest))) {
      toks.push({ t: 'int', v: m[0], line, col });
      adv(m[0].length);
    } else if (rest.startsWith('->')) {
      toks.push({ t: 'sym', v: '->', line, col });
      adv(2);
    } else if ('(){}[]<>,;:='.includes(c)) {
      toks.push({ t: 'sym', v: c, line, col });
      adv(1);
    } else {
      throw new EdlError(`${file}:${line}:${col}: unexpected character ${JSON.stringify(c)}`, 'ERR_EDL_SYNTAX');
    }
  }
  toks.push({ t: 'eof', v: 'end of file', line, col });
  return toks;
}

/** Largest encoded size of a value of `t`. */
export function maxSize(t: EdlType): number {
  switch (t.kind) {
    case 'u32':
      return 4;
    case 'u64':
      return 8;
    case 'bool':
      return 1;
    case 'bytes':
    case 'string':
      return 4 + t.max;
    case 'list':
      return 4 + t.max * maxSize(t.elem);
  }
}

export function typeText(t: EdlType): string {
  return t.kind === 'list' ? `list<${typeText(t.elem)}, ${t.max}>` : t.kind === 'bytes' || t.kind === 'string' ? `${t.kind}[${t.max}]` : t.kind;
}

export function parseEdl(src: string, file = '<edl>'): EdlFile {
  const toks = lex(src, file);
  let p = 0;
  const at = (t: Tok) => `${file}:${t.line}:${t.col}`;
  const fail = (t: Tok, msg: string): never => {
    throw new EdlError(`${at(t)}: ${msg}`, 'ERR_EDL_SYNTAX');
  };
  const peek = () => toks[p]!;
  const next = () => toks[p++]!;
  const show = (t: Tok) => (t.t === 'eof' ? 'end of file' : JSON.stringify(t.v));
  const expectSym = (s: string) => {
    const t = next();
    if (t.t !== 'sym' || t.v !== s) fail(t, `expected "${s}", found ${show(t)}`);
    return t;
  };
  const expectWord = (w: string) => {
    const t = next();
    if (t.t !== 'id' || t.v !== w) fail(t, `expected "${w}", found ${show(t)}`);
    return t;
  };
  const ident = (what: string) => {
    const t = next();
    if (t.t !== 'id') fail(t, `expected ${what}, found ${show(t)}`);
    if (!/^[a-z][a-z0-9_]*$/.test(t.v)) fail(t, `${what} "${t.v}": must be lower snake_case ([a-z][a-z0-9_]*)`);
    if (RESERVED.has(t.v)) fail(t, `${what} "${t.v}": a reserved word in Rust or TypeScript or the stubs`);
    if (t.v.length > 48) fail(t, `${what} "${t.v}": longer than 48 characters`);
    return t;
  };
  const int = (what: string, min: number, max: number) => {
    const t = next();
    if (t.t !== 'int') fail(t, `expected ${what} (an integer), found ${show(t)}`);
    const n = Number(t.v);
    if (!Number.isSafeInteger(n) || n < min || n > max) fail(t, `${what} ${t.v}: out of range ${min}..${max}`);
    return { n, t };
  };

  expectWord('enclave');
  const name = ident('enclave name').v;
  expectWord('buffer');
  const buffer = int('buffer size', 64, 1 << 24).n;
  expectSym(';');

  const type = (allowList: boolean): EdlType => {
    const t = next();
    if (t.t !== 'id') fail(t, `expected a type (u32, u64, bool, bytes[N], string[N], list<T, N>), found ${show(t)}`);
    switch (t.v) {
      case 'u32':
      case 'u64':
      case 'bool':
        return { kind: t.v };
      case 'bytes':
      case 'string': {
        expectSym('[');
        const max = int(`${t.v} bound`, 1, buffer).n;
        expectSym(']');
        return { kind: t.v, max };
      }
      case 'list': {
        if (!allowList) fail(t, 'a list cannot hold lists');
        expectSym('<');
        const et = peek();
        const elem = type(false);
        if (elem.kind !== 'bytes' && elem.kind !== 'string') return fail(et, `list elements must be bytes[N] or string[N], found ${typeText(elem)}`);
        expectSym(',');
        const max = int('list bound', 1, buffer).n;
        expectSym('>');
        return { kind: 'list', elem, max };
      }
      default:
        return fail(t, `unknown type "${t.v}" (u32, u64, bool, bytes[N], string[N], list<T, N>)`);
    }
  };

  const ecalls: EdlCall[] = [];
  const ocalls: EdlCall[] = [];
  const errors: EdlError_[] = [];
  const names = new Map<string, string>();
  while (peek().t !== 'eof') {
    const kw = next();
    if (kw.t === 'id' && kw.v === 'error') {
      const n = ident('error name');
      if (names.has(n.v)) fail(n, `"${n.v}" already declared (${names.get(n.v)})`);
      expectSym('=');
      const { n: code, t: ct } = int('error code', USER_ERROR_MIN, USER_ERROR_MAX);
      if (errors.some((e) => e.code === code)) fail(ct, `error code ${code} already used`);
      expectSym(';');
      names.set(n.v, `${at(n)}`);
      errors.push({ name: n.v, code });
      continue;
    }
    if (kw.t !== 'id' || (kw.v !== 'ecall' && kw.v !== 'ocall')) fail(kw, `expected "ecall", "ocall" or "error", found ${show(kw)}`);
    const dir = kw.v as 'ecall' | 'ocall';
    const list = dir === 'ecall' ? ecalls : ocalls;
    const { n: index, t: it } = int(`${dir} index`, 0, dir === 'ecall' ? MAX_ECALL_INDEX : RESERVED_OCALL_FROM - 1);
    const prior = list.find((c) => c.index === index);
    if (prior) fail(it, `${dir} index ${index} already used by "${prior.name}"`);
    const n = ident(`${dir} name`);
    if (names.has(n.v)) fail(n, `"${n.v}" already declared (${names.get(n.v)})`);
    names.set(n.v, at(n));
    expectSym('(');
    const params: EdlParam[] = [];
    if (!(peek().t === 'sym' && peek().v === ')')) {
      for (;;) {
        const pn = ident('parameter name');
        if (params.some((q) => q.name === pn.v)) fail(pn, `parameter "${pn.v}" repeated`);
        expectSym(':');
        params.push({ name: pn.v, type: type(true) });
        const s = peek();
        if (s.t === 'sym' && s.v === ',') {
          next();
          continue;
        }
        break;
      }
    }
    if (params.length > 255) fail(n, `${dir} "${n.v}": more than 255 parameters`);
    const close = expectSym(')');
    let ret: EdlType | null = null;
    if (peek().t === 'sym' && peek().v === '->') {
      next();
      ret = type(true);
    }
    const end = expectSym(';');
    const inMax = params.reduce((s, q) => s + maxSize(q.type), 0);
    if (inMax > buffer) fail(close, `${dir} "${n.v}": parameters encode to up to ${inMax} bytes, more than the buffer (${buffer})`);
    if (ret && maxSize(ret) > buffer) fail(end, `${dir} "${n.v}": result encodes to up to ${maxSize(ret)} bytes, more than the buffer (${buffer})`);
    list.push({ dir, index, name: n.v, params, ret, line: kw.line });
  }
  if (ecalls.length === 0) fail(peek(), 'no ecall declared');
  return { enclave: name, buffer, ecalls, ocalls, errors };
}

/** Largest encoded input and output of a call. */
export function callSizes(c: EdlCall): { inMax: number; outMax: number } {
  return { inMax: c.params.reduce((s, q) => s + maxSize(q.type), 0), outMax: c.ret ? maxSize(c.ret) : 0 };
}
