//! Data-parallel training: the process group from the environment (torchrun's variables, or
//! Slurm's), gradient averaging over it, and a torchrun-like launcher for
//! `pupil train --nproc-per-node N`.
//!
//! Every rank runs the same program on its part of each global batch; gradients are summed
//! over the ranks and divided by the world size (PyTorch DDP's mean), batch norm statistics
//! are synchronized (the paper trained with sync BN), and rank 0 alone writes metrics,
//! checkpoints and the final model.
use crate::error::{bail, Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use pupil_nn::ParamKind;
use pupil_ops::dist::{all_reduce, Collective, TcpGroup};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

/// Where this process sits in a data-parallel job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// `host:port` of rank 0's rendezvous.
    pub master: String,
}

impl DistEnv {
    /// From torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; failing those,
    /// Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (with MASTER_ADDR/MASTER_PORT set in
    /// the batch script). `None` for a single process.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::msg(format!("{k}={v:?} is not a number"))),
            }
        };
        let (rank, world, local) = match num("WORLD_SIZE")? {
            Some(w) => (num("RANK")?, w, num("LOCAL_RANK")?),
            None => match num("SLURM_NTASKS")? {
                Some(w) => (num("SLURM_PROCID")?, w, num("SLURM_LOCALID")?),
                None => return Ok(None),
            },
        };
        // A job of one runs the data-parallel code path too when it names a rendezvous
        // (a one-GPU check of the NCCL path); otherwise one process trains alone.
        if world == 0 || (world == 1 && get("MASTER_ADDR").is_none()) {
            return Ok(None);
        }
        let Some(rank) = rank else {
            bail!("WORLD_SIZE={world} is set but RANK (or SLURM_PROCID) is not")
        };
        if rank >= world {
            bail!("RANK={rank} is not below WORLD_SIZE={world}")
        }
        let Some(addr) = get("MASTER_ADDR") else {
            bail!("a {world}-process job needs MASTER_ADDR (rank 0's host)")
        };
        let port = get("MASTER_PORT").unwrap_or_else(|| "29500".into());
        Ok(Some(DistEnv {
            rank,
            world,
            local_rank: local.unwrap_or(rank),
            master: format!("{addr}:{port}"),
        }))
    }
}

/// The device a rank trains on: with CUDA, one GPU per process (`cuda:LOCAL_RANK`).
pub fn device_spec_for(configured: &str, env: &DistEnv) -> String {
    match configured.starts_with("cuda") {
        true => format!("cuda:{}", env.local_rank),
        false => configured.to_string(),
    }
}

/// Joins the job's process group: TCP on CPU, NCCL (rendezvous over TCP) on CUDA;
/// `PUPIL_DIST_BACKEND=tcp|nccl` overrides.
pub fn init_group(env: &DistEnv, device: &Device) -> Result<Arc<dyn Collective>> {
    let addr = env
        .master
        .to_socket_addrs()
        .map_err(|e| Error::msg(format!("MASTER_ADDR {}: {e}", env.master)))?
        .next()
        .ok_or_else(|| Error::msg(format!("{} resolves to nothing", env.master)))?;
    let timeout = std::env::var("PUPIL_DIST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let backend = std::env::var("PUPIL_DIST_BACKEND").unwrap_or_default();
    let nccl = match backend.as_str() {
        "" => device.is_cuda(),
        "nccl" => true,
        "tcp" => false,
        other => bail!("PUPIL_DIST_BACKEND={other}: expected nccl or tcp"),
    };
    if nccl && !device.is_cuda() {
        bail!("PUPIL_DIST_BACKEND=nccl needs a CUDA device")
    }
    let tcp = TcpGroup::connect(addr, env.rank, env.world, Duration::from_secs(timeout))?;
    // TCP on CUDA (through host memory) serves where NCCL cannot, e.g. two ranks on one GPU.
    if nccl {
        #[cfg(feature = "nccl")]
        return Ok(Arc::new(pupil_ops::dist::NcclGroup::new(tcp, device)?));
        #[cfg(not(feature = "nccl"))]
        bail!("data-parallel training on CUDA needs a build with the `nccl` feature")
    }
    Ok(Arc::new(tcp))
}

/// Where a run executes: its device and, in a data-parallel job, the process group.
/// Passed down explicitly; nothing about the job lives in global state.
#[derive(Clone)]
pub struct Runtime {
    pub device: Device,
    pub group: Option<Arc<dyn Collective>>,
}

impl Runtime {
    /// One process on the device of a spec (`cpu`, `cuda:N`).
    pub fn single(device_spec: &str) -> Result<Self> {
        Ok(Runtime {
            device: crate::model::device(device_spec)?,
            group: None,
        })
    }

    /// This process's place from the environment (torchrun, Slurm): a rank of a job, whose
    /// device becomes `cuda:LOCAL_RANK` on CUDA; or a single process.
    pub fn from_env(device_spec: &str) -> Result<Self> {
        let Some(env) = DistEnv::from_env()? else {
            return Self::single(device_spec);
        };
        let device = crate::model::device(&device_spec_for(device_spec, &env))?;
        let group = init_group(&env, &device).map_err(|e| {
            Error::msg(format!(
                "rank {} of {}: joining {}: {e}",
                env.rank, env.world, env.master
            ))
        })?;
        Ok(Runtime {
            device,
            group: Some(group),
        })
    }

    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank())
    }

    pub fn world_size(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world_size())
    }

    /// Rank 0 alone writes metrics, checkpoints and the model.
    pub fn is_lead(&self) -> bool {
        self.rank() == 0
    }
}

