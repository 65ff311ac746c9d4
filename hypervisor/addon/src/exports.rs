//! The JS surface of the addon (see src/hypervisor/addon.ts for the typed wrapper).
//! Handles (numbers) index process-wide tables, so Worker threads may share them.

use crate::core_binding::{self, CoreOptions, Hv};
use crate::kvm::guest::PageDesc;
use crate::napi::{Args, Env, JsErr, JsResult, Val};
use crate::napi_sys::{napi_env, napi_value, T_FUNCTION};
use crate::runner::{self, EnclaveVm, RunError};
use crate::device;
use crate::sys::{self, Mapping};
use hyperenclave_core::enclave::sigstruct::{self, SigstructBody};
use hyperenclave_core::{hypercall, Access, Format, Regs, SliceMem};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

struct Table<T> {
    next: u32,
    items: HashMap<u32, T>,
}

impl<T: Clone> Table<T> {
    fn insert(&mut self, v: T) -> u32 {
        self.next += 1;
        self.items.insert(self.next, v);
        self.next
    }
}

fn table<T>() -> Mutex<Table<T>> {
    Mutex::new(Table { next: 0, items: HashMap::new() })
}

type HvRef = Arc<Mutex<Box<Hv>>>;

struct VmEntry {
    vm: EnclaveVm,
    /// Output of the last `enclaveEcallFast`.
    last_output: Mutex<Vec<u8>>,
    /// (hypervisor handle, enclave id) when the VM runs a core enclave.
    core: Option<(u32, u32)>,
}

/// No outer lock: ECALLs on distinct TCSs run at once (each thread's vCPU has its own lock in
/// the runner); an ECALL on a TCS already inside one (e.g. from its own OCALL handler) is
/// refused with TCS_BUSY by the runner.
type VmRef = Arc<VmEntry>;

fn hvs() -> &'static Mutex<Table<HvRef>> {
    static T: OnceLock<Mutex<Table<HvRef>>> = OnceLock::new();
    T.get_or_init(table)
}
fn vms() -> &'static Mutex<Table<VmRef>> {
    static T: OnceLock<Mutex<Table<VmRef>>> = OnceLock::new();
    T.get_or_init(table)
}
fn maps() -> &'static Mutex<Table<Arc<Mapping>>> {
    static T: OnceLock<Mutex<Table<Arc<Mapping>>>> = OnceLock::new();
    T.get_or_init(table)
}

/// The TPM transport of each hypervisor handle that has one.
fn tpms() -> &'static Mutex<std::collections::HashMap<u32, crate::tpm::SwtpmUnix>> {
    static T: std::sync::OnceLock<Mutex<std::collections::HashMap<u32, crate::tpm::SwtpmUnix>>> = std::sync::OnceLock::new();
    T.get_or_init(|| Mutex::new(std::collections::HashMap::new()))
}

fn get_hv(e: &Env, a: &Args) -> JsResult<(u32, HvRef)> {
    let h = e.to_u32(a.req(0, "hypervisor handle")?, "hypervisor handle")?;
    let t = hvs().lock().unwrap();
    let hv = t.items.get(&h).cloned().ok_or_else(|| JsErr::new("ERR_BAD_HANDLE", format!("{}: no hypervisor with handle {h} (closed?)", a.fname)))?;
    Ok((h, hv))
}

fn get_vm(e: &Env, a: &Args) -> JsResult<VmRef> {
    let h = e.to_u32(a.req(0, "enclave VM handle")?, "enclave VM handle")?;
    let t = vms().lock().unwrap();
    t.items.get(&h).cloned().ok_or_else(|| JsErr::new("ERR_BAD_HANDLE", format!("{}: no enclave VM with handle {h} (destroyed?)", a.fname)))
}

fn opt_u64(e: &Env, obj: Val, name: &str, default: u64) -> JsResult<u64> {
    match e.opt(obj, name)? {
        Some(v) => e.to_u64(v, name),
        None => Ok(default),
    }
}

fn req_u64(e: &Env, obj: Val, name: &str) -> JsResult<u64> {
    match e.opt(obj, name)? {
        Some(v) => e.to_u64(v, name),
        None => Err(JsErr::arg(format!("{name}: required"))),
    }
}

// ---------------------------------------------------------------- syscall bridge

fn cpuid(e: &Env, a: &Args) -> JsResult<Val> {
    let leaf = e.to_u32(a.req(0, "leaf")?, "leaf")?;
    let sub = match a.get(1) {
        Some(v) if !e.is_nullish(v) => e.to_u32(v, "subleaf")?,
        _ => 0,
    };
    let r = sys::cpuid(leaf, sub);
    let o = e.object()?;
    e.set(o, "eax", e.u32(r.eax)?)?;
    e.set(o, "ebx", e.u32(r.ebx)?)?;
    e.set(o, "ecx", e.u32(r.ecx)?)?;
    e.set(o, "edx", e.u32(r.edx)?)?;
    Ok(o)
}

