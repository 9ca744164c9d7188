//! The clients of one fleet's Kubernetes clusters, and their bound.
//!
//! A cluster's `kube::Client` (its connection pool, TLS state and request
//! buffer) is built on first use and kept for the cluster's next phase
//! (observation, then its writes and their Events); at most `keep` of them
//! are kept open across a fleet ([`Clients::for_parallelism`]), the one used
//! longest ago dropped first, with its connection. The fleet is worked on
//! in order, `--parallelism` clusters at a time, so a fleet no larger than
//! that bound keeps every connection from observation to Events, and a
//! larger one holds memory and open connections bounded by it, not by the
//! fleet's size: each of its clusters connects once to be observed and once
//! more to be written (its Events go out on the writes' connection).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use kube::Client;

use super::kubeconfig::Kubeconfigs;

/// Clients kept open whatever `--parallelism` is: an idle HTTP/2 client
/// holds tens of KiB, and without the floor a small `--parallelism` would
/// reconnect (two round trips) to every cluster in each phase of a run.
pub const MIN_OPEN_CLIENTS: usize = 64;

/// One cluster's client, while it is open.
pub(super) type Slot = Arc<Mutex<Option<Client>>>;

/// What the clusters of one fleet share: kubeconfig files read once, and
/// the bound on open clients.
#[derive(Debug)]
pub struct Clients {
    pub(super) kubeconfigs: Kubeconfigs,
    open: Arc<Open>,
}

impl Clients {
    /// For a fleet worked on `parallelism` clusters at a time: twice that
    /// many clients kept open (at least [`MIN_OPEN_CLIENTS`]). One per
    /// cluster in flight, and room for those whose Events are still going
    /// out while their worker starts the next cluster: with no more room
    /// than the clusters in flight, a cluster's client would be dropped
    /// between two of its requests (measured: 4.7 to 5.4 connections per
    /// workload instead of 2 in a first apply of 10,000; BENCHMARKS.md).
    pub fn for_parallelism(parallelism: usize) -> Self {
        Self::new(parallelism.saturating_mul(2).max(MIN_OPEN_CLIENTS))
    }

    /// For a fleet that keeps at most `keep` clients open (at least 1).
    pub fn new(keep: usize) -> Self {
        Self {
            kubeconfigs: Kubeconfigs::default(),
            open: Arc::new(Open {
                keep: keep.max(1),
                order: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// A new cluster's slot, empty until its client is first needed.
    pub(super) fn slot(&self) -> ClientSlot {
        ClientSlot {
            slot: Arc::new(Mutex::new(None)),
            open: self.open.clone(),
        }
    }
}

/// The open clients of a fleet, the one used longest ago first.
#[derive(Debug)]
struct Open {
    keep: usize,
    order: Mutex<VecDeque<Weak<Mutex<Option<Client>>>>>,
}

/// One cluster's place among the fleet's open clients.
pub(super) struct ClientSlot {
    slot: Slot,
    open: Arc<Open>,
}

impl ClientSlot {
    /// The cluster's client: the open one, or one built by `build` (then
    /// counted among the open ones, dropping those used longest ago beyond
    /// the bound).
    pub(super) fn get<E>(&self, build: impl FnOnce() -> Result<Client, E>) -> Result<Client, E> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            let client = client.clone();
            drop(slot);
            self.touch();
            return Ok(client);
        }
        let client = build()?;
        *slot = Some(client.clone());
        drop(slot);
        let evicted: Vec<Slot> = {
            let mut order = self
                .open
                .order
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            order.push_back(Arc::downgrade(&self.slot));
            let mut evicted = Vec::new();
            while order.len() > self.open.keep {
                if let Some(oldest) = order.pop_front().and_then(|w| w.upgrade()) {
                    evicted.push(oldest);
                }
            }
            evicted
        };
        // Dropped outside the fleet's lock: a request still running on one
        // keeps its own handle until it ends.
        for oldest in evicted {
            oldest.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
        Ok(client)
    }

    /// Moves the cluster's client to the newest end: the one dropped next
    /// is the one used longest ago, not the one opened longest ago (a
    /// cluster whose Events follow its writes keeps its connection while
    /// its worker opens the next cluster's).
    fn touch(&self) {
        let mut order = self
            .open
            .order
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let me = Arc::as_ptr(&self.slot);
        if let Some(at) = order.iter().rposition(|w| std::ptr::eq(w.as_ptr(), me))
            && at + 1 < order.len()
            && let Some(mine) = order.remove(at)
        {
            order.push_back(mine);
        }
    }

    /// Whether the cluster's client is open (for tests).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Result<Client, std::convert::Infallible> {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let _entered = super::super::runtime().unwrap().enter();
        Ok(Client::try_from(config).unwrap())
    }

    #[test]
    fn at_most_the_bound_of_clients_stay_open_the_oldest_dropped_first() {
        let clients = Clients::new(2);
        let slots: Vec<ClientSlot> = (0..4).map(|_| clients.slot()).collect();
        for slot in &slots {
            slot.get(client).unwrap();
        }
        let open: Vec<bool> = slots.iter().map(ClientSlot::is_open).collect();
        assert_eq!(open, [false, false, true, true]);
        // Used again: built anew, and the oldest open one goes.
        slots[0].get(client).unwrap();
        let open: Vec<bool> = slots.iter().map(ClientSlot::is_open).collect();
        assert_eq!(open, [true, false, false, true]);
    }

    #[test]
    fn the_client_dropped_is_the_one_used_longest_ago() {
        let clients = Clients::new(2);
        let slots: Vec<ClientSlot> = (0..3).map(|_| clients.slot()).collect();
        slots[0].get(client).unwrap();
        slots[1].get(client).unwrap();
        // 0 was opened first but is used again: 1 goes for 2.
        slots[0]
            .get(|| -> Result<Client, std::convert::Infallible> {
                unreachable!("open: not built again")
            })
            .unwrap();
        slots[2].get(client).unwrap();
        let open: Vec<bool> = slots.iter().map(ClientSlot::is_open).collect();
        assert_eq!(open, [true, false, true]);
    }
}
