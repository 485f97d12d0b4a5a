//! Collectives for data-parallel training: a [`Collective`] sums buffers over the processes
//! (or threads) of a group, and [`all_reduce`] is that sum as a differentiable tensor op,
//! which is all synchronized batch norm and gradient averaging need.
//!
//! Groups: [`Solo`] (world size 1), [`ThreadGroup`] (threads of one process, for tests),
//! [`TcpGroup`] (processes over TCP, CPU tensors; also the rendezvous NCCL starts from) and,
//! with the `nccl` feature, `NcclGroup` (CUDA tensors reduced on the GPUs).
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// A group of ranks that can sum buffers.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Element-wise sum over the ranks, in place; every rank passes the same length. The
    /// sum runs in rank order, so every rank gets bit-identical results.
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Rank `root`'s bytes on every rank.
    fn broadcast_bytes(&self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>>;
    /// Whether [`Collective::reduce_cuda`] sums CUDA buffers on the device (NCCL); other
    /// groups reduce CUDA tensors through host memory.
    fn reduces_on_gpu(&self) -> bool {
        false
    }
    /// Sum of a contiguous CUDA buffer on the device; `None` when the group cannot.
    #[cfg(feature = "cuda")]
    fn reduce_cuda(
        &self,
        _s: &candle_core::CudaStorage,
        _l: &Layout,
    ) -> Result<Option<candle_core::CudaStorage>> {
        Ok(None)
    }
}

/// The group of one.
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: Vec<u8>, _: usize) -> Result<Vec<u8>> {
        Ok(bytes)
    }
}

struct Shared {
    slots: Vec<Option<Vec<f64>>>,
    bytes: Option<Vec<u8>>,
    result: Vec<f64>,
}

/// Ranks that are threads of one process.
pub struct ThreadGroup {
    rank: usize,
    world: usize,
    shared: Arc<Mutex<Shared>>,
    barrier: Arc<Barrier>,
}

