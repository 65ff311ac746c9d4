import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import type { BackendKind } from './kind.js';

/** Raw CPUID output registers, as the addon's cpuid bridge returns them. */
export interface CpuidRegs {
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** CPUID leaf 0 vendor: EBX ‖ EDX ‖ ECX as ASCII ("AuthenticAMD", "HygonGenuine", "GenuineIntel"). */
export function decodeCpuVendor(leaf0: CpuidRegs): string {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(leaf0.ebx >>> 0, 0);
  b.writeUInt32LE(leaf0.edx >>> 0, 4);
  b.writeUInt32LE(leaf0.ecx >>> 0, 8);
  return b.toString('latin1');
}

/** CPUID Fn8000_001F (AMD APM vol. 3, "Encrypted Memory Capabilities"; same leaf on Hygon). */
export interface AmdMemEncryptLeaf {
  sme: boolean;
  sev: boolean;
  pageFlushMsr: boolean;
  sevEs: boolean;
  sevSnp: boolean;
  vmpl: boolean;
  hwEnforcedCacheCoherency: boolean;
  /** EBX[5:0]: page-table bit that marks a page encrypted. */
  cBitPosition: number;
  /** EBX[11:6]: physical address bits lost when memory encryption is on. */
  physAddrReduction: number;
  /** EBX[15:12]. */
  vmplCount: number;
  /** ECX: number of encrypted guests supported at once (the highest SEV ASID). */
  maxEncryptedGuests: number;
  /** EDX: lowest ASID of an SEV guest without SEV-ES; ASIDs below it are for SEV-ES/SNP. */
  minSevAsid: number;
}

export function decodeCpuid8000001F(r: CpuidRegs): AmdMemEncryptLeaf {
  const bit = (n: number): boolean => ((r.eax >>> n) & 1) === 1;
  return {
    sme: bit(0),
    sev: bit(1),
    pageFlushMsr: bit(2),
    sevEs: bit(3),
    sevSnp: bit(4),
    vmpl: bit(5),
    hwEnforcedCacheCoherency: bit(10),
    cBitPosition: r.ebx & 0x3f,
    physAddrReduction: (r.ebx >>> 6) & 0x3f,
    vmplCount: (r.ebx >>> 12) & 0xf,
    maxEncryptedGuests: r.ecx >>> 0,
    minSevAsid: r.edx >>> 0,
  };
}

/** CPUID.(EAX=7,ECX=0): ECX[13] TME_EN, EDX[18] PCONFIG. */
export function decodeCpuid7(r: CpuidRegs): { tme: boolean; pconfig: boolean } {
  return { tme: ((r.ecx >>> 13) & 1) === 1, pconfig: ((r.edx >>> 18) & 1) === 1 };
}

/** IA32_TME_CAPABILITY (MSR 0x981), Intel MKTME spec. */
export interface TmeCapability {
  aesXts128: boolean;
  aesXts128Integrity: boolean;
  aesXts256: boolean;
  bypassSupported: boolean;
  /** Bits 35:32: how many physical-address bits can carry a KeyID. */
  maxKeyIdBits: number;
  /** Bits 50:36: how many KeyIDs can be used for MKTME. */
  maxKeys: number;
}

export function decodeTmeCapability(v: bigint): TmeCapability {
  const bit = (n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;
  return {
    aesXts128: bit(0),
    aesXts128Integrity: bit(1),
    aesXts256: bit(2),
    bypassSupported: bit(31),
    maxKeyIdBits: Number((v >> 32n) & 0xfn),
    maxKeys: Number((v >> 36n) & 0x7fffn),
  };
}

/** IA32_TME_ACTIVATE (MSR 0x982). */
export interface TmeActivate {
  locked: boolean;
  enabled: boolean;
  /** Bit 2: 0 = new random TME key at boot, 1 = restore from storage. */
  keySelect: number;
  saveKeyForStandby: boolean;
  /** Bits 7:4: TME (KeyID 0) algorithm; 0 = AES-XTS-128. */
  tmePolicy: number;
  bypassEnabled: boolean;
  /** Bits 35:32: physical-address bits actually used for KeyIDs. */
  keyIdBits: number;
  /** Bits 63:48: algorithms allowed for MKTME KeyIDs (bit 48 = AES-XTS-128). */
  cryptoAlgorithms: number;
}

export function decodeTmeActivate(v: bigint): TmeActivate {
  const bit = (n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;
  return {
    locked: bit(0),
    enabled: bit(1),
    keySelect: Number((v >> 2n) & 1n),
    saveKeyForStandby: bit(3),
    tmePolicy: Number((v >> 4n) & 0xfn),
    bypassEnabled: bit(31),
    keyIdBits: Number((v >> 32n) & 0xfn),
    cryptoAlgorithms: Number((v >> 48n) & 0xffffn),
  };
}

/** Everything detection looks at, from raw sources; the addon fills in cpuid/MSR/PLATFORM_STATUS on real machines. */
export interface PlatformFacts {
  platform: 'linux' | 'emulated';
  vendor: string;
  /** Decoded CPUID 0x8000001F, or why it is missing. */
  amdLeaf: AmdMemEncryptLeaf | null;
  amdLeafReason?: string;
  intel: {
    tme: boolean | null;
    pconfig: boolean | null;
    capability: TmeCapability | null;
    activate: TmeActivate | null;
    msrReason?: string;
    /** Where tme/pconfig came from. */
    source: 'cpuid' | 'cpuinfo';
  };
  /** Flags of interest from /proc/cpuinfo (second source). */
  cpuinfoFlags: string[];
  devSev: { path: string; present: boolean };
  /** /dev/sev PLATFORM_STATUS, via the addon's ioctl bridge when available. */
  sevPlatformStatus?: { apiMajor: number; apiMinor: number; build: number; state: number; guestCount: number };
  kvmAmd: { loaded: boolean; sev: boolean | null; sevEs: boolean | null };
  /** Where each fact came from, for `hyperenclave platform`. */
  sources: string[];
}

export interface DetectSources {
  /** CPUID bridge (the addon); without it only /proc/cpuinfo is used. */
  cpuid?: (leaf: number, subleaf: number) => CpuidRegs;
  /** MSR reader; default reads /dev/cpu/0/msr. */
  readMsr?: (msr: number) => bigint;
  /** Root for /proc, /dev, /sys (tests). */
  root?: string;
  sevPlatformStatus?: PlatformFacts['sevPlatformStatus'];
}

const INTERESTING_FLAGS = ['sme', 'sev', 'sev_es', 'sev_snp', 'tme', 'pconfig', 'svm', 'vmx', 'hypervisor'];

function readDevMsr(path: string, msr: number): bigint {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(8);
    if (readSync(fd, b, 0, 8, msr) !== 8) throw new Error('short read');
    return b.readBigUInt64LE(0);
  } finally {
    closeSync(fd);
  }
}

function boolParam(path: string): boolean | null {
  if (!existsSync(path)) return null;
  const v = readFileSync(path, 'utf8').trim();
  return v === 'Y' || v === '1' || v === 'y';
}

/** Reads what this machine has: /proc/cpuinfo, /dev/sev, kvm_amd parameters, MSRs if readable, CPUID if a bridge is given. */
export function detectPlatformFacts(src: DetectSources = {}): PlatformFacts {
  const root = src.root ?? '';
  const sources: string[] = [];
  let vendor = '';
  let cpuinfoFlags: string[] = [];
  const cpuinfoPath = `${root}/proc/cpuinfo`;
  if (existsSync(cpuinfoPath)) {
    const first = readFileSync(cpuinfoPath, 'utf8').split('\n\n')[0] ?? '';
    vendor = /^vendor_id\s*:\s*(.*)$/m.exec(first)?.[1]?.trim() ?? '';
    const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(first)?.[1] ?? '').split(/\s+/));
    cpuinfoFlags = INTERESTING_FLAGS.filter((f) => flags.has(f));
    sources.push(`${cpuinfoPath}: vendor ${vendor || '?'}, flags [${cpuinfoFlags.join(' ')}]`);
  }

