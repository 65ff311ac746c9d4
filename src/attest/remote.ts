import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { EXIT } from '../errors.js';
import { AttestError } from './errors.js';
import { answerEnrollment, enrollmentRequest, type EnrollChallenge, type EnrollingTpm, type EnrollStartRequest } from './enroll.js';

/** What POST /verify answers (src/attest/service.ts). */
export interface RemoteVerdict {
  status: string;
  result: Record<string, unknown>;
  jwt: string;
}

/**
 * The attester's side of `hyperenclave verifier serve`: challenge → evidence → verdict, and AK
 * enrollment by credential activation, over HTTP(S) with JSON bodies. Every failure is one line
 * naming the endpoint and what went wrong.
 */
export class VerifierClient {
  readonly endpoint: URL;
  constructor(
    endpoint: string,
    private readonly timeoutMs = 30_000,
  ) {
    let u: URL;
    try {
      u = new URL(endpoint);
    } catch {
      throw new AttestError(`verifier endpoint "${endpoint}" is not a URL (expected http://host:port)`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new AttestError(`verifier endpoint ${endpoint}: only http and https are supported`);
    this.endpoint = u;
  }

  challenge(): Promise<{ nonce: string; expiresAt: string }> {
    return this.post('/challenge', {});
  }
  verify(evidence: unknown): Promise<RemoteVerdict> {
    return this.post('/verify', evidence);
  }
  enrollStart(req: EnrollStartRequest): Promise<EnrollChallenge> {
    return this.post('/enroll/start', req);
  }
  enrollFinish(answer: { id: string; secret: string }): Promise<Record<string, unknown>> {
    return this.post('/enroll/finish', answer);
  }

  private post<T>(path: string, body: unknown): Promise<T> {
    const url = new URL(path.replace(/^\//, ''), this.endpoint.href.endsWith('/') ? this.endpoint : new URL(this.endpoint.href + '/'));
    const text = JSON.stringify(body);
    const where = `verifier ${url.href}`;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<T>((resolve, reject) => {
      const req = send(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 16 * 1024 * 1024) {
            req.destroy(new AttestError(`${where}: answer larger than 16 MiB`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          let doc: unknown;
          try {
            doc = raw.length ? JSON.parse(raw) : {};
          } catch {
            return reject(new AttestError(`${where}: HTTP ${res.statusCode}, answer is not JSON: ${raw.slice(0, 80)}`));
          }
          if (!res.statusCode || res.statusCode >= 300) {
            const why = doc && typeof doc === 'object' && typeof (doc as { error?: unknown }).error === 'string' ? (doc as { error: string }).error : raw.slice(0, 120);
            return reject(new AttestError(`${where}: HTTP ${res.statusCode}: ${why}`));
          }
          resolve(doc as T);
        });
        res.on('error', (e) => reject(new AttestError(`${where}: ${e.message}`)));
      });
      // Unreachable or silent verifier: exit 3 (not found), like a missing device.
      req.on('timeout', () => req.destroy(new AttestError(`${where}: no answer within ${this.timeoutMs} ms`, EXIT.NOT_FOUND)));
      req.on('error', (e) => reject(e instanceof AttestError ? e : new AttestError(`${where}: ${e.message}`, EXIT.NOT_FOUND)));
      req.end(text);
    });
  }
}

/** Credential activation against a remote verifier: request → challenge → ActivateCredential → enrolled. */
export async function enrollWithVerifier(tpm: EnrollingTpm, verifier: VerifierClient): Promise<Record<string, unknown>> {
  const challenge = await verifier.enrollStart(await enrollmentRequest(tpm));
  return verifier.enrollFinish(await answerEnrollment(tpm, challenge));
}
