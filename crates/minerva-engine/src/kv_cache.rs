//! The paged KV cache: every layer's keys and values in fixed-size pages ([`KvPages`], f16 by
//! default, or f32, int8, int4), and per sequence a table of the pages that hold its
//! positions. Sequences come and go; their pages return to a free list at once.
//!
//! Layers are grouped by what they see: full-attention layers keep every position, so a
//! sequence's table grows with it; a sliding-window layer only needs its window, so its
//! table is a ring of pages reused as the sequence moves on (gpt-oss's 12 sliding layers
//! then cost a few pages per sequence, whatever its length). A ring is as wide as the
//! window plus the most tokens one pass brings ([`KvConfig::max_pass_tokens`]), so a
//! prompt chunk never overwrites keys one of its own queries still sees.
//!
//! A forward pass names its sequences and how many tokens each brings ([`PassInputs`]);
//! [`PagedKvCache::view`] is the [`KvCache`] a model runs that pass against.

use minerva_core::ops::{self, AttentionOptions};
use minerva_core::{Array, Device, Error, KvDType, KvPages, PageTable, Result};
use minerva_models::{KvCache, ModelInfo};

/// Positions per page: small enough that little is wasted at a sequence's end, large
/// enough that a page is a long contiguous read.
pub const DEFAULT_PAGE_SIZE: usize = 16;

/// Most tokens one sequence brings to a single forward pass unless set: the prompt chunk.
pub const DEFAULT_MAX_PASS_TOKENS: usize = 512;

/// How the cache stores keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    pub dtype: KvDType,
    pub page_size: usize,
    /// Most tokens one sequence may bring to a forward pass; rings of sliding-window layers
    /// are sized for it (window + this many positions).
    pub max_pass_tokens: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            dtype: KvDType::F16,
            page_size: DEFAULT_PAGE_SIZE,
            max_pass_tokens: DEFAULT_MAX_PASS_TOKENS,
        }
    }
}

impl KvConfig {
    pub fn with_dtype(dtype: KvDType) -> KvConfig {
        KvConfig {
            dtype,
            ..KvConfig::default()
        }
    }
}

/// A sequence's handle in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

/// Layers that share page tables: the full-attention ones, or those with one window.
struct Group {
    window: Option<usize>,
    /// Pages in a sequence's table (a ring for a window).
    width: usize,
    /// Pages in the pool of each of the group's layers, and those not in use.
    pages: usize,
    free: Vec<i32>,
}

struct Sequence {
    len: usize,
    /// Per group, the sequence's pages in table order.
    pages: Vec<Vec<i32>>,
}

/// Keys and values of every layer, in pages; see the module documentation.
pub struct PagedKvCache {
    config: KvConfig,
    device: Device,
    max_len: usize,
    /// Per layer: keys, values, and the layer's group.
    layers: Vec<(KvPages, KvPages, usize)>,
    groups: Vec<Group>,
    sequences: Vec<Option<Sequence>>,
    /// Whether pools may grow (a cache for one conversation) or are fixed (a server's).
    growable: bool,
    /// Changes whenever the pools move (a captured graph must then be recorded again).
    epoch: u64,
}

/// Each layer's window (`None` when it sees every position of a sequence of `max_len`)
/// and how many pages its table holds per sequence.
fn layer_tables(info: &ModelInfo, max_len: usize, config: KvConfig) -> Vec<(Option<usize>, usize)> {
    let ps = config.page_size;
    let full = max_len.div_ceil(ps);
    (0..info.layers)
        .map(|l| {
            let window = info
                .windows
                .get(l)
                .copied()
                .flatten()
                .filter(|&w| w < max_len);
            let width = window.map_or(full, |w| {
                (w + config.max_pass_tokens - 1).div_ceil(ps).min(full)
            });
            (window, width)
        })
        .collect()
}

/// Pages a pool starts with when it grows on demand.
const INITIAL_PAGES: usize = 16;

