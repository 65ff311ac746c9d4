//! The 64-bit environment an enclave VM starts in, built by the runner outside the enclave:
//! 4-level page tables mapping ELRANGE with the SECINFO permissions (NX for non-executable,
//! read-only for non-writable and TCS pages, absent for pages never added), a GDT, a TSS whose
//! IST1 stack catches every exception, and an IDT whose 32 stubs report the vector to the
//! runner on port `PORT_FAULT`. None of this is in the enclave, so none of it is measured;
//! the enclave cannot see the tables (they are not mapped) and only sees the shared buffer.
//!
//! Guest-physical layout: runner area at GPA 0 (SYS page, stubs, IST stack, shared pages,
//! page-table pool), enclave page at offset `o` at `ENCLAVE_GPA + o`. Linear layout: ELRANGE at
//! its SECS base (< 2^47), the runner area at `RUNNER_LA` in the upper canonical half.

pub const PAGE: u64 = 4096;
pub const ENCLAVE_GPA: u64 = 0x1000_0000;
pub const RUNNER_LA: u64 = 0xFFFF_FF80_0000_0000;

/// Ports of the enclave ↔ runner protocol (the runtime's, in core); PORT_FAULT is this runner's IDT stubs.
pub use hyperenclave_core::enclave::runtime::{PORT_EEXIT, PORT_ERESUME, PORT_HYPERCALL, PORT_OCALL, PORT_PANIC};
pub const PORT_FAULT: u16 = 0xF1;

/// Runner area: the stub page, then per thread (one per TCS, so one per vCPU) its SYS page
/// (GDT, TSS, IDT), IST stack, mailbox and shared pages, then the page-table pool.
const STUB_PAGE: u64 = 0;
const THREAD_FIRST: u64 = 1;
const SYS_IN_THREAD: u64 = 0;
const IST_IN_THREAD: u64 = 1;
const MAILBOX_IN_THREAD: u64 = 2;
const SHARED_IN_THREAD: u64 = 3;

fn thread_pages(shared_pages: u64) -> u64 {
    SHARED_IN_THREAD + shared_pages
}

/// Mailbox words (u64, little-endian) at the start of the mailbox page: the ECALL/OCALL/
/// hypercall arguments and results, so no register has to cross (register ioctls are slow).
pub use hyperenclave_core::enclave::runtime::mb;

const GDT_OFF: u64 = 0;
const TSS_OFF: u64 = 0x100;
const IDT_OFF: u64 = 0x800;
pub const IDT_VECTORS: u64 = 32;

pub const SEL_CODE: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;
pub const SEL_TSS: u16 = 0x18;

const P: u64 = 1;
const RW: u64 = 2;
const A: u64 = 0x20;
const D: u64 = 0x40;
const NX: u64 = 1 << 63;

/// One enclave page as the runner maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageDesc {
    pub offset: u64,
    /// SECINFO R=1 W=2 X=4.
    pub perms: u8,
    pub tcs: bool,
}

/// Where one thread's pieces ended up (linear addresses the vCPU uses, offsets in the area).
#[derive(Clone, Copy, Debug)]
pub struct ThreadLayout {
    pub gdt_la: u64,
    pub idt_la: u64,
    pub tss_la: u64,
    pub ist_top_la: u64,
    pub ist_top_off: u64,
    pub mailbox_la: u64,
    pub mailbox_off: u64,
    pub shared_la: u64,
    pub shared_off: u64,
    pub shared_len: u64,
}

/// Where things ended up.
#[derive(Clone, Debug)]
pub struct Layout {
    pub runner_pages: u64,
    pub cr3: u64,
    pub stub_la: u64,
    pub threads: Vec<ThreadLayout>,
    /// Next free page of the page-table pool (for pages mapped after EACCEPT), and its end.
    pub pool_next: u64,
    pub pool_end: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LayoutError {
    Elrange { base: u64, size: u64 },
    PageOutside { offset: u64 },
    PoolExhausted,
    RunnerTooSmall,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::Elrange { base, size } => write!(f, "ELRANGE {base:#x}+{size:#x} is not page-aligned inside the lower canonical half"),
            LayoutError::PageOutside { offset } => write!(f, "enclave page at offset {offset:#x} is outside ELRANGE or unaligned"),
            LayoutError::PoolExhausted => write!(f, "runner page-table pool exhausted"),
            LayoutError::RunnerTooSmall => write!(f, "runner area too small"),
        }
    }
}

