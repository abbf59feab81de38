//! Data parallelism on PyTorch's own c10d: processes launched like torchrun (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) meet at a TCPStore on rank 0 and
//! form a process group (Gloo between CPUs, NCCL between GPUs), through which gradients are
//! averaged after each backward pass. The calls go through a small C++ shim (`c10d.cpp`,
//! compiled by `build.rs` where the headers are present), since tch does not bind c10d.

pub mod launch;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind, Tensor};

/// Where this process stands in a launched group, from torchrun's environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl DistEnv {
    /// The launch environment; `None` when `WORLD_SIZE` is unset or 1 (a plain run).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let parse = |name: &str, default: Option<&str>| -> Result<String> {
            var(name).or(default.map(str::to_string)).with_context(|| format!("{name} is not set (WORLD_SIZE is)"))
        };
        let world_size: usize = match var("WORLD_SIZE") {
            None => return Ok(None),
            Some(w) => w.trim().parse().with_context(|| format!("WORLD_SIZE is not a number: {w:?}"))?,
        };
        ensure!(world_size >= 1, "WORLD_SIZE must be at least 1");
        if world_size == 1 {
            return Ok(None);
        }
        let number = |name: &str, default: Option<&str>| -> Result<usize> {
            let v = parse(name, default)?;
            v.trim().parse().with_context(|| format!("{name} is not a number: {v:?}"))
        };
        let rank = number("RANK", None)?;
        ensure!(rank < world_size, "RANK {rank} is not below WORLD_SIZE {world_size}");
        let port = number("MASTER_PORT", Some("29500"))?;
        ensure!((1..=65535).contains(&port), "MASTER_PORT {port} is not a port");
        Ok(Some(Self {
            rank,
            world_size,
            local_rank: number("LOCAL_RANK", Some("0"))?,
            master_addr: parse("MASTER_ADDR", Some("127.0.0.1"))?,
            master_port: port as u16,
        }))
    }
}

/// Whether this process is rank 0 of a launch, or not launched as a rank at all: the one that
/// prints a run's summary.
pub fn is_main_process() -> bool {
    DistEnv::from_env().ok().flatten().is_none_or(|env| env.rank == 0)
}

/// `eprintln!` on rank 0 only (or outside a launch): a run's messages appear once, not once per
/// rank.
#[macro_export]
macro_rules! main_eprintln {
    ($($arg:tt)*) => {
        if $crate::dist::is_main_process() {
            eprintln!($($arg)*);
        }
    };
}

/// This process's rank and the number of ranks: 0 of 1 outside a group.
pub fn rank_world(group: Option<&ProcessGroup>) -> (usize, usize) {
    group.map_or((0, 1), |g| (g.rank, g.world_size))
}

/// A rank's rows of a micro-batch [B, ..]: every `world`-th row from row `rank` [B / world, ..].
pub fn rank_rows(batch: &Tensor, (rank, world): (usize, usize)) -> Tensor {
    batch.slice(0, rank as i64, batch.size()[0], world as i64)
}

/// Fails unless each of `sizes` divides among the launch's ranks: the batches of a loss whose
/// ranks must hold equal shares (GPT's windows, CLIP's pairs, PPO's rollouts). Checked before a
/// run writes anything.
pub fn ensure_even_shares(sizes: &[(&str, usize)]) -> Result<()> {
    if let Some(env) = DistEnv::from_env()? {
        for &(name, n) in sizes {
            ensure!(n.is_multiple_of(env.world_size), "{name} {n} does not divide among {} ranks", env.world_size);
        }
    }
    Ok(())
}

/// A rank's share of a micro-batch's example indices: every `world`-th from `rank`, with a
/// weight of one. A rank left without one (a batch of fewer rows than ranks, such as an epoch's
/// last) gets row 0 with weight 0: it still runs the model, so its loss has the parts the other
/// ranks' have (whose counts one collective sums), but adds nothing to them.
pub fn rank_share(indices: &[usize], (rank, world): (usize, usize)) -> (Vec<usize>, f64) {
    let mine: Vec<usize> = indices.iter().skip(rank).step_by(world).copied().collect();
    match (mine.is_empty(), indices.first()) {
        (true, Some(&first)) => (vec![first], 0.0),
        _ => (mine, 1.0),
    }
}

/// The sum over the ranks of this rank's `values` (the values themselves outside a group).
pub fn sum_ranks(group: Option<&ProcessGroup>, values: Vec<f64>) -> Result<Vec<f64>> {
    match group {
        Some(g) => g.sum(&values),
        None => Ok(values),
    }
}

