//! A safe face over the verbs resources Keel uses: device context, protection domain,
//! completion queue, memory region and reliable-connected queue pair.
//!
//! Every resource holds its raw pointer and an [`Arc`] of its parent, so a parent is destroyed
//! only after all of its children (a protection domain outlives its memory regions and queue
//! pairs, a context outlives everything). Posting work requests is not in this file: it lives in
//! [`super::pool`], where a buffer handed to the NIC is owned by the in-flight table until its
//! completion is polled.

use super::error::RdmaError;
use ibverbs_sys as ffi;
use std::ffi::CStr;
use std::io;
use std::ptr;
use std::sync::Arc;

/// The port every Keel queue pair uses (soft-RoCE and single-port NICs have only port 1).
pub const PORT_NUM: u8 = 1;

/// An open RDMA device.
#[derive(Debug)]
pub struct Context {
    ctx: *mut ffi::ibv_context,
    name: String,
    lid: u16,
    active_mtu: ffi::ibv_mtu,
    gid_index: u8,
    gid: [u8; 16],
}

// SAFETY: an `ibv_context` may be used from any thread (libibverbs is thread safe); the struct
// only hands out the pointer to verbs calls.
unsafe impl Send for Context {}
// SAFETY: as above, verbs calls on one context from several threads are allowed.
unsafe impl Sync for Context {}