  let amdLeaf: AmdMemEncryptLeaf | null = null;
  let amdLeafReason: string | undefined;
  const intel: PlatformFacts['intel'] = { tme: null, pconfig: null, capability: null, activate: null, source: src.cpuid ? 'cpuid' : 'cpuinfo' };
  if (src.cpuid) {
    vendor = decodeCpuVendor(src.cpuid(0, 0));
    const maxExt = src.cpuid(0x80000000, 0).eax >>> 0;
    if (maxExt >= 0x8000001f) {
      amdLeaf = decodeCpuid8000001F(src.cpuid(0x8000001f, 0));
      sources.push('CPUID 0x8000001F via addon');
    } else amdLeafReason = `CPUID 0x8000001F not implemented (max extended leaf 0x${maxExt.toString(16)})`;
    if ((src.cpuid(0, 0).eax >>> 0) >= 7) {
      const l7 = decodeCpuid7(src.cpuid(7, 0));
      intel.tme = l7.tme;
      intel.pconfig = l7.pconfig;
      sources.push('CPUID 7 via addon');
    }
  } else {
    amdLeafReason = 'CPUID 0x8000001F not read (no cpuid bridge; /proc/cpuinfo used instead)';
    intel.tme = cpuinfoFlags.includes('tme');
    intel.pconfig = cpuinfoFlags.includes('pconfig');
  }

  const msrPath = `${root}/dev/cpu/0/msr`;
  const readMsr = src.readMsr ?? ((m: number) => readDevMsr(msrPath, m));
  if (intel.tme) {
    try {
      intel.capability = decodeTmeCapability(readMsr(0x981));
      intel.activate = decodeTmeActivate(readMsr(0x982));
      sources.push('MSR 0x981/0x982');
    } catch (e) {
      intel.msrReason = `MSR 0x981/0x982 unreadable (${src.readMsr ? (e as Error).message : existsSync(msrPath) ? (e as Error).message : `${msrPath} absent: modprobe msr`})`;
    }
  } else intel.msrReason = 'MSR 0x981/0x982 not read: no TME';