fn cpu_vendor(e: &Env, _a: &Args) -> JsResult<Val> {
    e.string(&sys::cpu_vendor())
}

fn read_msr(e: &Env, a: &Args) -> JsResult<Val> {
    let cpu = e.to_u32(a.req(0, "cpu")?, "cpu")?;
    let msr = e.to_u32(a.req(1, "msr")?, "msr")?;
    let v = sys::read_msr(cpu, msr).map_err(|m| JsErr::new("ERR_MSR", m))?;
    e.bigint(v)
}

fn sys_err(e: sys::SysError) -> JsErr {
    JsErr::new(&e.code(), e.to_string())
}

/// A record argument of exactly `T::SIZE` bytes (the generated layout's size).
fn record<T>(e: &Env, a: &Args, i: usize, what: &str, size: usize, decode: fn(&[u8]) -> Option<T>) -> JsResult<T> {
    let b = e.bytes(a.req(i, what)?, what)?;
    if b.len() != size {
        return Err(JsErr::arg(format!("{what}: {} bytes, the record is {size}", b.len())));
    }
    decode(b).ok_or_else(|| JsErr::arg(format!("{what}: record")))
}

// /dev/hyperenclave: one typed call per ioctl (device.rs); records in and out as bytes.
fn he_version(e: &Env, a: &Args) -> JsResult<Val> {
    use hyperenclave_abi::ioctl::HeVersion;
    let fd = e.to_i32(a.req(0, "fd")?, "fd")?;
    let v = record(e, a, 1, "he_version", HeVersion::SIZE, HeVersion::from_bytes)?;
    e.buffer(&device::version(fd, v).map_err(sys_err)?.to_bytes())
}

fn he_load(e: &Env, a: &Args) -> JsResult<Val> {
    use hyperenclave_abi::ioctl::HeLoad;
    let fd = e.to_i32(a.req(0, "fd")?, "fd")?;
    let l = record(e, a, 1, "he_load", HeLoad::SIZE, HeLoad::from_bytes)?;
    e.buffer(&device::load(fd, l).map_err(sys_err)?.to_bytes())
}

fn he_enable(e: &Env, a: &Args) -> JsResult<Val> {
    device::enable(e.to_i32(a.req(0, "fd")?, "fd")?).map_err(sys_err)?;
    Ok(e.undefined())
}

fn he_disable(e: &Env, a: &Args) -> JsResult<Val> {
    device::disable(e.to_i32(a.req(0, "fd")?, "fd")?).map_err(sys_err)?;
    Ok(e.undefined())
}

fn he_status(e: &Env, a: &Args) -> JsResult<Val> {
    let fd = e.to_i32(a.req(0, "fd")?, "fd")?;
    e.buffer(&device::status(fd).map_err(sys_err)?.to_bytes())
}

/// heHypercall(fd, he_hypercall record, staging | null): the record with RAX/RDI/RSI/RDX written
/// back; the staging buffer is updated in place (the driver copies its first buf_len bytes in and back).
fn he_hypercall(e: &Env, a: &Args) -> JsResult<Val> {
    use hyperenclave_abi::ioctl::HeHypercall;
    let fd = e.to_i32(a.req(0, "fd")?, "fd")?;
    let h = record(e, a, 1, "he_hypercall", HeHypercall::SIZE, HeHypercall::from_bytes)?;
    let staging = match a.get(2) {
        Some(v) if !e.is_nullish(v) => Some(e.bytes(v, "staging")?),
        _ => None,
    };
    let r = device::hypercall(fd, h, staging).map_err(|m| JsErr::new("ERR_HYPERCALL", m))?;
    e.buffer(&r.to_bytes())
}

fn mmap_open(e: &Env, a: &Args) -> JsResult<Val> {
    let fd = e.to_i32(a.req(0, "fd")?, "fd")?;
    let len = e.to_u64(a.req(1, "length")?, "length")? as usize;
    let off = match a.get(2) {
        Some(v) if !e.is_nullish(v) => e.to_u64(v, "offset")?,
        _ => 0,
    };
    let writable = match a.get(3) {
        Some(v) if !e.is_nullish(v) => e.to_bool(v, "writable")?,
        _ => false,
    };
    let m = if fd < 0 { Mapping::anonymous(len) } else { Mapping::file(fd, len, off, writable) };
    let m = m.map_err(|se| JsErr::new(&se.code(), se.to_string()))?;
    let h = maps().lock().unwrap().insert(Arc::new(m));
    e.u32(h)
}

fn get_map(e: &Env, a: &Args) -> JsResult<Arc<Mapping>> {
    let h = e.to_u32(a.req(0, "mapping handle")?, "mapping handle")?;
    maps().lock().unwrap().items.get(&h).cloned().ok_or_else(|| JsErr::new("ERR_BAD_HANDLE", format!("{}: no mapping with handle {h}", a.fname)))
}