impl Context {
    /// Opens the device called `name` (e.g. `rxe0`) and picks the GID to use on port 1:
    /// `gid_index` if given, else the first IPv4-mapped GID (RoCE v2 over IPv4), else index 0.
    pub fn open(name: &str, gid_index: Option<u8>) -> Result<Arc<Context>, RdmaError> {
        let mut count: i32 = 0;
        // SAFETY: `count` is a valid out pointer; the list is freed below.
        let list = unsafe { ffi::ibv_get_device_list(&mut count) };
        if list.is_null() {
            return Err(RdmaError::DeviceList(io::Error::last_os_error()));
        }
        let count = usize::try_from(count).unwrap_or(0);
        let mut found: *mut ffi::ibv_device = ptr::null_mut();
        let mut names = Vec::new();
        for i in 0..count {
            // SAFETY: the list holds `count` valid device pointers.
            let dev = unsafe { *list.add(i) };
            // SAFETY: `dev` is a device of the live list; the name is a C string owned by it.
            let dev_name = unsafe { ffi::ibv_get_device_name(dev) };
            if dev_name.is_null() {
                continue;
            }
            // SAFETY: non-null NUL-terminated string owned by the device list.
            let dev_name = unsafe { CStr::from_ptr(dev_name) }
                .to_string_lossy()
                .into_owned();
            if dev_name == name {
                found = dev;
            }
            names.push(dev_name);
        }
        let ctx = if found.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `found` is a device of the live list; the context stays valid after the
            // list is freed (documented by libibverbs).
            unsafe { ffi::ibv_open_device(found) }
        };
        let open_error = io::Error::last_os_error();
        // SAFETY: `list` came from ibv_get_device_list and is freed exactly once.
        unsafe { ffi::ibv_free_device_list(list) };
        if found.is_null() {
            return Err(RdmaError::NoSuchDevice {
                name: name.to_owned(),
                available: names,
            });
        }
        if ctx.is_null() {
            return Err(RdmaError::OpenDevice {
                name: name.to_owned(),
                source: open_error,
            });
        }
        let mut context = Context {
            ctx,
            name: name.to_owned(),
            lid: 0,
            active_mtu: ffi::IBV_MTU_1024,
            gid_index: 0,
            gid: [0; 16],
        };
        // From here on, dropping `context` closes the device on every error path.
        let mut attr = ffi::ibv_port_attr::default();
        // SAFETY: `ctx` is open; the exported ibv_query_port fills the compat prefix of
        // `ibv_port_attr`, which is the same layout at the start of the full struct.
        let rc = unsafe { ffi::ibv_query_port(ctx, PORT_NUM, (&raw mut attr).cast()) };
        if rc != 0 {
            return Err(RdmaError::QueryPort(io::Error::from_raw_os_error(rc)));
        }
        if attr.state != ffi::ibv_port_state::IBV_PORT_ACTIVE {
            return Err(RdmaError::PortNotActive {
                name: name.to_owned(),
                state: attr.state,
            });
        }
        context.lid = attr.lid;
        context.active_mtu = attr.active_mtu;
        let table_len = u8::try_from(attr.gid_tbl_len.clamp(0, 255)).unwrap_or(u8::MAX);
        let chosen = match gid_index {
            Some(index) => Some((index, context.query_gid(index)?)),
            None => {
                let mut first = None;
                let mut mapped = None;
                for index in 0..table_len {
                    let Ok(gid) = context.query_gid(index) else {
                        continue;
                    };
                    if gid == [0; 16] {
                        continue;
                    }
                    first.get_or_insert((index, gid));
                    let is_v4_mapped = gid[..10] == [0; 10] && gid[10] == 0xff && gid[11] == 0xff;
                    if is_v4_mapped {
                        mapped = Some((index, gid));
                        break;
                    }
                }
                mapped.or(first)
            }
        };
        let Some((index, gid)) = chosen else {
            return Err(RdmaError::NoGid {
                name: name.to_owned(),
            });
        };
        context.gid_index = index;
        context.gid = gid;
        Ok(Arc::new(context))
    }

    fn query_gid(&self, index: u8) -> Result<[u8; 16], RdmaError> {
        let mut gid = ffi::ibv_gid::default();
        // SAFETY: the context is open and `gid` is a valid out pointer.
        let rc = unsafe { ffi::ibv_query_gid(self.ctx, PORT_NUM, i32::from(index), &mut gid) };
        if rc != 0 {
            return Err(RdmaError::QueryGid {
                index,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: every bit pattern of the union is a valid `[u8; 16]`.
        Ok(unsafe { gid.raw })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port's LID (0 on RoCE, where the GID addresses the port).
    pub fn lid(&self) -> u16 {
        self.lid
    }

    /// The GID index in use and its value.
    pub fn gid(&self) -> (u8, [u8; 16]) {
        (self.gid_index, self.gid)
    }

    pub(crate) fn active_mtu(&self) -> ffi::ibv_mtu {
        self.active_mtu
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every child holds an Arc of this context, so none is alive any more.
        let rc = unsafe { ffi::ibv_close_device(self.ctx) };
        debug_assert_eq!(rc, 0, "ibv_close_device({}) failed", self.name);
    }
}

/// A protection domain: memory regions and queue pairs of one domain may work together.
#[derive(Debug)]
pub struct ProtectionDomain {
    pd: *mut ffi::ibv_pd,
    ctx: Arc<Context>,
}

// SAFETY: verbs objects may be used from any thread; the pointer is only passed to verbs calls.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    /// Allocates a protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<ProtectionDomain>, RdmaError> {
        // SAFETY: the context is open (we hold an Arc of it).
        let pd = unsafe { ffi::ibv_alloc_pd(ctx.ctx) };
        if pd.is_null() {
            return Err(RdmaError::AllocPd(io::Error::last_os_error()));
        }
        Ok(Arc::new(ProtectionDomain {
            pd,
            ctx: Arc::clone(ctx),
        }))
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: every region and queue pair holds an Arc of this domain, so none is alive.
        let rc = unsafe { ffi::ibv_dealloc_pd(self.pd) };
        debug_assert_eq!(rc, 0, "ibv_dealloc_pd failed");
    }
}

/// Memory that can be registered: a stable address range that lives as long as the value.
///
/// # Safety
/// `as_ptr()..as_ptr()+len()` must be valid, writable memory for as long as the value lives,
/// and must not move (a memory mapping or a pinned heap allocation).
pub unsafe trait RegistrableMemory: Send + Sync {
    /// Start of the range.
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the range is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a registered memory region allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only local use (source of writes posted by this side).
    LocalOnly,
    /// The peer may write into it with RDMA WRITE (a ring or an acknowledgement array).
    RemoteWrite,
}

/// A registered memory region that owns the memory it covers, so the memory cannot be freed or
/// unmapped while the NIC may still access it.
#[derive(Debug)]
pub struct MemoryRegion<M: RegistrableMemory> {
    mr: *mut ffi::ibv_mr,
    // Dropped after `mr` is deregistered (see `Drop`), then `mem` is released.
    mem: M,
    pd: Arc<ProtectionDomain>,
}

// SAFETY: the region is only read through atomics/volatile copies and verbs calls; `M` is
// Send + Sync.
unsafe impl<M: RegistrableMemory> Send for MemoryRegion<M> {}
// SAFETY: as above.
unsafe impl<M: RegistrableMemory> Sync for MemoryRegion<M> {}

impl<M: RegistrableMemory> MemoryRegion<M> {
    /// Registers `mem` with `pd`.
    pub fn register(
        pd: &Arc<ProtectionDomain>,
        mem: M,
        access: Access,
    ) -> Result<MemoryRegion<M>, RdmaError> {
        assert!(!mem.is_empty(), "cannot register an empty memory range");
        let flags = match access {
            Access::LocalOnly => ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE,
            Access::RemoteWrite => {
                ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
                    | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            }
        };
        let flags = i32::try_from(flags.0).unwrap_or(i32::MAX);
        // SAFETY: `mem` guarantees a valid, stable range for its lifetime, and the region keeps
        // `mem` alive until after ibv_dereg_mr (see Drop).
        let mr = unsafe { ffi::ibv_reg_mr(pd.pd, mem.as_ptr().cast(), mem.len(), flags) };
        if mr.is_null() {
            return Err(RdmaError::RegisterMemory {
                len: mem.len(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(MemoryRegion {
            mr,
            mem,
            pd: Arc::clone(pd),
        })
    }

    /// Local key (for scatter/gather entries of work requests posted here).
    pub fn lkey(&self) -> u32 {
        // SAFETY: `mr` is a live registration.
        unsafe { (*self.mr).lkey }
    }

    /// Remote key (given to a peer that passed the handshake so it can write here).
    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is a live registration.
        unsafe { (*self.mr).rkey }
    }

    /// Address of the first byte (as the peer must name it in RDMA WRITEs).
    pub fn addr(&self) -> u64 {
        self.mem.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the region is empty (never: registration refuses empty ranges).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Start of the memory.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    /// The protection domain.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// The registered memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The 8-byte word at `offset` as an atomic (the peer's NIC may write it at any time).
    ///
    /// # Panics
    /// If `offset` is not 8-byte aligned or the word lies outside the region.
    pub fn word(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(
            offset.is_multiple_of(8),
            "word offset {offset} not 8-byte aligned"
        );
        assert!(
            offset + 8 <= self.len(),
            "word offset {offset} outside {}",
            self.len()
        );
        let addr = self.as_ptr().wrapping_add(offset);
        assert!(
            (addr as usize).is_multiple_of(8),
            "region base not 8-byte aligned"
        );
        // SAFETY: in bounds, aligned, valid for the region's lifetime (tied to `&self`);
        // AtomicU64 has the layout of u64 and tolerates concurrent writes by the device.
        unsafe { &*addr.cast::<std::sync::atomic::AtomicU64>() }
    }
}

impl<M: RegistrableMemory> Drop for MemoryRegion<M> {
    fn drop(&mut self) {
        // SAFETY: `mr` is a live registration; after this the NIC no longer accesses `mem`,
        // which is dropped right after (field drop runs after this body).
        let rc = unsafe { ffi::ibv_dereg_mr(self.mr) };
        debug_assert_eq!(rc, 0, "ibv_dereg_mr failed");
    }
}

/// A completion queue.
#[derive(Debug)]
pub struct CompletionQueue {
    cq: *mut ffi::ibv_cq,
    depth: usize,
    ctx: Arc<Context>,
}

// SAFETY: verbs objects may be used from any thread.
unsafe impl Send for CompletionQueue {}
// SAFETY: ibv_poll_cq is thread safe in libibverbs providers (rxe takes a lock).
unsafe impl Sync for CompletionQueue {}

impl CompletionQueue {
    /// Creates a completion queue of at least `depth` entries.
    pub fn new(ctx: &Arc<Context>, depth: usize) -> Result<Arc<CompletionQueue>, RdmaError> {
        let cqe = i32::try_from(depth).unwrap_or(i32::MAX);
        // SAFETY: the context is open; no channel, no user context.
        let cq = unsafe { ffi::ibv_create_cq(ctx.ctx, cqe, ptr::null_mut(), ptr::null_mut(), 0) };
        if cq.is_null() {
            return Err(RdmaError::CreateCq(io::Error::last_os_error()));
        }
        Ok(Arc::new(CompletionQueue {
            cq,
            depth,
            ctx: Arc::clone(ctx),
        }))
    }

    /// Capacity requested at creation.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Pops up to `out.len()` completions; returns how many.
    pub fn poll(&self, out: &mut [ffi::ibv_wc]) -> Result<usize, RdmaError> {
        let n = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: `cq` is live; its context's ops table is filled by the provider at open;
        // `out` has room for `n` entries. ibv_poll_cq is a static inline that calls this hook.
        let got = unsafe {
            let ctx = (*self.cq).context;
            match (*ctx).ops.poll_cq {
                Some(poll_cq) => poll_cq(self.cq, n, out.as_mut_ptr()),
                None => -1,
            }
        };
        usize::try_from(got).map_err(|_| RdmaError::PollCq)
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: every queue pair using this CQ holds an Arc of it, so none is alive.
        let rc = unsafe { ffi::ibv_destroy_cq(self.cq) };
        debug_assert_eq!(rc, 0, "ibv_destroy_cq failed");
        let _ = &self.ctx;
    }
}

/// What a peer needs to connect its queue pair to ours (sent out of band over TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpEndpoint {
    /// Queue pair number.
    pub qpn: u32,
    /// First packet sequence number we send with (24 bits).
    pub psn: u32,
    /// LID of our port (0 on RoCE).
    pub lid: u16,
    /// GID of our port.
    pub gid: [u8; 16],
}

/// Queue pair states Keel distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpState {
    /// Fresh.
    Reset,
    /// Initialised, not connected.
    Init,
    /// Ready to receive.
    ReadyToReceive,
    /// Ready to send: connected.
    ReadyToSend,
    /// Error: every outstanding and later work request completes with a flush error.
    Error,
    /// Any other state (send queue drain/error).
    Other(u32),
}

/// A reliable-connected queue pair.
#[derive(Debug)]
pub struct QueuePair {
    qp: *mut ffi::ibv_qp,
    psn: u32,
    max_send_wr: u32,
    cq: Arc<CompletionQueue>,
    pd: Arc<ProtectionDomain>,
}

// SAFETY: verbs objects may be used from any thread.
unsafe impl Send for QueuePair {}
// SAFETY: ibv_post_send is thread safe in libibverbs providers.
unsafe impl Sync for QueuePair {}

/// Local ACK timeout exponent: 4.096 us * 2^14 = 67 ms before a retry (8 tries: about 0.5 s,
/// which soft-RoCE on a loaded 2-vCPU emulated guest needs; perftest uses the same).
const QP_TIMEOUT: u8 = 14;
/// Retries before the queue pair fails with a retry-exceeded error.
const QP_RETRY_COUNT: u8 = 7;
/// Receiver-not-ready retries (7 would mean forever).
const RNR_RETRY: u8 = 6;

impl QueuePair {
    /// Creates an RC queue pair on `pd` whose sends complete on `cq`, and moves it to INIT with
    /// remote write allowed (the peer writes our ring or our acknowledgement array).
    pub fn new(
        pd: &Arc<ProtectionDomain>,
        cq: &Arc<CompletionQueue>,
        max_send_wr: u32,
        psn: u32,
    ) -> Result<QueuePair, RdmaError> {
        let mut init = ffi::ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: cq.cq,
            recv_cq: cq.cq,
            srq: ptr::null_mut(),
            cap: ffi::ibv_qp_cap {
                max_send_wr,
                max_recv_wr: 1,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: `pd` and `cq` are live (we keep Arcs of both for the QP's lifetime).
        let qp = unsafe { ffi::ibv_create_qp(pd.pd, &mut init) };
        if qp.is_null() {
            return Err(RdmaError::CreateQp(io::Error::last_os_error()));
        }
        let qp = QueuePair {
            qp,
            psn: psn & 0x00ff_ffff,
            max_send_wr,
            cq: Arc::clone(cq),
            pd: Arc::clone(pd),
        };
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: PORT_NUM,
            qp_access_flags: (ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
                | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE)
                .0,
            ..Default::default()
        };
        let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE
            | ffi::ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ffi::ibv_qp_attr_mask::IBV_QP_PORT
            | ffi::ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        qp.modify(&mut attr, mask, "INIT")?;
        Ok(qp)
    }

    fn modify(
        &self,
        attr: &mut ffi::ibv_qp_attr,
        mask: ffi::ibv_qp_attr_mask,
        to: &'static str,
    ) -> Result<(), RdmaError> {
        let mask = i32::try_from(mask.0).unwrap_or(i32::MAX);
        // SAFETY: `qp` is live and `attr` is a valid attribute block for `mask`.
        let rc = unsafe { ffi::ibv_modify_qp(self.qp, attr, mask) };
        if rc != 0 {
            return Err(RdmaError::ModifyQp {
                to,
                source: io::Error::from_raw_os_error(rc),
            });
        }
        Ok(())
    }

    /// Our half of the out-of-band exchange.
    pub fn endpoint(&self) -> QpEndpoint {
        let ctx = self.pd.context();
        QpEndpoint {
            // SAFETY: `qp` is live; qp_num is immutable after creation.
            qpn: unsafe { (*self.qp).qp_num },
            psn: self.psn,
            lid: ctx.lid(),
            gid: ctx.gid().1,
        }
    }

    /// Connects to `remote`: INIT -> RTR -> RTS.
    pub fn connect(&self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        let ctx = self.pd.context();
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
            path_mtu: ctx.active_mtu().min(ffi::IBV_MTU_4096),
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
            ..Default::default()
        };
        attr.ah_attr.is_global = 1;
        attr.ah_attr.dlid = remote.lid;
        attr.ah_attr.port_num = PORT_NUM;
        attr.ah_attr.grh.dgid = ffi::ibv_gid { raw: remote.gid };
        attr.ah_attr.grh.sgid_index = ctx.gid().0;
        attr.ah_attr.grh.hop_limit = 64;
        let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE
            | ffi::ibv_qp_attr_mask::IBV_QP_AV
            | ffi::ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ffi::ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ffi::ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ffi::ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ffi::ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        self.modify(&mut attr, mask, "RTR")?;
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
            sq_psn: self.psn,
            timeout: QP_TIMEOUT,
            retry_cnt: QP_RETRY_COUNT,
            // Finite: RDMA WRITE consumes no receive, so an RNR NAK means a sick peer.
            rnr_retry: RNR_RETRY,
            max_rd_atomic: 1,
            ..Default::default()
        };
        let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE
            | ffi::ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ffi::ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ffi::ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ffi::ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ffi::ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(&mut attr, mask, "RTS")
    }

    /// Moves the queue pair to the error state: outstanding work requests complete with flush
    /// errors and later posts fail. Used to tear a connection down deliberately (and by tests).
    pub fn set_error(&self) -> Result<(), RdmaError> {
        let mut attr = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_ERR,
            ..Default::default()
        };
        self.modify(&mut attr, ffi::ibv_qp_attr_mask::IBV_QP_STATE, "ERR")
    }

    /// Queries the current state.
    pub fn state(&self) -> Result<QpState, RdmaError> {
        let mut attr = ffi::ibv_qp_attr::default();
        let mut init = ffi::ibv_qp_init_attr::default();
        let mask = i32::try_from(ffi::ibv_qp_attr_mask::IBV_QP_STATE.0).unwrap_or(i32::MAX);
        // SAFETY: `qp` is live; both out pointers are valid.
        let rc = unsafe { ffi::ibv_query_qp(self.qp, &mut attr, mask, &mut init) };
        if rc != 0 {
            return Err(RdmaError::QueryQp(io::Error::from_raw_os_error(rc)));
        }
        Ok(match attr.qp_state {
            ffi::ibv_qp_state::IBV_QPS_RESET => QpState::Reset,
            ffi::ibv_qp_state::IBV_QPS_INIT => QpState::Init,
            ffi::ibv_qp_state::IBV_QPS_RTR => QpState::ReadyToReceive,
            ffi::ibv_qp_state::IBV_QPS_RTS => QpState::ReadyToSend,
            ffi::ibv_qp_state::IBV_QPS_ERR => QpState::Error,
            other => QpState::Other(other),
        })
    }

    /// Send queue depth.
    pub fn max_send_wr(&self) -> u32 {
        self.max_send_wr
    }

    /// The completion queue of this queue pair.
    pub fn cq(&self) -> &Arc<CompletionQueue> {
        &self.cq
    }

    /// Posts one signalled RDMA WRITE of `len` bytes at `local_addr` (in the region of
    /// `lkey`) to `remote_addr` (in the peer's region of `rkey`), with work-request id `wr_id`.
    ///
    /// # Safety
    /// The local bytes must stay valid and unmodified until the completion of `wr_id` has been
    /// polled from this queue pair's completion queue.
    pub(crate) unsafe fn post_write(
        &self,
        wr_id: u64,
        local_addr: u64,
        len: u32,
        lkey: u32,
        remote_addr: u64,
        rkey: u32,
    ) -> Result<(), RdmaError> {
        let mut sge = ffi::ibv_sge {
            addr: local_addr,
            length: len,
            lkey,
        };
        let mut wr = ffi::ibv_send_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
            opcode: ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            send_flags: ffi::ibv_send_flags::IBV_SEND_SIGNALED.0,
            ..Default::default()
        };
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr, rkey };
        let mut bad: *mut ffi::ibv_send_wr = ptr::null_mut();
        // SAFETY: `qp` is live; `wr` and `sge` are valid for the call (the provider copies
        // them into its send queue); the caller keeps the local bytes valid until completion.
        let rc = unsafe {
            let ctx = (*self.qp).context;
            match (*ctx).ops.post_send {
                Some(post_send) => post_send(self.qp, &mut wr, &mut bad),
                None => libc::ENOSYS,
            }
        };
        if rc != 0 {
            return Err(RdmaError::PostSend(io::Error::from_raw_os_error(rc)));
        }
        Ok(())
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: `qp` is live and destroyed once; after this no work request of it touches
        // memory, so owners of in-flight buffers may release them.
        let rc = unsafe { ffi::ibv_destroy_qp(self.qp) };
        debug_assert_eq!(rc, 0, "ibv_destroy_qp failed");
    }
}

/// Human-readable name of a work-completion status.
pub fn wc_status_str(status: u32) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for every value (or "unknown").
    let s = unsafe { ffi::ibv_wc_status_str(status) };
    if s.is_null() {
        return format!("status {status}");
    }
    // SAFETY: non-null static NUL-terminated string.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}
