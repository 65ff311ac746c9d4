/** Where a socket TPM (swtpm, a TPM simulator) listens: TCP host and port, or a Unix socket path. */
export type SocketTarget = { host: string; port: number } | { path: string };
