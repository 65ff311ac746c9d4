import { TpmUsageError } from './errors.js';
import { DeviceTransport } from './transport/device.js';
import { SocketTransport } from './transport/socket.js';
import { SwtpmControl } from './transport/swtpm-control.js';
import type { TpmTransport } from './transport/transport.js';

/** A parsed TCTI string, in the spellings tpm2-tools users know. */
export type TctiConfig =
  | { kind: 'swtpm'; host: string; port: number; ctrlPort: number }
  | { kind: 'swtpm-unix'; path: string; ctrlPath: string | undefined }
  | { kind: 'device'; path: string };

const DEFAULT_SWTPM_PORT = 2321;

function parseKv(rest: string, whole: string): Map<string, string> {
  const kv = new Map<string, string>();
  if (!rest) return kv;
  for (const part of rest.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new TpmUsageError(`TCTI "${whole}": "${part}" is not key=value`);
    const k = part.slice(0, eq).trim();
    if (kv.has(k)) throw new TpmUsageError(`TCTI "${whole}": "${k}" given twice`);
    kv.set(k, part.slice(eq + 1).trim());
  }
  return kv;
}

function port(v: string, key: string, whole: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535) throw new TpmUsageError(`TCTI "${whole}": ${key}=${v} is not a port number (1..65535)`);
  return Number(v);
}

/**
 * Parses `swtpm:host=H,port=P`, `swtpm:port=P`, `swtpm:path=/x.sock[,ctrl=/y.sock]`, `swtpm:`
 * (127.0.0.1:2321), `device:/dev/tpmrm0` and `device:` (/dev/tpmrm0). The swtpm control
 * channel is port+1 for TCP (override with ctrl=) and, for Unix sockets, PATH.ctrl as
 * tpm2-tss expects, or ctrl=PATH.
 */
export function parseTcti(tcti: string): TctiConfig {
  const whole = tcti.trim();
  const colon = whole.indexOf(':');
  const name = (colon < 0 ? whole : whole.slice(0, colon)).toLowerCase();
  const rest = colon < 0 ? '' : whole.slice(colon + 1);
  switch (name) {
    case 'swtpm': {
      const kv = parseKv(rest, whole);
      for (const k of kv.keys()) if (!['host', 'port', 'path', 'ctrl'].includes(k)) throw new TpmUsageError(`TCTI "${whole}": unknown key "${k}" (host, port, path, ctrl)`);
      const path = kv.get('path');
      if (path !== undefined) {
        if (kv.has('host') || kv.has('port')) throw new TpmUsageError(`TCTI "${whole}": path= cannot be combined with host= or port=`);
        if (!path) throw new TpmUsageError(`TCTI "${whole}": empty path`);
        // tpm2-tss's swtpm TCTI looks for the control socket at PATH.ctrl; so do we.
        const ctrl = kv.get('ctrl') ?? `${path}.ctrl`;
        return { kind: 'swtpm-unix', path, ctrlPath: ctrl };
      }
      const host = kv.get('host') || '127.0.0.1';
      const p = kv.has('port') ? port(kv.get('port')!, 'port', whole) : DEFAULT_SWTPM_PORT;
      const ctrlPort = kv.has('ctrl') ? port(kv.get('ctrl')!, 'ctrl', whole) : p + 1;
      return { kind: 'swtpm', host, port: p, ctrlPort };
    }
    case 'device': {
      const path = rest || '/dev/tpmrm0';
      if (!path.startsWith('/')) throw new TpmUsageError(`TCTI "${whole}": device path must be absolute`);
      return { kind: 'device', path };
    }
    case 'mssim':
      throw new TpmUsageError(`TCTI "${whole}": the mssim protocol is not supported; swtpm serves raw commands, use swtpm:host=H,port=P`);
    case 'tabrmd':
      throw new TpmUsageError(`TCTI "${whole}": tpm2-abrmd (D-Bus) is not supported; use device:/dev/tpmrm0`);
    default:
      throw new TpmUsageError(`TCTI "${whole}": unknown kind "${name}" (expected swtpm:host=H,port=P, swtpm:path=SOCK or device:/dev/tpmrm0)`);
  }
}

/** The TCTI from the environment: HYPERENCLAVE_TCTI, then TPM2TOOLS_TCTI. */
export function tctiFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.HYPERENCLAVE_TCTI || env.TPM2TOOLS_TCTI || undefined;
}

/** Opens the transport a TCTI names (no I/O until the first command). */
export function openTransport(tcti: string | TctiConfig, opts: { timeoutMs?: number } = {}): TpmTransport {
  const cfg = typeof tcti === 'string' ? parseTcti(tcti) : tcti;
  switch (cfg.kind) {
    case 'swtpm': {
      const control = new SwtpmControl({ host: cfg.host, port: cfg.ctrlPort }, opts.timeoutMs);
      return new SocketTransport({ host: cfg.host, port: cfg.port }, { control, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
    }
    case 'swtpm-unix': {
      const control = cfg.ctrlPath ? new SwtpmControl({ path: cfg.ctrlPath }, opts.timeoutMs) : undefined;
      return new SocketTransport({ path: cfg.path }, { ...(control ? { control } : {}), ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
    }
    case 'device':
      return new DeviceTransport(cfg.path, opts.timeoutMs);
  }
}

/** The control channel a TCTI implies (swtpm only). */
export function swtpmControlFor(tcti: string | TctiConfig): SwtpmControl | undefined {
  const cfg = typeof tcti === 'string' ? parseTcti(tcti) : tcti;
  if (cfg.kind === 'swtpm') return new SwtpmControl({ host: cfg.host, port: cfg.ctrlPort });
  if (cfg.kind === 'swtpm-unix' && cfg.ctrlPath) return new SwtpmControl({ path: cfg.ctrlPath });
  return undefined;
}
