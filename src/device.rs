//! `--device auto|cpu|cuda[:N]`, resolved against what this machine has.

use anyhow::{bail, Result};
use tch::Device;

/// Parses a device name; asking for CUDA where there is none is an error, not a silent CPU run.
pub fn parse_device(name: &str) -> Result<Device> {
    let cuda_count = || {
        if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        }
    };
    match name {
        "auto" => Ok(if cuda_count() > 0 { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
                    Some(i) => i,
                    None => bail!("unknown device {name:?}: expected auto, cpu, cuda or cuda:N"),
                },
                None => bail!("unknown device {name:?}: expected auto, cpu, cuda or cuda:N"),
            };
            let n = cuda_count();
            if index >= n {
                bail!("device {name} requested but this machine has {n} CUDA device(s)");
            }
            Ok(Device::Cuda(index))
        }
    }
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