fn mmap_read(e: &Env, a: &Args) -> JsResult<Val> {
    let m = get_map(e, a)?;
    let off = e.to_u64(a.req(1, "offset")?, "offset")? as usize;
    let len = e.to_u64(a.req(2, "length")?, "length")? as usize;
    let mut b = vec![0u8; len];
    if !m.read(off, &mut b) {
        return Err(JsErr::new("ERR_OUT_OF_RANGE", format!("mmapRead: {off:#x}+{len:#x} outside the {:#x}-byte mapping", m.len())));
    }
    e.buffer(&b)
}

fn mmap_write(e: &Env, a: &Args) -> JsResult<Val> {
    let m = get_map(e, a)?;
    let off = e.to_u64(a.req(1, "offset")?, "offset")? as usize;
    let data = e.bytes(a.req(2, "data")?, "data")?;
    if !m.write(off, data) {
        return Err(JsErr::new("ERR_OUT_OF_RANGE", format!("mmapWrite: {off:#x}+{:#x} outside the {:#x}-byte mapping", data.len(), m.len())));
    }
    Ok(e.undefined())
}

fn munmap(e: &Env, a: &Args) -> JsResult<Val> {
    let h = e.to_u32(a.req(0, "mapping handle")?, "mapping handle")?;
    maps().lock().unwrap().items.remove(&h).ok_or_else(|| JsErr::new("ERR_BAD_HANDLE", format!("munmap: no mapping with handle {h}")))?;
    Ok(e.undefined())
}

fn kvm_available(e: &Env, _a: &Args) -> JsResult<Val> {
    match runner::kvm_available() {
        Ok(()) => Ok(e.null()),
        Err(why) => e.string(&why),
    }
}

// ---------------------------------------------------------------- enclave VMs

fn pages_arg(e: &Env, v: Val) -> JsResult<Vec<PageDesc>> {
    let mut out = Vec::new();
    for (i, p) in e.array_items(v, "pages")?.into_iter().enumerate() {
        let offset = req_u64(e, p, "offset").map_err(|x| JsErr::arg(format!("pages[{i}].{}", x.msg)))?;
        let perms = opt_u64(e, p, "perms", 0)? as u8;
        let tcs = match e.opt(p, "tcs")? {
            Some(t) => e.to_bool(t, "tcs")?,
            None => false,
        };
        out.push(PageDesc { offset, perms, tcs });
    }
    Ok(out)
}

fn enclave_load(e: &Env, a: &Args) -> JsResult<Val> {
    runner::kvm_available().map_err(|w| JsErr::new("ERR_NO_KVM", w))?;
    let o = a.req(0, "options")?;
    let name = match e.opt(o, "name")? {
        Some(v) => e.to_string(v, "name")?,
        None => "enclave".into(),
    };
    let base = req_u64(e, o, "base")?;
    let size = req_u64(e, o, "size")?;
    let image = e.bytes(e.get(o, "image")?, "image")?;
    let image_offset = opt_u64(e, o, "imageOffset", 0)?;
    let pages = pages_arg(e, e.get(o, "pages")?)?;
    let shared = opt_u64(e, o, "sharedPages", 4)?;
    let timeout = opt_u64(e, o, "timeoutMs", 2000)?;
    if shared == 0 || shared > 256 {
        return Err(JsErr::arg(format!("sharedPages: {shared} (1..256)")));
    }
    let vm = runner::create_standalone(&name, base, size, image, image_offset, pages, shared, timeout).map_err(|m| JsErr::new("ERR_ENCLAVE_LOAD", m))?;
    let h = vms().lock().unwrap().insert(Arc::new(VmEntry { vm, last_output: Mutex::new(Vec::new()), core: None }));
    e.u32(h)
}

/// The arguments `enclaveEcall` and `enclaveEcallAsync` share: (vm, tcsOffset, function, input,
/// { timeoutMs, ocall }).
struct EcallArgs<'a> {
    tcs: u64,
    func: u64,
    input: &'a [u8],
    timeout: Option<u64>,
    ocall: Option<Val>,
}

fn ecall_args<'a>(e: &'a Env, a: &Args) -> JsResult<EcallArgs<'a>> {
    let tcs = e.to_u64(a.req(1, "tcsOffset")?, "tcsOffset")?;
    let func = e.to_u64(a.req(2, "function")?, "function")?;
    let input: &[u8] = match a.get(3) {
        Some(v) if !e.is_nullish(v) => e.bytes(v, "input")?,
        _ => &[],
    };
    let opts = a.get(4).unwrap_or(e.undefined());
    let timeout = match e.opt(opts, "timeoutMs")? {
        Some(v) => Some(e.to_u64(v, "timeoutMs")?),
        None => None,
    };
    let ocall = e.opt(opts, "ocall")?;
    if let Some(f) = ocall {
        if e.type_of(f) != T_FUNCTION {
            return Err(JsErr::arg("ocall: expected a function"));
        }
    }
    Ok(EcallArgs { tcs, func, input, timeout, ocall })
}

