//! The declaration macros: each turns one list into the Rust items and the descriptor tables
//! `abi-gen` reads, so the Rust, C and TypeScript views come from the same tokens.

/// `pub mod NAME ("C_PREFIX", "TsObject") { /// doc  ITEM: type = value; ... }`
macro_rules! consts {
    ($(#[doc = $gdoc:literal])* pub mod $m:ident ($cp:literal, $ts:literal) {
        $( $(#[doc = $doc:literal])* $name:ident : $t:ty = $v:expr; )*
    }) => {
        $(#[doc = $gdoc])*
        pub mod $m {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[doc = $doc])* pub const $name: $t = $v; )*
            /// This group's descriptor (for `abi-gen`).
            pub const GROUP: $crate::meta::Group = $crate::meta::Group {
                ts: $ts,
                c_prefix: $cp,
                doc: concat!($($gdoc, "\n",)* ""),
                items: &[ $( $crate::meta::Const { name: stringify!($name), value: $name as u64, doc: concat!($($doc, "\n",)* "") }, )* ],
            };
        }
    };
}

/// `pub mod NAME { /// doc  ITEM = b"..."; ... }` byte-string constants.
macro_rules! byte_strings {
    ($(#[doc = $gdoc:literal])* pub mod $m:ident { $( $(#[doc = $doc:literal])* $name:ident = $v:literal; )* }) => {
        $(#[doc = $gdoc])*
        pub mod $m {
            $( $(#[doc = $doc])* pub const $name: &[u8] = $v; )*
            pub const ALL: &[$crate::meta::Bytes] = &[ $( $crate::meta::Bytes { name: stringify!($name), value: $v, doc: concat!($($doc, "\n",)* "") }, )* ];
        }
    };
}

/// Hypercall statuses: `Variant = code, "NAME", class, "meaning";` gives `HcStatus` and `STATUSES`.
macro_rules! statuses {
    ($( $(#[doc = $doc:literal])* $v:ident = $code:literal, $name:literal, $class:ident, $meaning:literal; )*) => {
        /// Result codes (RAX on return).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u64)]
        pub enum HcStatus { $( $(#[doc = $doc])* $v = $code, )* }
        /// Every status, in code order (a test checks the order is 0, 1, 2, ...).
        pub const STATUSES: &[$crate::meta::StatusInfo] = &[
            $( $crate::meta::StatusInfo { code: $code, name: $name, class: $crate::meta::ErrorClass::$class, meaning: $meaning }, )*
        ];
        impl HcStatus {
            /// The status with this code, if any.
            pub const fn from_code(c: u64) -> Option<HcStatus> {
                match c { $( $code => Some(HcStatus::$v), )* _ => None }
            }
            pub const fn info(self) -> &'static $crate::meta::StatusInfo { &STATUSES[self as usize] }
        }
    };
}

/// A `#[repr(C)]` record with its size checked at compile time and its layout as data:
/// `/// doc  pub struct Name("c_tag", SIZE) { /// doc  pub field: type, ... }`.
macro_rules! record {
    ($(#[doc = $doc:literal])* pub struct $name:ident ($c:literal, $size:expr) {
        $( $(#[doc = $fdoc:literal])* pub $f:ident : $t:ty, )*
    }) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name { $( $(#[doc = $fdoc])* pub $f: $t, )* }
        const _: () = assert!(core::mem::size_of::<$name>() == $size, concat!(stringify!($name), ": size differs from the declared ABI size"));
        impl $name {
            pub const SIZE: usize = $size;
            pub const LAYOUT: $crate::meta::StructLayout = $crate::meta::StructLayout {
                c_name: $c,
                size: $size,
                doc: concat!($($doc, "\n",)* ""),
                fields: &[ $( $crate::meta::Field {
                    name: stringify!($f),
                    offset: core::mem::offset_of!($name, $f),
                    ty: <$t as $crate::meta::AbiType>::TY,
                    doc: concat!($($fdoc, "\n",)* ""),
                }, )* ],
            };
            /// All zero.
            pub const fn zeroed() -> Self {
                // SAFETY: every field is an integer or an array of integers; all-zero bytes are a valid value.
                unsafe { core::mem::zeroed() }
            }
            /// The record as the wire carries it (little-endian, padding zero).
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut b = [0u8; $size];
                $( $crate::meta::AbiType::put(&self.$f, &mut b[core::mem::offset_of!($name, $f)..]); )*
                b
            }
            /// Decodes a record of exactly its size.
            pub fn from_array(b: &[u8; $size]) -> Self {
                $name { $( $f: <$t as $crate::meta::AbiType>::get(&b[core::mem::offset_of!($name, $f)..]), )* }
            }
            /// Decodes a record; `None` when `b` is shorter than the record.
            pub fn from_bytes(b: &[u8]) -> Option<Self> {
                b.get(..$size).and_then(|b| b.try_into().ok()).map(Self::from_array)
            }
        }
        impl Default for $name {
            fn default() -> Self { Self::zeroed() }
        }
        impl $crate::meta::AbiType for $name {
            const TY: $crate::meta::Ty = $crate::meta::Ty::Struct(&$name::LAYOUT);
            fn put(&self, out: &mut [u8]) { out[..$size].copy_from_slice(&self.to_bytes()); }
            fn get(b: &[u8]) -> Self { Self::from_bytes(b).expect("record bytes") }
        }
    };
}

/// ioctls: `NAME = nr, rw, Struct;` (rw: `none`, `r`, `w`, `rw` as user space sees the transfer).
macro_rules! ioctls {
    ($( $(#[doc = $doc:literal])* $name:ident = $nr:literal, $dir:ident $(, $s:ty)?; )*) => {
        $( $(#[doc = $doc])* pub const $name: u32 = $crate::meta::ioc(ioctls!(@r $dir), ioctls!(@w $dir), $nr, 0 $(+ core::mem::size_of::<$s>())?); )*
        pub const IOCTLS: &[$crate::meta::Ioctl] = &[ $( $crate::meta::Ioctl {
            name: stringify!($name), nr: $nr, read: ioctls!(@r $dir), write: ioctls!(@w $dir),
            arg: ioctls!(@arg $($s)?), value: $name,
        }, )* ];
    };
    (@r none) => { false }; (@r r) => { true }; (@r w) => { false }; (@r rw) => { true };
    (@w none) => { false }; (@w r) => { false }; (@w w) => { true }; (@w rw) => { true };
    (@arg) => { None };
    (@arg $s:ty) => { Some(&<$s>::LAYOUT) };
}
