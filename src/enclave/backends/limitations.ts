import type { BackendKind } from './types.js';

const EMULATED = 'Emulated model: the firmware/memory-controller keys live in this Node process, so anyone who can read its memory reads the keys; it demonstrates the algorithms and the launch protocol, not hardware isolation.';

/** What each backend does not protect against, stated plainly (shown by `status` and in docs/memory-encryption.md). */
export const LIMITATIONS: Record<BackendKind, string> = {
  none: 'No memory encryption: the host and any DMA-capable device read enclave memory in clear; isolation rests on the hypervisor page tables only.',
  sev:
    'SEV encrypts guest memory (AES-128, address-tweaked) but has no integrity protection: the host can replay old ciphertext, remap or swap guest pages, and corrupt memory undetected (that needs SEV-SNP and its RMP). Register state is not protected (no SEV-ES): the host sees and can change vCPU registers at every exit. ' +
    EMULATED,
  'sev-es':
    'SEV-ES adds encrypted vCPU register state (VMSA) but, like SEV, has no memory integrity: replay, remapping and corruption of guest pages by the host are possible without SEV-SNP/RMP. ' +
    EMULATED,
  csv:
    'CSV (Hygon, SEV-derived) encrypts guest memory with SM4 but this model has no integrity protection: replay, remapping and corruption by the host are possible (as for SEV without SNP). Certificates and reports use a project format, not Hygon\'s byte layout. ' +
    EMULATED,
  mktme:
    'MKTME encrypts memory per KeyID (AES-XTS-128) but gives no integrity and no remote attestation: the hypervisor programs the keys and can read guests through their KeyID, and the host can replay or remap ciphertext; the launch measurement is the hypervisor\'s own SHA-256, not hardware-signed. ' +
    EMULATED,
};