impl PagedKvCache {
    /// A cache for `info`'s layers on the model's device, sequences of at most `max_len`
    /// tokens (the model's context length when `None`). `pages` fixes the full-attention
    /// pool's size (rings get what `max_sequences` need); `None` grows the pools on demand.
    pub fn new(
        info: &ModelInfo,
        max_len: Option<usize>,
        config: KvConfig,
        pages: Option<usize>,
        max_sequences: usize,
    ) -> Result<PagedKvCache> {
        let max_len = max_len
            .unwrap_or(info.context_length)
            .min(info.context_length)
            .max(1);
        let config = KvConfig {
            page_size: config.page_size.max(1),
            ..config
        };
        let ps = config.page_size;
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of = Vec::with_capacity(info.layers);
        for (window, width) in layer_tables(info, max_len, config) {
            let g = match groups.iter().position(|g| g.window == window) {
                Some(g) => g,
                None => {
                    let pages = match (pages, window) {
                        (None, _) => INITIAL_PAGES.min(width),
                        (Some(n), None) => n,
                        (Some(_), Some(_)) => width * max_sequences.max(1),
                    };
                    groups.push(Group {
                        window,
                        width,
                        pages,
                        free: (0..pages as i32).rev().collect(),
                    });
                    groups.len() - 1
                }
            };
            group_of.push(g);
        }
        let layers = group_of
            .iter()
            .map(|&g| {
                let pool = || {
                    KvPages::zeros(
                        config.dtype,
                        groups[g].pages,
                        info.kv_heads,
                        ps,
                        info.head_dim,
                        info.device,
                    )
                };
                Ok((pool()?, pool()?, g))
            })
            .collect::<Result<_>>()?;
        Ok(PagedKvCache {
            config,
            device: info.device,
            max_len,
            layers,
            groups,
            sequences: Vec::new(),
            growable: pages.is_none(),
            epoch: 0,
        })
    }

    pub fn config(&self) -> KvConfig {
        self.config
    }

