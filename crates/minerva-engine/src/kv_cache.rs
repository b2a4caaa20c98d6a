//! The paged KV cache: every layer's keys and values in fixed-size pages ([`KvPages`], f16 by
//! default, or f32, int8, int4, keys and values alike or not), and per sequence a table of
//! the pages that hold its positions. Sequences come and go; their pages return to a free
//! list at once.
//!
//! Layers are grouped by what they see: full-attention layers keep every position, so a
//! sequence's table grows with it; a sliding-window layer only needs its window, so its
//! pages are let go once no query can see them (gpt-oss's 12 sliding layers then hold a
//! few pages per sequence, whatever its length: the window plus the most tokens one pass
//! brings, [`KvConfig::max_pass_tokens`]). Table slot `i` always holds positions
//! `i * page_size..`, in every group.
//!
//! Pages are counted by their holders, so sequences can share them: with the prefix cache
//! on ([`PagedKvCache::enable_prefix_cache`]), every full page a sequence computes is kept
//! under its tokens (`prefix_cache`), and a later sequence beginning with the same
//! tokens takes those pages instead of computing them ([`PagedKvCache::attach_prefix`]).
//! Shared pages are full, so nobody writes them again. When a fixed pool runs short, the
//! least recently used cached pages go first.
//!
//! A forward pass names its sequences and how many tokens each brings ([`PassInputs`]);
//! [`PagedKvCache::view`] is the [`KvCache`] a model runs that pass against.

use minerva_core::ops::{self, AttentionOptions};
use minerva_core::{Array, Device, Error, KvDType, KvPages, PageTable, Result};
use minerva_models::{KvCache, ModelInfo};

use crate::prefix_cache::{PrefixCache, NO_PAGE};

/// Positions per page: small enough that little is wasted at a sequence's end, large
/// enough that a page is a long contiguous read.
pub const DEFAULT_PAGE_SIZE: usize = 16;

/// Most tokens one sequence brings to a single forward pass unless set: the prompt chunk.
pub const DEFAULT_MAX_PASS_TOKENS: usize = 512;

/// How the cache stores keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// How keys are stored.
    pub keys: KvDType,
    /// How values are stored. 4-bit values want 8-bit keys (see [`KvConfig::parse`]).
    pub values: KvDType,
    pub page_size: usize,
    /// Most tokens one sequence may bring to a forward pass; rings of sliding-window layers
    /// are sized for it (window + this many positions).
    pub max_pass_tokens: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            keys: KvDType::F16,
            values: KvDType::F16,
            page_size: DEFAULT_PAGE_SIZE,
            max_pass_tokens: DEFAULT_MAX_PASS_TOKENS,
        }
    }
}

impl KvConfig {
    /// Keys and values both stored as `dtype`.
    pub fn with_dtype(dtype: KvDType) -> KvConfig {
        KvConfig::with_dtypes(dtype, dtype)
    }

    pub fn with_dtypes(keys: KvDType, values: KvDType) -> KvConfig {
        KvConfig {
            keys,
            values,
            ..KvConfig::default()
        }
    }

    /// `DTYPE` for keys and values (`f16`, `int8`, ...) or `KEYS/VALUES`. `int8/int4` is the
    /// 4-bit cache that keeps its accuracy: a few large key channels set each key row's
    /// range, too wide for a 4-bit step (int4 keys cost SmolLM2-135M +14.5% perplexity, int4
    /// values +0.9%; see `minerva_core::kv_pages`).
    pub fn parse(spec: &str) -> Result<KvConfig> {
        let (keys, values) = spec.split_once('/').unwrap_or((spec, spec));
        match (KvDType::parse(keys), KvDType::parse(values)) {
            (Ok(keys), Ok(values)) => Ok(KvConfig::with_dtypes(keys, values)),
            _ => Err(Error::Unsupported(format!(
                "KV cache dtype '{spec}' (expected f16, f32, int8, int4, or keys/values apart \
                 such as int8/int4)"
            ))),
        }
    }

    /// The storage as [`KvConfig::parse`] spells it.
    pub fn dtype_name(&self) -> String {
        if self.keys == self.values {
            self.keys.name().to_string()
        } else {
            format!("{}/{}", self.keys, self.values)
        }
    }

    /// Bytes of one position's keys and values in one KV head.
    pub fn row_pair_bytes(&self, head_dim: usize) -> usize {
        self.keys.row_bytes(head_dim) + self.values.row_bytes(head_dim)
    }
}

