//! Batches of random `block_size + 1` token windows. Batch `i` is a pure function of
//! `(seed, i)`, so the sampler's whole state is the index of the next batch: a resumed run picks
//! up the same batch sequence where it stopped instead of replaying the first batches.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread;

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::shards::TokenShards;

/// Batch `k` of `0..n` cut in order into batches of `b` (the last may be shorter): how a
/// held-out set is scored, and how data parallelism shares its batches out by `k`.
pub fn batch_range(n: usize, b: usize, k: usize) -> std::ops::Range<usize> {
    (k * b).min(n)..((k + 1) * b).min(n)
}

/// Indices of batch `index` of size `b` over `n` examples taken in epochs: positions
/// `index * b ..` of the sequence of epochs, each epoch a permutation seeded by (seed, epoch). A
/// pure function of its arguments, so a resumed run takes the same batches (VLM and SFT data).
pub fn epoch_batch(n: usize, seed: u64, index: u64, b: usize) -> Vec<usize> {
    let mut perm: Option<(u64, Vec<usize>)> = None;
    (0..b as u64)
        .map(|j| {
            let at = index * b as u64 + j;
            let epoch = at / n.max(1) as u64;
            if perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(epoch);
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                perm = Some((epoch, order));
            }
            perm.as_ref().and_then(|(_, order)| order.get((at % n.max(1) as u64) as usize).copied()).unwrap_or(0)
        })
        .collect()
}

/// What a checkpoint stores of the sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub seed: u64,
    pub next_batch: u64,
}

/// Draws windows from one split, each shard weighted by how many windows it holds.
pub struct WindowSampler {
    shards: Arc<TokenShards>,
    /// Number of valid window starts per shard.
    starts: Vec<usize>,
    pub batch_size: usize,
    pub block_size: usize,
}

impl WindowSampler {
    pub fn new(shards: TokenShards, batch_size: usize, block_size: usize) -> Result<Self> {
        let starts: Vec<usize> = shards.shard_lens().iter().map(|&n| n.saturating_sub(block_size)).collect();
        let total: usize = starts.iter().sum();
        ensure!(
            total > 0,
            "the split holds {} tokens, fewer than block_size + 1 = {}: use more data or a shorter context",
            shards.shard_lens().iter().sum::<usize>(),
            block_size + 1
        );
        Ok(Self { shards: Arc::new(shards), starts, batch_size, block_size })
    }

    /// Batch `index` of the stream seeded by `seed`: B rows of T+1 tokens, row-major.
    pub fn batch(&self, seed: u64, index: u64) -> Vec<i64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let total: usize = self.starts.iter().sum();
        let mut out = Vec::with_capacity(self.batch_size * (self.block_size + 1));
        for _ in 0..self.batch_size {
            let mut r = rng.random_range(0..total);
            let shard = self
                .starts
                .iter()
                .position(|&n| {
                    if r < n {
                        true
                    } else {
                        r -= n;
                        false
                    }
                })
                .expect("r < total");
            out.extend(self.shards.window(shard, r, self.block_size + 1));
        }
        out
    }

    /// Prepares batches `state.next_batch..` on a background thread, `prefetch` ahead of the
    /// consumer; the thread ends when the receiver is dropped.
    pub fn spawn(self: &Arc<Self>, state: SamplerState, prefetch: usize) -> Receiver<Vec<i64>> {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let me = Arc::clone(self);
        thread::spawn(move || {
            for index in state.next_batch.. {
                if tx.send(me.batch(state.seed, index)).is_err() {
                    break;
                }
            }
        });
        rx
    }
}