/// Sums the `width` values `f(i)` returns over the items `0..n` this rank takes (every
/// `world`-th), then over the ranks: a validation sharded like the training batches, whose
/// every rank gets the whole set's sums.
pub fn sum_over_shards(
    group: Option<&ProcessGroup>,
    n: usize,
    width: usize,
    mut f: impl FnMut(usize) -> Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    let (rank, world) = rank_world(group);
    let mut sums = vec![0.0; width];
    for i in (rank..n).step_by(world) {
        let values = f(i)?;
        ensure!(values.len() == width, "a shard returned {} values, not {width}", values.len());
        sums.iter_mut().zip(values).for_each(|(s, v)| *s += v);
    }
    sum_ranks(group, sums)
}

/// How long a collective waits for the other ranks before failing (a dead rank makes the
/// others fail within it); `GPTLAB_DIST_TIMEOUT_S` overrides the default of 300 s.
pub fn timeout() -> Result<Duration> {
    match std::env::var("GPTLAB_DIST_TIMEOUT_S") {
        Err(_) => Ok(Duration::from_secs(300)),
        Ok(v) => {
            let s: f64 = v.trim().parse().with_context(|| format!("GPTLAB_DIST_TIMEOUT_S is not a number: {v:?}"))?;
            ensure!(s > 0.0, "GPTLAB_DIST_TIMEOUT_S must be positive");
            Ok(Duration::from_secs_f64(s))
        }
    }
}

/// Gradient buckets: up to this many bytes are flattened into one all-reduce.
const BUCKET_BYTES: i64 = 25 << 20;

/// A process group of `world_size` ranks.
pub struct ProcessGroup {
    pub rank: usize,
    pub world_size: usize,
    /// `gloo` or `nccl`.
    pub backend: &'static str,
    /// Where the collectives' tensors live: the GPU under NCCL, else the CPU (Gloo stages a
    /// GPU run's gradients through it).
    device: Device,
    group: shim::Group,
}

impl ProcessGroup {
    /// Joins the group `env` describes (rank 0 serves the rendezvous) for a model on `device`:
    /// NCCL on a GPU where gptlab was built with it, else Gloo. Fails after `timeout` when the
    /// others do not come.
    pub fn join(env: &DistEnv, timeout: Duration, device: Device) -> Result<Self> {
        let (group, backend, device) =
            shim::Group::new(&env.master_addr, env.master_port, env.rank, env.world_size, timeout, device)
                .with_context(|| {
                    format!(
                        "rank {} of {}: joining the process group at {}:{}",
                        env.rank, env.world_size, env.master_addr, env.master_port
                    )
                })?;
        Ok(Self { rank: env.rank, world_size: env.world_size, backend, device, group })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Replaces each tensor by its mean over the ranks (gradients after a backward pass).
    /// Reduced in fp32 whatever the tensors' kind: bf16 gradients lose too much summed in bf16.
    pub fn all_reduce_mean(&self, tensors: &[Tensor]) -> Result<()> {
        for_each_bucket(tensors, self.device, |flat| {
            self.group.all_reduce_sum(flat).with_context(|| self.failed("averaging gradients"))?;
            Ok(flat / self.world_size as f64)
        })
    }

    /// Replaces each tensor by its sum over the ranks (in fp32): a table each rank filled in
    /// part, with zeros elsewhere, becomes the whole table on every rank.
    pub fn sum_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        for_each_bucket(tensors, self.device, |flat| {
            self.group.all_reduce_sum(flat).with_context(|| self.failed("summing shared work"))?;
            Ok(flat.shallow_clone())
        })
    }

    /// Copies rank 0's values of `tensors` into every rank's (the weights a run starts from, as
    /// DDP does, so the ranks start equal even where their initialisations would not be).
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<()> {
        for_each_bucket(tensors, self.device, |flat| {
            self.group.broadcast(flat, 0).with_context(|| self.failed("broadcasting rank 0's weights"))?;
            Ok(flat.shallow_clone())
        })
    }

