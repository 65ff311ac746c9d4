/**
 * TLS for the verifier API and mutual TLS between the verifier and agents, certificates from
 * files (PEM). A server with `ca` set requires and verifies a client certificate (mutual TLS).
 */
import { readFileSync } from 'node:fs';
import { AttestError } from '../attest/errors.js';

export interface TlsFiles {
  /** Certificate chain (PEM) this side presents. */
  cert: string;
  /** Its private key (PEM). */
  key: string;
  /** CA certificates (PEM) the peer's certificate must chain to; on a server this turns on mutual TLS. */
  ca?: string;
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new AttestError(`${what} ${path}: ${code === 'ENOENT' ? 'not found' : (e as Error).message}`, code === 'ENOENT' ? 3 : 6);
  }
}

export function loadTls(f: TlsFiles): TlsMaterial {
  return { cert: read(f.cert, 'TLS certificate'), key: read(f.key, 'TLS key'), ...(f.ca ? { ca: read(f.ca, 'TLS CA') } : {}) };
}

/** Options for https.createServer: TLS 1.2+, client certificates required and verified when a CA is given. */
export function serverTlsOptions(m: TlsMaterial): import('node:https').ServerOptions {
  return { cert: m.cert, key: m.key, minVersion: 'TLSv1.2', ...(m.ca ? { ca: m.ca, requestCert: true, rejectUnauthorized: true } : {}) };
}
