//! The ring protocol over RDMA verbs, for real, on the soft-RoCE device (`rxe0`) in the VM.
//!
//! Outside the VM (no `KEEL_IN_VM=1` or no `KEEL_RDMA_DEVICE`) every test prints why it is
//! skipped and passes; the VM harness (`tests/vm/run`) runs this binary inside the guest.
//! Multi-process tests spawn a copy of this binary running the ignored `child_entry` test.
//!
//! Device-DAX: when `KEEL_DEVDAX` is set, each ring is mapped from its own 2 MiB window of the
//! region starting at 64 MiB (windows 0..8), so tests running at once do not share memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(not(feature = "rdma"))]
#[test]
fn rdma_feature_is_off() {
    eprintln!(
        "vm_rdma: skipped: built without the `rdma` feature; runs in the soft-RoCE VM via \
         tests/vm/run (which builds with --features keel-transport/rdma)"
    );
}

#[cfg(feature = "rdma")]
mod with_rdma {

    use anyhow::{Context as _, Result, bail, ensure};
    use keel_transport::handshake::{HandshakeConfig, Refusal};
    use keel_transport::rdma::memory::{DEVDAX_ALIGN, MemorySource};
    use keel_transport::rdma::{
        AckArray, RdmaConfig, RdmaDevice, RdmaError, RdmaRingSink, RdmaRingSource, RingListener,
    };
    use keel_transport::{
        AppendError, HandshakeError, ReadError, RingConfig, RingReader, RingSink, RingWriter,
    };
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const CLUSTER: u64 = 0x6b65_656c;
    const LEADER: u64 = 1;
    const FOLLOWER: u64 = 2;
    const EPOCH: u64 = 7;
    const CAPACITY: usize = 16 * 1024;

    /// The device to test on, or `None` (and a printed reason) outside the VM.
    fn vm_device(test: &str) -> Option<String> {
        let in_vm = std::env::var("KEEL_IN_VM").is_ok_and(|v| v == "1");
        match std::env::var("KEEL_RDMA_DEVICE") {
            Ok(dev) if in_vm && !dev.is_empty() => Some(dev),
            _ => {
                eprintln!(
                    "{test}: skipped: needs an RDMA device (KEEL_IN_VM=1, KEEL_RDMA_DEVICE); \
                 runs in the soft-RoCE VM via tests/vm/run"
                );
                None
            }
        }
    }

    /// Ring memory for test window `window`: device-DAX when the harness provides one.
    fn ring_memory(window: u64) -> MemorySource {
        match MemorySource::from_env() {
            MemorySource::DeviceDax { path, .. } => MemorySource::DeviceDax {
                path,
                offset: (32 + window) * DEVDAX_ALIGN as u64,
            },
            anon => anon,
        }
    }

    fn members() -> Vec<u64> {
        vec![LEADER, FOLLOWER, 3]
    }

    fn follower_config() -> RdmaConfig {
        RdmaConfig::new(HandshakeConfig::new(CLUSTER, FOLLOWER, members()))
    }

    fn leader_config() -> RdmaConfig {
        let mut c = RdmaConfig::new(HandshakeConfig::new(CLUSTER, LEADER, members()));
        // Small slots: frames larger than a slot go out as several RDMA WRITEs.
        c.slot_bytes = 512;
        c.slots = 32;
        c
    }

    fn ring_config() -> RingConfig {
        RingConfig {
            epoch: EPOCH,
            max_payload: 2000,
        }
    }

