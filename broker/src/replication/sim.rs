//! A seeded simulation of one partition replicated on three brokers, driving the
//! real replica code (`Partition`, the follower's [`apply_fetched`], the leader's
//! [`serve_blocking`], real logs in temporary directories) under a scheduler that
//! loses and reorders follower fetches and their answers, crashes and restarts
//! brokers (reopening their logs as after an unclean shutdown) and moves time on its
//! own clock. A small controller plays the metadata quorum's part: it accepts ISR
//! changes from the current leader epoch only, fences a crashed broker out of the
//! ISR and elects the next leader from the ISR, never outside it.
//!
//! Checked: every acks=all write acknowledged (by `Partition::replication_outcome`,
//! the decision the produce path waits on) is on at least `min.insync.replicas` live
//! replicas when it is acknowledged, and after healing every replica holds every
//! acknowledged batch at its offset. A failure prints the seed.

use std::path::Path;
use std::sync::Arc;

use super::fetcher::apply_fetched;
use super::serve::serve_blocking;
use crate::log::batch::tests::make_batch;
use crate::log::{batch, LogConfig, PartitionLog, ValidatedRecords};
use crate::partition::{FollowerFetch, Partition, Role};
use crate::quorum::proto::PartitionData;

const REPLICAS: [i32; 3] = [1, 2, 3];
const MIN_ISR: usize = 2;
const LAG_MAX_MS: i64 = 400;

/// splitmix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

enum Msg {
    Fetch {
        to: i32,
        read: FollowerFetch,
    },
    Answer {
        to: i32,
        from: i32,
        epoch: i32,
        pd: PartitionData,
    },
}

/// An acks=all write waiting for its outcome.
struct Pending {
    leader: i32,
    end: i64,
    epoch: i32,
    base: i64,
    id: i64,
}

struct Sim {
    rng: Rng,
    seed: u64,
    now: i64,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Arc<Partition>>>,
    leader: i32,
    epoch: i32,
    isr: Vec<i32>,
    net: Vec<Msg>,
    in_flight: [usize; 3],
    pending: Vec<Pending>,
    /// (base offset, id) of every acknowledged batch.
    acked: Vec<(i64, i64)>,
    next_id: i64,
    crashes: u32,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, me: i32, clean: bool, now: i64) -> Partition {
    let log = PartitionLog::open(dir, config(), clean, now).expect("open the log");
    Partition::new(Arc::from("sim"), 0, log, me, Arc::default())
}

/// The fetch follower `id` sends next: from its log end, with its last epoch.
fn fetch_of(p: &Partition, id: i32) -> FollowerFetch {
    let (last_fetched_epoch, fetch_offset) = p.last_epoch_and_end();
    FollowerFetch {
        replica: id,
        epoch: p.leader_epoch(),
        fetch_offset,
        last_fetched_epoch,
        max_bytes: 1 << 12,
    }
}