    /// Most tokens a sequence may hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes of every pool (pages in use or not).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v, _)| k.nbytes() + v.nbytes())
            .sum()
    }

    /// Bytes one sequence of `len` tokens holds in a cache of `config` for `info`'s layers:
    /// its pages in every layer (a window's ring at most), parameters included.
    pub fn sequence_bytes(info: &ModelInfo, config: KvConfig, len: usize) -> usize {
        let row = config.dtype.row_bytes(info.head_dim) * info.kv_heads;
        let ps = config.page_size.max(1);
        layer_tables(info, len.max(1), config)
            .into_iter()
            .map(|(_, width)| 2 * row * ps * len.div_ceil(ps).min(width))
            .sum()
    }

    /// Bytes of the pages sequences hold now.
    pub fn bytes_in_use(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v, g)| {
                let group = &self.groups[*g];
                let used = group.pages - group.free.len();
                (k.nbytes() + v.nbytes()) / group.pages.max(1) * used
            })
            .sum()
    }

    /// Changes whenever the pools move.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new, empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let seq = Sequence {
            len: 0,
            pages: vec![Vec::new(); self.groups.len()],
        };
        match self.sequences.iter().position(Option::is_none) {
            Some(i) => {
                self.sequences[i] = Some(seq);
                SeqId(i)
            }
            None => {
                self.sequences.push(Some(seq));
                SeqId(self.sequences.len() - 1)
            }
        }
    }

    /// Frees `id`'s pages and forgets it.
    pub fn remove_sequence(&mut self, id: SeqId) {
        if let Some(seq) = self.sequences.get_mut(id.0).and_then(Option::take) {
            for (group, pages) in self.groups.iter_mut().zip(seq.pages) {
                group.free.extend(pages);
            }
        }
    }

    fn sequence(&self, id: SeqId) -> &Sequence {
        self.sequences[id.0].as_ref().expect("a live sequence")
    }

    fn sequence_mut(&mut self, id: SeqId) -> &mut Sequence {
        self.sequences[id.0].as_mut().expect("a live sequence")
    }

    /// Tokens cached for `id`.
    pub fn len(&self, id: SeqId) -> usize {
        self.sequence(id).len
    }

    /// Keeps at most the first `len` tokens of `id` (to reuse a shared prompt prefix) and
    /// returns how many it kept: fewer when a sliding-window ring has already overwritten
    /// keys the kept tokens' successors would see (then none are kept).
    pub fn truncate(&mut self, id: SeqId, len: usize) -> usize {
        let ps = self.config.page_size;
        let old = self.len(id);
        let mut keep = len.min(old);
        for g in &self.groups {
            if let Some(w) = g.window {
                if old - keep + w > g.width * ps {
                    keep = 0;
                }
            }
        }
        let groups = &mut self.groups;
        let seq = self.sequences[id.0].as_mut().expect("a live sequence");
        seq.len = keep;
        for (group, pages) in groups.iter_mut().zip(&mut seq.pages) {
            if group.window.is_none() || keep == 0 {
                let needed = keep.div_ceil(ps);
                group.free.extend(pages.drain(needed.min(pages.len())..));
            }
        }
        keep
    }

    /// Makes room for `tokens` more tokens of `id` (pages for them in every group), growing
    /// the pools if this cache may. Errors when the sequence would pass `max_len` or a
    /// fixed pool has no free page.
    pub fn reserve(&mut self, id: SeqId, tokens: usize) -> Result<()> {
        let end = self.len(id) + tokens;
        if end > self.max_len {
            return Err(Error::Shape(format!(
                "context full: {end} tokens exceed the cache's {} tokens",
                self.max_len
            )));
        }
        if tokens > self.config.max_pass_tokens {
            return Err(Error::Shape(format!(
                "{tokens} tokens of one sequence in a pass (this cache takes at most {})",
                self.config.max_pass_tokens
            )));
        }
        let ps = self.config.page_size;
        for g in 0..self.groups.len() {
            let needed = end.div_ceil(ps).min(self.groups[g].width);
            let have = self.sequence(id).pages[g].len();
            if needed <= have {
                continue;
            }
            let missing = needed - have;
            if self.groups[g].free.len() < missing {
                if !self.growable {
                    return Err(Error::Device(format!(
                        "KV cache full: {missing} more pages needed, {} free",
                        self.groups[g].free.len()
                    )));
                }
                self.grow(g, missing)?;
            }
            let group = &mut self.groups[g];
            let taken = group.free.split_off(group.free.len() - missing);
            self.sequences[id.0]
                .as_mut()
                .expect("a live sequence")
                .pages[g]
                .extend(taken.into_iter().rev());
        }
        Ok(())
    }

    /// Grows group `g`'s pools (every layer's) by at least `more` pages, doubling.
    fn grow(&mut self, g: usize, more: usize) -> Result<()> {
        let old = self.groups[g].pages;
        let pages = (old + more).max(2 * old);
        for (k, v, group) in &mut self.layers {
            if *group == g {
                *k = k.grown(pages)?;
                *v = v.grown(pages)?;
            }
        }
        let group = &mut self.groups[g];
        group.free.splice(0..0, (old as i32..pages as i32).rev());
        group.pages = pages;
        self.epoch += 1;
        Ok(())
    }

    /// The arrays a pass over `seqs` (each with its token count, in pass order) reads, on
    /// the cache's device. Pages must have been reserved.
    pub fn inputs(&self, seqs: &[(SeqId, usize)]) -> Result<PassInputs> {
        let host = self.host_inputs(seqs);
        let device = self.device;
        Ok(PassInputs {
            positions: host.positions.to_device(device)?,
            seq_of: host.seq_of.to_device(device)?,
            tables: host
                .tables
                .iter()
                .map(|t| t.to_device(device))
                .collect::<Result<_>>()?,
            runs: host.runs,
            seqs: seqs.to_vec(),
        })
    }

    /// Rewrites `inputs` (same sequences' count and tokens) in place for a new pass, as a
    /// replayed graph needs.
    pub fn refill(&self, inputs: &mut PassInputs, seqs: &[(SeqId, usize)]) -> Result<()> {
        let host = self.host_inputs(seqs);
        inputs.positions.overwrite(&host.positions)?;
        inputs.seq_of.overwrite(&host.seq_of)?;
        for (dst, src) in inputs.tables.iter_mut().zip(&host.tables) {
            dst.overwrite(src)?;
        }
        inputs.seqs = seqs.to_vec();
        Ok(())
    }

    fn host_inputs(&self, seqs: &[(SeqId, usize)]) -> PassInputs {
        let (mut positions, mut seq_of, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &(id, n)) in seqs.iter().enumerate() {
            let start = self.len(id);
            positions.extend((start..start + n).map(|p| p as i32));
            seq_of.extend(std::iter::repeat_n(i as i32, n));
            runs.push(n);
        }
        let tables = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let mut rows = vec![0i32; seqs.len() * group.width];
                for (row, &(id, _)) in rows.chunks_exact_mut(group.width).zip(seqs) {
                    let pages = &self.sequence(id).pages[g];
                    row[..pages.len()].copy_from_slice(pages);
                }
                Array::from_i32(&rows, &[seqs.len(), group.width]).expect("sized above")
            })
            .collect();
        let tokens = positions.len();
        PassInputs {
            positions: Array::from_i32(&positions, &[tokens]).expect("sized above"),
            seq_of: Array::from_i32(&seq_of, &[tokens]).expect("sized above"),
            tables,
            runs,
            seqs: seqs.to_vec(),
        }
    }

    /// The cache as a model sees it during the pass `inputs` describes.
    pub fn view<'a>(&'a mut self, inputs: &'a PassInputs) -> PassView<'a> {
        PassView {
            cache: self,
            inputs,
            commits: true,
        }
    }

    /// [`view`](PagedKvCache::view) for recording a pass that runs later (a CUDA graph):
    /// its `advance` leaves the sequences as they are; whoever launches the pass advances
    /// them.
    pub fn recording_view<'a>(&'a mut self, inputs: &'a PassInputs) -> PassView<'a> {
        PassView {
            commits: false,
            ..self.view(inputs)
        }
    }
}