fn enclave_ecall(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let EcallArgs { tcs, func, input, timeout, ocall: cb } = ecall_args(e, a)?;
    let env = *e;
    let mut handler = |nr: u32, data: &[u8]| -> Result<Vec<u8>, String> {
        let f = cb.unwrap();
        let args = [env.u32(nr).map_err(|x| x.msg)?, env.buffer(data).map_err(|x| x.msg)?];
        let r = env.call(f, &args).map_err(|x| x.msg)?;
        if env.is_nullish(r) {
            return Ok(Vec::new());
        }
        if env.type_of(r) == crate::napi_sys::T_BOOLEAN && !env.to_bool(r, "OCALL result").unwrap_or(true) {
            return Err(format!("OCALL {nr} refused by the host"));
        }
        Ok(env.bytes(r, "OCALL result").map_err(|x| x.msg)?.to_vec())
    };
    let r = vm.vm.ecall(tcs, func, input, timeout, if cb.is_some() { Some(&mut handler) } else { None });
    ecall_result(e, r)
}

fn run_err(r: RunError) -> JsErr {
    match r {
        RunError::Dead(m) => JsErr::new("ERR_ENCLAVE_DEAD", m),
        RunError::SsaInvalid(m) => JsErr::new("ERR_SSA_INVALID", m),
        RunError::Bad(m) => JsErr::new("ERR_ENCLAVE_CALL", m),
    }
}

fn ecall_result(e: &Env, r: Result<runner::EcallOut, RunError>) -> JsResult<Val> {
    match r {
        Ok(out) => {
            let o = e.object()?;
            e.set(o, "status", e.u32(out.status)?)?;
            e.set(o, "output", e.buffer(&out.output)?)?;
            e.set(o, "exits", e.f64(out.exits as f64)?)?;
            e.set(o, "aex", e.f64(out.aex as f64)?)?;
            Ok(o)
        }
        Err(r) => Err(run_err(r)),
    }
}

/// `enclaveEcallAsync(vm, tcs, fn, input, { timeoutMs, ocall })` → Promise of the same result
/// as `enclaveEcall`. The ECALL runs on its own OS thread (its TCS's own vCPU), so several run
/// at once; OCALLs come back to the JS thread through a thread-safe function and the ECALL
/// thread waits for the answer.
fn enclave_ecall_async(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let EcallArgs { tcs, func, input, timeout, ocall: cb } = ecall_args(e, a)?;
    let input = input.to_vec(); // the ECALL runs on another thread: it owns its copy
    if vm.vm.tcs_busy(tcs) {
        // refused at once (not on the thread) so a caller inside an OCALL of that TCS sees it
        return Err(JsErr::new("ERR_ENCLAVE_CALL", format!("TCS at offset {tcs:#x} is busy (TCS_BUSY): an ECALL is in progress on it")));
    }
    crate::async_call::spawn(e, cb, move |ocall| vm.vm.ecall(tcs, func, &input, timeout, ocall), |env, r| ecall_result(env, r))
}

fn edmm_op(name: &str, offset: u64, count: u64, arg: u64) -> JsResult<runner::Edmm> {
    use runner::Edmm as E;
    Ok(match name {
        "augment" => E::Augment { offset, count },
        "restrict" => E::Restrict { offset, count, perms: arg },
        "modifyType" => E::ModifyType { offset, count, page_type: arg },
        "remove" => E::Remove { offset, count },
        other => return Err(JsErr::arg(format!("op: {other:?} is not augment, restrict, modifyType or remove"))),
    })
}

/// `enclaveEdmm(vm, op, offset, count, arg)`: the host EDMM leaves on a running enclave (through
/// the core for core enclaves), then the VM's mappings follow. Returns the pages affected;
/// throws ERR_ENCLAVE_EDMM with `status` (e.g. 42 PAGE_STATE) otherwise.
fn enclave_edmm(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let name = e.to_string(a.req(1, "op")?, "op")?;
    let offset = e.to_u64(a.req(2, "offset")?, "offset")?;
    let count = e.to_u64(a.req(3, "count")?, "count")?;
    let arg = match a.get(4) {
        Some(v) if !e.is_nullish(v) => e.to_u64(v, "arg")?,
        _ => 0,
    };
    let op = edmm_op(&name, offset, count, arg)?;
    match vm.vm.edmm(op) {
        Ok(n) => e.u32(n),
        Err((status, m)) => Err(JsErr::new("ERR_ENCLAVE_EDMM", format!("{name} {offset:#x}+{count} pages: status {status}: {m}"))),
    }
}

/// TCS offsets of a VM, in thread order.
fn enclave_tcs(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let items: Vec<Val> = vm.vm.tcs_offsets().iter().map(|&t| e.f64(t as f64)).collect::<JsResult<_>>()?;
    e.array(&items)
}

