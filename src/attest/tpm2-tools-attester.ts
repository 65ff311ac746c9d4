/**
 * An attester made of tpm2-tools commands (a real peer, used by tests and the benchmark):
 * EK, AK, PCR extend and quote through `tpm2_*` against a TPM given by TCTI. Transient
 * objects and sessions are flushed after every command (no resource manager with swtpm).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AttestError } from './errors.js';
import type { BankName } from './policy.js';
import { parsePcrsFile } from './tpm2-tools.js';

export function tpm2ToolsAvailable(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v tpm2_quote && command -v tpm2_checkquote && command -v tpm2_createak'], { stdio: 'ignore' });
  return r.status === 0 ? undefined : 'tpm2-tools is not installed (apt-get install tpm2-tools)';
}

export class Tpm2ToolsAttester {
  readonly dir: string;
  constructor(readonly tcti: string) {
    this.dir = mkdtempSync(join(tmpdir(), 'tpm2-tools-attester-'));
  }

  run(tool: string, args: string[]): string {
    const r = spawnSync(tool, args, { encoding: 'utf8', cwd: this.dir, env: { ...process.env, TPM2TOOLS_TCTI: this.tcti }, timeout: 30_000 });
    if (r.status !== 0) throw new AttestError(`${tool} ${args.join(' ')}: exit ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ')}`, 7);
    return r.stdout;
  }

  flush(): void {
    this.run('tpm2_flushcontext', ['-t']);
    this.run('tpm2_flushcontext', ['-s']);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /** RSA EK from the default template (ek.ctx, ek.pub as TPM2B_PUBLIC). */
  createEk(alg: 'rsa' | 'ecc' = 'rsa'): { ekPublic: Buffer } {
    this.run('tpm2_createek', ['-c', 'ek.ctx', '-G', alg, '-u', 'ek.pub']);
    this.flush();
    return { ekPublic: readFileSync(this.path('ek.pub')) };
  }

  /** AK under the EK: returns TPMT_PUBLIC (size prefix stripped) and PEM. */
  createAk(kind: 'ecc256' | 'ecc384' | 'rsa2048' = 'ecc256', name = 'ak'): { tpmtPublic: Buffer; pem: string; hash: string } {
    const hash = kind === 'ecc384' ? 'sha384' : 'sha256';
    this.run('tpm2_createak', ['-C', 'ek.ctx', '-c', `${name}.ctx`, '-G', kind, '-g', hash, '-s', kind.startsWith('ecc') ? 'ecdsa' : 'rsassa', '-u', `${name}.pub`, '-n', `${name}.name`]);
    this.flush();
    this.run('tpm2_readpublic', ['-c', `${name}.ctx`, '-f', 'pem', '-o', `${name}.pem`]);
    this.flush();
    const tpm2b = readFileSync(this.path(`${name}.pub`));
    return { tpmtPublic: tpm2b.subarray(2), pem: readFileSync(this.path(`${name}.pem`), 'utf8'), hash };
  }

  extend(pcr: number, bank: string, digestHex: string): void {
    this.run('tpm2_pcrextend', [`${pcr}:${bank}=${digestHex}`]);
  }

  /** tpm2_quote over one bank's PCRs with the given qualifying data. */
  quote(bank: BankName, pcrs: number[], qualificationHex: string, ak = 'ak', hash = 'sha256'): { attest: Buffer; signature: Buffer; pcrsFile: Buffer; values: Map<number, Buffer> } {
    this.run('tpm2_quote', ['-c', `${ak}.ctx`, '-l', `${bank}:${pcrs.join(',')}`, '-q', qualificationHex, '-m', 'q.msg', '-s', 'q.sig', '-o', 'q.pcrs', '-g', hash]);
    this.flush();
    const pcrsFile = readFileSync(this.path('q.pcrs'));
    return { attest: readFileSync(this.path('q.msg')), signature: readFileSync(this.path('q.sig')), pcrsFile, values: parsePcrsFile(pcrsFile).values.get(bank) ?? new Map() };
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Tpm2ToolsAttesterEk {
  /** EK certificate from NV (RSA 0x01C00002), PEM; undefined when the TPM has none. */
  ekCertificatePem?: string;
}

/** Reads the RSA EK certificate from NV index 0x01C00002 (swtpm_setup --create-ek-cert puts it there). */
export function readEkCertificate(att: Tpm2ToolsAttester, index = '0x01c00002'): string | undefined {
  try {
    att.run('tpm2_nvread', [index, '-o', 'ekcert.der']);
  } catch {
    return undefined;
  }
  const der = readFileSync(att.path('ekcert.der'));
  return new X509Certificate(der).toString();
}

/** ActivateCredential with tpm2-tools (EK policy session: PolicySecret(endorsement)). */
export function activateWithTpm2Tools(att: Tpm2ToolsAttester, credentialFile: Buffer, ak = 'ak'): Buffer {
  writeFileSync(att.path('cred.in'), credentialFile);
  att.run('tpm2_startauthsession', ['--policy-session', '-S', 'session.ctx']);
  try {
    att.run('tpm2_policysecret', ['-S', 'session.ctx', '-c', 'e']);
    att.run('tpm2_activatecredential', ['-c', `${ak}.ctx`, '-C', 'ek.ctx', '-i', 'cred.in', '-o', 'cred.secret', '-P', 'session:session.ctx']);
  } finally {
    att.flush();
  }
  return readFileSync(att.path('cred.secret'));
}

/** collectEvidence's TPM interface served by tpm2-tools (AK context `<ak>.ctx` or a persistent handle). */
export function tpm2ToolsAttesterTpm(att: Tpm2ToolsAttester, ak = 'ak.ctx', hash = 'sha256'): import('./collect.js').AttesterTpm {
  return {
    async readPcrs(bank, pcrs) {
      att.run('tpm2_pcrread', [`${bank}:${pcrs.join(',')}`, '-o', 'read.pcrs', '-F', 'serialized']);
      return parsePcrsFile(readFileSync(att.path('read.pcrs'))).values.get(bank) ?? new Map();
    },
    async quote(bank, pcrs, qualifyingData) {
      att.run('tpm2_quote', ['-c', ak, '-l', `${bank}:${pcrs.join(',')}`, '-q', qualifyingData.toString('hex'), '-m', 'cq.msg', '-s', 'cq.sig', '-g', hash]);
      att.flush();
      return { attest: readFileSync(att.path('cq.msg')), signature: readFileSync(att.path('cq.sig')) };
    },
  };
}

/** Enrollment's TPM interface served by tpm2-tools (EK in ek.ctx, AK in <ak>.ctx of this attester). */
export function tpm2ToolsEnrollingTpm(att: Tpm2ToolsAttester, ak = 'ak'): import('./enroll.js').EnrollingTpm {
  return {
    async ekCertificates() {
      const c = readEkCertificate(att);
      if (!c) throw new AttestError('no EK certificate in NV 0x01c00002', 3);
      return [c];
    },
    async ekPublic() {
      att.run('tpm2_readpublic', ['-c', 'ek.ctx', '-o', 'ek.tpm2b']);
      att.flush();
      return readFileSync(att.path('ek.tpm2b'));
    },
    async akPublic() {
      att.run('tpm2_readpublic', ['-c', `${ak}.ctx`, '-o', `${ak}.tpm2b`]);
      att.flush();
      return readFileSync(att.path(`${ak}.tpm2b`));
    },
    async activateCredential(blob, secret) {
      const u32 = (n: number): Buffer => {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(n);
        return b;
      };
      return activateWithTpm2Tools(att, Buffer.concat([u32(0xbadcc0de), u32(1), blob, secret]), ak);
    },
  };
}
