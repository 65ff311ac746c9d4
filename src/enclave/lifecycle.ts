import { readFileSync } from 'node:fs';
import { readFileBounded } from '../fs/bounded-read.js';
import { EXIT } from '../errors.js';
import type { EcallRequest, EcallResult, HypervisorClient } from '../hypervisor/client.js';
import type { BackendKind } from './backends/index.js';
import { EnclaveError } from './errors.js';
import { type EnclavePlan, loadPayload, planEnclave } from './layout.js';
import type { EnclaveManifest } from './manifest.js';
import { buildSigstruct, computeMrEnclave, loadSignerKey, mrsignerOf } from './sgx.js';

/**
 * Enclave lifecycle over a HypervisorClient: ECREATE → EADD+EEXTEND every page → EINIT with a
 * SIGSTRUCT signed here (the key never leaves this process) → optional memory-encryption launch
 * (key slot from the core, launch measurement from the backend model) → ECALLs on KVM → REPORT
 * → destroy (EPC returned, key slot released and flushed).
 */

export interface CreatedEnclave {
  id: number;
  plan: EnclavePlan;
  /** MRENCLAVE computed here, independently of the hypervisor, and checked against ENCLAVE_INFO. */
  mrenclave: Buffer;
  mrsigner: Buffer;
  sigstruct: Buffer;
  epcPages: number;
}

/** Pages per EADD request when progress is reported (4 MiB); otherwise all pages go in one request. */
const PROGRESS_BATCH_PAGES = 1024;

export async function createEnclave(client: HypervisorClient, m: EnclaveManifest, opts: { onProgress?: (bytesAdded: number, bytesTotal: number) => void } = {}): Promise<CreatedEnclave> {
  const { image, layout } = loadPayload(m);
  const plan = planEnclave(m, image, layout);
  const key = loadSignerKey(readFileBounded(m.signer.key, { what: `${m.source}: /signer/key`, kind: 'key' }), `${m.source}: /signer/key ${m.signer.key}`);
  const mrenclave = computeMrEnclave(plan.size, plan.ssaFrameSize, plan.pages);
  const sigstruct = buildSigstruct(
    { date: m.signer.date, attributes: plan.attributes, xfrm: plan.xfrm, miscSelect: plan.miscSelect, enclaveHash: mrenclave, isvProdId: m.isvProdId, isvSvn: m.isvSvn },
    key,
  );
  const id = await client.enclaveCreate({ size: plan.size, base: plan.base, ssaFrameSize: plan.ssaFrameSize, miscSelect: plan.miscSelect, attributes: plan.attributes, xfrm: plan.xfrm }, { name: m.name });
  try {
    const pages = plan.pages.map((p) => ({ offset: p.offset, data: Buffer.from(p.data), flags: p.flags, measure: p.measured !== false }));
    const batch = opts.onProgress ? PROGRESS_BATCH_PAGES : Math.max(1, pages.length);
    const total = pages.reduce((n, p) => n + p.data.length, 0);
    let added = 0;
    for (let i = 0; i < pages.length; i += batch) {
      const part = pages.slice(i, i + batch);
      await client.enclaveAddPages(id, part);
      added += part.reduce((n, p) => n + p.data.length, 0);
      opts.onProgress?.(added, total);
    }
    await client.enclaveInit(id, sigstruct);
    const info = await client.enclaveInfo(id);
    if (!info.mrenclave.equals(mrenclave))
      throw new EnclaveError(`enclave ${m.name}: hypervisor MRENCLAVE ${info.mrenclave.toString('hex')} differs from the computed ${mrenclave.toString('hex')}`, EXIT.VERIFY_FAILED);
    return { id, plan, mrenclave, mrsigner: mrsignerOf(key), sigstruct, epcPages: info.epcPages };
  } catch (e) {
    await client.enclaveDestroy(id).catch(() => undefined);
    throw e;
  }
}

export interface LaunchInfo {
  backend: BackendKind;
  keySlot: number | null;
  algorithm: string;
  measurement: string;
  launchDigest: string;
  mnonce: string;
  policy: number;
  api: string;
}

export interface EnclaveRunResult {
  schema: 'hyperenclave/enclave-run';
  version: 1;
  name: string;
  enclaveId: number;
  mrenclave: string;
  mrsigner: string;
  isvProdId: number;
  isvSvn: number;
  debug: boolean;
  size: string;
  base: string;
  epcPages: number;
  backend: BackendKind;
  keySlot: number | null;
  /** SEV/CSV launch measurement or the hypervisor's SHA-256 launch digest (mktme/none); null without a launch. */
  launch: LaunchInfo | null;
  ecalls: { fn: number; ok: boolean; ret: string | null; output: string; error: string | null; micros: number }[];
  /** Self-targeted REPORT (432 B hex) and whether the hypervisor verified its MAC. */
  /** Pages given back by ENCLAVE_DESTROY (null when kept alive). */
  epcReturned: number | null;
  destroyed: boolean;
}