/// A sequence's handle in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

/// Layers that share page tables: the full-attention ones, or those with one window.
struct Group {
    window: Option<usize>,
    /// Slots in a sequence's table: every page of a sequence of the longest length.
    width: usize,
    /// Pages in the pool of each of the group's layers, and those not in use.
    pages: usize,
    free: Vec<i32>,
    /// Holders of each page (sequences and cached prefixes); a page is free at 0.
    holders: Vec<u32>,
    /// The sequences among each page's holders, and the pages some sequence holds (kept
    /// as they change, so gauges read them without walking the tables).
    seq_holders: Vec<u32>,
    seq_held: usize,
}

impl Group {
    /// A free page, now held once.
    fn take(&mut self) -> i32 {
        let page = self.free.pop().expect("checked by the caller");
        self.holders[page as usize] = 1;
        page
    }

    fn hold(&mut self, page: i32) {
        self.holders[page as usize] += 1;
    }

    /// A free page, now held by one sequence.
    fn take_for_sequence(&mut self) -> i32 {
        let page = self.take();
        self.count_sequence_hold(page);
        page
    }

    /// One more sequence holds `page`.
    fn hold_for_sequence(&mut self, page: i32) {
        self.hold(page);
        self.count_sequence_hold(page);
    }

    /// A sequence lets `page` go (nothing for [`NO_PAGE`]).
    fn release_from_sequence(&mut self, page: i32) {
        if page == NO_PAGE {
            return;
        }
        let n = &mut self.seq_holders[page as usize];
        *n -= 1;
        if *n == 0 {
            self.seq_held -= 1;
        }
        self.release(page);
    }

    fn count_sequence_hold(&mut self, page: i32) {
        let n = &mut self.seq_holders[page as usize];
        if *n == 0 {
            self.seq_held += 1;
        }
        *n += 1;
    }

    /// One holder lets `page` go (nothing for [`NO_PAGE`]); the last one frees it.
    fn release(&mut self, page: i32) {
        if page == NO_PAGE {
            return;
        }
        let n = &mut self.holders[page as usize];
        *n -= 1;
        if *n == 0 {
            self.free.push(page);
        }
    }

    /// The first position the queries of a pass starting at `start` see.
    fn first_seen(&self, start: usize) -> usize {
        self.window.map_or(0, |w| (start + 1).saturating_sub(w))
    }
}

struct Sequence {
    len: usize,
    /// Per group, the page of each table slot ([`NO_PAGE`] where a window let it go).
    pages: Vec<Vec<i32>>,
    /// Full pages offered to the prefix cache, and the entry of the last one.
    published: usize,
    tail: Option<usize>,
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
    prefix: Option<PrefixCache>,
}

/// Each layer's window (`None` when it sees every position of a sequence of `max_len`)
/// and the most pages a sequence holds in it at once: all of them, or for a window, those
/// its queries see during a pass (the window and the pass, one page more where they do
/// not start at a page's start).
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
            let live = window.map_or(full, |w| {
                ((w + config.max_pass_tokens - 1).div_ceil(ps) + 1).min(full)
            });
            (window, live)
        })
        .collect()
}

/// Pages a pool starts with when it grows on demand.
const INITIAL_PAGES: usize = 16;