impl ThreadGroup {
    /// One member per rank; hand member `r` to thread `r`.
    pub fn new(world: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Mutex::new(Shared {
            slots: vec![None; world],
            bytes: None,
            result: Vec::new(),
        }));
        let barrier = Arc::new(Barrier::new(world));
        (0..world)
            .map(|rank| ThreadGroup {
                rank,
                world,
                shared: shared.clone(),
                barrier: barrier.clone(),
            })
            .collect()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Shared>> {
        self.shared
            .lock()
            .map_err(|_| candle_core::Error::Msg("thread group: a rank panicked".into()))
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.lock()?.slots[self.rank] = Some(buf.to_vec());
        if self.barrier.wait().is_leader() {
            let mut s = self.lock()?;
            let mut sum = vec![0f64; buf.len()];
            for r in 0..self.world {
                let part = s.slots[r].take().unwrap_or_default();
                if part.len() != sum.len() {
                    bail!(
                        "all_reduce: rank {r} sent {} values, expected {}",
                        part.len(),
                        sum.len()
                    )
                }
                sum.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
            s.result = sum;
        }
        self.barrier.wait();
        buf.copy_from_slice(&self.lock()?.result);
        self.barrier.wait();
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        if self.rank == root {
            self.lock()?.bytes = Some(bytes);
        }
        self.barrier.wait();
        let out = self.lock()?.bytes.clone().unwrap_or_default();
        self.barrier.wait();
        Ok(out)
    }
}

/// Ranks that are processes, connected in a star through rank 0 over TCP (rank 0 listens on
/// the master address, as torchrun's store does). Meant for CPU training and as the
/// rendezvous for NCCL; GPU gradients go through NCCL.
pub struct TcpGroup {
    rank: usize,
    world: usize,
    /// Rank 0: a stream per other rank (index r - 1); others: the stream to rank 0.
    peers: Mutex<Vec<TcpStream>>,
}

fn io_err(what: &str, e: std::io::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: {e}"))
}

fn send_frame(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    s.write_all(&(data.len() as u64).to_le_bytes())?;
    s.write_all(data)
}

fn recv_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut n = [0u8; 8];
    s.read_exact(&mut n)?;
    let mut buf = vec![0u8; u64::from_le_bytes(n) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn f64s_to_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_to_f64s(b: &[u8], out: &mut [f64]) -> Result<()> {
    if b.len() != out.len() * 8 {
        bail!(
            "all_reduce: got {} bytes, expected {}",
            b.len(),
            out.len() * 8
        )
    }
    for (o, c) in out.iter_mut().zip(b.chunks_exact(8)) {
        *o = f64::from_le_bytes(c.try_into().expect("8 bytes"));
    }
    Ok(())
}

impl TcpGroup {
    /// Joins the group: rank 0 listens on `master` and waits for the others, which connect
    /// (retrying until `timeout`) and say their rank.
    pub fn connect(
        master: SocketAddr,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self> {
        if world == 0 || rank >= world {
            bail!("rank {rank} is not in a world of {world}")
        }
        let deadline = Instant::now() + timeout;
        let mut peers = Vec::new();
        if rank == 0 {
            let l = TcpListener::bind(master)
                .map_err(|e| io_err(&format!("rank 0: listening on {master}"), e))?;
            l.set_nonblocking(true).map_err(|e| io_err("listener", e))?;
            let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
            while slots.iter().any(Option::is_none) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).map_err(|e| io_err("accept", e))?;
                        s.set_nodelay(true).ok();
                        let mut r = [0u8; 8];
                        s.read_exact(&mut r).map_err(|e| io_err("handshake", e))?;
                        let (r, w) = (
                            u32::from_le_bytes(r[..4].try_into().expect("4")) as usize,
                            u32::from_le_bytes(r[4..].try_into().expect("4")) as usize,
                        );
                        if w != world || r == 0 || r >= world || slots[r - 1].is_some() {
                            bail!("rank 0: a peer claims rank {r} of {w} (world is {world})")
                        }
                        slots[r - 1] = Some(s);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            let missing: Vec<usize> = slots
                                .iter()
                                .enumerate()
                                .filter(|(_, s)| s.is_none())
                                .map(|(i, _)| i + 1)
                                .collect();
                            bail!("rank 0: ranks {missing:?} did not join {master} within {timeout:?}")
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(io_err("accept", e)),
                }
            }
            peers = slots.into_iter().flatten().collect();
        } else {
            let mut s = loop {
                match TcpStream::connect_timeout(&master, Duration::from_secs(2)) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(io_err(&format!("rank {rank}: connecting to {master}"), e))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            s.set_nodelay(true).ok();
            let mut hello = (rank as u32).to_le_bytes().to_vec();
            hello.extend((world as u32).to_le_bytes());
            s.write_all(&hello).map_err(|e| io_err("handshake", e))?;
            peers.push(s);
        }
        Ok(TcpGroup {
            rank,
            world,
            peers: Mutex::new(peers),
        })
    }

    fn peers(&self) -> Result<std::sync::MutexGuard<'_, Vec<TcpStream>>> {
        self.peers
            .lock()
            .map_err(|_| candle_core::Error::Msg("tcp group: poisoned".into()))
    }
}

impl Collective for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        let mut peers = self.peers()?;
        if self.rank == 0 {
            let mut parts = vec![Vec::new(); self.world];
            for (i, p) in peers.iter_mut().enumerate() {
                parts[i + 1] = recv_frame(p).map_err(|e| io_err(&format!("rank {}", i + 1), e))?;
            }
            let mut tmp = vec![0f64; buf.len()];
            for (r, part) in parts.iter().enumerate().skip(1) {
                bytes_to_f64s(part, &mut tmp)
                    .map_err(|e| candle_core::Error::Msg(format!("rank {r}: {e}")))?;
                buf.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
            }
            let out = f64s_to_bytes(buf);
            for (i, p) in peers.iter_mut().enumerate() {
                send_frame(p, &out).map_err(|e| io_err(&format!("rank {}", i + 1), e))?;
            }
        } else {
            let p = &mut peers[0];
            send_frame(p, &f64s_to_bytes(buf)).map_err(|e| io_err("to rank 0", e))?;
            let back = recv_frame(p).map_err(|e| io_err("from rank 0", e))?;
            bytes_to_f64s(&back, buf)?;
        }
        Ok(())
    }
    fn broadcast_bytes(&self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        if root != 0 {
            bail!("tcp group: broadcasts start at rank 0")
        }
        let mut peers = self.peers()?;
        if self.rank == 0 {
            for (i, p) in peers.iter_mut().enumerate() {
                send_frame(p, &bytes).map_err(|e| io_err(&format!("rank {}", i + 1), e))?;
            }
            Ok(bytes)
        } else {
            recv_frame(&mut peers[0]).map_err(|e| io_err("from rank 0", e))
        }
    }
}