/// The hot path: no options object in, a number out (EAX at EEXIT); the output, if any, is
/// fetched with `enclaveLastOutput`. Uses the VM's default budget and no OCALL handler.
fn enclave_ecall_fast(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let tcs = e.to_u64(a.req(1, "tcsOffset")?, "tcsOffset")?;
    let func = e.to_u64(a.req(2, "function")?, "function")?;
    let input: &[u8] = match a.get(3) {
        Some(v) if !e.is_nullish(v) => e.bytes(v, "input")?,
        _ => &[],
    };
    match vm.vm.ecall(tcs, func, input, None, None) {
        Ok(out) => {
            *vm.last_output.lock().unwrap() = out.output;
            e.u32(out.status)
        }
        Err(r) => Err(run_err(r)),
    }
}

fn enclave_last_output(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let out = vm.last_output.lock().unwrap();
    e.buffer(&out)
}

fn enclave_info(e: &Env, a: &Args) -> JsResult<Val> {
    let vm = get_vm(e, a)?;
    let g = &*vm;
    let o = e.object()?;
    e.set(o, "name", e.string(&g.vm.name)?)?;
    e.set(o, "dead", match g.vm.dead_reason() {
        Some(r) => e.string(&r)?,
        None => e.null(),
    })?;
    e.set(o, "ecalls", e.f64(g.vm.ecalls() as f64)?)?;
    e.set(o, "exits", e.f64(g.vm.exits() as f64)?)?;
    e.set(o, "sharedCapacity", e.f64(g.vm.shared_capacity() as f64)?)?;
    e.set(o, "timeoutMs", e.f64(g.vm.timeout_ms as f64)?)?;
    e.set(o, "enclaveId", match g.core {
        Some((_, id)) => e.u32(id)?,
        None => e.null(),
    })?;
    Ok(o)
}

fn enclave_destroy(e: &Env, a: &Args) -> JsResult<Val> {
    let h = e.to_u32(a.req(0, "enclave VM handle")?, "enclave VM handle")?;
    let vm = vms().lock().unwrap().items.remove(&h);
    match vm {
        Some(_) => Ok(e.undefined()),
        None => Err(JsErr::new("ERR_BAD_HANDLE", format!("enclaveDestroy: no enclave VM with handle {h}"))),
    }
}

/// Kills (and, on close, forgets) every VM bound to hypervisor `hv` (and enclave `id`, if
/// given): later ECALLs fail. A VM inside an ECALL right now (destroy called from its own OCALL
/// handler) finishes that ECALL; the core refuses the destroy meanwhile (ENCLAVE_BUSY, its TCS
/// is entered).
fn drop_vms_of(hv: u32, id: Option<u32>, why: &str) {
    let mut t = vms().lock().unwrap();
    let mut forget = Vec::new();
    for (k, g) in t.items.iter() {
        if g.core.is_some_and(|(h, i)| h == hv && id.is_none_or(|x| x == i)) {
            g.vm.kill(why.to_string());
            forget.push(*k);
        }
    }
    if id.is_none() {
        for k in forget {
            t.items.remove(&k);
        }
    }
}

// ---------------------------------------------------------------- the core

fn buf_exact<const N: usize>(e: &Env, v: Option<Val>, what: &str) -> JsResult<Option<[u8; N]>> {
    match v {
        None => Ok(None),
        Some(v) => {
            let b = e.bytes(v, what)?;
            let arr: [u8; N] = b.try_into().map_err(|_| JsErr::arg(format!("{what}: {} bytes, need {N}", b.len())))?;
            Ok(Some(arr))
        }
    }
}