    /// Deterministic payload of entry `slot`: its length varies from 1 to 1500 bytes.
    fn payload(slot: u64) -> Vec<u8> {
        let len = 1 + (slot.wrapping_mul(7919) % 1500) as usize;
        (0..len)
            .map(|i| (slot as u8).wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    /// Sends entry `slot`, retrying while the ring is full; returns how many times it was full.
    fn send_with_backpressure(
        writer: &mut RingWriter<RdmaRingSink>,
        slot: u64,
        deadline: Instant,
    ) -> Result<u64> {
        let body = payload(slot);
        let mut full = 0;
        loop {
            match writer.send(1, slot, &body) {
                Ok(_) => return Ok(full),
                Err(AppendError::Full { .. }) => {
                    full += 1;
                    ensure!(
                        Instant::now() < deadline,
                        "ring stayed full until the deadline"
                    );
                    std::thread::yield_now();
                }
                Err(e) => return Err(e).with_context(|| format!("sending slot {slot}")),
            }
        }
    }

    // ---------------------------------------------------------------- child process entry point

    /// Entry point of child processes (spawned by the tests below with `--ignored --exact`).
    #[test]
    #[ignore = "entry point of child processes spawned by the vm_rdma tests"]
    fn child_entry() {
        let role = std::env::var("KEEL_RDMA_CHILD").expect("KEEL_RDMA_CHILD names the role");
        match role.as_str() {
            "stream-follower" => stream_follower().unwrap(),
            other => panic!("unknown child role {other}"),
        }
    }

    /// The follower process of `frames_stream_across_processes...`: delivers every frame, checks
    /// order, content and uniqueness, reads slowly at times (so the leader meets a full ring).
    fn stream_follower() -> Result<()> {
        let device_name = std::env::var("KEEL_RDMA_DEVICE")?;
        let frames: u64 = std::env::var("KEEL_RDMA_FRAMES")?.parse()?;
        let device = RdmaDevice::open(&device_name)?;
        let mut listener = RingListener::bind(
            &device,
            "127.0.0.1:0",
            CAPACITY,
            &ring_memory(0),
            follower_config(),
        )?;
        println!("PORT {}", listener.local_addr()?.port());
        let source = listener.accept()?;
        ensure!(
            source.peer().member_id == LEADER,
            "wrong peer {:?}",
            source.peer()
        );
        let mut reader = RingReader::new(source, ring_config());
        let mut next = 0u64;
        let mut mismatch = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while next < frames {
            ensure!(
                Instant::now() < deadline,
                "follower timed out at slot {next}"
            );
            let got = reader.poll(64, |f| {
                if mismatch.is_none() && (f.slot != next || f.payload != payload(next).as_slice()) {
                    mismatch = Some((next, f.slot, f.payload.len()));
                }
                next += 1;
            })?;
            if got == 0 {
                std::thread::yield_now();
            }
            if let Some((want, slot, len)) = mismatch {
                bail!("expected slot {want}, got slot {slot} ({len} bytes)");
            }
            // A slow reader now and then: the leader must wait for the head, not overwrite.
            if got > 0 && (next / 64).is_multiple_of(4) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Nothing beyond the last frame may arrive (no duplicates at the end either).
        std::thread::sleep(Duration::from_millis(100));
        let extra = reader.poll(usize::MAX, |_| {})?;
        ensure!(extra == 0, "{extra} frames after the last one");
        println!("TORN {}", reader.source().torn_reads());
        println!("RECEIVED {next}");
        Ok(())
    }

    // ---------------------------------------------------------------- tests

    #[test]
    fn frames_stream_across_processes_in_order_without_loss_or_duplicates_under_a_slow_reader() {
        let Some(device_name) = vm_device("frames_stream_across_processes") else {
            return;
        };
        run_stream(&device_name).unwrap();
    }

    fn run_stream(device_name: &str) -> Result<()> {
        const FRAMES: u64 = 1500;
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "--ignored",
                "--exact",
                "with_rdma::child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KEEL_RDMA_CHILD", "stream-follower")
            .env("KEEL_RDMA_FRAMES", FRAMES.to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let port = loop {
            let line = lines.next().context("child exited before listening")??;
            // libtest prints "test ... " without a newline before the child's own output.
            if let Some(at) = line.find("PORT ") {
                break line[at + 5..].trim().parse::<u16>()?;
            }
        };
        let device = RdmaDevice::open(device_name)?;
        let acks = AckArray::new(&device, 2)?;
        let (sink, start) = RdmaRingSink::dial(
            &device,
            ("127.0.0.1", port),
            FOLLOWER,
            EPOCH,
            Arc::clone(&acks),
            1,
            leader_config(),
        )?;
        ensure!(start == 0, "a fresh ring resumes at 0, not {start}");
        let mut writer = RingWriter::resume(sink, ring_config(), start);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut full = 0;
        for slot in 0..FRAMES {
            full += send_with_backpressure(&mut writer, slot, deadline)?;
        }
        // Every frame consumed: the follower's head (written one-sided into our array) reaches
        // the tail.
        while writer.head() < writer.tail() {
            ensure!(Instant::now() < deadline, "head never reached the tail");
            writer.refresh_head()?;
            std::thread::yield_now();
        }
        ensure!(
            acks.head(1) == writer.tail(),
            "ack entry disagrees with the writer"
        );
        ensure!(acks.head(0) == 0, "another follower's entry was written");
        let mut received = None;
        let mut torn_tails = None;
        for line in lines {
            let line = line?;
            if let Some(at) = line.find("RECEIVED ") {
                received = Some(line[at + 9..].trim().parse::<u64>()?);
            }
            if let Some(at) = line.find("TORN ") {
                torn_tails = Some(line[at + 5..].trim().parse::<u64>()?);
            }
        }
        let status = child.wait()?;
        ensure!(status.success(), "follower process failed: {status}");
        ensure!(received == Some(FRAMES), "follower received {received:?}");
        // The ring (16 KiB) is much smaller than the stream (about 2 MiB): the leader must have
        // met a full ring and waited for the slow reader.
        ensure!(
            full > 0,
            "the ring never filled: flow control not exercised"
        );
        // Reads that raced the NIC's write of a tail or head and were refused (their value and
        // check word disagreed): informative, since how often a read lands mid-write depends
        // on the machine; a torn value taken as a position would have failed the checks above.
        eprintln!(
            "streamed {FRAMES} frames; the leader found the ring full {full} times; torn reads \
             refused: {} of the tail (follower), {} of the head (leader)",
            torn_tails.map_or("?".to_string(), |n| n.to_string()),
            acks.torn_reads()
        );
        Ok(())
    }

    /// A follower thread with a listener; returns the listener's address through the channel.
    fn spawn_follower<T: Send + 'static>(
        device: &RdmaDevice,
        window: u64,
        config: RdmaConfig,
        body: impl FnOnce(RingListener) -> Result<T> + Send + 'static,
    ) -> Result<(std::net::SocketAddr, std::thread::JoinHandle<Result<T>>)> {
        let listener = RingListener::bind(
            device,
            "127.0.0.1:0",
            CAPACITY,
            &ring_memory(window),
            config,
        )?;
        let addr = listener.local_addr()?;
        Ok((addr, std::thread::spawn(move || body(listener))))
    }

    #[test]
    fn corrupt_frame_is_reported_and_never_delivered() {
        let Some(device_name) = vm_device("corrupt_frame_is_reported_and_never_delivered") else {
            return;
        };
        run_corrupt(&device_name).unwrap();
    }

    fn run_corrupt(device_name: &str) -> Result<()> {
        let device = RdmaDevice::open(device_name)?;
        let (addr, follower) = spawn_follower(&device, 1, follower_config(), |mut listener| {
            let source = listener.accept()?;
            let mut reader = RingReader::new(source, ring_config());
            let mut delivered = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                ensure!(Instant::now() < deadline, "no corrupt frame reported");
                match reader.poll(16, |f| delivered.push(f.slot)) {
                    Ok(_) => std::thread::yield_now(),
                    Err(ReadError::Corrupt { position, .. }) => return Ok((delivered, position)),
                    Err(e) => return Err(e.into()),
                }
            }
        })?;
        let acks = AckArray::new(&device, 1)?;
        let (sink, start) =
            RdmaRingSink::dial(&device, addr, FOLLOWER, EPOCH, acks, 0, leader_config())?;
        let mut writer = RingWriter::resume(sink, ring_config(), start);
        for slot in 0..3 {
            writer.send(1, slot, &payload(slot))?;
        }
        // Slot 3 is damaged on its way: one payload byte flipped after the frame was written,
        // before the tail covering it is published.
        let body = payload(3);
        let position = writer.write(1, 3, &body)?;
        let offset = (position as usize) % CAPACITY + keel_transport::frame::HEADER_BYTES;
        writer.sink_mut().write(offset & !7, &[&[0xff; 8]])?;
        writer.publish()?;
        writer.send(1, 4, &payload(4))?;
        let (delivered, bad) = follower.join().expect("follower thread")?;
        ensure!(delivered == vec![0, 1, 2], "delivered {delivered:?}");
        ensure!(
            bad == position,
            "corruption reported at {bad}, frame was at {position}"
        );
        Ok(())
    }

    #[test]
    fn a_non_member_or_other_cluster_is_refused_and_a_member_then_connects() {
        let Some(device_name) = vm_device("a_non_member_is_refused") else {
            return;
        };
        run_refusal(&device_name).unwrap();
    }

    fn run_refusal(device_name: &str) -> Result<()> {
        let device = RdmaDevice::open(device_name)?;
        let (addr, follower) = spawn_follower(&device, 2, follower_config(), |mut listener| {
            let mut refusals = Vec::new();
            loop {
                match listener.accept() {
                    Ok(source) => return Ok((refusals, source.peer().member_id)),
                    Err(RdmaError::Handshake(e)) => refusals.push(e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
        })?;
        let acks = AckArray::new(&device, 1)?;
        // Member 9 is not configured on the follower.
        let stranger = RdmaConfig::new(HandshakeConfig::new(CLUSTER, 9, vec![9, FOLLOWER]));
        let err = RdmaRingSink::dial(
            &device,
            addr,
            FOLLOWER,
            EPOCH,
            Arc::clone(&acks),
            0,
            stranger,
        )
        .err()
        .context("a non-member was admitted")?;
        ensure!(
            matches!(
                err,
                RdmaError::Handshake(HandshakeError::RefusedByPeer { .. })
            ),
            "unexpected error {err:?}"
        );
        // A configured member id, but of another cluster.
        let foreign = RdmaConfig::new(HandshakeConfig::new(CLUSTER + 1, LEADER, members()));
        let err = RdmaRingSink::dial(
            &device,
            addr,
            FOLLOWER,
            EPOCH,
            Arc::clone(&acks),
            0,
            foreign,
        )
        .err()
        .context("a peer of another cluster was admitted")?;
        // Both ends judge each other: the dialer refuses the follower's cluster too.
        ensure!(
            matches!(
                err,
                RdmaError::Handshake(
                    HandshakeError::WrongCluster { .. }
                        | HandshakeError::RefusedByPeer {
                            reason: Refusal::WrongCluster
                        }
                )
            ),
            "unexpected error {err:?}"
        );
        // The listener is not poisoned: a member connects and gets the ring.
        let (sink, start) =
            RdmaRingSink::dial(&device, addr, FOLLOWER, EPOCH, acks, 0, leader_config())?;
        ensure!(start == 0 && sink.peer().member_id == FOLLOWER);
        let (refusals, admitted) = follower.join().expect("follower thread")?;
        ensure!(admitted == LEADER, "admitted member {admitted}");
        ensure!(refusals.len() == 2, "refusals: {refusals:?}");
        ensure!(
            refusals[0].contains("member 9"),
            "first refusal: {}",
            refusals[0]
        );
        ensure!(
            refusals[1].contains("cluster"),
            "second refusal: {}",
            refusals[1]
        );
        Ok(())
    }

    #[test]
    fn queue_pair_error_is_reported_and_the_connection_is_reestablished() {
        let Some(device_name) = vm_device("queue_pair_error_is_reported") else {
            return;
        };
        run_reconnect(&device_name).unwrap();
    }

    /// The leader breaks its queue pair before slot 150; the follower breaks its own after
    /// delivering this many frames.
    const FOLLOWER_BREAKS_AT: usize = 300;

    /// Follower loop: deliver frames; when the connection breaks, drain and re-accept.
    fn reconnecting_follower(mut listener: RingListener, total: u64) -> Result<(Vec<u64>, u32)> {
        let source = listener.accept()?;
        let mut reader: RingReader<RdmaRingSource> = RingReader::new(source, ring_config());
        let mut delivered = Vec::new();
        let mut reconnects = 0;
        let mut broke = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (delivered.len() as u64) < total {
            ensure!(
                Instant::now() < deadline,
                "follower timed out, delivered {}",
                delivered.len()
            );
            if delivered.len() >= FOLLOWER_BREAKS_AT && !broke {
                // The follower's side fails now: its queue pair goes to the error state, so
                // the leader's writes are no longer acknowledged and fail after retries.
                reader.source().write_queue().queue_pair().set_error()?;
                broke = true;
            }
            let polled = reader.poll(64, |f| delivered.push(f.slot));
            let idle = match polled {
                Ok(n) => n == 0,
                // The head write failed: the connection is broken; keep delivering what is
                // published, then accept the leader's new connection.
                Err(ReadError::Backend(_)) if reader.source().is_broken() => true,
                Err(e) => return Err(e.into()),
            };
            let drained = reader.head() == reader.source().published_tail();
            if idle && drained {
                let head = reader.head();
                if reader.source_mut().try_reaccept(&listener, head)?.is_some() {
                    reconnects += 1;
                }
            }
            std::thread::yield_now();
        }
        Ok((delivered, reconnects))
    }

    fn run_reconnect(device_name: &str) -> Result<()> {
        const TOTAL: u64 = 400;
        let device = RdmaDevice::open(device_name)?;
        let (addr, follower) = spawn_follower(&device, 3, follower_config(), move |listener| {
            reconnecting_follower(listener, TOTAL)
        })?;
        let acks = AckArray::new(&device, 1)?;
        let (sink, start) =
            RdmaRingSink::dial(&device, addr, FOLLOWER, EPOCH, acks, 0, leader_config())?;
        let mut writer = RingWriter::resume(sink, ring_config(), start);
        let deadline = Instant::now() + Duration::from_secs(60);
        // (ring position, slot) of every frame written on the current connection.
        let mut written: Vec<(u64, u64)> = Vec::new();
        let mut slot = 0;
        let mut errors_seen = 0;
        while slot < TOTAL {
            ensure!(Instant::now() < deadline, "leader timed out at slot {slot}");
            if slot == 150 && errors_seen == 0 {
                // Break the connection: the queue pair goes to the error state.
                writer.sink().write_queue().queue_pair().set_error()?;
            }
            let body = payload(slot);
            match writer.send(1, slot, &body) {
                Ok(position) => {
                    written.push((position, slot));
                    slot += 1;
                }
                Err(AppendError::Full { .. }) => std::thread::yield_now(),
                Err(AppendError::Backend(e)) => {
                    ensure!(
                        writer.sink().is_broken(),
                        "backend error on a healthy queue pair: {e}"
                    );
                    errors_seen += 1;
                    eprintln!(
                        "leader: queue-pair error reported at slot {slot}: {e:?}; reconnecting"
                    );
                    // Reconnect: the follower reports the position it consumed up to; frames at
                    // or above it are written again.
                    let mut sink = writer.into_sink();
                    let resume = sink.redial()?;
                    writer = RingWriter::resume(sink, ring_config(), resume);
                    slot = written
                        .iter()
                        .find(|(p, _)| *p >= resume)
                        .map_or(slot, |&(_, s)| s);
                    written.retain(|(p, _)| *p < resume);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (delivered, reconnects) = follower.join().expect("follower thread")?;
        // One error for the leader's own broken queue pair, one for the follower's (a write
        // that was never acknowledged: retries exceeded).
        ensure!(
            errors_seen == 2,
            "{errors_seen} queue-pair errors reported, expected 2"
        );
        ensure!(
            reconnects as usize == errors_seen,
            "reconnects {reconnects} vs errors {errors_seen}"
        );
        let expected: Vec<u64> = (0..TOTAL).collect();
        ensure!(
            delivered == expected,
            "delivery after reconnect not exactly once in order: {} frames, first bad at {:?}",
            delivered.len(),
            delivered.iter().zip(&expected).position(|(a, b)| a != b)
        );
        Ok(())
    }

    /// Rings for the shared conformance suite: each a real connection (handshake, offers,
    /// RC queue pairs) between two ends in this process. Both ends wait for the peer's
    /// acknowledgement of tail and head writes, since the suite drives them from one thread
    /// and expects a published frame to be readable at once.
    struct RdmaRings {
        device: RdmaDevice,
        made: u64,
        lingering: Arc<Mutex<Vec<RdmaRingSink>>>,
    }

    /// The leader's end as the suite sees it. When the suite drops it (e.g. a writer thread
    /// that finished), the connection stays up until the suite ends, as a live leader's
    /// would: the reader may still be draining and writing its head back. (Over shared memory
    /// a head store always lands; over RDMA it needs the leader's queue pair.)
    struct LingeringSink {
        inner: Option<RdmaRingSink>,
        lingering: Arc<Mutex<Vec<RdmaRingSink>>>,
    }

    impl LingeringSink {
        fn sink(&mut self) -> &mut RdmaRingSink {
            self.inner.as_mut().expect("sink present until drop")
        }
    }

    impl Drop for LingeringSink {
        fn drop(&mut self) {
            if let Some(sink) = self.inner.take() {
                self.lingering.lock().unwrap().push(sink);
            }
        }
    }

    impl RingSink for LingeringSink {
        type Error = RdmaError;
        fn capacity(&self) -> usize {
            self.inner
                .as_ref()
                .expect("sink present until drop")
                .capacity()
        }
        fn write(&mut self, offset: usize, parts: &[&[u8]]) -> Result<(), RdmaError> {
            self.sink().write(offset, parts)
        }
        fn publish_tail(&mut self, tail: u64) -> Result<(), RdmaError> {
            self.sink().publish_tail(tail)
        }
        fn load_head(&mut self) -> Result<u64, RdmaError> {
            self.sink().load_head()
        }
    }

    impl keel_transport::conformance::RingFactory for RdmaRings {
        type Sink = LingeringSink;
        type Source = RdmaRingSource;

        fn ring(&mut self, capacity: usize) -> (LingeringSink, RdmaRingSource) {
            // Device-DAX windows 8..24 in rotation (at most a few rings are alive at once).
            let window = 8 + self.made % 16;
            self.made += 1;
            let mut follower = follower_config();
            follower.wait_for_ack = true;
            let mut leader = leader_config();
            leader.wait_for_ack = true;
            let mut listener = RingListener::bind(
                &self.device,
                "127.0.0.1:0",
                capacity,
                &ring_memory(window),
                follower,
            )
            .unwrap();
            let addr = listener.local_addr().unwrap();
            let accepting = std::thread::spawn(move || listener.accept());
            let acks = AckArray::new(&self.device, 1).unwrap();
            let (sink, start) =
                RdmaRingSink::dial(&self.device, addr, FOLLOWER, EPOCH, acks, 0, leader).unwrap();
            assert_eq!(start, 0, "a fresh ring starts at 0");
            let source = accepting.join().expect("accepting thread").unwrap();
            let sink = LingeringSink {
                inner: Some(sink),
                lingering: Arc::clone(&self.lingering),
            };
            (sink, source)
        }
    }

    #[test]
    fn the_shared_ring_conformance_suite_passes_over_rdma() {
        let Some(device_name) = vm_device("the_shared_ring_conformance_suite_passes_over_rdma")
        else {
            return;
        };
        let mut rings = RdmaRings {
            device: RdmaDevice::open(&device_name).unwrap(),
            made: 0,
            lingering: Arc::new(Mutex::new(Vec::new())),
        };
        keel_transport::conformance::rings(&mut rings);
        eprintln!("conformance suite passed over RDMA on {} rings", rings.made);
    }

    #[test]
    fn round_trips_and_a_stream_of_64_byte_frames_are_measured() {
        let Some(device_name) =
            vm_device("round_trips_and_a_stream_of_64_byte_frames_are_measured")
        else {
            return;
        };
        let mut options = keel_transport::rdma::bench::RoundTripOptions::new(&device_name, 200);
        options.memory = ring_memory(4);
        let latencies = keel_transport::rdma::bench::ring_round_trips(&options).unwrap();
        assert_eq!(latencies.len(), 200);
        let mut sorted = latencies.clone();
        sorted.sort();
        assert!(sorted[0] > Duration::ZERO);
        eprintln!(
            "rdma ring round trip, 64 B, {} ops: p50 {:?}, p99 {:?} (soft-RoCE under TCG: function, not speed)",
            sorted.len(),
            sorted[sorted.len() / 2],
            sorted[sorted.len() * 99 / 100]
        );
        let mut stream = keel_transport::rdma::bench::RoundTripOptions::new(&device_name, 2000);
        stream.memory = ring_memory(5);
        stream.capacity = 4096;
        let report = keel_transport::rdma::bench::ring_stream(&stream).unwrap();
        assert_eq!(report.frames, 2000);
        assert_eq!(report.payload_bytes, 2000 * 64);
        assert!(report.elapsed > Duration::ZERO);
        eprintln!(
            "rdma ring stream, 64 B, 2000 frames through a 4 KiB ring: {:?} ({:.0} frames/s)",
            report.elapsed,
            2000.0 / report.elapsed.as_secs_f64()
        );
    }
}
