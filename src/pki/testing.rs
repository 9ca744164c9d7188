//! A fast [`KeySource`] for tests: keys come from a per-process pool.
//!
//! RSA 4096 generation takes seconds; tests issue hundreds of certificates.
//! The pool generates up to [`POOL_SIZE`] keys per algorithm once per process
//! and hands them out in turn, so consecutive requests get different keys (two
//! roots never share a key unless more than `POOL_SIZE` keys are taken).
//! Serials come from a counter: unique within the process, not random. Never
//! use this outside tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::model::KeyAlgorithm;
use crate::pki::key::{KeyError, KeySource, PrivateKey};
use crate::pki::os::generate_with_os_rng;

/// Keys kept per algorithm.
pub const POOL_SIZE: usize = 4;

/// The pooled test key source. Cheap to create; the pool is process-wide.
#[derive(Debug, Default)]
pub struct PooledKeySource;

struct Pool {
    keys: HashMap<KeyAlgorithm, Vec<PrivateKey>>,
    next: HashMap<KeyAlgorithm, usize>,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(Pool {
            keys: HashMap::new(),
            next: HashMap::new(),
        })
    })
}

impl KeySource for PooledKeySource {
    fn generate(&self, algorithm: KeyAlgorithm) -> Result<PrivateKey, KeyError> {
        let index = {
            let mut pool = pool().lock().unwrap_or_else(|poison| poison.into_inner());
            let next = pool.next.entry(algorithm).or_insert(0);
            let index = *next % POOL_SIZE;
            *next += 1;
            if let Some(key) = pool.keys.get(&algorithm).and_then(|keys| keys.get(index)) {
                return Ok(key.clone());
            }
            index
        };
        // Generate outside the lock so other algorithms are not blocked.
        let key = generate_with_os_rng(algorithm)?;
        let mut pool = pool().lock().unwrap_or_else(|poison| poison.into_inner());
        let keys = pool.keys.entry(algorithm).or_default();
        if keys.len() <= index {
            keys.push(key.clone());
        }
        Ok(key)
    }

    fn serial(&self) -> [u8; 16] {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let mut serial = [0x5a; 16];
        serial[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        serial
    }
}
