//! MinHash over word n-grams and the LSH banding that turns signatures into candidate pairs
//! (Broder 1997): permutations `h -> (a·h + b) mod p` of shingle hashes, with p = 2^31 − 1, so
//! that a·h + b fits 64 bits, the reduction is two folds (2^31 ≡ 1) and signature values fit 32
//! bits. datasketch's `legacy` scheme is the same family with p = 2^61 − 1 over sha1's first 32
//! bits; its 2.0 default, `affine32`, works modulo 2^32.
//!
//! Two documents' signatures agree in each position with probability equal to the Jaccard
//! similarity of their shingle sets; cutting a signature into `b` bands of `r` rows makes
//! documents that agree on a whole band candidates, with probability `1 − (1 − s^r)^b`.

use ndarray::{Array2, ArrayView1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

/// The Mersenne prime 2^31 − 1 the permutations work modulo.
pub const MERSENNE_31: u64 = (1 << 31) - 1;

/// A document's shingle hashes, sorted and distinct.
pub type Shingles = Vec<u32>;

/// The hashes (mod 2^31 − 1) of a document's word n-grams (lowercased words split on
/// whitespace), in text order with repeats: what a signature needs, as repeats do not change a
/// minimum. A document shorter than `n` words is one shingle of all its words, so it still has a
/// signature.
pub fn shingle_hashes(text: &str, n: usize) -> Vec<u32> {
    // The words joined by single spaces, so each n-gram is one slice of `norm`.
    let mut norm = String::with_capacity(text.len());
    let mut bounds: Vec<(usize, usize)> = Vec::new();
    for w in text.split_whitespace() {
        if !norm.is_empty() {
            norm.push(' ');
        }
        let start = norm.len();
        if w.is_ascii() {
            norm.push_str(w);
            norm[start..].make_ascii_lowercase();
        } else {
            norm.extend(w.chars().flat_map(char::to_lowercase));
        }
        bounds.push((start, norm.len()));
    }
    let hash = |bytes: &[u8]| (xxh3_64(bytes) % MERSENNE_31) as u32;
    if bounds.len() < n {
        vec![hash(norm.as_bytes())]
    } else {
        bounds.windows(n).map(|w| hash(&norm.as_bytes()[w[0].0..w[n - 1].1])).collect()
    }
}

/// A document's shingle set: [`shingle_hashes`] sorted and distinct, as exact Jaccard
/// similarity needs.
pub fn shingles(text: &str, n: usize) -> Shingles {
    let mut out = shingle_hashes(text, n);
    out.sort_unstable();
    out.dedup();
    out
}

/// `num_perm` random affine permutations `h -> (a·h + b) mod p`, from a seed.
#[derive(Clone, Debug)]
pub struct MinHasher {
    a: Vec<u32>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(num_perm: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<u64> = (0..num_perm).map(|_| rng.random_range(1..MERSENNE_31)).collect();
        let b = (0..num_perm).map(|_| rng.random_range(0..MERSENNE_31)).collect();
        Self::from_params(a, b)
    }

    /// Permutations given explicitly (tests and reference computations); each below 2^31 − 1.
    pub fn from_params(a: Vec<u64>, b: Vec<u64>) -> Self {
        assert_eq!(a.len(), b.len(), "one b per a");
        assert!(a.iter().chain(&b).all(|&x| x < MERSENNE_31), "permutation parameters below 2^31 - 1");
        Self { a: a.into_iter().map(|x| x as u32).collect(), b }
    }

    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// One signature: per permutation, the least permuted shingle hash.
    pub fn signature(&self, shingles: &[u32]) -> Vec<u32> {
        let mut sig = vec![0; self.a.len()];
        self.signature_into(shingles, &mut sig);
        sig
    }

    /// [`MinHasher::signature`] written into `sig` (`num_perm` values).
    pub fn signature_into(&self, shingles: &[u32], sig: &mut [u32]) {
        assert_eq!(sig.len(), self.a.len(), "one value per permutation");
        sig.fill(u32::MAX);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { fold_min_avx512(sig, &self.a, &self.b, shingles) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { fold_min_avx2(sig, &self.a, &self.b, shingles) };
            return;
        }
        fold_min(sig, &self.a, &self.b, shingles);
    }

    /// The signatures of every shingle set, one row per document [docs, num_perm], computed in
    /// parallel (each row depends on its document alone, so the matrix does not depend on the
    /// thread count).
    pub fn signatures(&self, sets: &[Shingles]) -> Array2<u32> {
        let rows: Vec<Vec<u32>> = sets.par_iter().map(|s| self.signature(s)).collect();
        let mut m = Array2::<u32>::zeros((sets.len(), self.num_perm()));
        for (mut row, sig) in m.rows_mut().into_iter().zip(rows) {
            row.assign(&ArrayView1::from(&sig));
        }
        m
    }
}

/// `sig[k] = min(sig[k], min over h of (a[k]·h + b[k]) mod p)`, a block of `LANES`
/// permutations at a time held in registers while every shingle streams past, so the loop over
/// the block vectorises and touches memory once per shingle.
#[inline(always)]
fn fold_min_body(sig: &mut [u32], a: &[u32], b: &[u64], shingles: &[u32]) {
    const LANES: usize = 16;
    for ((sig, a), b) in sig.chunks_mut(LANES).zip(a.chunks(LANES)).zip(b.chunks(LANES)) {
        // Lanes past the block's end compute with a = b = 0 and are not written back.
        let (mut av, mut bv, mut acc) = ([0u32; LANES], [0u64; LANES], [u64::MAX; LANES]);
        av[..a.len()].copy_from_slice(a);
        bv[..b.len()].copy_from_slice(b);
        for &h in shingles {
            for j in 0..LANES {
                acc[j] = acc[j].min(affine(av[j], h, bv[j]));
            }
        }
        for (s, m) in sig.iter_mut().zip(acc) {
            *s = (*s).min(m as u32);
        }
    }
}

fn fold_min(sig: &mut [u32], a: &[u32], b: &[u64], shingles: &[u32]) {
    fold_min_body(sig, a, b, shingles)
}

/// [`fold_min`] compiled for AVX-512 (eight 32×32→64-bit products and unsigned 64-bit minima
/// per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fold_min_avx512(sig: &mut [u32], a: &[u32], b: &[u64], shingles: &[u32]) {
    fold_min_body(sig, a, b, shingles)
}

