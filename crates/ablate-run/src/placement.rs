//! Where an instance computes: the typed [`Placement`] a [`crate::Job`] carries (its device,
//! the GPUs the local scheduler gave it, what its programs see), this machine's GPUs
//! ([`local_gpus`]), and the pool the local scheduler shares them out from: a share of one
//! device for a fractional `gpus` (`0.25` packs four instances on a GPU), whole idle devices
//! for `gpus` above one; a device is never given more than its whole.

use ablate_spec::Device;
use serde::{Deserialize, Serialize};

/// Where one attempt of an instance computes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The device its op computes on: the CPU; `cuda:N`, the GPU the local scheduler gave it
    /// (the first of several); or `cuda`, the first GPU it sees (on a Slurm node).
    pub device: Device,
    /// Every GPU the local scheduler gave it, by index among this machine's (the first is
    /// `device`'s); empty where it gave none or something else assigns them (Slurm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
    /// What a program it starts sees as `CUDA_VISIBLE_DEVICES` (`"1"`, `"0,2"`; empty: none),
    /// when the local scheduler shares out this machine's GPUs; `None` where something else
    /// does (a Slurm allocation) or there are none to manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<String>,
}

impl Placement {
    /// On `device`, with no GPUs assigned yet.
    pub fn on(device: Device) -> Self {
        Placement {
            device,
            gpus: Vec::new(),
            visible: None,
        }
    }

    /// How manifests and `runs.parquet` name it: `cpu`, `cuda`, `cuda:0`, `cuda:0,2`.
    pub fn name(&self) -> String {
        match (self.device, self.gpus.as_slice()) {
            (Device::Cuda(_), [_, _, ..]) => {
                let all: Vec<String> = self.gpus.iter().map(u32::to_string).collect();
                format!("cuda:{}", all.join(","))
            }
            (device, _) => device.to_string(),
        }
    }
}

/// This machine's GPUs as the local scheduler shares them out, by the names a program's
/// `CUDA_VISIBLE_DEVICES` gives them: those `CUDA_VISIBLE_DEVICES` names when it is set (a
/// Slurm allocation, or the user's choice), else one per GPU `driver` counts (`0`, `1`, …).
pub fn local_gpus(driver: impl FnOnce() -> Result<usize, String>) -> Result<Vec<String>, String> {
    if let Ok(visible) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return Ok(visible
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect());
    }
    Ok((0..driver()?).map(|d| d.to_string()).collect())
}

/// The GPUs the NVIDIA driver shows, without CUDA linked in: one directory per GPU.
pub fn driver_gpus() -> Result<usize, String> {
    Ok(std::fs::read_dir("/proc/driver/nvidia/gpus").map_or(0, |d| d.count()))
}

/// Shares are compared with this slack, so four quarters fill a device exactly.
const EPS: f64 = 1e-9;

/// The share of each of this machine's GPUs (`cuda:0` …) in use.
#[derive(Clone, Debug)]
pub(crate) struct GpuPool {
    used: Vec<f64>,
}

impl GpuPool {
    pub(crate) fn new(devices: usize) -> Self {
        GpuPool {
            used: vec![0.0; devices],
        }
    }

    /// Devices for an instance needing `need` (> 0) GPUs, on device `pin` only if given; `None`
    /// while they are not free. A share of at most one goes to the least-used device with room
    /// (so small runs spread over idle GPUs before they share one); more takes `⌈need⌉` idle
    /// devices.
    pub(crate) fn take(&mut self, need: f64, pin: Option<u32>) -> Option<Vec<usize>> {
        let n = self.used.len();
        let candidates: Vec<usize> = match pin {
            Some(d) => vec![d as usize],
            None => (0..n).collect(),
        };
        if need <= 1.0 + EPS {
            let d = candidates
                .into_iter()
                .filter(|&d| d < n && self.used[d] + need <= 1.0 + EPS)
                .min_by(|&a, &b| self.used[a].total_cmp(&self.used[b]))?;
            self.used[d] += need;
            return Some(vec![d]);
        }
        let k = need.ceil() as usize;
        let idle: Vec<usize> = candidates
            .into_iter()
            .filter(|&d| d < n && self.used[d] <= EPS)
            .take(k)
            .collect();
        if idle.len() < k {
            return None;
        }
        for &d in &idle {
            self.used[d] = 1.0;
        }
        Some(idle)
    }

