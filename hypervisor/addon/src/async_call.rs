//! A blocking call (an ECALL) on its own OS thread, settling a JS Promise with its result. The
//! call may call back into JS (OCALLs): the request goes to the JS thread through a thread-safe
//! function and the calling thread waits for the answer.

use crate::napi::{Env, JsErr, JsResult, Val};
use crate::napi_sys::*;
use crate::runner::OcallFn;
use core::ffi::c_void;
use std::sync::mpsc;

type Reply = Result<Vec<u8>, String>;

enum Msg<R> {
    Ocall { nr: u32, input: Vec<u8>, reply: mpsc::Sender<Reply> },
    Done { result: R },
}

struct Ctx<R> {
    deferred: napi_deferred,
    settle: fn(&Env, R) -> JsResult<Val>,
}

/// Raw N-API handles moved to the worker thread.
struct Handles(napi_threadsafe_function);
// SAFETY: a napi_threadsafe_function is made to be used from any thread (that is its purpose);
// the worker only calls napi_call_threadsafe_function / napi_release_threadsafe_function on it.
unsafe impl Send for Handles {}

fn check(s: napi_status, what: &str) -> JsResult<()> {
    if s == NAPI_OK {
        Ok(())
    } else {
        Err(JsErr::new("ERR_NAPI", format!("N-API call {what} failed with status {s}")))
    }
}

/// Starts `work` on a new thread and returns a Promise settled (on the JS thread) with
/// `settle(result)`. `cb` (a JS function (nr, Buffer) → Buffer | null) serves OCALLs.
pub fn spawn<R, F>(e: &Env, cb: Option<Val>, work: F, settle: fn(&Env, R) -> JsResult<Val>) -> JsResult<Val>
where
    R: Send + 'static,
    F: FnOnce(Option<OcallFn>) -> R + Send + 'static,
{
    let mut deferred = core::ptr::null_mut();
    let mut promise = core::ptr::null_mut();
    // SAFETY: env contract (napi::Env): live env on the JS thread; out-pointers valid.
    check(unsafe { napi_create_promise(e.0, &mut deferred, &mut promise) }, "napi_create_promise")?;
    let name = e.string("enclaveEcallAsync")?;
    let ctx = Box::into_raw(Box::new(Ctx::<R> { deferred, settle })) as *mut c_void;
    let mut tsfn = core::ptr::null_mut();
    let func = cb.map(|v| v.0).unwrap_or(core::ptr::null_mut());
    // SAFETY: env contract; `func` is a JS function of this env or null (allowed with a call_js
    // callback); `ctx` is the leaked Ctx<R> that call_js::<R> frees after the Done message.
    let s = unsafe { napi_create_threadsafe_function(e.0, func, core::ptr::null_mut(), name.0, 0, 1, core::ptr::null_mut(), None, ctx, Some(call_js::<R>), &mut tsfn) };
    if let Err(err) = check(s, "napi_create_threadsafe_function") {
        // SAFETY: the tsfn was not created, so nothing else owns ctx.
        drop(unsafe { Box::from_raw(ctx as *mut Ctx<R>) });
        return Err(err);
    }
    let h = Handles(tsfn);
    let has_cb = cb.is_some();
    std::thread::Builder::new()
        .name("enclave-ecall".into())
        .spawn(move || {
            let h = h;
            let post = |m: Msg<R>| {
                let p = Box::into_raw(Box::new(m)) as *mut c_void;
                // SAFETY: h.0 is live until the release below; `p` is freed by call_js.
                unsafe { napi_call_threadsafe_function(h.0, p, NAPI_TSFN_BLOCKING) }
            };
            let mut handler = |nr: u32, data: &[u8]| -> Result<Vec<u8>, String> {
                let (tx, rx) = mpsc::channel();
                if post(Msg::Ocall { nr, input: data.to_vec(), reply: tx }) != NAPI_OK {
                    return Err("the JS thread is gone".into());
                }
                rx.recv().unwrap_or_else(|_| Err("the JS thread dropped the OCALL".into()))
            };
            let r = work(if has_cb { Some(&mut handler) } else { None });
            post(Msg::Done { result: r });
            // SAFETY: this thread acquired the tsfn (initial_thread_count 1) and releases it once.
            unsafe { napi_release_threadsafe_function(h.0, NAPI_TSFN_RELEASE) };
        })
        .map_err(|err| JsErr::new("ERR_THREAD", format!("enclaveEcallAsync: cannot start a thread: {err}")))?;
    Ok(Val(promise))
}

// SAFETY: called by Node on the JS thread for each message posted above, with the env (null
// while the environment tears down), the tsfn's JS function, the context (the leaked Ctx<R>)
// and the data (a leaked Box<Msg<R>>, freed here exactly once).
unsafe extern "C" fn call_js<R>(env: napi_env, js_cb: napi_value, context: *mut c_void, data: *mut c_void) {
    let msg = Box::from_raw(data as *mut Msg<R>);
    if env.is_null() {
        if let Msg::Ocall { reply, .. } = *msg {
            let _ = reply.send(Err("Node is shutting down".into()));
        }
        return;
    }
    let e = Env(env);
    match *msg {
        Msg::Ocall { nr, input, reply } => {
            let answer = (|| -> Result<Vec<u8>, String> {
                let args = [e.u32(nr).map_err(|x| x.msg)?, e.buffer(&input).map_err(|x| x.msg)?];
                match e.call(Val(js_cb), &args) {
                    Ok(r) if e.is_nullish(r) => Ok(Vec::new()),
                    Ok(r) if e.type_of(r) == T_BOOLEAN && !e.to_bool(r, "OCALL result").unwrap_or(true) => Err(format!("OCALL {nr} refused by the host")),
                    Ok(r) => Ok(e.bytes(r, "OCALL result").map_err(|x| x.msg)?.to_vec()),
                    Err(x) => Err(e.take_exception().unwrap_or(x.msg)),
                }
            })();
            let _ = reply.send(answer);
        }
        Msg::Done { result } => {
            let ctx = Box::from_raw(context as *mut Ctx<R>);
            match (ctx.settle)(&e, result) {
                Ok(v) => {
                    napi_resolve_deferred(env, ctx.deferred, v.0);
                }
                Err(err) => {
                    if let Ok(v) = e.error(&err) {
                        napi_reject_deferred(env, ctx.deferred, v.0);
                    }
                }
            }
        }
    }
}
