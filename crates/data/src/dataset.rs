//! The [`Dataset`] trait and a parallel [`Loader`] with bounded prefetch. Every sample of
//! every epoch gets its own generator derived from (seed, epoch, index), so the batches of a
//! run are identical whatever the number of worker threads.
use crate::error::Result;
use crate::rng::Rng;
use crate::sample::Sample;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Random access to samples.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&self, index: usize) -> Result<Sample>;
    /// Class names by contiguous train id; empty when unknown (unlabeled sources).
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        (**self).get(index)
    }
    fn class_names(&self) -> Vec<String> {
        (**self).class_names()
    }
}

/// A dataset held in memory.
pub struct InMemory {
    pub samples: Vec<Sample>,
    pub names: Vec<String>,
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        Ok(self.samples[index].clone())
    }
    fn class_names(&self) -> Vec<String> {
        self.names.clone()
    }
}

/// A subset of a dataset by index.
pub struct Subset {
    pub inner: Arc<dyn Dataset>,
    pub indices: Vec<usize>,
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        self.inner.get(self.indices[i])
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
}

/// The same images with every label removed (the pseudo-labeling input).
pub struct Unlabeled(pub Arc<dyn Dataset>);

impl Dataset for Unlabeled {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let mut s = self.0.get(i)?;
        s.boxes.clear();
        s.classes.clear();
        s.crowd.clear();
        s.masks = None;
        s.label_map = None;
        Ok(s)
    }
}

/// A deterministic fraction of a dataset (the paper's 20 / 50 / 100 % of labeled data).
pub fn fraction(ds: Arc<dyn Dataset>, f: f64, seed: u64) -> Arc<dyn Dataset> {
    if f >= 1.0 {
        return ds;
    }
    let n = ((ds.len() as f64 * f).round() as usize).max(1);
    let mut idx = Rng::derive(&[seed, 0x4652_4143]).permutation(ds.len());
    idx.truncate(n);
    idx.sort_unstable();
    Arc::new(Subset {
        inner: ds,
        indices: idx,
    })
}

/// A per-sample transform (augmentation), given the sample's own generator.
pub type Transform = dyn Fn(Sample, &mut Rng) -> Result<Sample> + Send + Sync;

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub seed: u64,
    /// Worker threads; 0 loads on the calling thread.
    pub workers: usize,
    /// Batches loaded ahead of the consumer, at most.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 8,
            shuffle: true,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 4,
        }
    }
}

pub struct Loader {
    dataset: Arc<dyn Dataset>,
    transform: Option<Arc<Transform>>,
    pub config: LoaderConfig,
    /// (rank, world): this process loads its part of every global batch.
    shard: (usize, usize),
}

impl Loader {
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Self {
        assert!(config.batch_size > 0, "batch_size must be positive");
        Loader {
            dataset,
            transform: None,
            config,
            shard: (0, 1),
        }
    }

    /// Data parallelism: batches stay `batch_size` images globally (same order on every
    /// rank, from the shared seed) and rank `rank` of `world` loads the `rank`-th of `world`
    /// equal parts of each. Augmentation draws from each sample's own stream, so an image is
    /// augmented the same whichever rank loads it.
    pub fn with_shard(mut self, rank: usize, world: usize) -> Self {
        assert!(world > 0 && rank < world, "rank {rank} of {world}");
        self.shard = (rank, world);
        self
    }