/// What one forward pass reads besides the tokens: each token's position and sequence,
/// every group's page tables, and each sequence's token count.
pub struct PassInputs {
    pub positions: Array,
    pub seq_of: Array,
    tables: Vec<Array>,
    runs: Vec<usize>,
    seqs: Vec<(SeqId, usize)>,
}

/// The cache during one pass: a model's [`KvCache`].
pub struct PassView<'a> {
    cache: &'a mut PagedKvCache,
    inputs: &'a PassInputs,
    /// Whether `advance` commits the pass's tokens (not while recording).
    commits: bool,
}

impl KvCache for PassView<'_> {
    fn len(&self) -> usize {
        self.inputs
            .seqs
            .first()
            .map_or(0, |&(id, _)| self.cache.len(id))
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Array,
        k: &Array,
        v: &Array,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array> {
        let inputs = self.inputs;
        let (kc, vc, group) = &mut self.cache.layers[layer];
        let table = PageTable {
            tables: &inputs.tables[*group],
            seq_of: &inputs.seq_of,
            runs: &inputs.runs,
        };
        ops::write_kv_pages(kc, table, positions, k)?;
        ops::write_kv_pages(vc, table, positions, v)?;
        ops::paged_attention(q, kc, vc, table, positions, opts)
    }

    fn last_rows(&self, _tokens: usize) -> Vec<usize> {
        self.inputs
            .runs
            .iter()
            .scan(0, |end, &n| {
                *end += n;
                Some(*end - 1)
            })
            .collect()
    }

    fn advance(&mut self, _tokens: usize) {
        if !self.commits {
            return;
        }
        for &(id, n) in &self.inputs.seqs {
            self.cache.sequence_mut(id).len += n;
        }
    }
}

/// A cache holding one sequence, as one conversation, a benchmark or a perplexity run uses
/// it: a [`KvCache`] on its own, each pass's inputs made at its first layer.
pub struct SequenceCache {
    cache: PagedKvCache,
    seq: SeqId,
    pass: Option<PassInputs>,
}

impl SequenceCache {
    /// A growing f16 cache for `info`'s shapes holding at most `max_len` tokens.
    pub fn new(info: &ModelInfo, max_len: Option<usize>) -> Result<SequenceCache> {
        Self::with_config(info, max_len, KvConfig::default())
    }

    pub fn with_config(
        info: &ModelInfo,
        max_len: Option<usize>,
        config: KvConfig,
    ) -> Result<SequenceCache> {
        let mut cache = PagedKvCache::new(info, max_len, config, None, 1)?;
        let seq = cache.add_sequence();
        Ok(SequenceCache {
            cache,
            seq,
            pass: None,
        })
    }

    pub fn max_len(&self) -> usize {
        self.cache.max_len()
    }

    pub fn config(&self) -> KvConfig {
        self.cache.config()
    }

    /// Bytes of the pools.
    pub fn bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// See [`PagedKvCache::epoch`].
    pub fn epoch(&self) -> u64 {
        self.cache.epoch()
    }

    /// See [`PagedKvCache::truncate`].
    pub fn truncate(&mut self, len: usize) -> usize {
        self.pass = None;
        self.cache.truncate(self.seq, len)
    }

    /// The cache and this sequence's id, to run passes by hand (a captured decode step).
    pub fn parts(&mut self) -> (&mut PagedKvCache, SeqId) {
        self.pass = None;
        (&mut self.cache, self.seq)
    }
}

impl KvCache for SequenceCache {
    fn len(&self) -> usize {
        self.cache.len(self.seq)
    }

    fn attend(
        &mut self,
        layer: usize,
        q: &Array,
        k: &Array,
        v: &Array,
        positions: &Array,
        opts: AttentionOptions<'_>,
    ) -> Result<Array> {
        if self.pass.is_none() {
            let tokens = positions.numel();
            self.cache.reserve(self.seq, tokens)?;
            self.pass = Some(self.cache.inputs(&[(self.seq, tokens)])?);
        }
        let inputs = self.pass.as_ref().expect("made above");
        self.cache
            .view(inputs)
            .attend(layer, q, k, v, positions, opts)
    }

    fn advance(&mut self, tokens: usize) {
        match self.pass.take() {
            Some(inputs) => self.cache.view(&inputs).advance(tokens),
            // A pass through a model without attention layers.
            None => {
                let _ = self.cache.reserve(self.seq, tokens);
                self.cache.sequence_mut(self.seq).len += tokens;
            }
        }
    }
}
