//! AMD-Vi (AMD I/O Virtualization Technology, IOMMU specification rev. 3): one device table whose
//! 65536 entries all point at one I/O page table (3 levels, 512 GiB of DMA address space) that
//! identity-maps the host's RAM except the reservation; a command buffer (INVALIDATE +
//! COMPLETION_WAIT after every enable) and an event log the hypervisor drains on every hypercall.
//! Device table, command buffer, event log and page tables are statics of the image, so they
//! live in the reservation: absent from the host's nested tables and from the I/O page table.
//!
//! Not done: interrupt remapping (DTE.IV = 0: MSIs pass through unremapped), per-device domains
//! (every requester ID, aliases included, gets the same view), the IOMMU's PCI configuration
//! space (the host can still reach it through port 0xCF8/0xCFC and MMCONFIG).

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use hyperenclave_core::{MemKind, MemRange};

/// The register window hidden from the host (the largest AMD-Vi MMIO window: 512 KiB; QEMU's is
/// 16 KiB at 0xfed80000).
pub const MMIO_SPAN: u64 = 0x8_0000;

mod reg {
    pub const DEVTAB_BASE: u64 = 0x00;
    pub const CMDBUF_BASE: u64 = 0x08;
    pub const EVTLOG_BASE: u64 = 0x10;
    pub const CONTROL: u64 = 0x18;
    pub const EXCL_BASE: u64 = 0x20;
    pub const EXCL_LIMIT: u64 = 0x28;
    pub const EXT_FEATURES: u64 = 0x30;
    pub const CMD_HEAD: u64 = 0x2000;
    pub const CMD_TAIL: u64 = 0x2008;
    pub const EVT_HEAD: u64 = 0x2010;
    pub const EVT_TAIL: u64 = 0x2018;
    pub const STATUS: u64 = 0x2020;
}
const CTRL_IOMMU_EN: u64 = 1 << 0;
const CTRL_EVTLOG_EN: u64 = 1 << 2;
const CTRL_EVTINT_EN: u64 = 1 << 3;
const CTRL_COMWAIT_INT_EN: u64 = 1 << 4;
const CTRL_CMDBUF_EN: u64 = 1 << 12;
const EFR_IA: u64 = 1 << 6;
const STATUS_EVT_OVERFLOW: u64 = 1 << 0;

// page-table entries (PTE/PDE) and device table entries
const PR: u64 = 1;
const IR: u64 = 1 << 61;
const IW: u64 = 1 << 62;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// Non-present entries carry NextLevel = 1 with PR = 0. Hardware ignores every other bit of a
/// non-present entry; QEMU's page walk logs an IO_PAGE_FAULT only for a non-zero non-present
/// entry it meets as a directory, so this keeps faults logged on both.
const NOT_PRESENT: u64 = 1 << 9;
const fn next_level(l: u64) -> u64 {
    l << 9
}
const DTE_V: u64 = 1;
const DTE_TV: u64 = 1 << 1;
const MODE: u64 = 3; // 3 levels: bits 38:12 of the DMA address
const DOMAIN: u64 = 1;
const DEVICES: usize = 65536;
const POOL_PAGES: usize = 160;

const EVT_ENTRIES: usize = 256; // 4 KiB, EventLen = 8
const CMD_ENTRIES: usize = 256; // 4 KiB, ComLen = 8

#[repr(C, align(4096))]
struct DevTab([[u64; 4]; DEVICES]);
#[repr(C, align(4096))]
struct Page([u64; 512]);

// The IOMMU's memory: only INIT/DISABLE (one CPU, under the image's LOCK) and poll (under LOCK)
// touch these; the IOMMU reads and writes them by DMA.
static mut DEVTAB: DevTab = DevTab([[0; 4]; DEVICES]);
static mut CMDBUF: Page = Page([0; 512]);
static mut EVTLOG: Page = Page([0; 512]);
static mut POOL: [Page; POOL_PAGES] = [const { Page([0; 512]) }; POOL_PAGES];
static mut WAIT: Page = Page([0; 512]);

pub struct AmdVi {
    base: u64,
    /// The IOMMU's own PCI function (IVHD device ID): bus << 8 | device << 3 | function.
    bdf: u16,
    prev_control: u64,
    cmd_tail: u64,
    wait_seq: u64,
    pool_used: usize,
    pub faults: u64,
    /// Faults seen only as the IOMMU function's Signaled Target Abort (no event logged).
    pub aborts: u64,
    pub overflows: u64,
    pub mapped_bytes: u64,
    pub table_pages: usize,
}

