/** The emulated service's RPC values: request fields checked by type (one-line error naming the field), results made JSON. */
import { EXIT } from '../../errors.js';
import { HypervisorError } from '../../hypervisor/abi.js';

export const hexArg = (args: Record<string, unknown>, k: string, size?: number): Buffer => {
  const v = args[k];
  if (typeof v !== 'string' || !/^([0-9a-f]{2})*$/i.test(v)) throw new HypervisorError(`request field "${k}": expected hex bytes`, EXIT.BAD_INPUT);
  const b = Buffer.from(v, 'hex');
  if (size !== undefined && b.length !== size) throw new HypervisorError(`request field "${k}": ${b.length} bytes, need ${size}`, EXIT.BAD_INPUT);
  return b;
};
export const intArg = (args: Record<string, unknown>, k: string): number => {
  const v = args[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new HypervisorError(`request field "${k}": expected a non-negative integer`, EXIT.BAD_INPUT);
  return v;
};
export const bigArg = (args: Record<string, unknown>, k: string): bigint => {
  const v = args[k];
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'string' && /^(0x[0-9a-f]+|[0-9]+)$/i.test(v)) return BigInt(v);
  throw new HypervisorError(`request field "${k}": expected an unsigned integer (number or "0x…" string)`, EXIT.BAD_INPUT);
};

/** bigint → "0x…", Buffer → hex, recursively (RPC results are JSON). */
export function jsonable(v: unknown): unknown {
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (Array.isArray(v)) return v.map(jsonable);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonable(x)]));
  return v;
}
