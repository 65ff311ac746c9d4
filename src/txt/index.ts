/** Intel TXT: public registers (real platform), the TXT heap's DRTM log, and the emulated dynamic launch. */
export { TXT_PUBLIC_BASE, TXT_REG, TxtError, type TxtPresence, type TxtRegisters, type TxtStatus, cpuHasSmx, decodeTxtRegisters, readPhysical, readTxtStatus, registersFromSpace } from './registers.js';
export { type DrtmLog, type DrtmLogEvent, type DrtmLogPointer, HEAP_EXTDATA, type OsSinitData, type TxtHeap, findDrtmLogPointer, parseOsSinitData, parsePerAlgLog, parseTxtHeap, readDrtmLog } from './heap.js';
export { type LaunchEnvironment, buildLaunchEnvironment, parseLaunchEnvironment } from './launch-env.js';
export { DRTM_EVTYPE, DrtmLogRecorder, type DrtmLogSink, type DrtmStep, type DrtmTpm, drtmEventName, emulatedLaunch, planDrtmLaunch, predictDrtmPcrs } from './drtm.js';
export { type TxtReport, readTxtReport } from './platform.js';
export { drtmTpmFor } from './emulated.js';
