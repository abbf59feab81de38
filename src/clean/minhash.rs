//! MinHash over word n-grams and the LSH banding that turns signatures into candidate pairs
//! (Broder 1997; the scheme datasketch calls `legacy`: `(a·h + b) mod (2^61 − 1)`, here over
//! 64-bit xxh3 hashes of the shingles instead of sha1's first 32 bits).
//!
//! Two documents' signatures agree in each position with probability equal to the Jaccard
//! similarity of their shingle sets; cutting a signature into `b` bands of `r` rows makes
//! documents that agree on a whole band candidates, with probability `1 − (1 − s^r)^b`.

use std::collections::HashSet;

use ndarray::{Array2, ArrayView1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

/// The Mersenne prime 2^61 − 1 the permutations work modulo.
pub const MERSENNE_61: u64 = (1 << 61) - 1;

/// The hashes of a document's word n-grams (lowercased words split on whitespace); a document
/// shorter than `n` words is one shingle of all its words, so it still has a signature.
pub fn shingles(text: &str, n: usize) -> HashSet<u64> {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if words.len() < n {
        return HashSet::from([xxh3_64(words.join(" ").as_bytes())]);
    }
    words.windows(n).map(|w| xxh3_64(w.join(" ").as_bytes())).collect()
}

/// `num_perm` random affine permutations `h -> (a·h + b) mod p`, from a seed.
#[derive(Clone, Debug)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(num_perm: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = (0..num_perm).map(|_| rng.random_range(1..MERSENNE_61)).collect();
        let b = (0..num_perm).map(|_| rng.random_range(0..MERSENNE_61)).collect();
        Self { a, b }
    }

    /// Permutations given explicitly (tests and reference computations).
    pub fn from_params(a: Vec<u64>, b: Vec<u64>) -> Self {
        assert_eq!(a.len(), b.len(), "one b per a");
        Self { a, b }
    }

    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// One signature: per permutation, the least permuted shingle hash.
    pub fn signature(&self, shingles: &HashSet<u64>) -> Vec<u64> {
        let mut sig = vec![u64::MAX; self.a.len()];
        for &h in shingles {
            let h = h % MERSENNE_61;
            for (s, (&a, &b)) in sig.iter_mut().zip(self.a.iter().zip(&self.b)) {
                *s = (*s).min(affine(a, h, b));
            }
        }
        sig
    }

    /// The signatures of every shingle set, one row per document [docs, num_perm], computed in
    /// parallel (each row depends on its document alone, so the matrix does not depend on the
    /// thread count).
    pub fn signatures(&self, sets: &[HashSet<u64>]) -> Array2<u64> {
        let rows: Vec<Vec<u64>> = sets.par_iter().map(|s| self.signature(s)).collect();
        let mut m = Array2::<u64>::zeros((sets.len(), self.num_perm()));
        for (mut row, sig) in m.rows_mut().into_iter().zip(rows) {
            row.assign(&ArrayView1::from(&sig));
        }
        m
    }
}

/// `(a·h + b) mod (2^61 − 1)` without overflow.
fn affine(a: u64, h: u64, b: u64) -> u64 {
    ((a as u128 * h as u128 + b as u128) % MERSENNE_61 as u128) as u64
}

/// Exact Jaccard similarity of two shingle sets.
pub fn jaccard(x: &HashSet<u64>, y: &HashSet<u64>) -> f64 {
    let inter = x.intersection(y).count();
    let union = x.len() + y.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The probability that documents of similarity `s` share at least one of `b` bands of `r` rows.
pub fn candidate_probability(s: f64, b: usize, r: usize) -> f64 {
    1.0 - (1.0 - s.powi(r as i32)).powi(b as i32)
}

/// ∫ f over [lo, hi] by composite Simpson's rule (the curves are smooth polynomials).
fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    const N: usize = 1000;
    let h = (hi - lo) / N as f64;
    let inner: f64 = (1..N).map(|i| f(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
    (f(lo) + inner + f(hi)) * h / 3.0
}

/// Bands and rows for a similarity `threshold`: datasketch's rule, the (b, r) with b·r ≤
/// `num_perm` that minimises the mean of the false-positive area (candidates below the
/// threshold) and the false-negative area (missed pairs above it).
pub fn optimal_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let fp = integrate(|s| candidate_probability(s, b, r), 0.0, threshold);
            let fneg = integrate(|s| 1.0 - candidate_probability(s, b, r), threshold, 1.0);
            let err = 0.5 * fp + 0.5 * fneg;
            if err < best.0 {
                best = (err, (b, r));
            }
        }
    }
    best.1
}

/// A disjoint-set forest whose roots are the least member of their set, so a cluster's root is
/// its first document in input order whatever order the unions come in.
#[derive(Clone, Debug)]
pub struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        Self { parent: (0..n).collect() }
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    pub fn union(&mut self, x: usize, y: usize) {
        let (rx, ry) = (self.find(x), self.find(y));
        let (lo, hi) = (rx.min(ry), rx.max(ry));
        self.parent[hi] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_least_permuted_hash_computed_by_hand() {
        // Two permutations on the hashes {3, 10}: 2·3 + 1 = 7 and 2·10 + 1 = 21 give 7;
        // 5·3 + 0 = 15 and 5·10 + 0 = 50 give 15.
        let m = MinHasher::from_params(vec![2, 5], vec![1, 0]);
        assert_eq!(m.signature(&HashSet::from([3, 10])), vec![7, 15]);
        // Reduction modulo 2^61 − 1: (2^61 − 1) + 4 is 4, and a·h wraps past 2^64 without loss.
        assert_eq!(m.signature(&HashSet::from([MERSENNE_61 + 4])), vec![9, 20]);
        let big = MinHasher::from_params(vec![MERSENNE_61 - 1], vec![0]);
        // (p − 1)·2 = 2p − 2 ≡ p − 2.
        assert_eq!(big.signature(&HashSet::from([2])), vec![MERSENNE_61 - 2]);
    }

    #[test]
    fn signature_agreement_estimates_jaccard() {
        let a = "the quick brown fox jumps over the lazy dog near the old river bank today";
        let b = "the quick brown fox jumps over the lazy cat near the old river bank today";
        let (sa, sb) = (shingles(a, 3), shingles(b, 3));
        let m = MinHasher::new(512, 7);
        let sigs = m.signatures(&[sa.clone(), sb.clone()]);
        let agree = sigs.row(0).iter().zip(sigs.row(1)).filter(|(x, y)| x == y).count() as f64 / 512.0;
        let exact = jaccard(&sa, &sb);
        assert!((agree - exact).abs() < 0.06, "{agree} vs {exact}");
        assert_eq!(shingles("Two words", 5).len(), 1);
    }

    #[test]
    fn bands_and_rows_equal_datasketchs_choice() {
        // datasketch 2.0.0's `_optimal_param(threshold, num_perm, 0.5, 0.5)`.
        for (t, n, expected) in [
            (0.5, 128, (25, 5)),
            (0.7, 128, (14, 9)),
            (0.8, 128, (9, 13)),
            (0.9, 128, (5, 25)),
            (0.8, 256, (17, 15)),
            (0.7, 240, (24, 10)),
        ] {
            assert_eq!(optimal_bands(t, n), expected, "threshold {t}, {n} permutations");
        }
    }

    #[test]
    fn a_clusters_root_is_its_least_member() {
        let mut uf = UnionFind::new(5);
        uf.union(4, 3);
        uf.union(3, 1);
        uf.union(2, 4);
        assert_eq!((0..5).map(|i| uf.find(i)).collect::<Vec<_>>(), vec![0, 1, 1, 1, 1]);
    }
}
