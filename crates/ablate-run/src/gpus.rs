//! Which local GPU each instance runs on: a share of one device for a fractional `gpus`
//! (`0.25` packs four instances on a GPU), whole idle devices for `gpus` above one; a device is
//! never given more than its whole.

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

    /// The `device` a job on `devices` records: `cuda:N`, or `cuda:N,M` for several.
    pub(crate) fn name(devices: &[usize]) -> String {
        let list: Vec<String> = devices.iter().map(usize::to_string).collect();
        format!("cuda:{}", list.join(","))
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
        assert_eq!(GpuPool::name(&[0, 1]), "cuda:0,1");
        assert_eq!(GpuPool::name(&[3]), "cuda:3");
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