    /// Every rank's rows of `local` [n, ..] in one tensor [n·W, ..], in the order the ranks
    /// took them from a micro-batch (row i of rank r at i·W + r), for a loss over the whole
    /// batch such as CLIP's contrast. Only this rank's rows carry gradients, scaled by W: every
    /// rank computes the same whole-batch loss, and averaging the ranks' gradients then sums each
    /// rank's rows' contribution once, while a parameter the loss uses directly (CLIP's logit
    /// scale) keeps its one-process gradient. (open_clip gathers with local gradients too.)
    pub fn all_gather_rows(&self, local: &Tensor) -> Result<Tensor> {
        let (n, w) = (local.size()[0], self.world_size as i64);
        let mine = |device| Tensor::arange_start_step(self.rank as i64, n * w, w, (Kind::Int64, device)); // [n]
        let mut shape = local.size();
        shape[0] = n * w;
        let all = Tensor::zeros(shape.as_slice(), (local.kind(), self.device)).index_copy(
            0,
            &mine(self.device),
            &local.detach().to_device(self.device),
        );
        self.group.all_reduce_sum(&all).with_context(|| self.failed("gathering rows"))?;
        let scaled = local * w as f64 - local.detach() * (w - 1) as f64; // the values of `local`, gradients × W
        Ok(all.to_device(local.device()).index_copy(0, &mine(local.device()), &scaled))
        // [n·W, ..]
    }

    /// The sum of `values` over the ranks (in f64).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_kind(Kind::Double).to_device(self.device);
        self.group.all_reduce_sum(&t).with_context(|| self.failed("summing metrics"))?;
        Ok(Vec::<f64>::try_from(&t.to_device(Device::Cpu))?)
    }

    /// What a failed collective reports: which rank saw it, and the likely cause.
    fn failed(&self, what: &str) -> String {
        format!(
            "rank {} of {}: {what} failed (another rank stopped, or did not answer within the timeout)",
            self.rank, self.world_size
        )
    }
}

/// Applies `collective` to `tensors` flattened into fp32 buckets of up to [`BUCKET_BYTES`] on
/// `device` (a model costs a few collectives, not one per tensor), and copies what it returns
/// back into them.
fn for_each_bucket(
    tensors: &[Tensor],
    device: Device,
    mut collective: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    let mut start = 0;
    while start < tensors.len() {
        let mut end = start + 1;
        let mut bytes = tensors[start].numel() as i64 * 4;
        while end < tensors.len() && bytes + tensors[end].numel() as i64 * 4 <= BUCKET_BYTES {
            bytes += tensors[end].numel() as i64 * 4;
            end += 1;
        }
        let bucket = &tensors[start..end];
        let flat = Tensor::cat(
            &bucket.iter().map(|t| t.detach().to_kind(Kind::Float).reshape([-1]).to_device(device)).collect::<Vec<_>>(),
            0,
        );
        let result = collective(&flat)?;
        tch::no_grad(|| {
            let mut offset = 0;
            for t in bucket {
                let n = t.numel() as i64;
                t.shallow_clone().copy_(&result.narrow(0, offset, n).view(t.size().as_slice()));
                offset += n;
            }
        });
        start = end;
    }
    Ok(())
}

#[cfg(c10d)]
mod shim {
    use std::ffi::{c_char, c_int, c_longlong, c_void, CStr, CString};
    use std::time::Duration;

    use anyhow::{bail, Result};
    use tch::{Device, Tensor};

    #[repr(C)]
    struct GlGroup {
        _private: [u8; 0],
    }

    extern "C" {
        fn gl_group_new(
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            timeout_ms: c_longlong,
            err: *mut *mut c_char,
        ) -> *mut GlGroup;
        #[cfg(c10d_nccl)]
        fn nc_group_new(
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            device: c_int,
            timeout_ms: c_longlong,
            err: *mut *mut c_char,
        ) -> *mut GlGroup;
        fn gl_all_reduce_sum(g: *mut GlGroup, tensor: *mut c_void, err: *mut *mut c_char) -> c_int;
        fn gl_broadcast(g: *mut GlGroup, tensor: *mut c_void, root: c_int, err: *mut *mut c_char) -> c_int;
        fn gl_group_free(g: *mut GlGroup);
        fn gl_free_error(err: *mut c_char);
    }

    /// The C++ side's error message, first line only (c10d appends a C++ backtrace).
    fn take_error(err: *mut c_char) -> String {
        if err.is_null() {
            return "unknown error".into();
        }
        // SAFETY: the shim sets `err` to a strdup'ed, NUL-terminated string; freed just after.
        let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().lines().next().unwrap_or("").to_string();
        // SAFETY: `err` came from the shim's strdup and is freed once.
        unsafe { gl_free_error(err) };
        msg
    }

    fn check(rc: c_int, err: *mut c_char) -> Result<()> {
        if rc != 0 {
            bail!("{}", take_error(err));
        }
        Ok(())
    }

    /// A live process group; freed on drop.
    pub struct Group(*mut GlGroup);

    // SAFETY: c10d process groups are thread-safe; the pointer is owned and freed once.
    unsafe impl Send for Group {}
    unsafe impl Sync for Group {}