/// The id a batch carries: its first timestamp.
fn batch_at(p: &Partition, offset: i64) -> Option<i64> {
    let data = p.fetch_local(offset, 1 << 16).ok()?.read().ok()?;
    let (h, _) = batch::headers(&data).next()?;
    (h.base_offset == offset).then_some(h.base_timestamp)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let dirs: Vec<_> = REPLICAS
            .iter()
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let nodes = REPLICAS
            .iter()
            .zip(&dirs)
            .map(|(id, d)| Some(Arc::new(open(d.path(), *id, true, 0))))
            .collect();
        let sim = Sim {
            rng: Rng(seed),
            seed,
            now: 1_000,
            dirs,
            nodes,
            leader: 1,
            epoch: 1,
            isr: REPLICAS.to_vec(),
            net: Vec::new(),
            in_flight: [0; 3],
            pending: Vec::new(),
            acked: Vec::new(),
            next_id: 1,
            crashes: 0,
        };
        sim.publish();
        sim
    }

    /// The live replica on broker `id` (none for -1, "no leader").
    fn node(&self, id: i32) -> Option<Arc<Partition>> {
        let i = usize::try_from(id - 1).ok()?;
        self.nodes.get(i)?.clone()
    }

    /// The live replica on `id` and the leader it follows, if it follows one.
    fn follower(&self, id: i32) -> Option<(Arc<Partition>, i32)> {
        let p = self.node(id)?;
        match p.role() {
            Role::Follower { leader } => Some((p, leader)),
            _ => None,
        }
    }

    /// Every live broker applies the controller's current view (the metadata log is
    /// applied in order, so it is not subject to the network's games here).
    fn publish(&self) {
        for id in REPLICAS {
            let Some(p) = self.node(id) else { continue };
            let role = if self.leader < 0 {
                Role::None
            } else if id == self.leader {
                Role::Leader
            } else {
                Role::Follower {
                    leader: self.leader,
                }
            };
            p.set_role(role, self.epoch, &self.isr, &REPLICAS, self.now);
        }
    }

    fn produce(&mut self) {
        let Some(p) = self.node(self.leader) else {
            return;
        };
        if p.check_leader(MIN_ISR).is_err() {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let raw = make_batch(0, 1, id, format!("value-{id}").as_bytes());
        let records = ValidatedRecords::new(&raw, 1 << 20).expect("valid batch");
        if let Ok(info) = p.append(records, self.now) {
            self.pending.push(Pending {
                leader: self.leader,
                end: info.last_offset + 1,
                epoch: info.leader_epoch,
                base: info.base_offset,
                id,
            });
        }
    }

    /// Decides the waiting writes whose outcome is known, checking each ack.
    fn settle(&mut self) {
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.pending) {
            let Some(p) = self.node(w.leader) else {
                continue; // the leader crashed: the client saw a timeout
            };
            match p.replication_outcome(w.end, w.epoch, MIN_ISR) {
                None => still.push(w),
                Some(Err(_)) => {}
                Some(Ok(())) => {
                    let copies = REPLICAS
                        .iter()
                        .filter_map(|r| self.node(*r))
                        .filter(|r| batch_at(r, w.base) == Some(w.id))
                        .count();
                    assert!(
                        copies >= MIN_ISR,
                        "seed {}: offset {} acknowledged with {copies} copies",
                        self.seed,
                        w.base
                    );
                    self.acked.push((w.base, w.id));
                }
            }
        }
        self.pending = still;
    }

    fn send_fetches(&mut self) {
        for id in REPLICAS {
            let Some((p, leader)) = self.follower(id) else {
                continue;
            };
            if self.in_flight[(id - 1) as usize] >= 2 || self.rng.chance(30) {
                continue;
            }
            let read = fetch_of(&p, id);
            self.in_flight[(id - 1) as usize] += 1;
            self.net.push(Msg::Fetch { to: leader, read });
        }
    }

    /// A follower's fetch was answered or lost (a crash reset the count meanwhile).
    fn done(&mut self, follower: i32) {
        let n = &mut self.in_flight[(follower - 1) as usize];
        *n = n.saturating_sub(1);
    }

    /// Delivers (or loses) one message chosen at random: the network reorders.
    fn deliver(&mut self) {
        if self.net.is_empty() {
            return;
        }
        let i = self.rng.below(self.net.len() as u64) as usize;
        let msg = self.net.swap_remove(i);
        let lost = self.rng.chance(10);
        match msg {
            Msg::Fetch { to, read } => {
                let answered = match self.node(to) {
                    Some(p) if !lost => Some(serve_blocking(&p, read, self.now)),
                    _ => None,
                };
                match answered {
                    Some(pd) => self.net.push(Msg::Answer {
                        to: read.replica,
                        from: to,
                        epoch: read.epoch,
                        pd,
                    }),
                    None => self.done(read.replica),
                }
            }
            Msg::Answer {
                to,
                from,
                epoch,
                pd,
            } => {
                self.done(to);
                if let (Some(p), false) = (self.node(to), lost) {
                    // Errors (a stale epoch, a gap after reordering) are what the
                    // real fetcher retries on.
                    let _ = apply_fetched(&p, pd, from, epoch, self.now);
                }
            }
        }
    }

    /// The leader's ISR proposal, accepted only from the current leader epoch and
    /// never below the leader itself (the quorum's `ChangeIsr` rule).
    fn change_isr(&mut self) {
        let Some(p) = self.node(self.leader) else {
            return;
        };
        let Some((epoch, isr)) = p.isr_change(self.now, LAG_MAX_MS) else {
            return;
        };
        if epoch == self.epoch && isr.contains(&self.leader) {
            self.isr = isr;
            self.publish();
        }
    }

    fn crash(&mut self, id: i32) {
        self.nodes[(id - 1) as usize] = None;
        self.in_flight[(id - 1) as usize] = 0;
        self.crashes += 1;
        // Fencing: out of the ISR; a new leader from the ISR if it led. The last
        // member of the ISR stays in it, so the partition waits for it (no unclean
        // election).
        if self.isr.len() > 1 {
            self.isr.retain(|r| *r != id);
        }
        if id == self.leader {
            self.elect();
        } else {
            self.publish();
        }
    }

    fn elect(&mut self) {
        let next = self.isr.iter().copied().find(|r| self.node(*r).is_some());
        self.epoch += 1;
        self.leader = next.unwrap_or(-1);
        self.publish();
    }

    fn restart(&mut self, id: i32) {
        let dir = self.dirs[(id - 1) as usize].path().to_path_buf();
        self.nodes[(id - 1) as usize] = Some(Arc::new(open(&dir, id, false, self.now)));
        self.in_flight[(id - 1) as usize] = 0;
        if self.leader < 0 && self.isr.contains(&id) {
            self.elect();
        } else {
            self.publish();
        }
    }

    fn step(&mut self) {
        self.now += 1 + self.rng.below(40) as i64;
        match self.rng.below(100) {
            0..=24 => self.produce(),
            25..=39 => self.send_fetches(),
            40..=84 => self.deliver(),
            85..=93 => self.change_isr(),
            94..=96 => {
                let down = REPLICAS.iter().filter(|r| self.node(**r).is_none()).count();
                let id = REPLICAS[self.rng.below(3) as usize];
                if self.node(id).is_some() && down == 0 {
                    self.crash(id);
                }
            }
            _ => {
                let down: Vec<i32> = REPLICAS
                    .iter()
                    .copied()
                    .filter(|r| self.node(*r).is_none())
                    .collect();
                if let Some(id) = down.first() {
                    self.restart(*id);
                }
            }
        }
        self.settle();
    }

    /// Restarts everyone, delivers everything, and lets the ISR grow back.
    fn heal(&mut self) {
        for id in REPLICAS {
            if self.node(id).is_none() {
                self.restart(id);
            }
        }
        // Messages of the faulty phase are dropped (the real fetcher's requests time
        // out); reliable rounds replace them.
        self.net.clear();
        self.in_flight = [0; 3];
        for _ in 0..4_000 {
            self.now += 5;
            self.send_fetches_reliably();
            self.change_isr();
            self.settle();
            if self.converged() {
                return;
            }
        }
        panic!("seed {}: the replicas did not converge", self.seed);
    }

    fn send_fetches_reliably(&mut self) {
        for id in REPLICAS {
            let Some((p, leader)) = self.follower(id) else {
                continue;
            };
            let read = fetch_of(&p, id);
            if let Some(l) = self.node(leader) {
                let pd = serve_blocking(&l, read, self.now);
                let _ = apply_fetched(&p, pd, leader, read.epoch, self.now);
            }
        }
    }

    fn converged(&self) -> bool {
        let Some(l) = self.node(self.leader) else {
            return false;
        };
        let leo = l.log_end_offset();
        self.isr.len() == REPLICAS.len()
            && REPLICAS
                .iter()
                .all(|r| self.node(*r).is_some_and(|p| p.log_end_offset() == leo))
            && l.high_watermark() == leo
    }

    fn check_acked_everywhere(&self) {
        for (base, id) in &self.acked {
            for r in REPLICAS {
                let p = self.node(r).expect("healed");
                assert_eq!(
                    batch_at(&p, *base),
                    Some(*id),
                    "seed {}: acknowledged batch {id} at offset {base} missing on replica {r}",
                    self.seed
                );
            }
        }
    }
}

#[test]
fn acknowledged_writes_survive_loss_reordering_and_crashes() {
    let (mut acked, mut crashes) = (0, 0);
    for seed in 1..=24u64 {
        let mut sim = Sim::new(seed);
        for _ in 0..2_500 {
            sim.step();
        }
        sim.heal();
        sim.check_acked_everywhere();
        acked += sim.acked.len();
        crashes += sim.crashes;
    }
    // The schedule must exercise what it claims to.
    assert!(acked > 1_000, "only {acked} writes were acknowledged");
    assert!(crashes > 20, "only {crashes} crashes");
}