/// Replaces every parameter's gradient by its mean over the ranks, in one all-reduce of
/// all gradients packed together. A parameter without a gradient on this rank counts as
/// zeros, so every rank sends the same layout.
pub fn average_gradients(
    grads: &mut GradStore,
    params: &[(String, Var, ParamKind)],
    group: &Arc<dyn Collective>,
) -> Result<()> {
    let world = group.world_size();
    if params.is_empty() {
        return Ok(());
    }
    // Packed in the parameters' own type (f32 master weights; f64 in gradient tests).
    let dt = params[0].1.dtype();
    let mut flat = Vec::with_capacity(params.len());
    for (_, v, _) in params {
        let t = v.as_tensor();
        let g = match grads.get(t) {
            Some(g) => g.detach().to_dtype(dt)?,
            None => Tensor::zeros(t.shape(), dt, t.device())?,
        };
        flat.push(g.flatten_all()?);
    }
    let packed = Tensor::cat(&flat, 0)?;
    let summed = (all_reduce(&packed, group)? / world as f64)?;
    let mut at = 0;
    for (_, v, _) in params {
        let t = v.as_tensor();
        let n = t.elem_count();
        let g = summed
            .narrow(0, at, n)?
            .reshape(t.shape())?
            .to_dtype(t.dtype())?;
        grads.insert(t, g);
        at += n;
    }
    Ok(())
}

/// Mean of a few host values over the ranks.
pub fn mean_over_ranks(group: Option<&Arc<dyn Collective>>, values: &mut [f64]) -> Result<()> {
    if let Some(g) = group {
        if g.world_size() > 1 {
            g.all_reduce_f64(values)?;
            let w = g.world_size() as f64;
            values.iter_mut().for_each(|v| *v /= w);
        }
    }
    Ok(())
}

/// Set in the processes the launcher starts, which run as ranks instead of launching again.
const LAUNCHED: &str = "PUPIL_LAUNCHED";

/// Whether this process was started by [`Launch::run`] (so it is a rank, not a launcher).
pub fn is_launched() -> bool {
    std::env::var_os(LAUNCHED).is_some()
}

/// A torchrun-like job on this node: `nproc_per_node` ranks of a `nnodes`-node job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl Launch {
    /// Whether this process starts the ranks (rather than being one, or training alone).
    pub fn starts_ranks(&self) -> bool {
        (self.nproc_per_node > 1 || self.nnodes > 1) && !is_launched()
    }

    /// Runs this node's ranks, each with this program's own arguments, until all end.
    pub fn run(&self) -> Result<()> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let master = (self.master_addr.as_str(), self.master_port);
        launch(
            self.nproc_per_node,
            self.nnodes,
            self.node_rank,
            master,
            &args,
        )
    }
}