    /// Gives back what [`GpuPool::take`] returned for the same `need`.
    pub(crate) fn give(&mut self, devices: &[usize], need: f64) {
        let share = need.min(1.0);
        for &d in devices {
            self.used[d] = (self.used[d] - share).max(0.0);
        }
    }

    /// Why an instance needing `need` GPUs (on `pin`) can never run here, if it cannot.
    pub(crate) fn never_fits(&self, need: f64, pin: Option<u32>) -> Option<String> {
        let n = self.used.len();
        if n == 0 {
            return Some(format!(
                "needs {need} GPU(s), but this machine offers none to ablate (a CPU-only build or no GPU found); set `resources.gpus: 0` to run it on the CPU"
            ));
        }
        match pin {
            Some(d) if d as usize >= n => Some(format!(
                "asks for GPU `cuda:{d}`, but this machine has {n} GPU(s) (cuda:0 to cuda:{})",
                n - 1
            )),
            Some(d) if need > 1.0 + EPS => Some(format!(
                "needs {need} GPUs but is pinned to one (`cuda:{d}`); use `device: cuda` to let ablate pick them"
            )),
            _ if need.ceil() as usize > n => {
                Some(format!("needs {need} GPU(s), but this machine has {n}"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_pack_four_to_a_device_after_spreading() {
        let mut p = GpuPool::new(2);
        // Spread first: the least-used device, lowest index on ties.
        let got: Vec<Vec<usize>> = (0..8).map(|_| p.take(0.25, None).unwrap()).collect();
        assert_eq!(
            got,
            [[0], [1], [0], [1], [0], [1], [0], [1]].map(|d| d.to_vec())
        );
        // Full: a ninth waits.
        assert_eq!(p.take(0.25, None), None);
        p.give(&[1], 0.25);
        assert_eq!(p.take(0.25, None), Some(vec![1]));
    }

    #[test]
    fn whole_devices_are_idle_ones_and_pins_are_kept() {
        let mut p = GpuPool::new(3);
        assert_eq!(p.take(0.5, Some(2)), Some(vec![2]));
        assert_eq!(p.take(0.6, Some(2)), None, "0.5 + 0.6 > 1");
        assert_eq!(p.take(2.0, None), Some(vec![0, 1]));
        assert_eq!(p.take(1.0, None), None, "no idle device left");
        assert_eq!(p.take(0.5, None), Some(vec![2]));
        p.give(&[0, 1], 2.0);
        assert_eq!(
            p.take(1.5, None),
            Some(vec![0, 1]),
            "1.5 takes two whole devices"
        );
    }

    #[test]
    fn a_placement_is_named_by_its_devices() {
        let on = |device, gpus: &[u32]| Placement {
            device,
            gpus: gpus.to_vec(),
            visible: None,
        };
        assert_eq!(on(Device::Cpu, &[]).name(), "cpu");
        assert_eq!(on(Device::Cuda(None), &[]).name(), "cuda");
        assert_eq!(on(Device::Cuda(Some(3)), &[3]).name(), "cuda:3");
        assert_eq!(on(Device::Cuda(Some(0)), &[0, 1]).name(), "cuda:0,1");
    }

    #[test]
    fn what_can_never_fit_says_why() {
        let p = GpuPool::new(2);
        assert!(p.never_fits(0.5, Some(2)).unwrap().contains("cuda:2"));
        assert!(p.never_fits(2.0, Some(0)).unwrap().contains("pinned"));
        assert!(p.never_fits(3.0, None).unwrap().contains("has 2"));
        assert_eq!(p.never_fits(2.0, None), None);
        assert_eq!(p.never_fits(1.0, Some(1)), None);
        assert!(
            GpuPool::new(0)
                .never_fits(0.5, None)
                .unwrap()
                .contains("offers none")
        );
    }
}