/// Pages of runner area needed for an ELRANGE of `size` bytes, `threads` threads with
/// `shared_pages` each.
pub fn runner_pages(size: u64, shared_pages: u64, threads: u64) -> u64 {
    THREAD_FIRST + threads * thread_pages(shared_pages) + pool_pages(size, shared_pages, threads)
}

fn pool_pages(size: u64, shared_pages: u64, threads: u64) -> u64 {
    // PML4 + (PDPT + PD + PTs) for all of ELRANGE (pages accepted later need their tables too)
    // + the same for the runner area, with slack for ranges straddling table boundaries.
    8 + 2 * ((size >> 21) + 1) + (size >> 30) + ((THREAD_FIRST + threads * thread_pages(shared_pages)) >> 9)
}

struct Builder<'a> {
    mem: &'a mut [u8],
    next: u64,
    end: u64,
}

impl Builder<'_> {
    fn q(&self, gpa: u64) -> u64 {
        let o = gpa as usize;
        u64::from_le_bytes(self.mem[o..o + 8].try_into().unwrap())
    }
    fn set_q(&mut self, gpa: u64, v: u64) {
        store_entry(self.mem, gpa as usize, v);
    }
    fn alloc(&mut self) -> Result<u64, LayoutError> {
        if self.next >= self.end {
            return Err(LayoutError::PoolExhausted);
        }
        let g = self.next * PAGE;
        self.next += 1;
        self.mem[g as usize..(g + PAGE) as usize].fill(0);
        Ok(g)
    }
    fn map(&mut self, pml4: u64, la: u64, gpa: u64, leaf_flags: u64) -> Result<(), LayoutError> {
        let mut table = pml4;
        for level in [39u32, 30, 21] {
            let idx = (la >> level) & 511;
            let e = self.q(table + idx * 8);
            table = if e & P != 0 {
                e & 0x000F_FFFF_FFFF_F000
            } else {
                let t = self.alloc()?;
                self.set_q(table + idx * 8, t | P | RW | A);
                t
            };
        }
        let idx = (la >> 12) & 511;
        self.set_q(table + idx * 8, (gpa & 0x000F_FFFF_FFFF_F000) | leaf_flags | P | A);
        Ok(())
    }
}

/// Writes one 8-byte table entry with a single aligned store: after the VM started, vCPUs may
/// walk the tables while the runner changes them (EDMM), and must never see half an entry.
fn store_entry(mem: &mut [u8], o: usize, v: u64) {
    let slot = &mut mem[o..o + 8]; // bounds-checked
    let p = slot.as_mut_ptr() as *mut u64;
    if p.is_aligned() {
        // SAFETY: `p` points at 8 bytes inside `mem` (the slice above), aligned (checked).
        unsafe { core::ptr::write_volatile(p, v.to_le()) };
    } else {
        slot.copy_from_slice(&v.to_le_bytes()); // tests' unaligned Vec buffers only
    }
}

fn leaf_flags(perms: u8, tcs: bool) -> u64 {
    if tcs {
        return NX; // read-only, not executable
    }
    let mut f = 0;
    if perms & 2 != 0 {
        f |= RW | D;
    }
    if perms & 4 == 0 {
        f |= NX;
    }
    f
}

