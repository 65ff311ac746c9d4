/** EFI_GUID in its text form (first three fields little-endian). `at` must leave 16 bytes. */
export function guidAt(b: Buffer, at = 0): string {
  const h = (s: number, e: number): string => b.subarray(at + s, at + e).toString('hex');
  return `${b.readUInt32LE(at).toString(16).padStart(8, '0')}-${b.readUInt16LE(at + 4).toString(16).padStart(4, '0')}-${b.readUInt16LE(at + 6).toString(16).padStart(4, '0')}-${h(8, 10)}-${h(10, 16)}`;
}

/** GUIDs a reader of a boot log recognises. */
export const KNOWN_GUIDS: Record<string, string> = {
  '8be4df61-93ca-11d2-aa0d-00e098032b8c': 'EFI_GLOBAL_VARIABLE',
  'd719b2cb-3d3a-4596-a3bc-dad00e67656f': 'EFI_IMAGE_SECURITY_DATABASE',
  '605dab50-e046-4300-abb6-3dd810dd8b23': 'SHIM_LOCK',
  'a5c059a1-94e4-4aa7-87b5-ab155c2bf072': 'EFI_CERT_X509',
  'c1c41626-504c-4092-aca9-41f936934328': 'EFI_CERT_SHA256',
  '826ca512-cf10-4ac9-b187-be01496631bd': 'EFI_CERT_SHA1',
  '3c5766e8-269c-4e34-aa14-ed776e85b3b6': 'EFI_CERT_RSA2048',
  '3bd2a492-96c0-4079-b420-fcf98ef103ed': 'EFI_CERT_X509_SHA256',
  '7076876e-80c2-4ee6-aad2-28b349a6865b': 'EFI_CERT_X509_SHA384',
  '446dbf63-2502-4cda-bcfa-2465d2b0fe9d': 'EFI_CERT_X509_SHA512',
  '77fa9abd-0359-4d32-bd60-28f4e78f784b': 'MICROSOFT',
  '8868e871-e4f1-11d3-bc22-0080c73c8881': 'ACPI_20_TABLE',
  'eb9d2d30-2d88-11d3-9a16-0090273fc14d': 'ACPI_TABLE',
  'eb9d2d31-2d88-11d3-9a16-0090273fc14d': 'SMBIOS_TABLE',
  'f2fd1544-9794-4a2c-992e-e5bbcf20e394': 'SMBIOS3_TABLE',
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI System Partition',
  '21686148-6449-6e6f-744e-656564454649': 'BIOS boot',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'Linux root (x86-64)',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
  'e6d6d379-f507-44c2-a23c-238f2a3df928': 'Linux LVM',
  '933ac7e1-2eb4-4f13-b844-0e14e2aef915': 'Linux /home',
  'bc13c2ff-59e6-4262-a352-b275fd6f7172': 'Linux extended boot',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
  'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'Microsoft reserved',
  'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery',
};
