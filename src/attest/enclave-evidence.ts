/**
 * Attester side of enclave evidence (CONTRACT-12): create the enclave from its manifest, run the
 * payload's quote-report ECALL with REPORTDATA = SHA-256(nonce ‖ userData) ‖ 0^32 (the enclave
 * issues EREPORT targeted at the hypervisor's quoting identity), hand the REPORT to the QUOTE
 * hypercall (the hypervisor checks its MAC and signs it with the HAK), destroy the enclave.
 * `hyperenclave attest --enclave` and `hyperenclave demo` both use this; nothing here signs
 * anything itself.
 */
import type { HypervisorClient } from '../hypervisor/client.js';
import { ECALL_QUOTE_REPORT, REPORT_SIZE } from '../hypervisor/abi.js';

export { ECALL_QUOTE_REPORT };
import type { BackendKind } from '../enclave/backends/index.js';
import { createEnclave, launchEnclave } from '../enclave/lifecycle.js';
import { loadManifest, withBackend } from '../enclave/manifest.js';
import { AttestError } from './errors.js';
import { ENCLAVE_QUOTE_SIZE, expectedReportData, parseEnclaveQuote } from './enclave-quote.js';
import type { EvidenceEnclave } from './evidence.js';

export interface EnclaveQuoteResult {
  evidence: EvidenceEnclave;
  /** The memory-encryption backend the enclave ran under (the evidence says "sgx-like" for "none"). */
  backend: BackendKind;
  name: string;
  mrenclave: string;
  mrsigner: string;
  debug: boolean;
  keySlot: number | null;
}

/**
 * One enclave quote for `nonce`: create → launch (when the platform has a launch) → quote-report
 * ECALL → QUOTE → destroy (always). The quote is checked here too (size, MRENCLAVE as computed
 * from the manifest, REPORTDATA) so a broken stack fails at the attester with a clear line.
 */
export async function quoteEnclave(client: HypervisorClient, manifestPath: string, nonce: Buffer, opts: { userData?: Buffer; backend?: BackendKind; id?: string } = {}): Promise<EnclaveQuoteResult> {
  const qc = client;
  const m = withBackend(loadManifest(manifestPath), opts.backend);
  const userData = opts.userData ?? Buffer.alloc(0);
  const reportData = expectedReportData(nonce, userData);
  const e = await createEnclave(qc, m);
  try {
    // The bare-metal hypervisor has no memory-encryption launch: backend "none" needs none.
    const launch = qc.platform === 'linux' && m.backend.kind === 'none' ? null : await launchEnclave(qc, e.id, m.backend.kind, m.backend.policy);
    const tcs = e.plan.tcs[0];
    const [r] = await qc.enclaveRun(e.id, [{ fn: ECALL_QUOTE_REPORT, input: reportData, ...(tcs !== undefined ? { tcs } : {}) }]);
    if (!r || !r.ok) throw new AttestError(`${m.name}: quote-report ECALL ${ECALL_QUOTE_REPORT} failed: ${r?.error ?? 'no result'}`, 7);
    if (r.output.length < REPORT_SIZE) throw new AttestError(`${m.name}: quote-report ECALL returned ${r.output.length} bytes, expected a ${REPORT_SIZE}-byte REPORT`, 7);
    const quote = await qc.quote(r.output.subarray(0, REPORT_SIZE));
    if (quote.length !== ENCLAVE_QUOTE_SIZE) throw new AttestError(`${m.name}: QUOTE returned ${quote.length} bytes, expected ${ENCLAVE_QUOTE_SIZE}`, 7);
    const parsed = parseEnclaveQuote(quote);
    if (!parsed.body.mrenclave.equals(e.mrenclave)) throw new AttestError(`${m.name}: quote MRENCLAVE ${parsed.body.mrenclave.toString('hex')} is not the enclave's ${e.mrenclave.toString('hex')}`, 7);
    if (!parsed.body.reportData.equals(reportData)) throw new AttestError(`${m.name}: quote REPORTDATA is not SHA-256(nonce ‖ userData) ‖ 0^32`, 7);
    return {
      evidence: {
        ...(opts.id ? { id: opts.id } : {}),
        name: m.name,
        backend: m.backend.kind === 'none' ? 'sgx-like' : m.backend.kind,
        quote: quote.toString('base64'),
        userData: userData.toString('hex'),
        ...(launch?.measurement ? { launchMeasurement: launch.measurement } : {}),
        ...(launch?.keySlot != null ? { keySlot: launch.keySlot } : {}),
      },
      backend: m.backend.kind,
      name: m.name,
      mrenclave: e.mrenclave.toString('hex'),
      mrsigner: e.mrsigner.toString('hex'),
      debug: m.debug,
      keySlot: launch?.keySlot ?? null,
    };
  } finally {
    await qc.enclaveDestroy(e.id).catch(() => undefined);
  }
}

/** Several manifests, one after the other, on one client. */
export async function quoteEnclaves(client: HypervisorClient, manifests: readonly string[], nonce: Buffer, opts: { userData?: Buffer; backend?: BackendKind } = {}): Promise<EnclaveQuoteResult[]> {
  const out: EnclaveQuoteResult[] = [];
  for (const [i, m] of manifests.entries()) out.push(await quoteEnclave(client, m, nonce, { ...opts, id: String(i) }));
  return out;
}