    pub fn with_transform(mut self, t: Arc<Transform>) -> Self {
        self.transform = Some(t);
        self
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// Sample order of an epoch.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if self.config.shuffle {
            Rng::derive(&[self.config.seed, epoch, 0x5348_5546]).permutation(n)
        } else {
            (0..n).collect()
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        let n = self.dataset.len();
        let b = self.config.batch_size;
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The batches of one epoch, in order.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of one epoch starting at batch `start` (to resume a run mid-epoch).
    pub fn epoch_from(&self, epoch: u64, start: usize) -> EpochIter {
        let order = self.order(epoch);
        let b = self.config.batch_size;
        let batches: Vec<Vec<usize>> = order
            .chunks(b)
            .filter(|c| !self.config.drop_last || c.len() == b)
            .skip(start)
            .map(|c| {
                let (r, w) = self.shard;
                c[r * c.len() / w..(r + 1) * c.len() / w].to_vec()
            })
            .collect();
        let job = Arc::new(Job {
            dataset: self.dataset.clone(),
            transform: self.transform.clone(),
            seed: self.config.seed,
            epoch,
            batches,
        });
        EpochIter::start(job, self.config.workers, self.config.prefetch.max(1))
    }
}

struct Job {
    dataset: Arc<dyn Dataset>,
    transform: Option<Arc<Transform>>,
    seed: u64,
    epoch: u64,
    batches: Vec<Vec<usize>>,
}

impl Job {
    fn load(&self, k: usize) -> Result<Vec<Sample>> {
        self.batches[k]
            .iter()
            .map(|&i| {
                let s = self.dataset.get(i)?;
                match &self.transform {
                    Some(t) => {
                        let mut rng = Rng::for_sample(self.seed, self.epoch, i as u64);
                        t(s, &mut rng)
                    }
                    None => Ok(s),
                }
            })
            .collect()
    }
}

struct State {
    next: usize,
    consumed: usize,
    ready: BTreeMap<usize, Result<Vec<Sample>>>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// Iterator over the batches of one epoch.
pub struct EpochIter {
    job: Arc<Job>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    inline_next: usize,
}

impl EpochIter {
    fn start(job: Arc<Job>, workers: usize, prefetch: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next: 0,
                consumed: 0,
                ready: BTreeMap::new(),
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let threads = (0..workers)
            .map(|_| {
                let (job, shared) = (job.clone(), shared.clone());
                std::thread::spawn(move || worker(job, shared, prefetch))
            })
            .collect();
        EpochIter {
            job,
            shared,
            threads,
            inline_next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.job.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.job.batches.is_empty()
    }
}

fn worker(job: Arc<Job>, shared: Arc<Shared>, prefetch: usize) {
    loop {
        let k = {
            let mut st = shared.state.lock().unwrap();
            loop {
                if st.stop || st.next >= job.batches.len() {
                    return;
                }
                if st.next < st.consumed + prefetch {
                    break;
                }
                st = shared.cv.wait(st).unwrap();
            }
            st.next += 1;
            st.next - 1
        };
        let r = job.load(k);
        let mut st = shared.state.lock().unwrap();
        st.ready.insert(k, r);
        shared.cv.notify_all();
    }
}

impl Iterator for EpochIter {
    type Item = Result<Vec<Sample>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.threads.is_empty() {
            let k = self.inline_next;
            if k >= self.job.batches.len() {
                return None;
            }
            self.inline_next += 1;
            return Some(self.job.load(k));
        }
        let mut st = self.shared.state.lock().unwrap();
        let k = st.consumed;
        if k >= self.job.batches.len() {
            return None;
        }
        loop {
            if let Some(r) = st.ready.remove(&k) {
                st.consumed += 1;
                self.shared.cv.notify_all();
                return Some(r);
            }
            st = self.shared.cv.wait(st).unwrap();
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().stop = true;
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Image;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        n: usize,
        loaded: AtomicUsize,
    }
    impl Dataset for Counting {
        fn len(&self) -> usize {
            self.n
        }
        fn get(&self, i: usize) -> Result<Sample> {
            self.loaded.fetch_add(1, Ordering::SeqCst);
            let mut s = Sample::new(Image::new(2, 2, 1, 0));
            s.image_id = i as u64;
            Ok(s)
        }
    }

    fn noisy() -> Arc<Transform> {
        Arc::new(|mut s: Sample, rng: &mut Rng| {
            s.image.data[0] = (rng.next_u32() & 0xff) as u8;
            // Uneven work so threads finish out of order.
            if rng.below(3) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(s)
        })
    }

