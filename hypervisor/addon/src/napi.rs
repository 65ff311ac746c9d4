//! A thin safe layer over `napi_sys`: values in and out, argument access with typed errors,
//! and the trampoline that turns a Rust `fn(&Env, &Args) -> JsResult<Val>` into a JS function
//! (errors become thrown `Error`s with a `code`; a Rust panic becomes an error, never an abort).

use crate::napi_sys::*;
use core::ffi::{c_char, c_void};
use std::ffi::CString;

/// The env contract every `unsafe` N-API call below relies on: an `Env` is made only by
/// `trampoline` and `napi_register_module_v1` from the napi_env Node passed in, and is used
/// only on the JS thread during that call (N-API envs are not valid on other threads or after
/// the callback returns). `Clone + Copy` and the public field do not enforce this; the
/// callers in this crate keep it. `Val`s used with it come from the same env.
#[derive(Clone, Copy)]
pub struct Env(pub napi_env);

#[derive(Clone, Copy)]
pub struct Val(pub napi_value);

/// An error for JS: `code` goes to `err.code`, `msg` is one line.
#[derive(Debug, Clone)]
pub struct JsErr {
    pub code: String,
    pub msg: String,
}

impl JsErr {
    pub fn new(code: &str, msg: impl Into<String>) -> Self {
        JsErr { code: code.to_string(), msg: msg.into() }
    }
    pub fn arg(msg: impl Into<String>) -> Self {
        JsErr::new("ERR_INVALID_ARG", msg)
    }
}

pub type JsResult<T> = Result<T, JsErr>;

fn check(s: napi_status, what: &str) -> JsResult<()> {
    if s == NAPI_OK {
        Ok(())
    } else {
        Err(JsErr::new("ERR_NAPI", format!("N-API call {what} failed with status {s}")))
    }
}

pub type Method = fn(&Env, &Args) -> JsResult<Val>;

pub const MAX_ARGS: usize = 8;

pub struct Args {
    pub vals: [napi_value; MAX_ARGS],
    pub n: usize,
    pub fname: &'static str,
}

impl Args {
    pub fn get(&self, i: usize) -> Option<Val> {
        if i < self.n {
            Some(Val(self.vals[i]))
        } else {
            None
        }
    }
    /// Argument `i`, required; `what` names it in the error.
    pub fn req(&self, i: usize, what: &str) -> JsResult<Val> {
        self.get(i).ok_or_else(|| JsErr::arg(format!("{}: missing argument {} ({what})", self.fname, i + 1)))
    }
}