export interface RunOptions {
  backend?: BackendKind;
  policy?: number;
  /** `thread` picks the TCS by index (0 = the first); `tcs` gives its offset directly. */
  ecalls?: readonly (EcallRequest & { thread?: number })[];
  /** Keep the enclave alive after the run (for `enclave list`, later destroy). */
  keep?: boolean;
  /** Called as pages are added (bytes added so far, bytes in all). */
  onProgress?: (done: number, total: number) => void;
}

export async function launchEnclave(client: HypervisorClient, id: number, backend: BackendKind, policy?: number): Promise<LaunchInfo> {
  const r = await client.enclaveLaunch(id, backend, policy);
  const mm = r.measurement;
  return {
    backend: r.backend,
    keySlot: r.keySlot,
    algorithm: mm.algorithm,
    measurement: mm.measurement.toString('hex'),
    launchDigest: mm.launchDigest.toString('hex'),
    mnonce: mm.mnonce.toString('hex'),
    policy: mm.policy,
    api: `${mm.apiMajor}.${mm.apiMinor} build ${mm.build}`,
  };
}

/** The whole flow; the enclave is destroyed at the end (also on failure) unless `keep`. */
export async function runEnclave(client: HypervisorClient, m: EnclaveManifest, opts: RunOptions = {}): Promise<EnclaveRunResult> {
  const backend = opts.backend ?? m.backend.kind;
  const policy = opts.policy ?? m.backend.policy;
  const e = await createEnclave(client, m, opts.onProgress ? { onProgress: opts.onProgress } : {});
  let destroyed = false;
  let epcReturned: number | null = null;
  try {
    const launch = !client.traits.launchesPlainEnclaves && backend === 'none' ? null : await launchEnclave(client, e.id, backend, policy);
    // every TCS is usable: a request names its thread (index into the plan's TCS list) or a TCS
    const ecalls = opts.ecalls?.length ? await client.enclaveRun(e.id, opts.ecalls.map((c) => withTcs(e.plan, c))) : ([] as EcallResult[]);
    // No host REPORT here: EREPORT is the enclave's own (the hypervisor refuses the host with
    // ENCLAVE_ONLY); an enclave's evidence comes from `hyperenclave attest --enclave`.
    if (!opts.keep) {
      epcReturned = await client.enclaveDestroy(e.id);
      destroyed = true;
    }
    return {
      schema: 'hyperenclave/enclave-run',
      version: 1,
      name: m.name,
      enclaveId: e.id,
      mrenclave: e.mrenclave.toString('hex'),
      mrsigner: e.mrsigner.toString('hex'),
      isvProdId: m.isvProdId,
      isvSvn: m.isvSvn,
      debug: m.debug,
      size: '0x' + e.plan.size.toString(16),
      base: '0x' + e.plan.base.toString(16),
      epcPages: e.epcPages,
      backend,
      keySlot: launch?.keySlot ?? null,
      launch,
      ecalls: ecalls.map((c) => ({ fn: c.fn, ok: c.ok, ret: c.ret === null ? null : '0x' + c.ret.toString(16), output: c.output.toString('hex'), error: c.error, micros: c.micros })),
      epcReturned,
      destroyed,
    };
  } finally {
    if (!destroyed && !opts.keep) await client.enclaveDestroy(e.id).catch(() => undefined);
  }
}

/** The TCS an ECALL request enters: `tcs` as given, else thread `thread` (default 0) of the plan. */
export function withTcs(plan: EnclavePlan, c: EcallRequest & { thread?: number }): EcallRequest {
  const { thread, ...req } = c;
  if (req.tcs !== undefined) return req;
  const t = thread ?? 0;
  const tcs = plan.tcs[t];
  if (tcs === undefined) throw new EnclaveError(`enclave ${plan.name}: thread ${t} does not exist (${plan.tcs.length} TCS${plan.tcs.length === 1 ? '' : 's'}; raise /threads)`, EXIT.BAD_INPUT);
  return { ...req, tcs };
}

export async function destroyEnclave(client: HypervisorClient, id: number): Promise<number> {
  return client.enclaveDestroy(id);
}
