/** File-based halves for the CLI: JSON in, JSON out, written atomically. */
import { writeFileAtomic } from '../fs/atomic.js';
import { AttestError } from './errors.js';
import { EXIT, jsonSyntaxProblem } from '../errors.js';
import { finishEnrollment, startEnrollment, type EnrollChallenge, type EnrollmentRecord, type EnrollStartRequest } from './enroll.js';
import type { Verifier } from './verifier.js';
import { readFileBounded } from '../fs/bounded-read.js';

export function readJsonFile<T>(path: string, what: string): T {
  const text = readFileBounded(path, { what, kind: 'log' }).toString('utf8');
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new AttestError(`${what} ${path}: not JSON (${jsonSyntaxProblem(e, text)})`);
  }
}

/** A refusal of a file's contents names the file (the same checks serve HTTP bodies, which have none). */
function naming(path: string, e: unknown): never {
  if (e instanceof AttestError && e.exitCode === EXIT.BAD_INPUT && !e.message.includes(path)) e.message = `${path}: ${e.message}`;
  throw e;
}

export function writeJsonFile(path: string, doc: unknown, mode = 0o644): void {
  writeFileAtomic(path, JSON.stringify(doc, null, 2) + '\n', mode);
}

/** `hyperenclave verifier enroll --request request.json --out challenge.json` */
export function verifierEnrollStartFiles(v: Verifier, requestPath: string, challengeOutPath: string): EnrollChallenge {
  const request = readJsonFile<EnrollStartRequest>(requestPath, 'enrollment request');
  let ch: EnrollChallenge;
  try {
    ch = startEnrollment(v, request);
  } catch (e) {
    return naming(requestPath, e);
  }
  writeJsonFile(challengeOutPath, ch);
  return ch;
}

/** `hyperenclave verifier enroll --answer answer.json` */
export function verifierEnrollFinishFile(v: Verifier, answerPath: string): EnrollmentRecord {
  const a = readJsonFile<{ id?: unknown; secret?: unknown }>(answerPath, 'enrollment answer');
  if (typeof a?.id !== 'string' || typeof a.secret !== 'string') throw new AttestError(`enrollment answer ${answerPath}: /${typeof a?.id !== 'string' ? 'id' : 'secret'}: expected {"id": hex, "secret": base64}`);
  return finishEnrollment(v, { id: a.id, secret: a.secret });
}

/** `hyperenclave ak enroll --out request.json` */
export async function akEnrollRequestFile(tpm: import('./enroll.js').EnrollingTpm, outPath: string): Promise<EnrollStartRequest> {
  const { enrollmentRequest } = await import('./enroll.js');
  const req = await enrollmentRequest(tpm);
  writeJsonFile(outPath, req);
  return req;
}

/** `hyperenclave ak enroll --challenge challenge.json --out answer.json` */
export async function akEnrollAnswerFile(tpm: import('./enroll.js').EnrollingTpm, challengePath: string, outPath: string): Promise<{ id: string; secret: string }> {
  const { answerEnrollment } = await import('./enroll.js');
  const challenge = readJsonFile<EnrollChallenge>(challengePath, 'enrollment challenge');
  const ans = await answerEnrollment(tpm, challenge).catch((e: unknown) => naming(challengePath, e));
  writeJsonFile(outPath, ans, 0o600);
  return ans;
}