/// Sum over the ranks as a graph op: its gradient is the sum over the ranks of the output
/// gradients, since every rank's loss depends on every rank's input.
struct AllReduce {
    group: Arc<dyn Collective>,
}

impl CustomOp1 for AllReduce {
    fn name(&self) -> &'static str {
        "all_reduce"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("all_reduce: input must be contiguous".into())
        })?;
        let out = match s {
            CpuStorage::F32(v) => {
                let mut w: Vec<f64> = v[a..b].iter().map(|&x| x as f64).collect();
                self.group.all_reduce_f64(&mut w)?;
                CpuStorage::F32(w.into_iter().map(|x| x as f32).collect())
            }
            CpuStorage::F64(v) => {
                let mut w = v[a..b].to_vec();
                self.group.all_reduce_f64(&mut w)?;
                CpuStorage::F64(w)
            }
            s => bail!(
                "all_reduce: unsupported dtype {:?}",
                candle_core::backend::BackendStorage::dtype(s)
            ),
        };
        Ok((out, l.shape().clone()))
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        if let Some(out) = self.group.reduce_cuda(s, l)? {
            return Ok((out, l.shape().clone()));
        }
        bail!("all_reduce: CUDA tensors need the NCCL group (build with the `nccl` feature)")
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(all_reduce(grad, &self.group)?))
    }
}

/// Element-wise sum of `t` over the group's ranks, differentiable. CUDA tensors are summed
/// on the GPUs by the NCCL group; with other groups, and for tensors on other devices, they
/// go through host memory.
pub fn all_reduce(t: &Tensor, group: &Arc<dyn Collective>) -> Result<Tensor> {
    let on_gpu = t.device().is_cuda() && group.reduces_on_gpu();
    if group.world_size() == 1 && !on_gpu {
        return Ok(t.clone());
    }
    // A CUDA group of one still reduces, so one GPU exercises the NCCL path.
    let op = AllReduce {
        group: group.clone(),
    };
    if t.device().is_cpu() || on_gpu {
        return t.contiguous()?.apply_op1(op);
    }
    let cpu = candle_core::Device::Cpu;
    t.to_device(&cpu)?
        .contiguous()?
        .apply_op1(op)?
        .to_device(t.device())
}

#[cfg(feature = "nccl")]
pub use nccl::NcclGroup;

