/** TPM 2.0 structures (Part 2): TPMS_CAPABILITY_DATA. */
import { TPM_CAP } from '../constants.js';
import { TpmReader, TpmWriter } from '../marshal.js';
import { MAX, PcrSelection, TaggedHash, marshalPcrSelectionList, marshalTaggedHash, pcrSelectBytes, pcrsFromBits, readPcrSelectionList, readTaggedHash } from './basic.js';

// ---------------------------------------------------------------- capabilities

export interface AlgProperty {
  alg: number;
  properties: number;
}
export interface TaggedProperty {
  property: number;
  value: number;
}
export interface TaggedPcrProperty {
  tag: number;
  pcrs: number[];
}
export interface TaggedPolicy {
  handle: number;
  policyHash: TaggedHash;
}
export type CapabilityData =
  | { capability: typeof TPM_CAP.ALGS; algs: AlgProperty[] }
  | { capability: typeof TPM_CAP.HANDLES; handles: number[] }
  | { capability: typeof TPM_CAP.COMMANDS; commands: number[] }
  | { capability: typeof TPM_CAP.PP_COMMANDS | typeof TPM_CAP.AUDIT_COMMANDS; commandCodes: number[] }
  | { capability: typeof TPM_CAP.PCRS; pcrs: PcrSelection[] }
  | { capability: typeof TPM_CAP.TPM_PROPERTIES; properties: TaggedProperty[] }
  | { capability: typeof TPM_CAP.PCR_PROPERTIES; pcrProperties: TaggedPcrProperty[] }
  | { capability: typeof TPM_CAP.ECC_CURVES; curves: number[] }
  | { capability: typeof TPM_CAP.AUTH_POLICIES; policies: TaggedPolicy[] };

export function readCapabilityData(r: TpmReader): CapabilityData {
  const at = r.offset;
  const capability = r.u32('TPMS_CAPABILITY_DATA.capability');
  const list = <T>(field: string, minElem: number, read: (i: number) => T): T[] => {
    const n = r.count(field, MAX.CAP_ENTRIES, minElem);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(i));
    return out;
  };
  switch (capability) {
    case TPM_CAP.ALGS:
      return { capability, algs: list('TPML_ALG_PROPERTY', 6, () => ({ alg: r.u16('TPMS_ALG_PROPERTY.alg'), properties: r.u32('TPMS_ALG_PROPERTY.algProperties') })) };
    case TPM_CAP.HANDLES:
      return { capability, handles: list('TPML_HANDLE', 4, () => r.u32('TPML_HANDLE.handle')) };
    case TPM_CAP.COMMANDS:
      return { capability, commands: list('TPML_CCA', 4, () => r.u32('TPMA_CC')) };
    case TPM_CAP.PP_COMMANDS:
    case TPM_CAP.AUDIT_COMMANDS:
      return { capability, commandCodes: list('TPML_CC', 4, () => r.u32('TPM_CC')) };
    case TPM_CAP.PCRS:
      return { capability, pcrs: readPcrSelectionList(r) };
    case TPM_CAP.TPM_PROPERTIES:
      return { capability, properties: list('TPML_TAGGED_TPM_PROPERTY', 8, () => ({ property: r.u32('TPMS_TAGGED_PROPERTY.property'), value: r.u32('TPMS_TAGGED_PROPERTY.value') })) };
    case TPM_CAP.PCR_PROPERTIES:
      return {
        capability,
        pcrProperties: list('TPML_TAGGED_PCR_PROPERTY', 5, () => {
          const tag = r.u32('TPMS_TAGGED_PCR_SELECT.tag');
          const sat = r.offset;
          const size = r.u8('TPMS_TAGGED_PCR_SELECT.sizeofSelect');
          if (size > MAX.PCR_SELECT) r.fail('TPMS_TAGGED_PCR_SELECT.sizeofSelect', `${size} exceeds ${MAX.PCR_SELECT}`, sat);
          return { tag, pcrs: pcrsFromBits(r.bytes(size, 'TPMS_TAGGED_PCR_SELECT.pcrSelect')) };
        }),
      };
    case TPM_CAP.ECC_CURVES:
      return { capability, curves: list('TPML_ECC_CURVE', 2, () => r.u16('TPM_ECC_CURVE')) };
    case TPM_CAP.AUTH_POLICIES:
      return { capability, policies: list('TPML_TAGGED_POLICY', 6, () => ({ handle: r.u32('TPMS_TAGGED_POLICY.handle'), policyHash: readTaggedHash(r, 'TPMS_TAGGED_POLICY.policyHash') })) };
    default:
      return r.fail('TPMS_CAPABILITY_DATA.capability', `unknown capability 0x${capability.toString(16)}`, at);
  }
}

export function marshalCapabilityData(w: TpmWriter, c: CapabilityData): void {
  w.u32(c.capability);
  switch (c.capability) {
    case TPM_CAP.ALGS:
      w.u32(c.algs.length);
      for (const a of c.algs) w.u16(a.alg).u32(a.properties);
      return;
    case TPM_CAP.HANDLES:
      w.u32(c.handles.length);
      for (const h of c.handles) w.u32(h);
      return;
    case TPM_CAP.COMMANDS:
      w.u32(c.commands.length);
      for (const h of c.commands) w.u32(h);
      return;
    case TPM_CAP.PP_COMMANDS:
    case TPM_CAP.AUDIT_COMMANDS:
      w.u32(c.commandCodes.length);
      for (const h of c.commandCodes) w.u32(h);
      return;
    case TPM_CAP.PCRS:
      marshalPcrSelectionList(w, c.pcrs);
      return;
    case TPM_CAP.TPM_PROPERTIES:
      w.u32(c.properties.length);
      for (const p of c.properties) w.u32(p.property).u32(p.value);
      return;
    case TPM_CAP.PCR_PROPERTIES:
      w.u32(c.pcrProperties.length);
      for (const p of c.pcrProperties) {
        const bits = pcrSelectBytes({ hash: 0, pcrs: p.pcrs });
        w.u32(p.tag).u8(bits.length).bytes(bits);
      }
      return;
    case TPM_CAP.ECC_CURVES:
      w.u32(c.curves.length);
      for (const x of c.curves) w.u16(x);
      return;
    case TPM_CAP.AUTH_POLICIES:
      w.u32(c.policies.length);
      for (const p of c.policies) {
        w.u32(p.handle);
        marshalTaggedHash(w, p.policyHash);
      }
      return;
  }
}