    fn run(workers: usize, epoch: u64) -> Vec<(u64, u8)> {
        let ds = Arc::new(Counting {
            n: 37,
            loaded: AtomicUsize::new(0),
        });
        let l = Loader::new(
            ds,
            LoaderConfig {
                batch_size: 4,
                workers,
                seed: 9,
                ..Default::default()
            },
        )
        .with_transform(noisy());
        l.epoch(epoch)
            .flat_map(|b| b.unwrap())
            .map(|s| (s.image_id, s.image.data[0]))
            .collect()
    }

    #[test]
    fn same_batches_whatever_the_thread_count() {
        let a = run(0, 3);
        assert_eq!(a.len(), 37);
        assert_eq!(a, run(1, 3));
        assert_eq!(a, run(4, 3));
        assert_ne!(a, run(4, 4), "epochs must differ");
        let mut ids: Vec<u64> = a.iter().map(|x| x.0).collect();
        assert_ne!(ids, (0..37).collect::<Vec<_>>(), "shuffled");
        ids.sort();
        assert_eq!(ids, (0..37).collect::<Vec<_>>());
    }

    #[test]
    fn shards_split_every_global_batch_in_rank_order() {
        let ds: Arc<dyn Dataset> = Arc::new(Counting {
            n: 23,
            loaded: AtomicUsize::new(0),
        });
        let cfg = LoaderConfig {
            batch_size: 6,
            shuffle: true,
            drop_last: true,
            seed: 9,
            workers: 0,
            prefetch: 1,
        };
        let ids = |l: Loader| -> Vec<Vec<u64>> {
            l.epoch_from(2, 1)
                .map(|b| b.unwrap().iter().map(|s| s.image_id).collect())
                .collect()
        };
        let whole = ids(Loader::new(ds.clone(), cfg.clone()));
        let parts: Vec<_> = (0..3)
            .map(|r| ids(Loader::new(ds.clone(), cfg.clone()).with_shard(r, 3)))
            .collect();
        assert_eq!(whole.len(), 2, "23 images, batches of 6, one skipped");
        for (k, b) in whole.iter().enumerate() {
            let joined: Vec<u64> = parts.iter().flat_map(|p| p[k].clone()).collect();
            assert_eq!(&joined, b);
            assert!(parts.iter().all(|p| p[k].len() == 2));
        }
    }

    #[test]
    fn prefetch_is_bounded() {
        let ds = Arc::new(Counting {
            n: 100,
            loaded: AtomicUsize::new(0),
        });
        let l = Loader::new(
            ds.clone(),
            LoaderConfig {
                batch_size: 2,
                workers: 3,
                prefetch: 2,
                ..Default::default()
            },
        );
        let mut it = l.epoch(0);
        it.next().unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // consumed 1 batch; at most 1 + prefetch batches may have been loaded
        assert!(
            ds.loaded.load(Ordering::SeqCst) <= 2 * 3,
            "{}",
            ds.loaded.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn resume_mid_epoch_and_drop_last() {
        let ds = Arc::new(Counting {
            n: 10,
            loaded: AtomicUsize::new(0),
        });
        let l = Loader::new(
            ds,
            LoaderConfig {
                batch_size: 3,
                drop_last: true,
                workers: 2,
                ..Default::default()
            },
        );
        assert_eq!(l.batches_per_epoch(), 3);
        let all: Vec<Vec<u64>> = l
            .epoch(1)
            .map(|b| b.unwrap().iter().map(|s| s.image_id).collect())
            .collect();
        assert_eq!(all.len(), 3);
        let rest: Vec<Vec<u64>> = l
            .epoch_from(1, 1)
            .map(|b| b.unwrap().iter().map(|s| s.image_id).collect())
            .collect();
        assert_eq!(&all[1..], &rest[..]);
    }
}
