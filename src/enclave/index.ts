/** Enclave VMs: manifests, layout, SGX measurement/signing, lifecycle over the hypervisor client. */
export { EnclaveError } from './errors.js';
export { type EnclaveManifest, type RawManifest, loadManifest, parseManifest, parseSize, withBackend } from './manifest.js';
export { type EnclavePlan, type PayloadLayout, encodeTcs, loadPayload, parseLayout, planEnclave } from './layout.js';
export { MrEnclaveBuilder, type MeasuredPage, buildSigstruct, computeMrEnclave, loadSignerKey, mrsignerOf, rsaModulus, verifySigstruct } from './sgx.js';
export { type CreatedEnclave, type EnclaveRunResult, type LaunchInfo, type RunOptions, createEnclave, destroyEnclave, launchEnclave, runEnclave } from './lifecycle.js';
export { type EnclaveCommandOptions, createEnclaveFromManifest, destroyEnclaveById, listEnclaves, parseEcallSpec, runEnclaveFromManifest } from './service.js';
