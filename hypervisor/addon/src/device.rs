//! Typed /dev/hyperenclave calls, one wrapper per ioctl (as kvm-ioctls does for KVM): the request
//! number and the argument type come from the same `hyperenclave-abi` definition, so the size the
//! request encodes is the size of the value the kernel reads and writes. JavaScript passes record
//! bytes and gets record bytes back; it never chooses a request or writes a pointer.
use hyperenclave_abi::ioctl::{self as abi, HeHypercall, HeLoad, HeStatus, HeVersion};

use crate::sys::{ioctl_ptr, SysError};

/// Runs `request` on `fd` with `arg` as its in/out argument.
///
/// # Safety
/// `request` must be an `_IOR`/`_IOW`/`_IOWR` request whose encoded size is `size_of::<T>()` and
/// whose driver reads or writes nothing through `arg` beyond that size (true of every request in
/// `hyperenclave_abi::ioctl` but HE_IOC_HYPERCALL, whose `buf` pointer `hypercall` sets itself).
unsafe fn call<T>(fd: i32, request: u32, arg: &mut T, what: &str) -> Result<(), SysError> {
    // SAFETY: `arg` is an exclusive borrow of a live `T`, valid for size_of::<T>() bytes of reads
    // and writes for the duration of the call; the caller guarantees the request stays inside it.
    unsafe { ioctl_ptr(fd, request as u64, arg as *mut T as *mut _) }.map(|_| ()).map_err(|errno| SysError { errno, what: what.to_string() })
}

/// Requests without an argument (HE_IOC_ENABLE / HE_IOC_DISABLE).
fn call_none(fd: i32, request: u32, what: &str) -> Result<(), SysError> {
    // SAFETY: `_IO` requests carry no argument: the kernel ignores the (null) pointer.
    unsafe { ioctl_ptr(fd, request as u64, core::ptr::null_mut()) }.map(|_| ()).map_err(|errno| SysError { errno, what: what.to_string() })
}

const _: () = {
    // the requests encode exactly these sizes (the ioc() encoding in hyperenclave-abi)
    assert!(((abi::HE_IOC_VERSION >> 16) & 0x3fff) as usize == core::mem::size_of::<HeVersion>());
    assert!(((abi::HE_IOC_LOAD >> 16) & 0x3fff) as usize == core::mem::size_of::<HeLoad>());
    assert!(((abi::HE_IOC_STATUS >> 16) & 0x3fff) as usize == core::mem::size_of::<HeStatus>());
    assert!(((abi::HE_IOC_HYPERCALL >> 16) & 0x3fff) as usize == core::mem::size_of::<HeHypercall>());
    assert!((abi::HE_IOC_ENABLE >> 16) == 0 && (abi::HE_IOC_DISABLE >> 16) == 0);
};

pub fn version(fd: i32, mut v: HeVersion) -> Result<HeVersion, SysError> {
    // SAFETY: HE_IOC_VERSION is _IOWR(.., struct he_version) and the driver copies exactly that struct.
    unsafe { call(fd, abi::HE_IOC_VERSION, &mut v, "HE_IOC_VERSION")? };
    Ok(v)
}

pub fn load(fd: i32, mut l: HeLoad) -> Result<HeLoad, SysError> {
    // the driver NUL-terminates the name itself; terminate it here too so no reader runs past it
    l.firmware[l.firmware.len() - 1] = 0;
    // SAFETY: HE_IOC_LOAD is _IOWR(.., struct he_load) and the driver copies exactly that struct.
    unsafe { call(fd, abi::HE_IOC_LOAD, &mut l, "HE_IOC_LOAD")? };
    Ok(l)
}

pub fn enable(fd: i32) -> Result<(), SysError> {
    call_none(fd, abi::HE_IOC_ENABLE, "HE_IOC_ENABLE")
}

pub fn disable(fd: i32) -> Result<(), SysError> {
    call_none(fd, abi::HE_IOC_DISABLE, "HE_IOC_DISABLE")
}

pub fn status(fd: i32) -> Result<HeStatus, SysError> {
    let mut s = HeStatus::zeroed();
    // SAFETY: HE_IOC_STATUS is _IOR(.., struct he_status) and the driver writes exactly that struct.
    unsafe { call(fd, abi::HE_IOC_STATUS, &mut s, "HE_IOC_STATUS")? };
    Ok(s)
}

/// HE_IOC_HYPERCALL. `staging` is the buffer the driver copies in and back (its first `buf_len`
/// bytes); `h.buf` from the caller is ignored and set here.
pub fn hypercall(fd: i32, mut h: HeHypercall, staging: Option<&mut [u8]>) -> Result<HeHypercall, String> {
    let len = h.buf_len as usize;
    match staging {
        Some(s) => {
            if len > s.len() || len > abi::HE_HYPERCALL_BUF_MAX as usize {
                return Err(format!("he_hypercall.buf_len {len} exceeds the staging buffer ({} bytes) or HE_HYPERCALL_BUF_MAX", s.len()));
            }
            h.buf = s.as_mut_ptr() as u64;
            // SAFETY: HE_IOC_HYPERCALL is _IOWR(.., struct he_hypercall): the driver copies that
            // struct, then at most buf_len bytes from and back to `buf`, which points at `s`, an
            // exclusive borrow of at least buf_len live bytes for the whole call.
            unsafe { call(fd, abi::HE_IOC_HYPERCALL, &mut h, "HE_IOC_HYPERCALL") }.map_err(|e| e.to_string())?;
        }
        None => {
            if len != 0 {
                return Err(format!("he_hypercall.buf_len {len} without a staging buffer"));
            }
            h.buf = 0;
            // SAFETY: as above with buf_len = 0 and buf = null: the driver touches only the struct.
            unsafe { call(fd, abi::HE_IOC_HYPERCALL, &mut h, "HE_IOC_HYPERCALL") }.map_err(|e| e.to_string())?;
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_calls_on_a_bad_fd_report_ebadf() {
        let e = status(-1).unwrap_err();
        assert_eq!((e.code(), e.what.as_str()), ("EBADF".to_string(), "HE_IOC_STATUS"));
        assert!(enable(-1).is_err());
    }

    #[test]
    fn hypercall_refuses_a_length_beyond_its_staging_buffer() {
        let mut page = [0u8; 64];
        let h = HeHypercall { buf_len: 65, ..HeHypercall::zeroed() };
        assert!(hypercall(-1, h, Some(&mut page)).unwrap_err().contains("exceeds the staging buffer"));
        assert!(hypercall(-1, h, None).unwrap_err().contains("without a staging buffer"));
    }
}