impl Env {
    pub fn undefined(&self) -> Val {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        unsafe { napi_get_undefined(self.0, &mut v) };
        Val(v)
    }
    pub fn null(&self) -> Val {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        unsafe { napi_get_null(self.0, &mut v) };
        Val(v)
    }
    pub fn f64(&self, x: f64) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        check(unsafe { napi_create_double(self.0, x, &mut v) }, "napi_create_double")?;
        Ok(Val(v))
    }
    pub fn u32(&self, x: u32) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        check(unsafe { napi_create_uint32(self.0, x, &mut v) }, "napi_create_uint32")?;
        Ok(Val(v))
    }
    pub fn bigint(&self, x: u64) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        check(unsafe { napi_create_bigint_uint64(self.0, x, &mut v) }, "napi_create_bigint_uint64")?;
        Ok(Val(v))
    }
    pub fn string(&self, s: &str) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `s` is s.len() bytes of
        // UTF-8 (length given, no NUL needed); N-API copies it.
        check(unsafe { napi_create_string_utf8(self.0, s.as_ptr() as *const c_char, s.len(), &mut v) }, "napi_create_string_utf8")?;
        Ok(Val(v))
    }
    pub fn buffer(&self, data: &[u8]) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        let mut p = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `data` is data.len()
        // readable bytes, copied by N-API; `p` and `v` are out-pointers.
        check(unsafe { napi_create_buffer_copy(self.0, data.len(), data.as_ptr() as *const c_void, &mut p, &mut v) }, "napi_create_buffer_copy")?;
        Ok(Val(v))
    }
    pub fn object(&self) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        check(unsafe { napi_create_object(self.0, &mut v) }, "napi_create_object")?;
        Ok(Val(v))
    }
    pub fn array(&self, items: &[Val]) -> JsResult<Val> {
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is a valid
        // out-pointer.
        check(unsafe { napi_create_array_with_length(self.0, items.len(), &mut v) }, "napi_create_array_with_length")?;
        for (i, it) in items.iter().enumerate() {
            // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `v` is the array
            // just created, `it` a value of this env.
            check(unsafe { napi_set_element(self.0, v, i as u32, it.0) }, "napi_set_element")?;
        }
        Ok(Val(v))
    }
    pub fn set(&self, obj: Val, name: &str, value: Val) -> JsResult<()> {
        let c = CString::new(name).map_err(|_| JsErr::arg("property name with NUL"))?;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `c` is a NUL-terminated
        // CString alive across the call.
        check(unsafe { napi_set_named_property(self.0, obj.0, c.as_ptr(), value.0) }, "napi_set_named_property")
    }
    pub fn get(&self, obj: Val, name: &str) -> JsResult<Val> {
        let c = CString::new(name).map_err(|_| JsErr::arg("property name with NUL"))?;
        let mut v = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `c` is a NUL-terminated
        // CString alive across the call; `v` is an out-pointer.
        check(unsafe { napi_get_named_property(self.0, obj.0, c.as_ptr(), &mut v) }, "napi_get_named_property")?;
        Ok(Val(v))
    }
    pub fn type_of(&self, v: Val) -> i32 {
        let mut t = 0;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `t` is a valid
        // out-pointer (left 0 = undefined if the call fails).
        unsafe { napi_typeof(self.0, v.0, &mut t) };
        t
    }
    pub fn is_nullish(&self, v: Val) -> bool {
        matches!(self.type_of(v), T_UNDEFINED | T_NULL)
    }
    /// Optional named property: None when absent/undefined/null.
    pub fn opt(&self, obj: Val, name: &str) -> JsResult<Option<Val>> {
        if self.is_nullish(obj) {
            return Ok(None);
        }
        let v = self.get(obj, name)?;
        Ok(if self.is_nullish(v) { None } else { Some(v) })
    }
    pub fn to_f64(&self, v: Val, what: &str) -> JsResult<f64> {
        match self.type_of(v) {
            T_NUMBER => {
                let mut x = 0.0;
                // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `x` is a valid
                // out-pointer.
                check(unsafe { napi_get_value_double(self.0, v.0, &mut x) }, "napi_get_value_double")?;
                Ok(x)
            }
            T_BIGINT => Ok(self.to_u64(v, what)? as f64),
            _ => Err(JsErr::arg(format!("{what}: expected a number"))),
        }
    }
    /// A non-negative integer given as number (exact, ≤ 2^53) or bigint (< 2^64).
    pub fn to_u64(&self, v: Val, what: &str) -> JsResult<u64> {
        // numbers first, without a napi_typeof round trip (the ECALL hot path)
        let mut x = 0.0;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `x` is a valid
        // out-pointer; a non-number only returns a status.
        if unsafe { napi_get_value_double(self.0, v.0, &mut x) } == NAPI_OK {
            if !(0.0..=9007199254740991.0).contains(&x) || x.fract() != 0.0 {
                return Err(JsErr::arg(format!("{what}: {x} is not a non-negative safe integer")));
            }
            return Ok(x as u64);
        }
        if self.type_of(v) != T_BIGINT {
            return Err(JsErr::arg(format!("{what}: expected a non-negative integer (number or bigint)")));
        }
        let mut x = 0u64;
        let mut lossless = false;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `x` and `lossless` are
        // valid out-pointers.
        check(unsafe { napi_get_value_bigint_uint64(self.0, v.0, &mut x, &mut lossless) }, "napi_get_value_bigint_uint64")?;
        if !lossless {
            return Err(JsErr::arg(format!("{what}: bigint outside 0..2^64")));
        }
        Ok(x)
    }
    pub fn to_u32(&self, v: Val, what: &str) -> JsResult<u32> {
        let x = self.to_u64(v, what)?;
        u32::try_from(x).map_err(|_| JsErr::arg(format!("{what}: {x} does not fit in 32 bits")))
    }
    pub fn to_i32(&self, v: Val, what: &str) -> JsResult<i32> {
        let x = self.to_f64(v, what)?;
        if x.fract() != 0.0 || x < i32::MIN as f64 || x > i32::MAX as f64 {
            return Err(JsErr::arg(format!("{what}: {x} is not a 32-bit integer")));
        }
        Ok(x as i32)
    }
    pub fn to_bool(&self, v: Val, what: &str) -> JsResult<bool> {
        if self.type_of(v) != T_BOOLEAN {
            return Err(JsErr::arg(format!("{what}: expected a boolean")));
        }
        let mut b = false;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `b` is a valid
        // out-pointer.
        check(unsafe { napi_get_value_bool(self.0, v.0, &mut b) }, "napi_get_value_bool")?;
        Ok(b)
    }
    pub fn to_string(&self, v: Val, what: &str) -> JsResult<String> {
        if self.type_of(v) != T_STRING {
            return Err(JsErr::arg(format!("{what}: expected a string")));
        }
        let mut len = 0usize;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; a null buffer asks only
        // for the length, written to `len`.
        check(unsafe { napi_get_value_string_utf8(self.0, v.0, core::ptr::null_mut(), 0, &mut len) }, "napi_get_value_string_utf8")?;
        let mut buf = vec![0u8; len + 1];
        check(
            // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `buf` has buf.len()
            // = len + 1 writable bytes and N-API writes at most buf.len() - 1 bytes plus a NUL.
            unsafe { napi_get_value_string_utf8(self.0, v.0, buf.as_mut_ptr() as *mut c_char, buf.len(), &mut len) },
            "napi_get_value_string_utf8",
        )?;
        buf.truncate(len);
        String::from_utf8(buf).map_err(|_| JsErr::arg(format!("{what}: not UTF-8")))
    }
    /// The bytes of a Buffer / Uint8Array (any TypedArray, as raw bytes). The slice is valid
    /// for the duration of the call that received `v`.
    pub fn bytes<'a>(&self, v: Val, what: &str) -> JsResult<&'a mut [u8]> {
        let mut is = false;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `is` is a valid
        // out-pointer.
        unsafe { napi_is_typedarray(self.0, v.0, &mut is) };
        if !is {
            return Err(JsErr::arg(format!("{what}: expected a Buffer or Uint8Array")));
        }
        let (mut kind, mut len, mut data, mut ab, mut off) = (0i32, 0usize, core::ptr::null_mut(), core::ptr::null_mut(), 0usize);
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; all five are valid
        // out-pointers.
        check(unsafe { napi_get_typedarray_info(self.0, v.0, &mut kind, &mut len, &mut data, &mut ab, &mut off) }, "napi_get_typedarray_info")?;
        // element size by napi_typedarray_type: int8 uint8 uint8c int16 uint16 int32 uint32 float32 float64 bigint64 biguint64
        let elem = [1usize, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8].get(kind as usize).copied().unwrap_or(1);
        let n = len * elem;
        if n == 0 || data.is_null() {
            return Ok(&mut []);
        }
        // SAFETY: only partly established. `data` is the typed array's backing store with len
        // elements of `elem` bytes (n bytes, non-null, checked above), alive while the JS value is,
        // i.e. for the current callback. Not enforced: the caller-chosen lifetime 'a must not
        // outlive that callback, and two calls on views of one ArrayBuffer (e.g. ioctl's `arg` and
        // `data`) yield aliasing &mut slices; callers must not do both. Issue 13 item 2 (typed
        // boundary) is meant to remove this.
        Ok(unsafe { core::slice::from_raw_parts_mut(data as *mut u8, n) })
    }
    pub fn array_items(&self, v: Val, what: &str) -> JsResult<Vec<Val>> {
        let mut is = false;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `is` is a valid
        // out-pointer.
        unsafe { napi_is_array(self.0, v.0, &mut is) };
        if !is {
            return Err(JsErr::arg(format!("{what}: expected an array")));
        }
        let mut n = 0u32;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `n` is a valid
        // out-pointer.
        check(unsafe { napi_get_array_length(self.0, v.0, &mut n) }, "napi_get_array_length")?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut e = core::ptr::null_mut();
            // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `e` is a valid
            // out-pointer; i < length.
            check(unsafe { napi_get_element(self.0, v.0, i, &mut e) }, "napi_get_element")?;
            out.push(Val(e));
        }
        Ok(out)
    }
    /// Calls a JS function; a thrown JS exception stays pending and is reported as an error.
    pub fn call(&self, f: Val, args: &[Val]) -> JsResult<Val> {
        let argv: Vec<napi_value> = args.iter().map(|a| a.0).collect();
        let mut out = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `argv` holds argv.len()
        // values of this env and lives across the call; `out` is an out-pointer.
        let s = unsafe { napi_call_function(self.0, self.undefined().0, f.0, argv.len(), argv.as_ptr(), &mut out) };
        if s == NAPI_PENDING_EXCEPTION {
            return Err(JsErr::new("ERR_JS_PENDING", "callback threw"));
        }
        check(s, "napi_call_function")?;
        Ok(Val(out))
    }
    /// Clears a pending JS exception and returns its message (String(exception)).
    pub fn take_exception(&self) -> Option<String> {
        if !self.exception_pending() {
            return None;
        }
        let mut ex = core::ptr::null_mut();
        let mut st = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; out-pointers valid.
        unsafe {
            napi_get_and_clear_last_exception(self.0, &mut ex);
            if napi_coerce_to_string(self.0, ex, &mut st) != NAPI_OK {
                return Some("exception".into());
            }
        }
        Some(self.to_string(Val(st), "exception").unwrap_or_else(|_| "exception".into()))
    }
    /// An Error with `code` and `msg` (not thrown).
    pub fn error(&self, e: &JsErr) -> JsResult<Val> {
        let (code, msg) = (self.string(&e.code)?, self.string(&e.msg)?);
        let mut err = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `code` and `msg` are
        // strings of this env, `err` an out-pointer.
        check(unsafe { napi_create_error(self.0, code.0, msg.0, &mut err) }, "napi_create_error")?;
        Ok(Val(err))
    }
    pub fn exception_pending(&self) -> bool {
        let mut b = false;
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `b` is a valid
        // out-pointer.
        unsafe { napi_is_exception_pending(self.0, &mut b) };
        b
    }
    pub fn throw(&self, e: &JsErr) {
        if self.exception_pending() {
            return;
        }
        let (Ok(code), Ok(msg)) = (self.string(&e.code), self.string(&e.msg)) else { return };
        let mut err = core::ptr::null_mut();
        // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `code` and `msg` are
        // strings of this env, `err` an out-pointer; napi_throw takes the error just created.
        unsafe {
            napi_create_error(self.0, code.0, msg.0, &mut err);
            napi_throw(self.0, err);
        }
    }

    /// Adds `f` to `exports` as a function named `name`.
    pub fn export(&self, exports: Val, name: &'static str, f: Method) -> JsResult<()> {
        // The fn pointer and its name travel in a leaked box (module lifetime).
        let data = Box::into_raw(Box::new((f, name))) as *mut c_void;
        let mut v = core::ptr::null_mut();
        check(
            // SAFETY: env contract (see `Env`): live napi_env on the JS thread; `name` is
            // name.len() bytes (length given); `trampoline` has the napi_callback signature; `data`
            // is the leaked (Method, name) box, never freed, so it outlives the function.
            unsafe { napi_create_function(self.0, name.as_ptr() as *const c_char, name.len(), trampoline, data, &mut v) },
            "napi_create_function",
        )?;
        self.set(exports, name, Val(v))
    }
}

