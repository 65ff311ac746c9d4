import { KeySlotError } from './errors.js';
import type { BackendKind } from './kind.js';

/** What a key slot is for: SEV ASIDs (plain and SEV-ES ranges), CSV ASIDs, MKTME KeyIDs. */
export type KeySlotKind = Exclude<BackendKind, 'none'>;

/**
 * Key-slot allocation contract. The real allocator lives in the Rust core (hypervisor/core);
 * backends only see this interface.
 * - allocate(kind): a slot that is free AND flushed, or throws KeySlotError naming the range.
 * - release(slot): the slot's guest is gone; its key may still sit in caches, so the slot is
 *   NOT reusable yet.
 * - flush(slot): caches written back/invalidated for that slot (SEV DF_FLUSH, WBINVD for
 *   MKTME); only now can allocate() hand it out again.
 */
export interface KeySlotAllocator {
  allocate(kind: KeySlotKind): number;
  release(slot: number): void;
  flush(slot: number): void;
}

export interface SlotRange {
  first: number;
  last: number;
}

const KIND_LABEL: Record<KeySlotKind, string> = { sev: 'SEV ASID', 'sev-es': 'SEV-ES ASID', csv: 'CSV ASID', mktme: 'MKTME KeyID' };

/**
 * A TypeScript allocator with the same semantics as the Rust core's, used by the emulated
 * platform and by tests until the core's is bound through the addon. Lowest free slot first.
 */
export class EmulatedKeySlotAllocator implements KeySlotAllocator {
  private readonly ranges: Partial<Record<KeySlotKind, SlotRange>>;
  private readonly inUse = new Map<number, KeySlotKind>();
  private readonly awaitingFlush = new Map<number, KeySlotKind>();

  constructor(ranges: Partial<Record<KeySlotKind, SlotRange>>) {
    const entries = Object.entries(ranges) as [KeySlotKind, SlotRange][];
    for (const [kind, r] of entries) {
      if (!Number.isInteger(r.first) || !Number.isInteger(r.last) || r.first < 1 || r.last < r.first - 1)
        throw new KeySlotError(`key-slot range for ${kind} is invalid: ${r.first}..${r.last}`);
    }
    for (let i = 0; i < entries.length; i++)
      for (let j = i + 1; j < entries.length; j++) {
        const [ka, a] = entries[i]!;
        const [kb, b] = entries[j]!;
        const disjoint = a.last < b.first || b.last < a.first;
        const sameSpace = (x: KeySlotKind): boolean => x === 'sev' || x === 'sev-es';
        if (!disjoint && sameSpace(ka) && sameSpace(kb)) throw new KeySlotError(`key-slot ranges ${ka} and ${kb} overlap`);
      }
    this.ranges = ranges;
  }

  range(kind: KeySlotKind): SlotRange | undefined {
    return this.ranges[kind];
  }

  allocate(kind: KeySlotKind): number {
    const r = this.ranges[kind];
    if (!r || r.last < r.first) throw new KeySlotError(`no ${KIND_LABEL[kind]}s on this platform`);
    for (let s = r.first; s <= r.last; s++) {
      if (!this.inUse.has(s) && !this.awaitingFlush.has(s)) {
        this.inUse.set(s, kind);
        return s;
      }
    }
    const dirty = [...this.awaitingFlush.entries()].filter(([s]) => s >= r.first && s <= r.last).length;
    throw new KeySlotError(
      `no free ${KIND_LABEL[kind]}: all ${r.last - r.first + 1} in ${r.first}..${r.last} are taken` +
        (dirty ? ` (${dirty} released, awaiting flush before reuse)` : ''),
    );
  }

  release(slot: number): void {
    const kind = this.inUse.get(slot);
    if (kind === undefined) throw new KeySlotError(`release of key slot ${slot}, which is not allocated`);
    this.inUse.delete(slot);
    this.awaitingFlush.set(slot, kind);
  }

  flush(slot: number): void {
    if (this.inUse.has(slot)) throw new KeySlotError(`flush of key slot ${slot} while it is still allocated (release it first)`);
    this.awaitingFlush.delete(slot);
  }

  /** Slots released and not yet flushed. */
  pendingFlush(): number[] {
    return [...this.awaitingFlush.keys()].sort((a, b) => a - b);
  }

  allocated(): number[] {
    return [...this.inUse.keys()].sort((a, b) => a - b);
  }
}