/// [`fold_min`] compiled for AVX2 (four 32×32→64-bit products per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_min_avx2(sig: &mut [u32], a: &[u32], b: &[u64], shingles: &[u32]) {
    fold_min_body(sig, a, b, shingles)
}

/// `(a·h + b) mod (2^31 − 1)` for a, h, b below 2^31 − 1. The product of two 32-bit operands is
/// one 32×32→64-bit multiply and a·h + b < 2^62; as 2^31 ≡ 1, one fold of the bits above 31
/// leaves at most 2p, and each `min(x, x − p)` (the subtraction wraps when x < p) takes p off
/// once where x ≥ p: branch-free, and one instruction each where vectors have unsigned minima.
#[inline(always)]
fn affine(a: u32, h: u32, b: u64) -> u64 {
    let x = a as u64 * h as u64 + b;
    let x = (x & MERSENNE_31) + (x >> 31); // <= 2p
    let x = x.min(x.wrapping_sub(MERSENNE_31)); // <= p
    x.min(x.wrapping_sub(MERSENNE_31)) // < p
}

/// Exact Jaccard similarity of two shingle sets.
pub fn jaccard(x: &[u32], y: &[u32]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = x.len() + y.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Composite Simpson's rule over [lo, hi]: the nodes and their weights (the curves integrated
/// are smooth polynomials).
fn simpson(lo: f64, hi: f64) -> impl Iterator<Item = (f64, f64)> {
    const N: usize = 1000;
    let h = (hi - lo) / N as f64;
    (0..=N).map(move |i| {
        let w = if i == 0 || i == N {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        (lo + i as f64 * h, w * h / 3.0)
    })
}

/// Bands and rows for a similarity `threshold`: datasketch's rule, the (b, r) with b·r ≤
/// `num_perm` that minimises the mean of the false-positive area (candidates below the
/// threshold) and the false-negative area (missed pairs above it). For each r one pass over the
/// nodes gives every b's areas, (1 − s^r)^b built up by multiplication.
pub fn optimal_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    for r in 1..=num_perm {
        let max_b = num_perm / r;
        // err[b − 1] = ½ ∫₀ᵗ P(candidate) + ½ ∫ₜ¹ P(missed), P(missed) = (1 − s^r)^b.
        let mut err = vec![0.0; max_b];
        for (below, (lo, hi)) in [(true, (0.0, threshold)), (false, (threshold, 1.0))] {
            for (s, w) in simpson(lo, hi) {
                let q = 1.0 - s.powi(r as i32);
                let mut missed = 1.0;
                for e in err.iter_mut() {
                    missed *= q;
                    *e += 0.5 * w * if below { 1.0 - missed } else { missed };
                }
            }
        }
        for (b, e) in (1..).zip(err) {
            // Ties go to fewer bands, as in a loop over b then r.
            if e < best.0 || (e == best.0 && b < best.1 .0) {
                best = (e, (b, r));
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
        assert_eq!(m.signature(&[3, 10]), vec![7, 15]);
        // The largest operands: (p − 1)·(p − 1) + (p − 1) = (p − 1)·p ≡ 0; and p − 1 + 1 ≡ 0.
        let p = MERSENNE_31;
        assert_eq!(MinHasher::from_params(vec![p - 1], vec![p - 1]).signature(&[(p - 1) as u32]), vec![0]);
        assert_eq!(MinHasher::from_params(vec![1], vec![1]).signature(&[(p - 1) as u32]), vec![0]);
    }

    #[test]
    fn the_folded_reduction_and_both_code_paths_equal_the_modulo() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let p = MERSENNE_31;
        for _ in 0..100_000 {
            let mut draw =
                || if rng.random_bool(0.1) { [0, 1, p - 1][rng.random_range(0..3)] } else { rng.random_range(0..p) };
            let (a, h, b) = (draw(), draw(), draw());
            assert_eq!(affine(a as u32, h as u32, b), (a * h + b) % p, "{a} {h} {b}");
        }
        let m = MinHasher::new(128, 3);
        let set: Vec<u32> = (0..300).map(|_| rng.random_range(0..p as u32)).collect();
        let mut plain = vec![u32::MAX; 128];
        fold_min(&mut plain, &m.a, &m.b, &set);
        assert_eq!(m.signature(&set), plain);
        #[cfg(target_arch = "x86_64")]
        for (feature, has, fold) in [
            (
                "avx2",
                std::arch::is_x86_feature_detected!("avx2"),
                fold_min_avx2 as unsafe fn(&mut [u32], &[u32], &[u64], &[u32]),
            ),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f"), fold_min_avx512),
        ] {
            if has {
                let mut sig = vec![u32::MAX; 128];
                // SAFETY: the CPU has the feature, checked just above.
                unsafe { fold(&mut sig, &m.a, &m.b, &set) };
                assert_eq!(sig, plain, "{feature}");
            }
        }
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
        // Case and runs of whitespace do not matter; the n-grams are those of the words.
        assert_eq!(shingles("The  quick\nBrown fox", 2), shingles("the quick brown fox", 2));
        // "a b" twice counts once; the result is sorted.
        let h = |s: &[u8]| (xxh3_64(s) % MERSENNE_31) as u32;
        let mut expected = vec![h(b"a b"), h(b"b c"), h(b"c a")];
        expected.sort_unstable();
        assert_eq!(shingles("a b c a b", 2), expected);
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