    impl Group {
        /// A group for a model on `device`, its backend's name, and where its collectives'
        /// tensors live.
        pub fn new(
            host: &str,
            port: u16,
            rank: usize,
            world: usize,
            timeout: Duration,
            device: Device,
        ) -> Result<(Self, &'static str, Device)> {
            let host = CString::new(host)?;
            let mut err = std::ptr::null_mut();
            let (port, rank, world, ms) =
                (port as c_int, rank as c_int, world as c_int, timeout.as_millis() as c_longlong);
            let (g, backend, on) = match device {
                // SAFETY: valid C string and out-pointer; the shim catches every C++ exception.
                #[cfg(c10d_nccl)]
                Device::Cuda(i) => (
                    unsafe { nc_group_new(host.as_ptr(), port, rank, world, i as c_int, ms, &mut err) },
                    "nccl",
                    device,
                ),
                // SAFETY: as above.
                _ => (unsafe { gl_group_new(host.as_ptr(), port, rank, world, ms, &mut err) }, "gloo", Device::Cpu),
            };
            if g.is_null() {
                bail!("{}", take_error(err));
            }
            Ok((Self(g), backend, on))
        }

        pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
            let mut err = std::ptr::null_mut();
            // SAFETY: `t` is a live tensor handle (tch's is an at::Tensor*), the group is live.
            check(unsafe { gl_all_reduce_sum(self.0, t.as_ptr() as *mut c_void, &mut err) }, err)
        }

        pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
            let mut err = std::ptr::null_mut();
            // SAFETY: as in `all_reduce_sum`.
            check(unsafe { gl_broadcast(self.0, t.as_ptr() as *mut c_void, root as c_int, &mut err) }, err)
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: created by gl_group_new, freed once.
            unsafe { gl_group_free(self.0) };
        }
    }
}

/// Without the shim (no c10d or Gloo headers at build time) no group can be formed: joining
/// says how to get it, and the collectives cannot be reached.
#[cfg(not(c10d))]
mod shim {
    use std::time::Duration;

    use anyhow::{bail, Result};
    use tch::{Device, Tensor};

    pub enum Group {}

    impl Group {
        pub fn new(
            _: &str,
            _: u16,
            _: usize,
            _: usize,
            _: Duration,
            _: Device,
        ) -> Result<(Self, &'static str, Device)> {
            bail!(
                "this gptlab was built without data-parallel training (no Gloo headers at build time): install \
                 them (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild"
            )
        }
        pub fn all_reduce_sum(&self, _: &Tensor) -> Result<()> {
            match *self {}
        }
        pub fn broadcast(&self, _: &Tensor, _: usize) -> Result<()> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launch environment `pairs` describe.
    fn env_of(pairs: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        DistEnv::from_vars(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn ranks_share_a_batch_row_by_row_and_a_rank_without_a_row_gets_a_weightless_one() {
        let batch = [7, 3, 9, 4, 1];
        assert_eq!(rank_share(&batch, (0, 1)), (batch.to_vec(), 1.0));
        assert_eq!(rank_share(&batch, (0, 2)), (vec![7, 9, 1], 1.0));
        assert_eq!(rank_share(&batch, (1, 2)), (vec![3, 4], 1.0));
        assert_eq!(rank_share(&batch[..1], (1, 2)), (vec![7], 0.0));
        assert_eq!(rank_share(&batch[..2], (2, 3)), (vec![7], 0.0));
    }

    #[test]
    fn the_launch_environment_reads_like_torchruns() -> Result<()> {
        assert_eq!(env_of(&[])?, None);
        assert_eq!(env_of(&[("WORLD_SIZE", "1"), ("RANK", "0")])?, None);
        assert_eq!(
            env_of(&[("WORLD_SIZE", "4"), ("RANK", "2"), ("LOCAL_RANK", "0")])?,
            Some(DistEnv {
                rank: 2,
                world_size: 4,
                local_rank: 0,
                master_addr: "127.0.0.1".into(),
                master_port: 29500
            })
        );
        for (pairs, reason) in [
            (&[("WORLD_SIZE", "2")][..], "RANK is not set"),
            (&[("WORLD_SIZE", "2"), ("RANK", "2")][..], "not below WORLD_SIZE"),
            (&[("WORLD_SIZE", "two")][..], "WORLD_SIZE is not a number"),
            (&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "70000")][..], "is not a port"),
        ] {
            let err = env_of(pairs).err().context("a bad launch environment is an error")?.to_string();
            assert!(err.contains(reason), "{err}");
        }
        Ok(())
    }
}
