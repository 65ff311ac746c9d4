/** What the emulated hypervisor service records about itself, so its successor can say what was lost. */

/** What a service process holds, recorded for its successor (emulated/hypervisor/held.json). */
export interface HeldState {
  pid: number;
  startedAt: string;
  image: string | null;
  enabled: boolean;
  enclaves: number[];
}

/** State an earlier service process held and that died with it. */
export interface LostState {
  previousPid: number;
  previousStartedAt: string;
  restartedAt: string;
  image: string | null;
  enabled: boolean;
  enclaves: number[];
}
