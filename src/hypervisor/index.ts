/** Client of the hypervisor's driver ABI: one interface, emulated (service process) and linux (/dev/hyperenclave). */
export * from './abi.js';
export type * from './client.js';
export { EmulatedHypervisorClient } from './emulated-client.js';
export { HYPERENCLAVE_DEVICE, LinuxHypervisorClient } from './linux-client.js';
export { SYNTHETIC_MEMORY_MAP, readMachineMemoryMap } from '../platform/memory-map.js';
export { serviceRecord } from '../platform/emulated/service-process.js';
export { openHypervisor, stopHypervisor } from './open.js';
export { EMULATED_LIMITATIONS, formatStatus, statusToJson } from './status.js';
export { disableHypervisor, enableHypervisor, hypervisorStatus, loadHypervisor, withHypervisor } from './service.js';