/// One logged event, decoded.
#[derive(Clone, Copy)]
pub struct Event {
    pub code: u8,
    pub device: u16,
    pub flags: u16,
    pub address: u64,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self.code {
            1 => "ILLEGAL_DEV_TABLE_ENTRY",
            2 => "IO_PAGE_FAULT",
            3 => "DEV_TAB_HARDWARE_ERROR",
            4 => "PAGE_TAB_HARDWARE_ERROR",
            5 => "ILLEGAL_COMMAND_ERROR",
            6 => "COMMAND_HARDWARE_ERROR",
            7 => "IOTLB_INV_TIMEOUT",
            8 => "INVALID_DEVICE_REQUEST",
            0 => "TARGET_ABORT",
            _ => "event",
        }
    }
}

fn pa_of<T>(p: *const T) -> u64 {
    p as u64 // statics are linked at their physical addresses (identity map)
}

impl AmdVi {
    fn r(&self, off: u64) -> u64 {
        // SAFETY: base..base+MMIO_SPAN is the IOMMU's register window (from IVRS), identity-mapped.
        unsafe { read_volatile((self.base + off) as *const u64) }
    }
    fn w(&self, off: u64, v: u64) {
        // SAFETY: as in r(); 64-bit registers are written whole.
        unsafe { write_volatile((self.base + off) as *mut u64, v) }
    }

