import { EXIT } from '../../errors.js';
import { emulatedSlotRanges, type KeySlotAllocator, type KeySlotKind } from '../../enclave/backends/index.js';
import { HypervisorError } from '../../hypervisor/abi.js';

/** What the allocator needs of the service: the core's key-slot hypercalls. */
export interface KeySlotHypercalls {
  call(name: 'KEYSLOT_ALLOC' | 'KEYSLOT_RELEASE' | 'KEYSLOT_FLUSH', args: readonly bigint[]): { rdi: bigint };
}

/**
 * Key slots drawn from the core's table (KEYSLOT_ALLOC/RELEASE/FLUSH), for the backend models.
 * The core hands out the lowest free slot of its one table (EMULATED_KEY_SLOTS); each backend
 * kind has its hardware range inside it (emulatedSlotRanges: the one definition).
 * Slots below the range are taken and given back at once (never used, so the flush is a no-op).
 */
const EMULATED_SLOT_RANGES = emulatedSlotRanges();

export class CoreSlotAllocator implements KeySlotAllocator {
  owner = 0;
  constructor(private readonly svc: KeySlotHypercalls) {}
  allocate(kind: KeySlotKind): number {
    const r = EMULATED_SLOT_RANGES[kind];
    const skipped: number[] = [];
    try {
      for (;;) {
        let slot: number;
        try {
          slot = Number(this.svc.call('KEYSLOT_ALLOC', [BigInt(this.owner)]).rdi);
        } catch (e) {
          throw new HypervisorError(`no free ${kind} key slot in ${r.first}..${r.last}: ${(e as Error).message}`, EXIT.BAD_INPUT);
        }
        if (slot >= r.first && slot <= r.last) return slot;
        skipped.push(slot);
        if (slot > r.last) throw new HypervisorError(`no free ${kind} key slot in ${r.first}..${r.last} (the core gave ${slot})`, EXIT.BAD_INPUT);
      }
    } finally {
      if (skipped.length) {
        for (const s of skipped) this.svc.call('KEYSLOT_RELEASE', [BigInt(s)]);
        this.svc.call('KEYSLOT_FLUSH', []);
      }
    }
  }
  release(slot: number): void {
    this.svc.call('KEYSLOT_RELEASE', [BigInt(slot)]);
  }
  flush(_slot: number): void {
    this.svc.call('KEYSLOT_FLUSH', []);
  }
}