impl PagedKvCache {
    /// A cache for `info`'s layers on the model's device, sequences of at most `max_len`
    /// tokens (the model's context length when `None`). `pages` fixes the full-attention
    /// pool's size (sliding-window pools get what `max_sequences` need); `None` grows the
    /// pools on demand.
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
        let width = max_len.div_ceil(ps);
        for (window, live) in layer_tables(info, max_len, config) {
            let g = match groups.iter().position(|g| g.window == window) {
                Some(g) => g,
                None => {
                    let pages = match (pages, window) {
                        (None, _) => INITIAL_PAGES.min(live),
                        (Some(n), None) => n,
                        (Some(_), Some(_)) => live * max_sequences.max(1),
                    };
                    groups.push(Group {
                        window,
                        width,
                        pages,
                        free: (0..pages as i32).rev().collect(),
                        holders: vec![0; pages],
                        seq_holders: vec![0; pages],
                        seq_held: 0,
                    });
                    groups.len() - 1
                }
            };
            group_of.push(g);
        }
        let layers = group_of
            .iter()
            .map(|&g| {
                let pool = |dtype| {
                    KvPages::zeros(
                        dtype,
                        groups[g].pages,
                        info.kv_heads,
                        ps,
                        info.head_dim,
                        info.device,
                    )
                };
                Ok((pool(config.keys)?, pool(config.values)?, g))
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
            prefix: None,
        })
    }

    /// Keeps every full page sequences compute for later sequences that begin with the same
    /// tokens; see the module documentation. A batch turns this on; one conversation reuses
    /// its own prefix with [`truncate`](Self::truncate) instead.
    pub fn enable_prefix_cache(&mut self) {
        self.prefix.get_or_insert_with(PrefixCache::default);
    }

    /// Pages of tokens the prefix cache holds.
    pub fn cached_pages(&self) -> usize {
        self.prefix.as_ref().map_or(0, PrefixCache::len)
    }

    /// Moves whenever the prefix cache gains pages: [`Self::attach_prefix`] can then find
    /// more than it found before.
    pub fn prefix_version(&self) -> u64 {
        self.prefix.as_ref().map_or(0, PrefixCache::insertions)
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
    /// its pages in every layer (those of a window's pass at most), parameters included.
    pub fn sequence_bytes(info: &ModelInfo, config: KvConfig, len: usize) -> usize {
        let rows = config.row_pair_bytes(info.head_dim) * info.kv_heads;
        let ps = config.page_size.max(1);
        layer_tables(info, len.max(1), config)
            .into_iter()
            .map(|(_, live)| rows * ps * len.div_ceil(ps).min(live))
            .sum()
    }

    /// Bytes of the pages sequences hold now.
    pub fn bytes_in_use(&self) -> usize {
        self.bytes_of(|group| group.seq_held)
    }

    /// Bytes of the pages only the prefix cache holds (given back when pages run short).
    pub fn bytes_cached(&self) -> usize {
        self.bytes_of(|group| group.pages - group.free.len() - group.seq_held)
    }

    /// Bytes of `pages(group)` pages in every layer of each group.
    fn bytes_of(&self, pages: impl Fn(&Group) -> usize) -> usize {
        let per_group: Vec<usize> = self.groups.iter().map(pages).collect();
        self.layers
            .iter()
            .map(|(k, v, g)| {
                (k.nbytes() + v.nbytes()) / self.groups[*g].pages.max(1) * per_group[*g]
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
            published: 0,
            tail: None,
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

    /// Lets go of `id`'s pages and forgets it.
    pub fn remove_sequence(&mut self, id: SeqId) {
        if let Some(seq) = self.sequences.get_mut(id.0).and_then(Option::take) {
            for (group, pages) in self.groups.iter_mut().zip(seq.pages) {
                pages
                    .into_iter()
                    .for_each(|p| group.release_from_sequence(p));
            }
            self.unpin_tail(seq.tail);
        }
    }

    fn unpin_tail(&mut self, tail: Option<usize>) {
        if let (Some(prefix), Some(tail)) = (self.prefix.as_mut(), tail) {
            prefix.unpin(tail);
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
    /// returns how many it kept: fewer when the kept tokens would end inside a page another
    /// holder shares (they stop at its start, so it is never written), none when a sliding
    /// window has let go of keys the kept tokens' successors would see.
    pub fn truncate(&mut self, id: SeqId, len: usize) -> usize {
        let ps = self.config.page_size;
        let mut keep = len.min(self.len(id));
        let seq = self.sequence(id);
        let shared = |keep: usize| {
            !keep.is_multiple_of(ps)
                && self.groups.iter().zip(&seq.pages).any(|(g, pages)| {
                    pages
                        .get(keep / ps)
                        .is_some_and(|&p| p != NO_PAGE && g.holders[p as usize] > 1)
                })
        };
        if shared(keep) {
            keep -= keep % ps;
        }
        let seen = |g: &Group, pages: &[i32]| {
            let slots = g.first_seen(keep) / ps..keep.div_ceil(ps);
            pages[slots].iter().all(|&p| p != NO_PAGE)
        };
        if !self.groups.iter().zip(&seq.pages).all(|(g, p)| seen(g, p)) {
            keep = 0;
        }
        let tail = {
            let seq = self.sequences[id.0].as_mut().expect("a live sequence");
            seq.len = keep;
            for (group, pages) in self.groups.iter_mut().zip(&mut seq.pages) {
                let needed = keep.div_ceil(ps).min(pages.len());
                pages
                    .drain(needed..)
                    .for_each(|p| group.release_from_sequence(p));
            }
            // Published pages past the end are stale; publishing starts over from the first.
            seq.published = 0;
            seq.tail.take()
        };
        self.unpin_tail(tail);
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
        self.let_go_unseen(id);
        for g in 0..self.groups.len() {
            let needed = end.div_ceil(ps);
            let have = self.sequence(id).pages[g].len();
            if needed <= have {
                continue;
            }
            let missing = needed - have;
            self.evict_cached(g, missing);
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
            let seq = self.sequences[id.0].as_mut().expect("a live sequence");
            seq.pages[g].extend((0..missing).map(|_| group.take_for_sequence()));
        }
        Ok(())
    }

    /// Lets go of `id`'s sliding-window pages that no query from its next position on sees.
    fn let_go_unseen(&mut self, id: SeqId) {
        let ps = self.config.page_size;
        let seq = self.sequences[id.0].as_mut().expect("a live sequence");
        for (group, pages) in self.groups.iter_mut().zip(&mut seq.pages) {
            let unseen = (group.first_seen(seq.len) / ps).min(pages.len());
            for slot in &mut pages[..unseen] {
                group.release_from_sequence(std::mem::replace(slot, NO_PAGE));
            }
        }
    }

    /// Drops cached pages, least recently used first, until group `g` has `missing` free
    /// pages or nothing cached is left to drop: a window's pages from any entry (the entry
    /// stays, for longer prompts that pass it), else whole entries nothing builds on.
    fn evict_cached(&mut self, g: usize, missing: usize) {
        let Some(prefix) = self.prefix.as_mut() else {
            return;
        };
        while self.groups[g].free.len() < missing {
            if self.groups[g].window.is_some() {
                let Some(id) = prefix.oldest_holding(g) else {
                    return;
                };
                let page = std::mem::replace(&mut prefix.entry_mut(id).pages[g], NO_PAGE);
                self.groups[g].release(page);
            } else {
                let Some(id) = prefix.oldest_leaf() else {
                    return;
                };
                for (group, page) in self.groups.iter_mut().zip(prefix.remove(id)) {
                    group.release(page);
                }
            }
        }
    }

    /// Gives empty sequence `id` the longest cached prefix of `tokens` that leaves at least
    /// one token to compute (its logits are what the pass is for) and returns its length.
    /// Without the prefix cache, 0.
    pub fn attach_prefix(&mut self, id: SeqId, tokens: &[u32]) -> usize {
        let ps = self.config.page_size;
        if self.sequence(id).len != 0 || tokens.is_empty() {
            return 0;
        }
        let Some(prefix) = self.prefix.as_mut() else {
            return 0;
        };
        let usable = (tokens.len() - 1) / ps * ps;
        let mut chain = prefix.matching(&tokens[..usable], ps);
        // The longest match whose every group still has the pages its next query sees.
        let complete = |n: usize| {
            self.groups.iter().enumerate().all(|(g, group)| {
                let seen = group.first_seen(n * ps) / ps;
                chain[seen..n]
                    .iter()
                    .all(|&e| prefix.entry(e).pages[g] != NO_PAGE)
            })
        };
        let n = (0..=chain.len()).rev().find(|&n| complete(n)).unwrap_or(0);
        chain.truncate(n);
        let seq = self.sequences[id.0].as_mut().expect("a live sequence");
        for (g, group) in self.groups.iter_mut().enumerate() {
            let seen = group.first_seen(n * ps) / ps;
            seq.pages[g] = chain
                .iter()
                .enumerate()
                .map(|(slot, &e)| {
                    let page = prefix.entry(e).pages[g];
                    if slot < seen {
                        return NO_PAGE;
                    }
                    group.hold_for_sequence(page);
                    page
                })
                .collect();
        }
        seq.len = n * ps;
        seq.published = n;
        seq.tail = chain.last().copied();
        if let Some(&tail) = chain.last() {
            prefix.pin(tail);
        }
        n * ps
    }

    /// Offers `id`'s full pages not yet offered to the prefix cache; `tokens` are the
    /// sequence's (at least as many as it has cached). Nothing without the prefix cache.
    pub fn publish(&mut self, id: SeqId, tokens: &[u32]) {
        let ps = self.config.page_size;
        let Some(prefix) = self.prefix.as_mut() else {
            return;
        };
        let seq = self.sequences[id.0].as_mut().expect("a live sequence");
        let full = seq.len.min(tokens.len()) / ps;
        let old_tail = seq.tail;
        for slot in seq.published..full {
            let page = &tokens[slot * ps..(slot + 1) * ps];
            let entry = match prefix.child(seq.tail, page) {
                Some(entry) => entry,
                None => {
                    let pages: Vec<i32> = seq.pages.iter().map(|p| p[slot]).collect();
                    for (group, &p) in self.groups.iter_mut().zip(&pages) {
                        if p != NO_PAGE {
                            group.hold(p);
                        }
                    }
                    prefix.insert(seq.tail, page, pages)
                }
            };
            seq.tail = Some(entry);
        }
        seq.published = seq.published.max(full);
        if seq.tail != old_tail {
            if let Some(tail) = seq.tail {
                prefix.pin(tail);
            }
            if let Some(old) = old_tail {
                prefix.unpin(old);
            }
        }
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
        group.holders.resize(pages, 0);
        group.seq_holders.resize(pages, 0);
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
                    // Slots a window let go are never read; page 0 keeps them in bounds.
                    for (slot, &p) in row.iter_mut().zip(pages) {
                        *slot = p.max(0);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layers, one full and one with a window of 32 (unless `windowless`).
    fn info_with(windowless: bool) -> ModelInfo {
        ModelInfo {
            arch: "test".into(),
            vocab: 8,
            layers: 2,
            kv_heads: 1,
            head_dim: 4,
            context_length: 1024,
            windows: vec![None, if windowless { None } else { Some(32) }],
            device: Device::Cpu,
        }
    }

    fn info() -> ModelInfo {
        info_with(false)
    }

    fn config() -> KvConfig {
        KvConfig {
            max_pass_tokens: 16,
            ..KvConfig::default()
        }
    }

    /// Runs `id`'s next tokens up to `end` as passes of at most 16, publishing after each
    /// as a batch does (pages only; no model). Token `i` is `i`.
    fn run(cache: &mut PagedKvCache, id: SeqId, end: usize) {
        let tokens: Vec<u32> = (0..end as u32).collect();
        while cache.len(id) < end {
            let n = (end - cache.len(id)).min(16);
            cache.reserve(id, n).unwrap();
            cache.sequence_mut(id).len += n;
            cache.publish(id, &tokens);
        }
    }

    fn live_pages(cache: &PagedKvCache, id: SeqId, g: usize) -> usize {
        let pages = &cache.sequence(id).pages[g];
        pages.iter().filter(|&&p| p != NO_PAGE).count()
    }

    #[test]
    fn a_window_holds_only_the_pages_its_queries_see() {
        let mut cache = PagedKvCache::new(&info(), None, config(), Some(64), 1).unwrap();
        let id = cache.add_sequence();
        run(&mut cache, id, 200);
        assert_eq!(live_pages(&cache, id, 0), 13);
        // Positions 169..=199 are seen by the next query, in pages 10..=12; the pass
        // reserved next adds at most one more.
        run(&mut cache, id, 201);
        assert!(
            live_pages(&cache, id, 1) <= 4,
            "{}",
            live_pages(&cache, id, 1)
        );
        cache.remove_sequence(id);
        assert_eq!(cache.bytes_in_use(), 0);
    }

    /// The count of pages sequences hold, kept as they change, against a walk of the tables.
    fn check_sequence_pages(cache: &PagedKvCache) {
        for (g, group) in cache.groups.iter().enumerate() {
            let mut held = vec![false; group.pages];
            for seq in cache.sequences.iter().flatten() {
                for &p in seq.pages[g].iter().filter(|&&p| p != NO_PAGE) {
                    held[p as usize] = true;
                }
            }
            let walked = held.into_iter().filter(|&h| h).count();
            assert_eq!(group.seq_held, walked, "group {g}");
        }
    }

    #[test]
    fn a_later_sequence_takes_the_cached_pages_of_its_prefix() {
        let mut cache = PagedKvCache::new(&info(), None, config(), Some(64), 4).unwrap();
        cache.enable_prefix_cache();
        let tokens: Vec<u32> = (0..100).collect();
        let a = cache.add_sequence();
        run(&mut cache, a, 100);
        assert_eq!(cache.cached_pages(), 6);
        // Same first 70 tokens: 4 whole pages match.
        let mut other = tokens[..70].to_vec();
        other.extend([999, 998]);
        let b = cache.add_sequence();
        assert_eq!(cache.attach_prefix(b, &other), 64);
        assert_eq!(cache.len(b), 64);
        let (pa, pb) = (&cache.sequence(a).pages[0], &cache.sequence(b).pages[0]);
        assert_eq!(pa[..4], pb[..4], "full-attention pages are shared");
        // The window's pages of positions 33..63 are taken from the cache (the first
        // sequence, far ahead, let go of them); those before are not held.
        assert_eq!(cache.sequence(b).pages[1][..2], [NO_PAGE, NO_PAGE]);
        for &p in &cache.sequence(b).pages[1][2..4] {
            assert_eq!(cache.groups[1].holders[p as usize], 2, "page {p}");
        }
        // At least one token is always left to compute.
        let c = cache.add_sequence();
        assert_eq!(cache.attach_prefix(c, &tokens[..64]), 48);
        check_sequence_pages(&cache);
        // The first sequence gone, its pages live on for the others and the cache.
        cache.remove_sequence(a);
        check_sequence_pages(&cache);
        let shared = cache.sequence(b).pages[0][0];
        assert_eq!(cache.groups[0].holders[shared as usize], 3);
        cache.remove_sequence(b);
        cache.remove_sequence(c);
        assert_eq!(cache.bytes_in_use(), 0);
        assert!(cache.bytes_cached() > 0);
    }

    #[test]
    fn cached_pages_give_way_when_the_pool_runs_short() {
        let mut cache = PagedKvCache::new(&info(), Some(128), config(), Some(8), 1).unwrap();
        cache.enable_prefix_cache();
        let a = cache.add_sequence();
        run(&mut cache, a, 128);
        cache.remove_sequence(a);
        assert_eq!(cache.groups[0].free.len(), 0, "the cache holds every page");
        // A different sequence needs the whole pool: the cached pages go.
        let b = cache.add_sequence();
        let other: Vec<u32> = (1000..1128).collect();
        assert_eq!(cache.attach_prefix(b, &other), 0);
        for _ in 0..8 {
            cache.reserve(b, 16).unwrap();
            cache.sequence_mut(b).len += 16;
        }
        assert_eq!(cache.groups[0].free.len(), 0);
        assert!(cache.cached_pages() < 8);
        check_sequence_pages(&cache);
    }

    #[test]
    fn truncating_stops_before_a_shared_page_and_where_a_window_forgot() {
        let mut cache = PagedKvCache::new(&info_with(true), None, config(), None, 1).unwrap();
        cache.enable_prefix_cache();
        let tokens: Vec<u32> = (0..64).collect();
        let a = cache.add_sequence();
        run(&mut cache, a, 64);
        // Page 2 (positions 32..47) is shared with the cache: keep stops at its start.
        let cached = cache.sequence(a).pages[0][2];
        assert_eq!(cache.truncate(a, 40), 32);
        check_sequence_pages(&cache);
        // Growing again writes new pages, never the cached ones.
        run(&mut cache, a, 64);
        assert_ne!(cache.sequence(a).pages[0][2], cached);
        let b = cache.add_sequence();
        assert_eq!(cache.attach_prefix(b, &tokens), 48);
        assert_eq!(cache.sequence(b).pages[0][2], cached);
        check_sequence_pages(&cache);
        // Far past its window, a sequence's early pages are gone: nothing early is kept.
        let mut cache = PagedKvCache::new(&info(), None, config(), None, 1).unwrap();
        let a = cache.add_sequence();
        run(&mut cache, a, 300);
        check_sequence_pages(&cache);
        assert_eq!(cache.truncate(a, 20), 0);
        // Within its window all is there.
        run(&mut cache, a, 40);
        assert_eq!(cache.truncate(a, 30), 30);
    }

    #[test]
    fn kv_configs_parse_alike_or_apart() {
        let int4 = KvConfig::parse("int4").unwrap();
        assert_eq!((int4.keys, int4.values), (KvDType::Int4, KvDType::Int4));
        assert_eq!(int4.dtype_name(), "int4");
        let mixed = KvConfig::parse("int8/int4").unwrap();
        assert_eq!((mixed.keys, mixed.values), (KvDType::Int8, KvDType::Int4));
        assert_eq!(mixed.dtype_name(), "int8/int4");
        // A row of 64 values: int8 keys 64 + 2 bytes, int4 values 32 + 4.
        assert_eq!(mixed.row_pair_bytes(64), 66 + 36);
        assert!(KvConfig::parse("int8/").is_err());
        assert!(KvConfig::parse("int3").is_err());
    }
}