fn hv_create(e: &Env, a: &Args) -> JsResult<Val> {
    let o = a.req(0, "config")?;
    let paging = match e.opt(o, "paging")? {
        Some(v) => match e.to_string(v, "paging")?.as_str() {
            "ept" => Format::Ept,
            "npt" => Format::Npt,
            p => return Err(JsErr::arg(format!("paging: {p:?} is not \"ept\" or \"npt\""))),
        },
        None => Format::Ept,
    };
    // The TPM the core seals its root secret with (swtpm's Unix sockets on the emulated platform).
    let tpm = match e.opt(o, "tpm")? {
        None => None,
        Some(t) => Some(crate::tpm::SwtpmUnix {
            server: e.to_string(e.get(t, "server")?, "tpm.server")?.into(),
            ctrl: e.to_string(e.get(t, "ctrl")?, "tpm.ctrl")?.into(),
        }),
    };
    let trust_pcrs = match e.opt(o, "trustPcrs")? {
        None => None,
        Some(t) => {
            let hv_pcr = req_u64(e, t, "hypervisor")?;
            let hak_pcr = req_u64(e, t, "hak")?;
            if hv_pcr > 23 || hak_pcr > 23 || hv_pcr == hak_pcr {
                return Err(JsErr::arg(format!("trustPcrs: hypervisor {hv_pcr} / hak {hak_pcr}: need two different PCRs 0..23")));
            }
            Some((hv_pcr as u8, hak_pcr as u8))
        }
    };
    let digest = buf_exact::<32>(e, e.opt(o, "imageDigest")?, "imageDigest")?.unwrap_or([0; 32]);
    let key_slots = match e.opt(o, "keySlots")? {
        None => None,
        Some(k) => Some((
            e.to_string(e.get(k, "kind")?, "keySlots.kind")?,
            opt_u64(e, k, "min", 1)? as u32,
            req_u64(e, k, "max")? as u32,
        )),
    };
    let require = match e.opt(o, "requireSignedSigstruct")? {
        Some(v) => e.to_bool(v, "requireSignedSigstruct")?,
        None => true,
    };
    let opts = CoreOptions {
        base: req_u64(e, o, "base")?,
        total: req_u64(e, o, "total")?,
        hypervisor_size: req_u64(e, o, "hypervisorSize")?,
        image_size: opt_u64(e, o, "imageSize", 0)?,
        paging,
        image_digest: digest,
        trust_pcrs,
        key_slots,
        require_signed_sigstruct: require,
    };
    let hv = core_binding::create(&opts).map_err(|m| JsErr::new("ERR_HV_CONFIG", format!("hypervisor core: {m}")))?;
    let h = hvs().lock().unwrap().insert(Arc::new(Mutex::new(hv)));
    if let Some(t) = tpm {
        tpms().lock().unwrap().insert(h, t);
    }
    e.u32(h)
}

fn hv_close(e: &Env, a: &Args) -> JsResult<Val> {
    let (h, _) = get_hv(e, a)?;
    drop_vms_of(h, None, "hypervisor closed");
    hvs().lock().unwrap().items.remove(&h);
    tpms().lock().unwrap().remove(&h);
    Ok(e.undefined())
}

fn hv_hypercall(e: &Env, a: &Args) -> JsResult<Val> {
    let (h, hv) = get_hv(e, a)?;
    let nr = e.to_u64(a.req(1, "call number")?, "call number")?;
    let mut args = [0u64; 5];
    if let Some(v) = a.get(2).filter(|v| !e.is_nullish(*v)) {
        let items = e.array_items(v, "args")?;
        if items.len() > 5 {
            return Err(JsErr::arg(format!("args: {} given, at most 5 (RDI, RSI, RDX, RCX, R8)", items.len())));
        }
        for (i, it) in items.into_iter().enumerate() {
            args[i] = e.to_u64(it, &format!("args[{i}]"))?;
        }
    }
    let guest_base = match a.get(3) {
        Some(v) if !e.is_nullish(v) => e.to_u64(v, "guestBase")?,
        _ => 0,
    };
    let mut empty = [0u8; 0];
    let guest: &mut [u8] = match a.get(4) {
        Some(v) if !e.is_nullish(v) => e.bytes(v, "guest")?,
        _ => &mut empty,
    };
    if nr == hypercall::nr::ENCLAVE_DESTROY {
        // The VM maps the enclave's EPC pages; end it before the core scrubs them.
        drop_vms_of(h, u32::try_from(args[0]).ok(), "enclave destroyed");
    }
    if nr == hypercall::nr::ENCLAVE_REMOVE {
        // the frames may be handed out again as soon as the core frees them
        let bound: Vec<VmRef> = vms().lock().unwrap().items.values().filter(|v| v.core == Some((h, args[0] as u32))).cloned().collect();
        for v in bound {
            v.vm.before_remove(args[1], args[2]).map_err(|m| JsErr::new("ERR_ENCLAVE_EDMM", m))?;
        }
    }
    let mut regs = Regs::call(nr, &args);
    let mut mem = SliceMem::new(guest_base, guest);
    // TRUST_INIT needs the core's TPM transport. DISABLE goes through plain `dispatch` here (no
    // PCR cap): this process is the host's, which can read the root from its memory anyway, and
    // disable → enable within one emulated TPM boot must find the PCR where the root unseals.
    let tpm = if nr == hypercall::nr::TRUST_INIT { tpms().lock().unwrap().get(&h).cloned() } else { None };
    match tpm {
        Some(mut t) => hypercall::dispatch_with_tpm(&mut hv.lock().unwrap(), &mut regs, &mut mem, &mut t),
        None => hypercall::dispatch(&mut hv.lock().unwrap(), &mut regs, &mut mem),
    };
    use hypercall::nr;
    if matches!(nr, nr::ENCLAVE_RESTRICT | nr::ENCLAVE_MODIFY_TYPE | nr::ENCLAVE_REMOVE | nr::ENCLAVE_AUGMENT) && regs.rax == 0 {
        // The core's EPCM changed: every VM running that enclave maps what it says now.
        let bound: Vec<VmRef> = vms().lock().unwrap().items.values().filter(|v| v.core == Some((h, args[0] as u32))).cloned().collect();
        for v in bound {
            v.vm.resync(args[1], args[2]).map_err(|m| JsErr::new("ERR_ENCLAVE_EDMM", m))?;
        }
    }
    let o = e.object()?;
    e.set(o, "status", e.u32(regs.rax as u32)?)?;
    e.set(o, "rdi", e.bigint(regs.rdi)?)?;
    e.set(o, "rsi", e.bigint(regs.rsi)?)?;
    e.set(o, "rdx", e.bigint(regs.rdx)?)?;
    Ok(o)
}

