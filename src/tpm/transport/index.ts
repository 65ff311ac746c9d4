export * from './transport.js';
export { SocketTransport, type SocketTarget, type SocketTransportOptions } from './socket.js';
export { SwtpmControl, SWTPM_CTRL, SWTPM_INIT_FLAG_DELETE_VOLATILE } from './swtpm-control.js';
export { DeviceTransport } from './device.js';