// SAFETY: called only by Node as the napi_callback of functions made by `export`, on the JS thread
// with a live env and callback info; `data` is then the leaked `(Method, &'static str)` box
// `export` created (read by copy, never freed); napi_get_cb_info writes at most MAX_ARGS values
// into `args.vals`.
unsafe extern "C" fn trampoline(env: napi_env, info: napi_callback_info) -> napi_value {
    let e = Env(env);
    let mut args = Args { vals: [core::ptr::null_mut(); MAX_ARGS], n: MAX_ARGS, fname: "" };
    let mut data: *mut c_void = core::ptr::null_mut();
    if napi_get_cb_info(env, info, &mut args.n, args.vals.as_mut_ptr(), core::ptr::null_mut(), &mut data) != NAPI_OK {
        e.throw(&JsErr::new("ERR_NAPI", "napi_get_cb_info failed"));
        return core::ptr::null_mut();
    }
    args.n = args.n.min(MAX_ARGS);
    let (f, name) = *(data as *const (Method, &'static str));
    args.fname = name;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&e, &args)));
    match r {
        Ok(Ok(v)) => v.0,
        Ok(Err(err)) => {
            e.throw(&err);
            core::ptr::null_mut()
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            e.throw(&JsErr::new("ERR_ADDON_PANIC", format!("{name}: internal error (Rust panic: {what})")));
            core::ptr::null_mut()
        }
    }
}