/// EADD (and, when `measure`, the 16 EEXTENDs) of many pages in one call: `pages` are
/// `{ offset, secinfo }`, contents taken from `image` at the same offset (zero past its end).
/// Stops at the first error, naming the page.
fn hv_add_pages(e: &Env, a: &Args) -> JsResult<Val> {
    let (_, hv) = get_hv(e, a)?;
    let id = e.to_u32(a.req(1, "enclave id")?, "enclave id")?;
    let image = e.bytes(a.req(2, "image")?, "image")?;
    let measure = e.to_bool(a.req(4, "measure")?, "measure")?;
    let mut list = Vec::new();
    for (i, p) in e.array_items(a.req(3, "pages")?, "pages")?.into_iter().enumerate() {
        list.push((req_u64(e, p, "offset").map_err(|x| JsErr::arg(format!("pages[{i}].{}", x.msg)))?, req_u64(e, p, "secinfo")?));
    }
    let mut g = hv.lock().unwrap();
    let mut page = [0u8; 4096];
    for (i, (off, secinfo)) in list.into_iter().enumerate() {
        page.fill(0);
        if let Ok(o) = usize::try_from(off) {
            if o < image.len() {
                let n = (image.len() - o).min(4096);
                page[..n].copy_from_slice(&image[o..o + n]);
            }
        }
        let r = if measure { g.add_page_measured(id, off, &page, secinfo) } else { g.add_page(id, off, &page, secinfo) };
        r.map_err(|x| {
            let status = hyperenclave_core::HcStatus::from(&x) as u32;
            JsErr::new(&format!("HC_STATUS_{status}"), format!("page {i} (offset {off:#x}): {x}"))
        })?;
    }
    Ok(e.undefined())
}

fn hv_host_access(e: &Env, a: &Args) -> JsResult<Val> {
    let (_, hv) = get_hv(e, a)?;
    let gpa = e.to_u64(a.req(1, "gpa")?, "gpa")?;
    let access = match e.to_string(a.req(2, "access")?, "access")?.as_str() {
        "read" => Access::Read,
        "write" => Access::Write,
        "execute" => Access::Execute,
        x => return Err(JsErr::arg(format!("access: {x:?} is not read, write or execute"))),
    };
    let r = hv.lock().unwrap().host_access(gpa, access);
    match r {
        Ok(()) => Ok(e.null()),
        Err(f) => e.string(&f.to_string()),
    }
}

fn hv_enclave_pages(e: &Env, a: &Args) -> JsResult<Val> {
    let (_, hv) = get_hv(e, a)?;
    let id = e.to_u32(a.req(1, "enclave id")?, "enclave id")?;
    let mut pages = Vec::new();
    hv.lock()
        .unwrap()
        .enclave_pages(id, |p| pages.push(p))
        .map_err(|x| JsErr::new("ERR_HV", x.to_string()))?;
    let mut vals = Vec::with_capacity(pages.len());
    for p in pages {
        let o = e.object()?;
        e.set(o, "offset", e.bigint(p.offset)?)?;
        e.set(o, "hpa", e.bigint(p.hpa)?)?;
        e.set(o, "type", e.u32(p.page_type as u32)?)?;
        e.set(o, "perms", e.u32(p.perms as u32)?)?;
        vals.push(o);
    }
    e.array(&vals)
}

fn hv_read_phys(e: &Env, a: &Args) -> JsResult<Val> {
    let (_, hv) = get_hv(e, a)?;
    let pa = e.to_u64(a.req(1, "pa")?, "pa")?;
    let len = e.to_u64(a.req(2, "length")?, "length")? as usize;
    if len > 64 << 20 {
        return Err(JsErr::arg(format!("length: {len} bytes (at most 64 MiB per read)")));
    }
    let mut b = vec![0u8; len];
    use hyperenclave_core::PhysMem;
    hv.lock().unwrap().mem().read(pa, &mut b).map_err(|x| JsErr::new("ERR_HV", x.to_string()))?;
    e.buffer(&b)
}