    /// Takes the IOMMU at `base` over: refused when the host already turned translation on (it
    /// would lose its own mappings; boot Linux with amd_iommu=off).
    pub fn new(base: u64, bdf: u16) -> Result<AmdVi, &'static str> {
        if base == 0 || base & 0x3fff != 0 || base + MMIO_SPAN > super::IDENTITY_SPAN {
            return Err("IVHD register base is not a 16 KiB-aligned address below 8 GiB");
        }
        let mut v = AmdVi { base, bdf, prev_control: 0, cmd_tail: 0, wait_seq: 0, pool_used: 0, faults: 0, aborts: 0, overflows: 0, mapped_bytes: 0, table_pages: 0 };
        let ctrl = v.r(reg::CONTROL);
        if ctrl == u64::MAX {
            return Err("IOMMU registers read all-ones (no device at the IVHD base)");
        }
        if ctrl & CTRL_IOMMU_EN != 0 {
            return Err("the host has IOMMU translation on (boot Linux with amd_iommu=off: the hypervisor owns the IOMMU)");
        }
        v.prev_control = ctrl;
        Ok(v)
    }

    fn alloc(&mut self) -> Result<u64, &'static str> {
        if self.pool_used >= POOL_PAGES {
            return Err("I/O page-table pool exhausted (more RAM than the pool maps)");
        }
        // SAFETY: POOL is only used here, single-threaded (INIT under LOCK); index checked above.
        let page = unsafe { &mut (*addr_of_mut!(POOL))[self.pool_used] };
        page.0.fill(NOT_PRESENT);
        self.pool_used += 1;
        Ok(pa_of(page as *const Page))
    }

    /// The entry for `iova` at `level` (3 = root), creating directory pages down to it.
    fn entry(&mut self, root: u64, iova: u64, level: u64) -> Result<*mut u64, &'static str> {
        let mut table = root;
        let mut l = MODE;
        loop {
            let idx = ((iova >> (12 + 9 * (l - 1))) & 0x1ff) as usize;
            let e = (table as *mut u64).wrapping_add(idx);
            if l == level {
                return Ok(e);
            }
            // SAFETY: `table` is a page of POOL (identity-mapped static); idx < 512.
            let cur = unsafe { *e };
            table = if cur & PR != 0 {
                if (cur >> 9) & 7 == 0 {
                    return Err("I/O page table: a large page is in the way");
                }
                cur & ADDR
            } else {
                let t = self.alloc()?;
                // SAFETY: as above.
                unsafe { *e = t | PR | next_level(l - 1) | IR | IW };
                t
            };
            l -= 1;
        }
    }

    /// Identity-maps [start, end) (4 KiB-aligned) read/write, with 2 MiB pages where aligned.
    fn map(&mut self, root: u64, mut a: u64, end: u64) -> Result<(), &'static str> {
        while a < end {
            if a & 0x1f_ffff == 0 && a + 0x20_0000 <= end {
                let e = self.entry(root, a, 2)?;
                // SAFETY: e points into a POOL page (entry()).
                unsafe { *e = a | PR | IR | IW };
                a += 0x20_0000;
            } else {
                let e = self.entry(root, a, 1)?;
                // SAFETY: as above.
                unsafe { *e = a | PR | IR | IW };
                a += 0x1000;
            }
        }
        Ok(())
    }

    /// Builds the I/O page table for the RAM ranges of `map` minus `reserved`, points every
    /// device at it, and enables translation, the command buffer and the event log.
    pub fn enable(&mut self, map: &[MemRange], reserved: (u64, u64)) -> Result<(), &'static str> {
        self.pool_used = 0;
        self.mapped_bytes = 0;
        let root = self.alloc()?;
        for r in map.iter().filter(|r| r.kind == MemKind::Ram) {
            let (s, e) = ((r.start + 0xfff) & !0xfff, (r.start + r.size) & !0xfff);
            for (ps, pe) in [(s, e.min(reserved.0)), (s.max(reserved.1), e)] {
                if ps < pe {
                    if pe > 1 << 39 {
                        return Err("RAM above 512 GiB: outside the 3-level I/O page table");
                    }
                    self.map(root, ps, pe)?;
                    self.mapped_bytes += pe - ps;
                }
            }
        }
        self.table_pages = self.pool_used;
        // SAFETY: single-threaded INIT; the IOMMU is off (checked in new()), so nothing reads
        // the device table while it is written.
        let dt = unsafe { &mut *addr_of_mut!(DEVTAB) };
        for d in dt.0.iter_mut() {
            *d = [DTE_V | DTE_TV | (MODE << 9) | root | IR | IW, DOMAIN, 0, 0];
        }
        // SAFETY: as above, the event log and command buffer are ours.
        unsafe {
            (*addr_of_mut!(EVTLOG)).0.fill(0);
            (*addr_of_mut!(CMDBUF)).0.fill(0);
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        let devtab = pa_of(addr_of!(DEVTAB));
        let size_field = (core::mem::size_of::<DevTab>() as u64 / 4096) - 1;
        self.w(reg::CONTROL, self.prev_control & !(CTRL_IOMMU_EN | CTRL_EVTLOG_EN | CTRL_EVTINT_EN | CTRL_CMDBUF_EN | CTRL_COMWAIT_INT_EN));
        self.w(reg::EXCL_BASE, 0);
        self.w(reg::EXCL_LIMIT, 0);
        self.w(reg::DEVTAB_BASE, devtab | size_field);
        self.w(reg::CMDBUF_BASE, pa_of(addr_of!(CMDBUF)) | (8u64 << 56));
        self.w(reg::EVTLOG_BASE, pa_of(addr_of!(EVTLOG)) | (8u64 << 56));
        self.w(reg::CMD_HEAD, 0);
        self.w(reg::CMD_TAIL, 0);
        self.w(reg::EVT_HEAD, 0);
        self.w(reg::EVT_TAIL, 0);
        self.w(reg::STATUS, STATUS_EVT_OVERFLOW); // write-1-to-clear
        self.pci_status(1 << 11); // a target abort from before this enable is not ours to count
        self.cmd_tail = 0;
        self.w(reg::CONTROL, (self.prev_control & !(CTRL_EVTINT_EN | CTRL_COMWAIT_INT_EN)) | CTRL_IOMMU_EN | CTRL_EVTLOG_EN | CTRL_CMDBUF_EN);
        // drop whatever the IOMMU cached before (a previous enable's tables)
        if self.r(reg::EXT_FEATURES) & EFR_IA != 0 {
            self.command([8u64 << 60, 0]); // INVALIDATE_IOMMU_ALL
        } else {
            // INVALIDATE_IOMMU_PAGES, domain 1, S = 1 with the all-pages address
            self.command([(3u64 << 60) | (DOMAIN << 32), 0x7fff_ffff_ffff_f000 | 1]);
        }
        if !self.sync() {
            self.w(reg::CONTROL, self.prev_control);
            return Err("COMPLETION_WAIT did not complete: the IOMMU does not process its command buffer");
        }
        Ok(())
    }

    fn command(&mut self, c: [u64; 2]) {
        let i = (self.cmd_tail / 16) as usize % CMD_ENTRIES;
        // SAFETY: our command buffer; the IOMMU reads entries only between head and tail.
        unsafe {
            let b = &mut *addr_of_mut!(CMDBUF);
            write_volatile(&mut b.0[i * 2], c[0]);
            write_volatile(&mut b.0[i * 2 + 1], c[1]);
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.cmd_tail = (self.cmd_tail + 16) % (CMD_ENTRIES as u64 * 16);
        self.w(reg::CMD_TAIL, self.cmd_tail);
    }

    /// COMPLETION_WAIT with a store: true once the IOMMU wrote the sequence number back.
    fn sync(&mut self) -> bool {
        self.wait_seq += 1;
        // SAFETY: WAIT is ours. Cleared first: a value left by an earlier enable must not pass
        // for this completion.
        unsafe { write_volatile(addr_of_mut!(WAIT) as *mut u64, 0) };
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        let at = pa_of(addr_of!(WAIT));
        self.command([(at & 0x000f_ffff_ffff_fff8) | 1 | (1u64 << 60), self.wait_seq]);
        for _ in 0..50_000_000u64 {
            // SAFETY: WAIT is ours; the IOMMU writes it by DMA.
            if unsafe { read_volatile(addr_of!(WAIT) as *const u64) } == self.wait_seq {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }

    /// The IOMMU function's PCI status register (configuration mechanism #1, ports 0xCF8/0xCFC;
    /// the host's 0xCF8 value is put back). `clear`: write-1-to-clear those bits.
    fn pci_status(&self, clear: u16) -> u16 {
        let addr = 0x8000_0000u32 | ((self.bdf as u32) << 8) | 0x04;
        let (saved, dword): (u32, u32);
        // SAFETY: ports 0xCF8/0xCFC are PCI configuration mechanism #1; this reads and (for
        // `clear`) writes the command/status dword of the IOMMU's own function only.
        unsafe {
            core::arch::asm!("in eax, dx", out("eax") saved, in("dx") 0xcf8u16, options(nomem, nostack));
            core::arch::asm!("out dx, eax", in("eax") addr, in("dx") 0xcf8u16, options(nomem, nostack));
            core::arch::asm!("in eax, dx", out("eax") dword, in("dx") 0xcfcu16, options(nomem, nostack));
            if clear != 0 {
                // command unchanged; status bits are write-1-to-clear, so only `clear` changes
                let v = (dword & 0xffff) | ((clear as u32) << 16);
                core::arch::asm!("out dx, eax", in("eax") v, in("dx") 0xcfcu16, options(nomem, nostack));
            }
            core::arch::asm!("out dx, eax", in("eax") saved, in("dx") 0xcf8u16, options(nomem, nostack));
        }
        (dword >> 16) as u16
    }

    /// Drains the event log: calls `each` for every new event and counts them. An IOMMU that
    /// signalled a target abort (PCI status bit 11) without logging an event counts one fault:
    /// QEMU 7.2's AMD IOMMU never writes its event log (its amdvi_log_event tests the status
    /// register with OR instead of AND and always returns) but sets that bit at every
    /// IO_PAGE_FAULT, so there at most one fault is counted per poll.
    pub fn poll(&mut self, mut each: impl FnMut(&Event)) {
        const SIG_TARGET_ABORT: u16 = 1 << 11;
        let abort = self.pci_status(0) & SIG_TARGET_ABORT != 0;
        if abort {
            self.pci_status(SIG_TARGET_ABORT);
        }
        let mut head = self.r(reg::EVT_HEAD) & 0x7_fff0;
        let tail = self.r(reg::EVT_TAIL) & 0x7_fff0;
        let mut n = 0;
        while head != tail && n < EVT_ENTRIES {
            let i = (head / 16) as usize % EVT_ENTRIES;
            // SAFETY: our event log; the IOMMU wrote entries [head, tail).
            let (a, b) = unsafe {
                let l = &*addr_of!(EVTLOG);
                (read_volatile(&l.0[i * 2]), read_volatile(&l.0[i * 2 + 1]))
            };
            let ev = Event { device: a as u16, code: (a >> 60) as u8, flags: ((a >> 48) & 0xfff) as u16, address: b };
            self.faults += 1;
            each(&ev);
            head = (head + 16) % (EVT_ENTRIES as u64 * 16);
            n += 1;
        }
        self.w(reg::EVT_HEAD, head);
        if n == 0 && abort {
            self.faults += 1;
            self.aborts += 1;
            each(&Event { code: 0, device: self.bdf, flags: SIG_TARGET_ABORT, address: 0 });
        }
        if self.r(reg::STATUS) & STATUS_EVT_OVERFLOW != 0 {
            self.overflows += 1;
            // the spec's restart: clear the overflow, turn the log off and on again
            let c = self.r(reg::CONTROL);
            self.w(reg::CONTROL, c & !CTRL_EVTLOG_EN);
            self.w(reg::STATUS, STATUS_EVT_OVERFLOW);
            self.w(reg::EVT_HEAD, 0);
            self.w(reg::EVT_TAIL, 0);
            self.w(reg::CONTROL, c);
        }
    }

    /// Hands the IOMMU back as the host left it (translation off: devices DMA untranslated,
    /// which is what a Linux booted with amd_iommu=off expects).
    pub fn disable(&mut self) {
        self.w(reg::CONTROL, self.prev_control);
    }

    pub fn base(&self) -> u64 {
        self.base
    }
}
