import type { HvStatusRecord } from './abi.js';
import type { HypervisorStatus } from './client.js';

/** The emulated platform in one sentence, for `status` (never mistaken for hardware). */
export const EMULATED_LIMITATIONS =
  'emulated platform: the Rust core runs in a user process and the host view is modelled by its nested tables; enclave VMs run on KVM without hardware isolation from this host; memory-encryption backends are software models (no integrity: replay and remapping are possible without SNP/RMP)';

function hvJson(h: HvStatusRecord): Record<string, unknown> {
  const x = (v: bigint): string => '0x' + v.toString(16);
  return {
    ...h,
    reservedBase: x(h.reservedBase),
    hypervisorBytes: x(h.hypervisorBytes),
    imageBytes: x(h.imageBytes),
    epcBytes: x(h.epcBytes),
    dma: { protected: h.dma.protected, faults: h.dma.faults, iommuBase: x(h.dma.iommuBase) },
    imageDigest: h.imageDigest.toString('hex'),
  };
}

/** The `--json` document (schemas/hypervisor-status.schema.json). */
export function statusToJson(s: HypervisorStatus): Record<string, unknown> {
  return {
    schema: 'hyperenclave/hypervisor-status',
    version: 1,
    platform: s.platform,
    loaded: s.loaded,
    image: s.image,
    enabled: s.enabled,
    cpus: s.cpus,
    memmap: s.memmap,
    hv: s.hv ? hvJson(s.hv) : null,
    enclaves: s.enclaves,
    process: s.process,
    ...(s.lost ? { lost: s.lost } : {}),
    ...(s.platform === 'emulated' ? { limitations: EMULATED_LIMITATIONS } : {}),
  };
}

/** Human-readable lines for `hyperenclave status`. */
export function formatStatus(s: HypervisorStatus): string[] {
  const mib = (v: bigint): string => `${Number(v >> 20n)} MiB`;
  const out = [`platform: ${s.platform}`, `cpus: ${s.cpus}`];
  if (s.lost) out.push(`warning: ${s.lost.message}`);
  out.push(s.image ? `image: ${s.image.id.slice(0, 16)}… (${s.image.format}, ${s.image.length} bytes) sha256 ${s.image.sha256}` : 'image: not loaded');
  const enabled = s.platform === 'emulated' ? 'enabled in the emulated service (no hypervisor runs under Linux: nothing is demoted)' : 'enabled (host demoted)';
  out.push(`state: ${s.enabled ? enabled : s.loaded ? 'loaded, not enabled' : 'not loaded'}`);
  if (s.memmap) out.push(`reserved: ${s.memmap}`);
  const h = s.hv;
  if (h) {
    out.push(`hypervisor memory: ${mib(h.hypervisorBytes)} (image ${mib(h.imageBytes)}), page-table pool ${h.poolFramesUsed}/${h.poolFramesTotal} frames, ${h.paging.toUpperCase()}`);
    out.push(`EPC: ${h.epcPagesUsed} used / ${h.epcPagesTotal - h.epcPagesUsed} free of ${h.epcPagesTotal} pages (${mib(h.epcBytes)})`);
    out.push(`root of trust: ${h.trustEstablished ? 'established (enclave keys, HAK and quotes served)' : 'not established (boot runs TRUST_INIT after enable)'}`);
    out.push(`enclaves: ${h.enclaves} alive (limit ${h.enclaveLimit}), ${h.enclavesCreated} created, ${h.enclavesDestroyed} destroyed, ${h.reportsIssued} reports`);
    out.push(
      h.keySlotKind === 'none'
        ? 'key slots: none'
        : `key slots (${h.keySlotKind === 'asid' ? 'ASID' : 'KeyID'} ${h.keySlotMin}..${h.keySlotMax}): ${h.keySlotsAllocated} allocated, ${h.keySlotsPendingFlush} awaiting flush, ${h.flushes} flushes`,
    );
    const f = h.hostFaults;
    out.push(`host faults: ${f.hypervisor} hypervisor, ${f.enclave} enclave, ${f.unmapped} unmapped, ${f.permission} permission; ${h.hypercalls} hypercalls`);
    out.push(
      h.dma.protected
        ? `DMA protection: on (IOMMU at 0x${h.dma.iommuBase.toString(16)} owned by the hypervisor), ${h.dma.faults} DMA faults blocked and logged`
        : 'DMA protection: off (no IOMMU programmed by the hypervisor: devices can DMA into hypervisor and enclave memory)',
    );
  }
  for (const e of s.enclaves) out.push(`  enclave ${e.id} ${e.name}: ${e.state}, ${e.epcPages} pages, MRENCLAVE ${e.mrenclave.slice(0, 16)}…, backend ${e.backend}${e.keySlot !== null ? ` slot ${e.keySlot}` : ''}`);
  if (s.platform === 'emulated') out.push(`note: ${EMULATED_LIMITATIONS}`);
  return out;
}
