//! Descriptors of the ABI items, read by `abi-gen` to emit C and TypeScript. Built by the macros
//! in `macros.rs` from the same tokens as the Rust items, so they cannot disagree with them.

/// A named integer constant (hypercall number, flag, limit).
#[derive(Clone, Copy, Debug)]
pub struct Const {
    pub name: &'static str,
    pub value: u64,
    pub doc: &'static str,
}

/// A named byte-string constant (labels and event prefixes the host and the core must agree on).
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    pub name: &'static str,
    pub value: &'static [u8],
    pub doc: &'static str,
}

/// A group of constants: `prefix` + name is the C macro; `ts` names the TypeScript object.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    pub ts: &'static str,
    pub c_prefix: &'static str,
    pub doc: &'static str,
    pub items: &'static [Const],
}

/// Who a status blames (the CLI maps each class to an exit code once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    Ok,
    Unsupported,
    BadInput,
    Usage,
    NotFound,
    VerifyFailed,
    Internal,
}

impl ErrorClass {
    pub const fn name(self) -> &'static str {
        match self {
            ErrorClass::Ok => "ok",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::BadInput => "bad-input",
            ErrorClass::Usage => "usage",
            ErrorClass::NotFound => "not-found",
            ErrorClass::VerifyFailed => "verify-failed",
            ErrorClass::Internal => "internal",
        }
    }
}

/// One hypercall status (RAX on return).
#[derive(Clone, Copy, Debug)]
pub struct StatusInfo {
    pub code: u64,
    /// SCREAMING_SNAKE name used in C (`HC_ST_` + name), TypeScript and docs/hypercall-abi.md.
    pub name: &'static str,
    pub class: ErrorClass,
    pub meaning: &'static str,
}

/// A field's type as C and TypeScript see it.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    U8,
    U16,
    U32,
    I32,
    U64,
    /// C `char` (a NUL-terminated name); Rust `i8`.
    Char,
    Array(&'static Ty, usize),
    Struct(&'static StructLayout),
}

impl Ty {
    pub const fn size(&self) -> usize {
        match self {
            Ty::U8 | Ty::Char => 1,
            Ty::U16 => 2,
            Ty::U32 | Ty::I32 => 4,
            Ty::U64 => 8,
            Ty::Array(t, n) => t.size() * *n,
            Ty::Struct(s) => s.size,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub ty: Ty,
    pub doc: &'static str,
}

/// A `#[repr(C)]` record: its C tag (`struct <c_name>`), size and fields at their offsets.
#[derive(Clone, Copy, Debug)]
pub struct StructLayout {
    pub c_name: &'static str,
    pub size: usize,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

/// An ioctl: `_IO*(HE_IOC_MAGIC, nr, struct)`; `value` is the encoded request number.
#[derive(Clone, Copy, Debug)]
pub struct Ioctl {
    pub name: &'static str,
    pub nr: u8,
    pub read: bool,
    pub write: bool,
    pub arg: Option<&'static StructLayout>,
    pub value: u32,
}

/// Little-endian encode/decode of a field type; implemented for the scalars, arrays and records.
pub trait AbiType: Sized + Copy {
    const TY: Ty;
    fn put(&self, out: &mut [u8]);
    fn get(b: &[u8]) -> Self;
}

macro_rules! scalar {
    ($t:ty, $ty:expr) => {
        impl AbiType for $t {
            const TY: Ty = $ty;
            fn put(&self, out: &mut [u8]) {
                out[..core::mem::size_of::<$t>()].copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; core::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..core::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
scalar!(u8, Ty::U8);
scalar!(u16, Ty::U16);
scalar!(u32, Ty::U32);
scalar!(i32, Ty::I32);
scalar!(u64, Ty::U64);
scalar!(i8, Ty::Char);

impl<T: AbiType, const N: usize> AbiType for [T; N] {
    const TY: Ty = Ty::Array(&T::TY, N);
    fn put(&self, out: &mut [u8]) {
        let s = T::TY.size();
        for (i, v) in self.iter().enumerate() {
            v.put(&mut out[i * s..]);
        }
    }
    fn get(b: &[u8]) -> Self {
        let s = T::TY.size();
        core::array::from_fn(|i| T::get(&b[i * s..]))
    }
}

/// `_IOC(dir, 'H', nr, size)` as Linux encodes it on x86 (dir: 1 write, 2 read).
pub const fn ioc(read: bool, write: bool, nr: u8, size: usize) -> u32 {
    let dir = (write as u32) | ((read as u32) << 1);
    (dir << 30) | ((size as u32) << 16) | ((crate::ioctl::HE_IOC_MAGIC as u32) << 8) | nr as u32
}