#[cfg(feature = "nccl")]
mod nccl {
    use super::*;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CudaStorage, DType};

    /// Ranks that each drive one GPU, reducing CUDA tensors with NCCL. Host-side sums and
    /// broadcasts go through the TCP group the communicator was set up with.
    pub struct NcclGroup {
        tcp: TcpGroup,
        comm: Mutex<CommCell>,
    }

    struct CommCell(Comm);
    // SAFETY: the communicator is only used under the mutex, one call at a time.
    unsafe impl Send for CommCell {}

    impl NcclGroup {
        /// Creates the communicator on `device` (a CUDA device): rank 0 makes the NCCL id
        /// and sends it to the others over `tcp`.
        pub fn new(tcp: TcpGroup, device: &candle_core::Device) -> Result<Self> {
            let candle_core::Device::Cuda(dev) = device else {
                bail!("NCCL needs a CUDA device, got {device:?}")
            };
            let id = if tcp.rank() == 0 {
                let id =
                    Id::new().map_err(|e| candle_core::Error::Msg(format!("nccl id: {e:?}")))?;
                let raw: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                tcp.broadcast_bytes(raw, 0)?;
                id
            } else {
                let raw = tcp.broadcast_bytes(Vec::new(), 0)?;
                if raw.len() != 128 {
                    bail!("nccl id: got {} bytes from rank 0, expected 128", raw.len())
                }
                let mut internal = [0 as std::ffi::c_char; 128];
                for (d, s) in internal.iter_mut().zip(&raw) {
                    *d = *s as std::ffi::c_char;
                }
                Id::uninit(internal)
            };
            let comm = Comm::from_rank(dev.cuda_stream(), tcp.rank(), tcp.world_size(), id)
                .map_err(|e| candle_core::Error::Msg(format!("nccl init: {e:?}")))?;
            Ok(NcclGroup {
                tcp,
                comm: Mutex::new(CommCell(comm)),
            })
        }

        fn reduce(&self, s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
            let (a, b) = l.contiguous_offsets().ok_or_else(|| {
                candle_core::Error::Msg("all_reduce: input must be contiguous".into())
            })?;
            let comm = self
                .comm
                .lock()
                .map_err(|_| candle_core::Error::Msg("nccl: poisoned".into()))?;
            let dev = s.device.clone();
            macro_rules! go {
                ($t:ty) => {{
                    let src = s.as_cuda_slice::<$t>()?.slice(a..b);
                    let mut dst = dev.alloc_zeros::<$t>(b - a)?;
                    comm.0
                        .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                        .map_err(|e| candle_core::Error::Msg(format!("nccl all_reduce: {e:?}")))?;
                    CudaStorage::wrap_cuda_slice(dst, dev.clone())
                }};
            }
            Ok(match candle_core::backend::BackendStorage::dtype(s) {
                DType::F32 => go!(f32),
                DType::F64 => go!(f64),
                d => bail!("nccl all_reduce: unsupported dtype {d:?} (gradients are f32)"),
            })
        }
    }

    impl Collective for NcclGroup {
        fn rank(&self) -> usize {
            self.tcp.rank()
        }
        fn world_size(&self) -> usize {
            self.tcp.world_size()
        }
        fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
            self.tcp.all_reduce_f64(buf)
        }
        fn broadcast_bytes(&self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
            self.tcp.broadcast_bytes(bytes, root)
        }
        fn reduces_on_gpu(&self) -> bool {
            true
        }
        fn reduce_cuda(&self, s: &CudaStorage, l: &Layout) -> Result<Option<CudaStorage>> {
            self.reduce(s, l).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn thread_and_tcp_groups_sum_in_rank_order() {
        for tcp in [false, true] {
            let world = 3;
            let groups: Vec<Arc<dyn Collective>> = if tcp {
                let port = TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                let hs: Vec<_> = (0..world)
                    .map(|r| {
                        std::thread::spawn(move || {
                            TcpGroup::connect(addr, r, world, Duration::from_secs(20)).unwrap()
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| Arc::new(h.join().unwrap()) as Arc<dyn Collective>)
                    .collect()
            } else {
                ThreadGroup::new(world)
                    .into_iter()
                    .map(|g| Arc::new(g) as Arc<dyn Collective>)
                    .collect()
            };
            let hs: Vec<_> = groups
                .into_iter()
                .map(|g| {
                    std::thread::spawn(move || {
                        let r = g.rank() as f64;
                        let mut v = vec![r, 10.0 * r + 0.5, -r];
                        g.all_reduce_f64(&mut v).unwrap();
                        let b = g.broadcast_bytes(vec![g.rank() as u8; 3], 0).unwrap();
                        (v, b)
                    })
                })
                .collect();
            for h in hs {
                let (v, b) = h.join().unwrap();
                assert_eq!(v, vec![3.0, 31.5, -3.0], "tcp={tcp}");
                assert_eq!(b, vec![0, 0, 0]);
            }
        }
    }

    #[test]
    fn all_reduce_op_sums_values_and_gradients() {
        let groups = ThreadGroup::new(2);
        let hs: Vec<_> = groups
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let g: Arc<dyn Collective> = Arc::new(g);
                    let r = g.rank() as f32;
                    let x = Var::new(&[1.0 + r, 2.0 * r], &Device::Cpu).unwrap();
                    let y = all_reduce(x.as_tensor(), &g).unwrap();
                    // rank r's loss weights the summed output by (r + 1)
                    let loss = (y.clone() * (r as f64 + 1.0)).unwrap().sum_all().unwrap();
                    let gx = loss
                        .backward()
                        .unwrap()
                        .get(x.as_tensor())
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    (y.to_vec1::<f32>().unwrap(), gx)
                })
            })
            .collect();
        for h in hs {
            let (y, gx) = h.join().unwrap();
            assert_eq!(y, vec![3.0, 2.0]);
            // d(sum over ranks of (r+1) * sum(y)) / dx = 1 + 2 on every rank
            assert_eq!(gx, vec![3.0, 3.0]);
        }
    }

    #[test]
    fn tcp_rank_zero_names_the_ranks_that_never_came() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let e = TcpGroup::connect(addr, 0, 3, Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(e.to_string().contains("ranks [1, 2] did not join"), "{e}");
        assert!(TcpGroup::connect(addr, 3, 3, Duration::from_millis(10)).is_err());
    }
}