  const devSev = { path: `${root}/dev/sev`, present: existsSync(`${root}/dev/sev`) };
  const kvmDir = `${root}/sys/module/kvm_amd`;
  const kvmAmd = {
    loaded: existsSync(kvmDir),
    sev: boolParam(`${kvmDir}/parameters/sev`),
    sevEs: boolParam(`${kvmDir}/parameters/sev_es`),
  };
  sources.push(`${devSev.path}: ${devSev.present ? 'present' : 'absent'}`, `${kvmDir}: ${kvmAmd.loaded ? 'loaded' : 'absent'}`);
  const facts: PlatformFacts = { platform: 'linux', vendor, amdLeaf, intel, cpuinfoFlags, devSev, kvmAmd, sources };
  if (amdLeafReason) facts.amdLeafReason = amdLeafReason;
  if (src.sevPlatformStatus) facts.sevPlatformStatus = src.sevPlatformStatus;
  return facts;
}

/** Facts for the emulated platform: every model is available, nothing claims hardware. */
export function emulatedPlatformFacts(): PlatformFacts {
  return {
    platform: 'emulated',
    vendor: 'emulated',
    amdLeaf: null,
    intel: { tme: null, pconfig: null, capability: null, activate: null, source: 'cpuid' },
    cpuinfoFlags: [],
    devSev: { path: '/dev/sev', present: false },
    kvmAmd: { loaded: false, sev: null, sevEs: null },
    sources: ['emulated platform: software models'],
  };
}

/** Whether the real hardware can back `kind`, and if not, every reason found. */
export function hardwareSupport(kind: BackendKind, f: PlatformFacts): { available: boolean; reason: string } {
  if (kind === 'none') return { available: true, reason: 'no memory encryption' };
  const why: string[] = [];
  if (kind === 'sev' || kind === 'sev-es' || kind === 'csv') {
    const want = kind === 'csv' ? 'HygonGenuine' : 'AuthenticAMD';
    const label = kind === 'csv' ? 'CSV' : kind === 'sev' ? 'SEV' : 'SEV-ES';
    if (f.vendor !== want) why.push(`CPU vendor ${f.vendor || 'unknown'} (need ${want})`);
    const flagSev = f.cpuinfoFlags.includes('sev');
    if (f.amdLeaf) {
      if (!f.amdLeaf.sev) why.push('CPUID 0x8000001F EAX bit 1 (SEV) clear');
      if (kind === 'sev-es' && !f.amdLeaf.sevEs) why.push('CPUID 0x8000001F EAX bit 3 (SEV-ES) clear');
    } else {
      if (f.amdLeafReason) why.push(f.amdLeafReason);
      if (!flagSev) why.push('/proc/cpuinfo has no "sev" flag');
      if (kind === 'sev-es' && !f.cpuinfoFlags.includes('sev_es')) why.push('/proc/cpuinfo has no "sev_es" flag');
    }
    if (!f.devSev.present) why.push(`${f.devSev.path} absent`);
    if (!f.kvmAmd.loaded) why.push('kvm_amd not loaded');
    else {
      if (f.kvmAmd.sev === false) why.push('kvm_amd parameter sev=N');
      if (kind === 'sev-es' && f.kvmAmd.sevEs === false) why.push('kvm_amd parameter sev_es=N');
    }
    return why.length ? { available: false, reason: `${label}: ${why.join('; ')}` } : { available: true, reason: `${label}: supported by this CPU and firmware` };
  }
  // mktme
  if (f.vendor !== 'GenuineIntel') why.push(`CPU vendor ${f.vendor || 'unknown'} (need GenuineIntel)`);
  const viaCpuinfo = f.intel.source === 'cpuinfo';
  if (!f.intel.tme) why.push(viaCpuinfo ? '/proc/cpuinfo has no "tme" flag (CPUID.7.ECX[13])' : 'CPUID.7.ECX[13] (TME) clear');
  if (!f.intel.pconfig) why.push(viaCpuinfo ? '/proc/cpuinfo has no "pconfig" flag (CPUID.7.EDX[18])' : 'CPUID.7.EDX[18] (PCONFIG) clear');
  if (f.intel.tme) {
    if (!f.intel.activate) why.push(f.intel.msrReason ?? 'IA32_TME_ACTIVATE unread');
    else {
      if (!f.intel.activate.locked || !f.intel.activate.enabled) why.push('IA32_TME_ACTIVATE lock/enable clear (TME off in firmware)');
      if (f.intel.activate.keyIdBits === 0) why.push('IA32_TME_ACTIVATE KeyID bits = 0 (MKTME not enabled)');
    }
  }
  return why.length ? { available: false, reason: `MKTME: ${why.join('; ')}` } : { available: true, reason: 'MKTME: enabled with KeyIDs' };
}
