//! `--device auto|cpu|cuda[:N]`, resolved against what this machine has, and the matmul peak
//! of a device that MFU is measured against.

use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Parses a device name; asking for CUDA where there is none is an error, not a silent CPU run.
/// In a launched rank (`LOCAL_RANK` set, as torchrun sets it), `auto` (where there is CUDA) and
/// `cuda` mean the rank's own GPU, `cuda:LOCAL_RANK`, so the ranks of one machine do not share
/// the first one; a rank without a GPU of its own is an error, not a CPU rank among GPU ones.
pub fn parse_device(name: &str) -> Result<Device> {
    let local = crate::dist::DistEnv::from_env()?.map_or(0, |env| env.local_rank);
    let cuda_count = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
    let index = match name {
        "cpu" => return Ok(Device::Cpu),
        "auto" if cuda_count == 0 => return Ok(Device::Cpu),
        "auto" | "cuda" => local,
        _ => match name.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(i) => i,
            None => bail!("unknown device {name:?}: expected auto, cpu, cuda or cuda:N"),
        },
    };
    if index >= cuda_count {
        let rank = if name.contains(':') || local == 0 { String::new() } else { format!(" (LOCAL_RANK {local})") };
        bail!("device cuda:{index}{rank} requested but this machine has {cuda_count} CUDA device(s)");
    }
    Ok(Device::Cuda(index))
}

/// Sets libtorch's intra-op thread count when the user asked for one.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n as i32);
    }
    Ok(())
}

/// Achieved memory bandwidth in GB/s: bytes read and written by copying a 256 MiB buffer, best
/// of five (the bound a memory-bound step such as batch-1 decoding is measured against).
pub fn measure_bandwidth_gb_s(device: Device) -> Result<f64> {
    let n: i64 = 64 << 20; // fp32 elements: 256 MiB
    let src = Tensor::ones([n], (Kind::Float, device));
    let mut dst = Tensor::zeros([n], (Kind::Float, device));
    let mut copy = || {
        dst.copy_(&src);
        dst.get(n - 1).double_value(&[]) // forces completion on CUDA
    };
    copy();
    let secs = (0..5)
        .map(|_| {
            let start = Instant::now();
            copy();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Ok(2.0 * (n * 4) as f64 / secs / 1e9)
}

/// Achieved TFLOP/s of a large square matmul in `kind`: the practical peak MFU is measured
/// against (vendor peaks are rarely reachable). 1024² on CPU, 8192² on CUDA.
pub fn measure_peak_tflops(device: Device, kind: Kind) -> Result<f64> {
    let n: i64 = if device.is_cuda() { 8192 } else { 1024 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let run = |reps: usize| {
        let mut c = a.matmul(&b);
        for _ in 1..reps {
            c = a.matmul(&b);
        }
        c.sum(Kind::Float).double_value(&[]) // forces completion on CUDA
    };
    run(2);
    let reps = if device.is_cuda() { 50 } else { 5 };
    // Best of five timings: the peak is what the device can do, not what a noisy moment gave.
    let secs = (0..5)
        .map(|_| {
            let start = Instant::now();
            run(reps);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Ok(2.0 * (n as f64).powi(3) * reps as f64 / secs / 1e12)
}