fn hv_enclave_run(e: &Env, a: &Args) -> JsResult<Val> {
    runner::kvm_available().map_err(|w| JsErr::new("ERR_NO_KVM", w))?;
    let (h, hv) = get_hv(e, a)?;
    let id = e.to_u32(a.req(1, "enclave id")?, "enclave id")?;
    let o = a.get(2).unwrap_or(e.undefined());
    let shared = opt_u64(e, o, "sharedPages", 4)?;
    let timeout = opt_u64(e, o, "timeoutMs", 2000)?;
    if shared == 0 || shared > 256 {
        return Err(JsErr::arg(format!("sharedPages: {shared} (1..256)")));
    }
    let vm = core_binding::run_enclave(&hv, id, shared, timeout).map_err(|m| JsErr::new("ERR_ENCLAVE_LOAD", format!("enclave {id}: {m}")))?;
    let vh = vms().lock().unwrap().insert(Arc::new(VmEntry { vm, last_output: Mutex::new(Vec::new()), core: Some((h, id)) }));
    e.u32(vh)
}

fn sigstruct_build(e: &Env, a: &Args) -> JsResult<Val> {
    let o = a.req(0, "body")?;
    let hash = buf_exact::<32>(e, e.opt(o, "enclaveHash")?, "enclaveHash")?.ok_or_else(|| JsErr::arg("enclaveHash: required (32 bytes)"))?;
    let body = SigstructBody {
        vendor: opt_u64(e, o, "vendor", 0)? as u32,
        date: opt_u64(e, o, "date", 0)? as u32,
        sw_defined: 0,
        misc_select: opt_u64(e, o, "miscSelect", 0)? as u32,
        misc_mask: opt_u64(e, o, "miscMask", 0xFFFF_FFFF)? as u32,
        attributes: (opt_u64(e, o, "attributes", 4)?, opt_u64(e, o, "xfrm", 3)?),
        attribute_mask: (opt_u64(e, o, "attributeMask", u64::MAX)?, opt_u64(e, o, "xfrmMask", u64::MAX)?),
        enclave_hash: hash,
        isv_prod_id: opt_u64(e, o, "isvProdId", 0)? as u16,
        isv_svn: opt_u64(e, o, "isvSvn", 0)? as u16,
    };
    e.buffer(&sigstruct::build_unsigned(&body))
}

fn sigstruct_signed_message(e: &Env, a: &Args) -> JsResult<Val> {
    let raw = e.bytes(a.req(0, "sigstruct")?, "sigstruct")?;
    let m = sigstruct::signed_message(raw).map_err(|x| JsErr::new("ERR_SIGSTRUCT", x.to_string()))?;
    e.buffer(&m)
}

fn sigstruct_attach(e: &Env, a: &Args) -> JsResult<Val> {
    let raw = e.bytes(a.req(0, "sigstruct")?, "sigstruct")?.to_vec();
    let modulus = e.bytes(a.req(1, "modulus")?, "modulus")?;
    let sig = e.bytes(a.req(2, "signature")?, "signature")?;
    let mut raw = raw;
    sigstruct::attach_signature(&mut raw, modulus, sig).map_err(|x| JsErr::new("ERR_SIGSTRUCT", x.to_string()))?;
    e.buffer(&raw)
}

fn register(e: &Env, exports: Val) -> JsResult<()> {
    let list: &[(&'static str, crate::napi::Method)] = &[
        ("cpuid", cpuid),
        ("cpuVendor", cpu_vendor),
        ("readMsr", read_msr),
        ("heVersion", he_version),
        ("heLoad", he_load),
        ("heEnable", he_enable),
        ("heDisable", he_disable),
        ("heStatus", he_status),
        ("heHypercall", he_hypercall),
        ("mmapOpen", mmap_open),
        ("mmapRead", mmap_read),
        ("mmapWrite", mmap_write),
        ("munmap", munmap),
        ("kvmAvailable", kvm_available),
        ("enclaveLoad", enclave_load),
        ("enclaveEcall", enclave_ecall),
        ("enclaveEcallFast", enclave_ecall_fast),
        ("enclaveEcallAsync", enclave_ecall_async),
        ("enclaveEdmm", enclave_edmm),
        ("enclaveTcs", enclave_tcs),
        ("enclaveLastOutput", enclave_last_output),
        ("enclaveInfo", enclave_info),
        ("enclaveDestroy", enclave_destroy),
        ("hvCreate", hv_create),
        ("hvClose", hv_close),
        ("hvHypercall", hv_hypercall),
        ("hvAddPages", hv_add_pages),
        ("hvHostAccess", hv_host_access),
        ("hvEnclavePages", hv_enclave_pages),
        ("hvReadPhys", hv_read_phys),
        ("hvEnclaveRun", hv_enclave_run),
        ("sigstructBuild", sigstruct_build),
        ("sigstructSignedMessage", sigstruct_signed_message),
        ("sigstructAttach", sigstruct_attach),
    ];
    for (name, f) in list {
        e.export(exports, name, *f)?;
    }
    e.set(exports, "abiVersion", e.u32(hyperenclave_core::ABI_VERSION)?)?;
    Ok(())
}

#[no_mangle]
// SAFETY: called by Node once per module load on the JS thread with a live env and exports object
// (the N-API module contract); both are used only for the duration of the call.
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    let e = Env(env);
    if let Err(err) = register(&e, Val(exports)) {
        e.throw(&err);
    }
    exports
}
