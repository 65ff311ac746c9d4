//! The emulated platform's TPM transport for the core: swtpm's server socket (raw TPM commands,
//! no framing) and its control channel, on which SET_LOCALITY (5) puts the TPM at locality 2
//! around each command of the core and back to 0 afterwards — the locality the bare-metal image
//! reaches through its own TIS MMIO page. One connection per command (swtpm serves one client at
//! a time, so the CLI's own TPM sessions are not held off between commands).

use hyperenclave_core::{TpmIoError, TpmTransport};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// swtpm's control command SET_LOCALITY (swtpm's tpm_ioctl.h: CMD_SET_LOCALITY = 5).
const CMD_SET_LOCALITY: u32 = 5;
/// The locality the hypervisor uses; the demoted host is left with locality 0.
pub const HYPERVISOR_LOCALITY: u8 = 2;
/// A TPM that does not answer within this is a transport error, not a hung service.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn connect(path: &std::path::Path, what: &'static str) -> Result<UnixStream, TpmIoError> {
    let s = UnixStream::connect(path).map_err(|_| TpmIoError { what })?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|_| TpmIoError { what })?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|_| TpmIoError { what })?;
    Ok(s)
}

#[derive(Clone, Debug)]
pub struct SwtpmUnix {
    pub server: PathBuf,
    pub ctrl: PathBuf,
}

impl SwtpmUnix {
    fn set_locality(&self, loc: u8) -> Result<(), TpmIoError> {
        let io = |_| TpmIoError { what: "swtpm control socket" };
        let mut c = connect(&self.ctrl, "swtpm control socket")?;
        let mut cmd = [0u8; 5];
        cmd[..4].copy_from_slice(&CMD_SET_LOCALITY.to_be_bytes());
        cmd[4] = loc;
        c.write_all(&cmd).map_err(io)?;
        let mut r = [0u8; 4];
        c.read_exact(&mut r).map_err(io)?;
        if r != [0; 4] {
            return Err(TpmIoError { what: "swtpm refused SET_LOCALITY" });
        }
        Ok(())
    }

    fn exchange(&self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TpmIoError> {
        let io = |_| TpmIoError { what: "swtpm server socket" };
        let mut s = connect(&self.server, "swtpm server socket")?;
        s.write_all(cmd).map_err(io)?;
        if rsp.len() < 10 {
            return Err(TpmIoError { what: "response buffer below a TPM header" });
        }
        s.read_exact(&mut rsp[..6]).map_err(io)?;
        let n = u32::from_be_bytes(rsp[2..6].try_into().unwrap()) as usize;
        if !(10..=rsp.len()).contains(&n) {
            return Err(TpmIoError { what: "response size field out of range" });
        }
        s.read_exact(&mut rsp[6..n]).map_err(io)?;
        Ok(n)
    }
}

impl TpmTransport for SwtpmUnix {
    fn transact(&mut self, cmd: &[u8], rsp: &mut [u8]) -> Result<usize, TpmIoError> {
        self.set_locality(HYPERVISOR_LOCALITY)?;
        let r = self.exchange(cmd, rsp);
        let back = self.set_locality(0);
        let n = r?;
        back?;
        Ok(n)
    }
}

extern "C" {
    fn getrandom(buf: *mut u8, len: usize, flags: u32) -> isize;
}

/// The core's entropy source here: getrandom(2), retried on short reads.
pub fn entropy(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which we own.
        let n = unsafe { getrandom(buf.as_mut_ptr().add(done), buf.len() - done, 0) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}