/// Fills the runner area `mem` (GPA 0, `runner_pages(size, shared_pages, threads)` pages).
/// Only pages in `pages` are mapped (pages accepted later are mapped with `map_page`).
pub fn build(mem: &mut [u8], base: u64, size: u64, pages: &[PageDesc], shared_pages: u64, threads: u64) -> Result<Layout, LayoutError> {
    if !base.is_multiple_of(PAGE) || size == 0 || !size.is_multiple_of(PAGE) || base.checked_add(size).is_none_or(|e| e > 1 << 47) {
        return Err(LayoutError::Elrange { base, size });
    }
    if threads == 0 {
        return Err(LayoutError::RunnerTooSmall);
    }
    let total = runner_pages(size, shared_pages, threads);
    if (mem.len() as u64) < total * PAGE {
        return Err(LayoutError::RunnerTooSmall);
    }
    mem.fill(0);
    let pool_first = THREAD_FIRST + threads * thread_pages(shared_pages);
    let mut b = Builder { mem, next: pool_first, end: total };
    let pml4 = b.alloc()?;
    for p in pages {
        if p.offset % PAGE != 0 || p.offset >= size {
            return Err(LayoutError::PageOutside { offset: p.offset });
        }
        b.map(pml4, base + p.offset, ENCLAVE_GPA + p.offset, leaf_flags(p.perms, p.tcs))?;
    }
    let la = |page: u64| RUNNER_LA + page * PAGE;
    b.map(pml4, la(STUB_PAGE), STUB_PAGE * PAGE, 0)?;
    let stubs = (STUB_PAGE * PAGE) as usize;
    b.mem[stubs..stubs + PAGE as usize].fill(0xCC);
    // Stubs: push rax (the AEX saves it); mov al, vector; out PORT_FAULT, al; hlt; (pad to 8
    // bytes with int3)
    for v in 0..IDT_VECTORS {
        let s = stubs + (v * 8) as usize;
        b.mem[s..s + 6].copy_from_slice(&[0x50, 0xB0, v as u8, 0xE6, PORT_FAULT as u8, 0xF4]);
    }
    let mut out = Vec::new();
    for t in 0..threads {
        let first = THREAD_FIRST + t * thread_pages(shared_pages);
        let (sys_pg, ist_pg, mb_pg) = (first + SYS_IN_THREAD, first + IST_IN_THREAD, first + MAILBOX_IN_THREAD);
        b.map(pml4, la(sys_pg), sys_pg * PAGE, NX)?;
        b.map(pml4, la(ist_pg), ist_pg * PAGE, RW | D | NX)?;
        b.map(pml4, la(mb_pg), mb_pg * PAGE, RW | D | NX)?;
        for s in 0..shared_pages {
            let pg = first + SHARED_IN_THREAD + s;
            b.map(pml4, la(pg), pg * PAGE, RW | D | NX)?;
        }
        let sys = (sys_pg * PAGE) as usize;
        let mem = &mut *b.mem;
        // GDT: null, 64-bit code, data, 16-byte TSS descriptor.
        let gdt: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
        for (i, d) in gdt.iter().enumerate() {
            mem[sys + i * 8..sys + i * 8 + 8].copy_from_slice(&d.to_le_bytes());
        }
        let tss_la = la(sys_pg) + TSS_OFF;
        let (lo, hi) = tss_descriptor(tss_la, 103);
        mem[sys + 24..sys + 32].copy_from_slice(&lo.to_le_bytes());
        mem[sys + 32..sys + 40].copy_from_slice(&hi.to_le_bytes());
        // TSS: IST1 at +36, I/O map base beyond the limit (no bitmap).
        let ist_top = la(ist_pg) + PAGE;
        let ts = sys + TSS_OFF as usize;
        mem[ts + 36..ts + 44].copy_from_slice(&ist_top.to_le_bytes());
        mem[ts + 102..ts + 104].copy_from_slice(&104u16.to_le_bytes());
        for v in 0..IDT_VECTORS {
            // IDT gate: 64-bit interrupt gate, present, DPL 0, IST 1.
            let h = la(STUB_PAGE) + v * 8;
            let g = sys + IDT_OFF as usize + (v * 16) as usize;
            mem[g..g + 2].copy_from_slice(&(h as u16).to_le_bytes());
            mem[g + 2..g + 4].copy_from_slice(&SEL_CODE.to_le_bytes());
            mem[g + 4] = 1;
            mem[g + 5] = 0x8E;
            mem[g + 6..g + 8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
            mem[g + 8..g + 12].copy_from_slice(&((h >> 32) as u32).to_le_bytes());
        }
        out.push(ThreadLayout {
            gdt_la: la(sys_pg) + GDT_OFF,
            idt_la: la(sys_pg) + IDT_OFF,
            tss_la,
            ist_top_la: ist_top,
            ist_top_off: (ist_pg + 1) * PAGE,
            mailbox_la: la(mb_pg),
            mailbox_off: mb_pg * PAGE,
            shared_la: la(first + SHARED_IN_THREAD),
            shared_off: (first + SHARED_IN_THREAD) * PAGE,
            shared_len: shared_pages * PAGE,
        });
    }
    Ok(Layout { runner_pages: total, cr3: pml4, stub_la: la(STUB_PAGE), threads: out, pool_next: b.next, pool_end: total })
}

/// Maps (or remaps) the enclave page at ELRANGE offset `offset` with SECINFO permissions
/// `perms` (after EACCEPT / EMODPE / EMODPR); tables come from the pool.
pub fn map_page(mem: &mut [u8], l: &mut Layout, base: u64, offset: u64, perms: u8) -> Result<(), LayoutError> {
    let mut b = Builder { mem, next: l.pool_next, end: l.pool_end };
    b.map(l.cr3, base + offset, ENCLAVE_GPA + offset, leaf_flags(perms, false))?;
    l.pool_next = b.next;
    Ok(())
}

/// Removes the mapping of the enclave page at `offset` (PENDING, trimmed, removed pages).
pub fn unmap_page(mem: &mut [u8], l: &Layout, base: u64, offset: u64) {
    let la = base + offset;
    let mut table = l.cr3;
    for level in [39u32, 30, 21] {
        let o = (table + ((la >> level) & 511) * 8) as usize;
        let e = u64::from_le_bytes(mem[o..o + 8].try_into().unwrap());
        if e & P == 0 {
            return;
        }
        table = e & 0x000F_FFFF_FFFF_F000;
    }
    let o = (table + ((la >> 12) & 511) * 8) as usize;
    store_entry(mem, o, 0);
}

fn tss_descriptor(base: u64, limit: u32) -> (u64, u64) {
    let lo = (limit as u64 & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89u64 << 40) // present, type 9 (available 64-bit TSS)
        | (((limit as u64 >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    (lo, base >> 32)
}

/// Walks the tables in `mem` like the CPU: LA → (GPA, writable, executable), or None.
pub fn translate(mem: &[u8], cr3: u64, la: u64) -> Option<(u64, bool, bool)> {
    let q = |gpa: u64| -> Option<u64> {
        let o = gpa as usize;
        Some(u64::from_le_bytes(mem.get(o..o + 8)?.try_into().ok()?))
    };
    let mut table = cr3;
    let (mut w, mut x) = (true, true);
    for level in [39u32, 30, 21, 12] {
        let e = q(table + ((la >> level) & 511) * 8)?;
        if e & P == 0 {
            return None;
        }
        w &= e & RW != 0;
        x &= e & NX == 0;
        table = e & 0x000F_FFFF_FFFF_F000;
    }
    Some((table | (la & 0xFFF), w, x))
}

/// Names of the exception vectors, and whether the CPU pushes an error code.
pub fn vector_name(v: u8) -> (&'static str, bool) {
    match v {
        0 => ("#DE divide error", false),
        1 => ("#DB debug", false),
        2 => ("NMI", false),
        3 => ("#BP breakpoint", false),
        4 => ("#OF overflow", false),
        5 => ("#BR bound range", false),
        6 => ("#UD invalid opcode", false),
        7 => ("#NM device not available", false),
        8 => ("#DF double fault", true),
        10 => ("#TS invalid TSS", true),
        11 => ("#NP segment not present", true),
        12 => ("#SS stack fault", true),
        13 => ("#GP general protection", true),
        14 => ("#PF page fault", true),
        16 => ("#MF x87 error", false),
        17 => ("#AC alignment check", true),
        18 => ("#MC machine check", false),
        19 => ("#XM SIMD exception", false),
        21 => ("#CP control protection", true),
        _ => ("reserved vector", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_pages_with_secinfo_permissions() {
        let base = 0x4000_0000;
        let size = 0x10000;
        let pages = [
            PageDesc { offset: 0, perms: 0, tcs: true },
            PageDesc { offset: 0x1000, perms: 5, tcs: false },
            PageDesc { offset: 0x2000, perms: 1, tcs: false },
            PageDesc { offset: 0x3000, perms: 3, tcs: false },
        ];
        let n = runner_pages(size, 2, 2);
        let mut mem = vec![0u8; (n * PAGE) as usize];
        let mut l = build(&mut mem, base, size, &pages, 2, 2).unwrap();
        assert_eq!(translate(&mem, l.cr3, base), Some((ENCLAVE_GPA, false, false)));
        assert_eq!(translate(&mem, l.cr3, base + 0x1010), Some((ENCLAVE_GPA + 0x1010, false, true)));
        assert_eq!(translate(&mem, l.cr3, base + 0x2000), Some((ENCLAVE_GPA + 0x2000, false, false)));
        assert_eq!(translate(&mem, l.cr3, base + 0x3000), Some((ENCLAVE_GPA + 0x3000, true, false)));
        assert_eq!(translate(&mem, l.cr3, base + 0x4000), None, "page never added");
        for t in &l.threads {
            assert_eq!(translate(&mem, l.cr3, t.shared_la + 0x1fff).map(|t| t.1), Some(true));
            // TSS IST1 points at the top of the thread's own IST page
            let o = (t.tss_la - RUNNER_LA) as usize;
            assert_eq!(u64::from_le_bytes(mem[o + 36..o + 44].try_into().unwrap()), t.ist_top_la);
        }
        assert_ne!(l.threads[0].mailbox_off, l.threads[1].mailbox_off, "one mailbox per thread");
        assert_ne!(l.threads[0].ist_top_off, l.threads[1].ist_top_off, "one IST stack per thread");
        assert_eq!(translate(&mem, l.cr3, l.stub_la).map(|t| (t.1, t.2)), Some((false, true)));
        assert_eq!(translate(&mem, l.cr3, l.cr3), None, "page tables are not mapped");
        // a page accepted later, then trimmed
        map_page(&mut mem, &mut l, base, 0x8000, 3).unwrap();
        assert_eq!(translate(&mem, l.cr3, base + 0x8000), Some((ENCLAVE_GPA + 0x8000, true, false)));
        map_page(&mut mem, &mut l, base, 0x8000, 1).unwrap();
        assert_eq!(translate(&mem, l.cr3, base + 0x8000), Some((ENCLAVE_GPA + 0x8000, false, false)), "restricted");
        unmap_page(&mut mem, &l, base, 0x8000);
        assert_eq!(translate(&mem, l.cr3, base + 0x8000), None);
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut mem = vec![0u8; (runner_pages(0x2000, 1, 1) * PAGE) as usize];
        assert_eq!(build(&mut mem, 0x1001, 0x2000, &[], 1, 1).unwrap_err(), LayoutError::Elrange { base: 0x1001, size: 0x2000 });
        let p = [PageDesc { offset: 0x2000, perms: 1, tcs: false }];
        assert_eq!(build(&mut mem, 0x4000, 0x2000, &p, 1, 1).unwrap_err(), LayoutError::PageOutside { offset: 0x2000 });
        let mut small = vec![0u8; 4096];
        assert_eq!(build(&mut small, 0x4000, 0x2000, &[], 1, 1).unwrap_err(), LayoutError::RunnerTooSmall);
    }

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let (lo, hi) = tss_descriptor(0xFFFF_FF80_0000_0100, 103);
        assert_eq!(lo & 0xFFFF, 103);
        assert_eq!((lo >> 16) & 0xFF_FFFF, 0x000100);
        assert_eq!((lo >> 40) & 0xFF, 0x89);
        assert_eq!(hi, 0xFFFF_FF80);
    }
}
