/** Memory-encryption backend kinds (the names config, schemas and evidence use). */
export type BackendKind = 'none' | 'sev' | 'sev-es' | 'csv' | 'mktme';
export const BACKEND_KINDS: readonly BackendKind[] = ['none', 'sev', 'sev-es', 'csv', 'mktme'];