/// Runs `nproc` copies of this program with `args`, as torchrun does: each child gets
/// RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. When one fails the others are
/// stopped and the error names it.
pub fn launch(
    nproc: usize,
    nnodes: usize,
    node_rank: usize,
    master: (&str, u16),
    args: &[std::ffi::OsString],
) -> Result<()> {
    if nproc == 0 || nnodes == 0 || node_rank >= nnodes {
        bail!("bad launch: {nproc} processes per node, node {node_rank} of {nnodes}")
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::msg(format!("finding this program: {e}")))?;
    let world = nproc * nnodes;
    let mut children = Vec::new();
    for local in 0..nproc {
        let rank = node_rank * nproc + local;
        let child = std::process::Command::new(&exe)
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", master.0)
            .env("MASTER_PORT", master.1.to_string())
            .env(LAUNCHED, "1")
            .spawn()
            .map_err(|e| Error::msg(format!("starting rank {rank}: {e}")))?;
        children.push((rank, child));
    }
    let mut failed: Option<String> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (rank, _) = children.remove(i);
                    if !status.success() && failed.is_none() {
                        failed = Some(format!("rank {rank} exited with {status}"));
                        for (_, c) in children.iter_mut() {
                            let _ = c.kill();
                        }
                    }
                }
                Ok(None) => i += 1,
                Err(e) => bail!("waiting for rank {}: {e}", children[i].0),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failed {
        Some(f) => bail!("{f}; the other ranks were stopped"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(kv: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_follows_torchrun_then_slurm() {
        assert_eq!(DistEnv::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(
            DistEnv::from_vars(vars(&[("WORLD_SIZE", "1")])).unwrap(),
            None
        );
        let e = DistEnv::from_vars(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (3, 4, 1));
        assert_eq!(e.master, "node0:29500");
        assert_eq!(device_spec_for("cuda:0", &e), "cuda:1");
        assert_eq!(device_spec_for("cpu", &e), "cpu");
        let s = DistEnv::from_vars(vars(&[
            ("SLURM_NTASKS", "8"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "1234"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.rank, s.world, s.local_rank, s.master.as_str()),
            (5, 8, 1, "10.0.0.1:1234")
        );
        for bad in [
            vec![("WORLD_SIZE", "2"), ("MASTER_ADDR", "x")],
            vec![("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "x")],
            vec![("WORLD_SIZE", "2"), ("RANK", "0")],
            vec![("WORLD_SIZE", "two")],
        ] {
            assert!(DistEnv::from_vars(vars(&bad)).is_err(), "{bad:?}");
        }
    }

    /// Loss and gradients of a small EfficientNet classifier (batch norm in train mode) on
    /// `x`, optionally as one rank of `group` with synchronized batch norm and averaged
    /// gradients.
    fn grads_of(
        x: &Tensor,
        labels: &[u32],
        group: Option<Arc<dyn Collective>>,
    ) -> Vec<(String, Vec<f64>)> {
        use pupil_backbones::efficientnet::{EfficientNet, EfficientNetConfig};
        use pupil_nn::{Classifier, ParamStore};
        // f64 throughout: the comparison is about the arithmetic, not f32 rounding.
        let store = ParamStore::new(&Device::Cpu, candle_core::DType::F64, 3)
            .with_norm_group(group.clone());
        let mut cfg = EfficientNetConfig::custom(0.25, 0.25);
        cfg.dropout = 0.0;
        cfg.drop_path = 0.0;
        cfg.num_classes = 5;
        let model = EfficientNet::new(&store.root(), &cfg).unwrap();
        let logits = model.logits_t(x, true).unwrap();
        let n = labels.len();
        let idx = Tensor::from_vec(labels.to_vec(), (n, 1), &Device::Cpu).unwrap();
        let lp = pupil_ops::log_softmax_last_dim(&logits).unwrap();
        let loss = (lp
            .gather(&idx, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap()
            / n as f64)
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let params = store.trainable();
        if let Some(g) = &group {
            average_gradients(&mut grads, &params, g).unwrap();
        }
        params
            .iter()
            .map(|(name, v, _)| {
                let g = grads.get(v.as_tensor()).unwrap();
                (
                    name.clone(),
                    g.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn two_ranks_with_sync_bn_give_the_single_process_gradients() {
        // Fixed inputs (candle's CPU generator cannot be seeded).
        let v: Vec<f64> = (0..4 * 3 * 32 * 32)
            .map(|i| (i as f64 * 0.618).sin() * 1.7 + (i % 7) as f64 * 0.1)
            .collect();
        let x = Tensor::from_vec(v, (4, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = [0u32, 3, 1, 4];
        let whole = grads_of(&x, &labels, None);
        let members = pupil_ops::dist::ThreadGroup::new(2);
        let handles: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(r, m)| {
                let xs = x.narrow(0, 2 * r, 2).unwrap();
                let ls = labels[2 * r..2 * r + 2].to_vec();
                std::thread::spawn(move || grads_of(&xs, &ls, Some(Arc::new(m))))
            })
            .collect();
        let ranks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut worst = 0f64;
        for (k, (name, g)) in whole.iter().enumerate() {
            for r in &ranks {
                assert_eq!(&r[k].0, name);
                // Floor: a bias feeding a batch norm has an exactly-zero gradient, which
                // both sides compute as rounding noise (~1e-15).
                let scale = g.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
                for (a, b) in r[k].1.iter().zip(g) {
                    worst = worst.max((a - b).abs() / scale);
                }
            }
        }
        // Same arithmetic up to summation order (f64).
        assert!(worst < 1e-7, "relative gradient difference {worst}");
        // Without synchronization the batch statistics differ and so do the gradients.
        let members = pupil_ops::dist::ThreadGroup::new(2);
        let handles: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(r, m)| {
                let xs = x.narrow(0, 2 * r, 2).unwrap();
                let ls = labels[2 * r..2 * r + 2].to_vec();
                std::thread::spawn(move || {
                    let g: Arc<dyn Collective> = Arc::new(m);
                    // averaged gradients, local statistics
                    let local = grads_of(&xs, &ls, None);
                    let mut flat: Vec<f64> = local
                        .iter()
                        .flat_map(|(_, v)| v.iter().map(|&x| x / 2.0))
                        .collect();
                    g.all_reduce_f64(&mut flat).unwrap();
                    flat
                })
            })
            .collect();
        let unsynced = handles.into_iter().next().unwrap().join().unwrap();
        let flat_whole: Vec<f64> = whole.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let diff = unsynced
            .iter()
            .zip(&flat_whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(diff > 1e-3, "local batch norm should not match ({diff})");
    }
}
